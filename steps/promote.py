"""promote: re-score a candidate version and the champion, and promote the better.

Both are scored with the same code on the candidate's test split: test accuracy for classifiers,
FID under one evaluator for the DCGAN. `champion` moves when there is none or the candidate wins
by at least min_delta; otherwise the candidate is tagged rejected and the step still exits 0.
Produces comparison.json (both scores, the decision and why) and tags on the run and version.
"""

from neuroflow import cli
from neuroflow.settings import PromoteConfig


@cli.command(PromoteConfig)
def promote(config: PromoteConfig):
    """Promote `candidate` of MODEL_NAME to champion if it beats the champion."""
    from neuroflow.jobs.promote import promote as decide_and_act

    with cli.step_run():
        decide_and_act(
            config.model_name,
            config.candidate,
            config.min_delta,
            config.metric,
            config.dry_run,
            config.stage,
        )


if __name__ == "__main__":
    cli.run(promote)
