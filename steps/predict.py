"""predict: score images with a registered classifier, locally or on Spark.

Produces predictions.parquet (an id or path per image, the predicted class and its
probability, and the label where the images have one), the metrics images and, with labels,
accuracy, and plots/confusion_matrix.png. The run is tagged with the model version it used
(model_name, model_version) and logs the images as its input.
"""

import click

from neuroflow import cli
from neuroflow.settings import PredictConfig


@cli.command(PredictConfig)
def predict(config: PredictConfig):
    """Score a folder, archive, array or preprocess run of images with a classifier."""
    if not config.data:
        raise click.UsageError("give --data: the images to score")
    from neuroflow.jobs.predict import predict as score

    with cli.step_run():
        score(config)


if __name__ == "__main__":
    cli.run(predict)
