"""tune: search a classifier family's settings with Optuna, each trial a nested run.

Produces the trials (nested runs with their parameters, per-epoch val_loss and val_accuracy,
and a `pruned` tag), best_val_loss and best_* parameters, plots/ of the search, study.db when
the study is kept with the run, and the best trial's network as the logged model `model`, with
test_accuracy, so register takes the run as it takes a training run.
"""

from neuroflow import cli
from neuroflow.settings import TuneConfig


@cli.command(TuneConfig)
def tune(config: TuneConfig):
    """Tune a classifier family and log the best trial's network as `model`."""
    from neuroflow.jobs.tune import tune as run_tune

    with cli.step_run(system_metrics=True):
        run_tune(config)


if __name__ == "__main__":
    cli.run(tune)
