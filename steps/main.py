"""main: the whole pipeline, as one tree of runs.

preprocess, then train_mlp, train_cnn and train_rnn, register and promote each, then
train_dcgan judged by the CNN champion just decided, register and promote it. Every child is a
nested `mlflow.run` of this project folder, or a finished run reused from the step cache.
Produces summary.md (one row per family: run, metric, registered version, decision) and the tag
reused_steps.
"""

from neuroflow import cli
from neuroflow.settings import PipelineConfig


@cli.command(PipelineConfig)
def main(config: PipelineConfig):
    """Run the whole pipeline and log summary.md."""
    cli.check_data_dir(config.dataset, config.data_dir)  # before any child run starts
    from neuroflow.jobs.main import run_pipeline

    with cli.step_run():
        run_pipeline(config)


if __name__ == "__main__":
    cli.run(main)
