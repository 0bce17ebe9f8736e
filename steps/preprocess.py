"""preprocess: prepare a dataset for every later step.

Produces the artifact folder `prepared/`: train, val and test as uint8 image and label arrays
plus metadata.json (classes, shape, normalisation, digests, source, params), with each split
logged as an MLflow input. Later steps read it by URI: runs:/<run id>/prepared.
"""

from neuroflow import cli
from neuroflow.settings import PrepareConfig


@cli.command(PrepareConfig)
def preprocess(config: PrepareConfig):
    """Prepare a dataset and log it as `prepared/`."""
    cli.check_data_dir(config.dataset, config.data_dir)
    from neuroflow.jobs.preprocess import preprocess as prepare_and_log

    with cli.step_run():
        prepare_and_log(config)


if __name__ == "__main__":
    cli.run(preprocess)
