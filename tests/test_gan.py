"""The DCGAN's networks and training loop on tiny data."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import synthetic_digits
from neuroflow.errors import TrainingError
from neuroflow.families import DCGANConfig
from neuroflow.models.dcgan import (
    Discriminator,
    Generator,
    ImageGenerator,
    check_image_shape,
    init_weights,
)
from neuroflow.settings import GANTrainConfig
from neuroflow.training import gan
from neuroflow.training.batches import to_device

SMALL = DCGANConfig(latent_dim=8, width=4)
IMAGES = to_device(*synthetic_digits(64), "cpu")


@pytest.mark.parametrize("upsample", ["nearest", "transposed"])
@pytest.mark.parametrize("image_shape", [(28, 28), (16, 16), (32, 24)])
def test_generator_and_discriminator_shapes(upsample, image_shape):
    config = DCGANConfig(latent_dim=8, width=4, upsample=upsample)
    generator, critic = Generator(config, image_shape), Discriminator(config, image_shape)
    images = generator(torch.randn(5, 8))
    assert images.shape == (5, 1, *image_shape)
    assert images.min() >= -1 and images.max() <= 1
    assert critic(images).shape == (5,)


@pytest.mark.parametrize("image_shape", [(30, 30), (28, 26), (4, 4)])
def test_sizes_the_gan_cannot_make_are_refused(image_shape):
    with pytest.raises(ValueError, match=f"cannot make {image_shape[0]}x{image_shape[1]} images"):
        check_image_shape(image_shape)
    with pytest.raises(ValueError, match="multiples of 4"):
        Generator(SMALL, image_shape)


def test_discriminator_uses_batch_norm_or_layer_norm_after_the_first_block():
    batch = Discriminator(SMALL, (28, 28), norm="batch")
    layer = Discriminator(SMALL, (28, 28), norm="layer")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in batch.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in layer.modules())
    assert isinstance(batch.body[0], torch.nn.Conv2d) and isinstance(
        batch.body[1], torch.nn.LeakyReLU
    )


def test_weights_start_from_n_0_002():
    generator = Generator(DCGANConfig(), (28, 28))
    generator.apply(init_weights)
    weight = generator.project[0].weight.detach()
    assert weight.mean().abs() < 1e-3 and weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_served_generator_gives_raw_pixels():
    served = ImageGenerator(Generator(SMALL, (28, 28)), {}).eval()
    with torch.no_grad():
        pixels = served(torch.randn(3, 8))
    assert pixels.shape == (3, 28, 28)
    assert pixels.min() >= 0 and pixels.max() <= 255


def test_gradient_penalty_is_zero_for_a_unit_gradient_critic():
    weights = torch.randn(1 * 28 * 28)
    weights /= weights.norm()

    def critic(images):
        return images.flatten(1) @ weights

    real, fake = torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28)
    assert gan.gradient_penalty(critic, real, fake).item() == pytest.approx(0.0, abs=1e-10)
    assert gan.gradient_penalty(lambda x: 3 * critic(x), real, fake).item() == pytest.approx(4.0)


@pytest.mark.parametrize("loss", ["bce", "wgan-gp"])
def test_fit_gan_reports_losses_per_epoch_and_is_seeded(loss):
    def train():
        torch.manual_seed(0)
        generator, critic = Generator(SMALL, (28, 28)), Discriminator(SMALL, (28, 28))
        seen = []
        config = GANTrainConfig(loss=loss, epochs=2, batch_size=16, n_critic=2)
        history = gan.fit_gan(generator, critic, IMAGES, config, 8, lambda m, e: seen.append(e))
        return history, seen

    history, seen = train()
    assert seen == [1, 2] and len(history) == 2
    assert all(set(h) == {"d_loss", "g_loss"} for h in history)
    assert history == train()[0]


def test_generator_steps_once_per_n_critic_batches(monkeypatch):
    calls = []
    real_generator_loss = gan.generator_loss
    monkeypatch.setattr(
        gan, "generator_loss", lambda *a: calls.append(1) or real_generator_loss(*a)
    )
    config = GANTrainConfig(loss="wgan-gp", epochs=1, batch_size=8, n_critic=3)  # 8 batches
    gan.fit_gan(
        Generator(SMALL, (28, 28)), Discriminator(SMALL, (28, 28), "layer"), IMAGES, config, 8
    )
    assert len(calls) == 3  # after batches 3 and 6, and the last (8)


def test_nan_losses_stop_training_with_the_last_good_epoch(monkeypatch):
    real_loss = gan.discriminator_loss
    epochs = []

    def nan_from_epoch_two(*args):
        value = real_loss(*args)
        return value * float("nan") if len(epochs) >= 1 else value

    monkeypatch.setattr(gan, "discriminator_loss", nan_from_epoch_two)
    config = GANTrainConfig(epochs=3, batch_size=16)
    with pytest.raises(TrainingError, match=r"d_loss=nan.* in epoch 2 .*last good epoch was 1"):
        gan.fit_gan(
            Generator(SMALL, (28, 28)),
            Discriminator(SMALL, (28, 28)),
            IMAGES,
            config,
            8,
            lambda m, e: epochs.append(e),
        )
    assert epochs == [1]


def test_a_last_batch_of_one_image_is_left_out():
    torch.manual_seed(0)
    generator, critic = Generator(SMALL, (28, 28)), Discriminator(SMALL, (28, 28))
    images = to_device(*synthetic_digits(17), "cpu")  # a batch of 16 and one image over,
    # which BatchNorm cannot train on
    config = GANTrainConfig(epochs=1, batch_size=16)
    history = gan.fit_gan(generator, critic, images, config, 8)
    assert len(history) == 1 and all(math.isfinite(v) for v in history[0].values())


def test_a_sample_grid_lays_the_images_out_as_torchvisions_make_grid_does():
    import numpy as np

    from neuroflow.tracking.plots import grid

    pixels = np.stack([np.full((3, 4), value, np.float32) for value in (10.4, 20.6, 300.0)])
    drawn = grid(pixels, columns=2)  # 2 rows of 2, the last place empty
    assert drawn.shape == (2 * (3 + 2) + 2, 2 * (4 + 2) + 2) and drawn.dtype == np.uint8
    assert (drawn[2:5, 2:6] == 10).all() and (drawn[2:5, 8:12] == 21).all()  # rounded
    assert (drawn[7:10, 2:6] == 255).all()  # clipped to 0..255
    images = np.zeros_like(drawn, bool)
    for top, left in ((2, 2), (2, 8), (7, 2)):
        images[top : top + 3, left : left + 4] = True
    assert (drawn[~images] == 255).all()  # white gaps around and between, and the empty place


@pytest.mark.parametrize(("size", "stages"), [(28, 2), (32, 2), (64, 3), (128, 4)])
def test_the_gan_grows_a_stage_as_the_image_grows_and_makes_colour(size, stages):
    from neuroflow.models.dcgan import stages as depth

    generator = Generator(SMALL, (3, size, size))
    critic = Discriminator(SMALL, (3, size, size))
    assert depth((size, size)) == stages
    assert generator.start == (SMALL.width << (stages - 1), size >> stages, size >> stages)
    images = generator(torch.randn(2, SMALL.latent_dim))
    assert images.shape == (2, 3, size, size) and critic(images).shape == (2,)
    served = ImageGenerator(generator, {}).eval()
    pixels = served(torch.randn(2, SMALL.latent_dim))
    assert pixels.shape == (2, size, size, 3) and 0 <= pixels.min() <= pixels.max() <= 255


def test_colour_images_reach_the_critic_channels_first():
    colour = IMAGES.images[:4, :, :, None].repeat(1, 1, 1, 3)  # (4, 28, 28, 3) uint8
    assert gan.to_unit_range(colour).shape == (4, 3, 28, 28)
    assert torch.equal(gan.to_unit_range(colour)[:, 2], gan.to_unit_range(IMAGES.images[:4])[:, 0])
