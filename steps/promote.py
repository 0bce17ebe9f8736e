"""promote: re-score a candidate version and the champion, and promote the better.

Both are scored with the same code on the candidate's test split: test accuracy for classifiers,
FID under one evaluator for the DCGAN. `champion` moves when there is none or the candidate wins
by at least min_delta; otherwise the candidate is tagged rejected and the step still exits 0.
Produces comparison.json (both scores, the decision and why) and tags on the run and version.
"""

import click

from neuroflow import cli
from neuroflow.families import METRICS


@click.command()
@click.option("--model-name", default="digits_cnn", show_default=True)
@click.option(
    "--candidate", default="challenger", show_default=True, help="an alias or a version number"
)
@click.option(
    "--min-delta",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="how much better the candidate must score",
)
@click.option(
    "--metric",
    type=click.Choice(("", *METRICS)),
    default="",
    help="empty: the family's primary metric",
)
@click.option("--dry-run", type=click.BOOL, default="false", show_default=True)
@click.option(
    "--stage", default="", help="also move the deprecated registry stage (e.g. Production)"
)
def promote(model_name, candidate, min_delta, metric, dry_run, stage):
    """Promote `candidate` of MODEL_NAME to champion if it beats the champion."""
    from neuroflow.jobs.promote import promote as decide_and_act

    with cli.step_run():
        decide_and_act(model_name, candidate, min_delta, metric, dry_run, stage)


if __name__ == "__main__":
    cli.run(promote)
