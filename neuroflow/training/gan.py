"""The GAN training loop: the standard non-saturating BCE loss, or WGAN-GP.

Real images stay uint8, on the device or streamed from their shards
(neuroflow.training.batches), and are scaled to [-1, 1] a batch at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from neuroflow.errors import TrainingError
from neuroflow.settings import GANTrainConfig
from neuroflow.training.batches import Split
from neuroflow.training.checkpoint import Checkpoints, Snapshot
from neuroflow.training.device import steady_allocations
from neuroflow.training.distributed import Ranks
from neuroflow.training.optim import Optimizer

GP_WEIGHT = 10.0  # Gulrajani et al.'s lambda
OnEpoch = Callable[[dict[str, float], int], None]


def to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W) or (B, H, W, C) -> float (B, C, H, W) in [-1, 1], the range Tanh
    produces."""
    planes = pixels.unsqueeze(1) if pixels.ndim == 3 else pixels.permute(0, 3, 1, 2)
    return planes.float() / 127.5 - 1


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E[(||grad critic(x_hat)|| - 1)^2] on random points between real and fake images."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grads,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return ((grads.flatten(1).norm(dim=1) - 1) ** 2).mean()


def discriminator_loss(loss: str, critic, real, fake) -> torch.Tensor:
    real_out, fake_out = critic(real), critic(fake)
    if loss == "bce":
        ones, zeros = torch.ones_like(real_out), torch.zeros_like(fake_out)
        return F.binary_cross_entropy_with_logits(
            real_out, ones
        ) + F.binary_cross_entropy_with_logits(fake_out, zeros)
    return fake_out.mean() - real_out.mean() + GP_WEIGHT * gradient_penalty(critic, real, fake)


def generator_loss(loss: str, critic, fake) -> torch.Tensor:
    out = critic(fake)
    if loss == "bce":  # non-saturating: G maximises log D(G(z))
        return F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
    return -out.mean()


def fit_gan(
    generator,
    critic,
    images: Split,
    config: GANTrainConfig,
    latent_dim: int,
    on_epoch: OnEpoch | None = None,
    ranks: Ranks | None = None,
    checkpoints: Checkpoints | None = None,
) -> list[dict[str, float]]:
    """Train on the split `images` ((N, H, W[, C]) uint8) and return each epoch's mean d_loss
    and g_loss, which on_epoch also gets. A NaN or inf loss stops training with a
    TrainingError. Under several ranks each step's batch_size images are shared among them.
    `checkpoints` may give a state to resume from and take the state after every epoch (after
    on_epoch, so whatever on_epoch draws from the generators is in it)."""
    from tqdm.auto import tqdm

    device = images.device
    steady_allocations()  # the same for data in memory and streamed
    ranks = ranks or Ranks(0, 1, device)
    g_optimizer = Optimizer(generator.parameters(), "adam", config.lr, momentum=config.beta1)
    d_optimizer = Optimizer(critic.parameters(), "adam", config.lr, momentum=config.beta1)
    parts = {  # what a checkpoint holds, the networks unwrapped
        "generator": generator,
        "critic": critic,
        "g_optimizer": g_optimizer,
        "d_optimizer": d_optimizer,
    }
    generator, critic = ranks.wrap(generator), ranks.wrap(critic)
    g_every = config.n_critic if config.loss == "wgan-gp" else 1  # batches per generator step
    # Whole batches only: a last batch of one image would break BatchNorm's batch statistics.
    steps = max(1, ranks.steps(len(images), config.batch_size, whole=True))
    if config.max_batches:
        steps = min(steps, config.max_batches)
    shuffle = torch.Generator().manual_seed(config.seed)
    snapshot = Snapshot("gan", parts, shuffle, checkpoints, ranks.main)
    history, done, _ = snapshot.restore()
    show = None if ranks.main else True  # tqdm: None shows on a terminal, True hides
    progress = tqdm(
        total=config.epochs * steps, initial=done * steps, desc="dcgan", unit="batch", disable=show
    )
    for epoch in range(done + 1, config.epochs + 1):
        generator.train()
        critic.train()
        chunks = ranks.batches(images.order(shuffle), config.batch_size, steps, whole=True)
        d_sum = g_sum = torch.zeros((), device=device)
        g_steps = 0
        for step, pixels in enumerate(images.batches(chunks), start=1):
            real = to_unit_range(pixels)
            z = torch.randn(len(pixels), latent_dim, device=device)
            g_step = step % g_every == 0 or step == steps
            with torch.set_grad_enabled(g_step):  # critic-only steps need no generator graph
                fake = generator(z)
            d_loss = discriminator_loss(config.loss, critic, real, fake.detach())
            d_optimizer.zero_grad()
            d_loss.backward()
            d_optimizer.step()
            d_sum = d_sum + d_loss.detach()
            if g_step:
                g_loss = generator_loss(config.loss, critic, fake)
                g_optimizer.zero_grad()
                g_loss.backward()
                g_optimizer.step()
                g_sum, g_steps = g_sum + g_loss.detach(), g_steps + 1
            progress.update()
        d_total, g_total = ranks.sum(torch.stack([d_sum, g_sum])).tolist()
        metrics = {"d_loss": d_total / steps / ranks.size, "g_loss": g_total / g_steps / ranks.size}
        bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
        if bad:
            progress.close()
            raise TrainingError(
                f"{', '.join(f'{k}={v}' for k, v in bad.items())} in epoch {epoch} "
                f"(loss={config.loss}, lr={config.lr}); expected finite losses: lower lr or "
                f"try loss=wgan-gp. The last good epoch was {epoch - 1}"
            )
        history.append(metrics)
        if on_epoch:
            on_epoch(metrics, epoch)
        snapshot.save(epoch, history)
        progress.set_postfix(epoch=epoch, **{k: round(v, 3) for k, v in metrics.items()})
    progress.close()
    return history
