"""promote: re-score a candidate version and the champion, and promote the better.

Both are scored with the same code: classifiers by accuracy on the test images of both
versions' data that neither trained or validated on (at least min_unseen of them), the DCGAN by
FID under one evaluator. Versions trained on other datasets or classes are not compared unless
dataset_changed says so. `champion` moves when there is none or the candidate wins
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
            min_unseen=config.min_unseen,
            dataset_changed=config.dataset_changed,
        )


if __name__ == "__main__":
    cli.run(promote)
