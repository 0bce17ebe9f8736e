"""train_dcgan: train a DCGAN and judge it with a fixed classifier, the evaluator.

Produces per-epoch d_loss, g_loss, fid, inception_score, class_coverage and class_entropy;
samples/epoch_NNN.png (the same latent vectors every epoch) and samples/final.png;
plots/gan_curves.png; and the generator as `model` (pyfunc: (B, latent_dim) latent vectors in,
(B, H, W) pixels in 0..255 out). FIDs compare only between runs with the same evaluator_uri.
Every epoch logs checkpoints/last.pt; --resume-from or --resume go on from one.
"""

from dataclasses import asdict

from neuroflow import cli
from neuroflow.families import DCGANConfig
from neuroflow.settings import GANInputs, GANTrainConfig


@cli.command(GANInputs, GANTrainConfig, DCGANConfig)
def train_dcgan(inputs: GANInputs, training: GANTrainConfig, model: DCGANConfig):
    """Train the DCGAN and log the generator as `model`."""
    cli.launch(training.nproc, training.device)
    from neuroflow.jobs.train_dcgan import train_dcgan as train_and_log

    with cli.step_run(system_metrics=True):
        train_and_log(model, training, **asdict(inputs))


if __name__ == "__main__":
    cli.run(train_dcgan)
