"""train_dcgan: train a DCGAN and judge it with a fixed classifier, the evaluator.

Produces per-epoch d_loss, g_loss, fid, inception_score, class_coverage and class_entropy;
samples/epoch_NNN.png (the same latent vectors every epoch) and samples/final.png;
plots/gan_curves.png; and the generator as `model` (pyfunc: (B, latent_dim) latent vectors in,
(B, H, W) pixels in 0..255 out). FIDs compare only between runs with the same evaluator_uri.
Every epoch logs checkpoints/last.pt; --resume-from or --resume go on from one.
"""

import click

from neuroflow import cli
from neuroflow.models.configs import UPSAMPLES, DCGANConfig
from neuroflow.training.config import DEVICES, GAN_LOSSES, GANTrainConfig

MODEL = DCGANConfig()
TRAIN = GANTrainConfig()


@click.command()
@cli.resume_options
@click.option(
    "--data",
    default="latest",
    show_default=True,
    callback=cli.check_data,
    help="preprocess run id, runs:/<run id>/prepared, or latest",
)
@click.option(
    "--evaluator",
    default="",
    help="model URI of the classifier that judges samples; empty: the dataset's registered CNN "
    "champion, else a quick CNN trained now",
)
@click.option("--loss", type=click.Choice(GAN_LOSSES), default=TRAIN.loss, show_default=True)
@click.option("--upsample", type=click.Choice(UPSAMPLES), default=MODEL.upsample, show_default=True)
@click.option("--latent-dim", type=cli.POSITIVE, default=MODEL.latent_dim, show_default=True)
@click.option("--epochs", type=cli.POSITIVE, default=TRAIN.epochs, show_default=True)
@click.option(
    "--batch-size", type=click.IntRange(min=2), default=TRAIN.batch_size, show_default=True
)
@click.option(
    "--lr", type=click.FloatRange(min=0, min_open=True), default=TRAIN.lr, show_default=True
)
@click.option(
    "--beta1", type=click.FloatRange(0, 1, max_open=True), default=TRAIN.beta1, show_default=True
)
@click.option(
    "--n-critic",
    type=cli.POSITIVE,
    default=TRAIN.n_critic,
    show_default=True,
    help="critic steps per generator step (wgan-gp)",
)
@click.option("--seed", type=cli.NON_NEGATIVE, default=TRAIN.seed, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default=TRAIN.device, show_default=True)
@click.option(
    "--nproc",
    type=click.IntRange(1, 64),
    default=TRAIN.nproc,
    show_default=True,
    help="processes, one per device; more than 1 trains data-parallel under torchrun",
)
@click.option(
    "--max-batches",
    type=cli.NON_NEGATIVE,
    default=TRAIN.max_batches,
    show_default=True,
    help="batches per epoch; 0 = all",
)
def train_dcgan(data, evaluator, upsample, latent_dim, resume_from, resume, **training):
    """Train the DCGAN and log the generator as `model`."""
    config = GANTrainConfig(**training)
    cli.launch(config.nproc, config.device)
    from neuroflow.jobs.dcgan import train_dcgan as train_and_log

    model = DCGANConfig(latent_dim=latent_dim, upsample=upsample)
    with cli.step_run():
        train_and_log(model, config, data, evaluator, resume_from=resume_from, resume=resume)


if __name__ == "__main__":
    cli.run(train_dcgan)
