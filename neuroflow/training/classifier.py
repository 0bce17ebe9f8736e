"""The one training loop every classifier family shares; only the model differs.

Batches are taken by indexing each epoch's order over a split (neuroflow.training.batches):
a uint8 tensor on the device, or shards streamed a batch at a time, so there is no per-item
Dataset or DataLoader on the hot path.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from neuroflow.errors import TrainingError
from neuroflow.settings import TrainConfig
from neuroflow.training.batches import Split
from neuroflow.training.checkpoint import Checkpoints, Snapshot
from neuroflow.training.device import steady_allocations
from neuroflow.training.distributed import Ranks
from neuroflow.training.optim import Optimizer, one_cycle

EVAL_BATCH = 1024
# The share of the one-cycle schedule spent warming up to the peak lr. PyTorch's 0.3 keeps the
# lr high for the first third; 0.1 brought the CNN to 98% on MNIST in 3 epochs instead of 5,
# and the MLP and LSTM end as accurate.
WARMUP = 0.1
OnEpoch = Callable[[dict[str, float], int], None]  # (metrics, epoch) -> None


def warmup_share(total_steps: int) -> float:
    """WARMUP, stretched to at least two steps: one_cycle divides by the warm-up's length in
    steps (WARMUP * total_steps - 1), which is zero for 10 steps in all."""
    return max(WARMUP, 2 / total_steps) if total_steps > 2 else WARMUP


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    predictions: np.ndarray  # (N,) class ids


@dataclass
class FitResult:
    history: list[dict[str, float]]  # one dict of metrics per epoch
    best_epoch: int  # the epoch whose weights the model holds at the end
    stopped_early: bool
    images_per_s: float = 0.0  # trained on, over all ranks, per second of training (no eval)


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> Optimizer:
    return Optimizer(model.parameters(), config.optimizer, config.lr, config.weight_decay)


@torch.inference_mode()
def evaluate(model, images: torch.Tensor, labels: torch.Tensor) -> Evaluation:
    model.eval()
    loss_sum, predictions = 0.0, []
    for start in range(0, len(labels), EVAL_BATCH):
        logits = model.logits(images[start : start + EVAL_BATCH])  # (B, C)
        target = labels[start : start + EVAL_BATCH]
        loss_sum += F.cross_entropy(logits.float(), target, reduction="sum").item()
        predictions.append(logits.argmax(dim=1))
    predicted = torch.cat(predictions)
    accuracy = (predicted == labels).float().mean().item()
    return Evaluation(loss_sum / len(labels), accuracy, predicted.cpu().numpy())


@torch.inference_mode()
def probabilities(model, images: torch.Tensor) -> np.ndarray:
    """(N, classes) float64 class probabilities of `model` for (N, H, W[, C]) raw `images`."""
    model.eval()
    batches = [
        model.logits(images[start : start + EVAL_BATCH]).double().softmax(dim=1).cpu()
        for start in range(0, len(images), EVAL_BATCH)
    ]
    return torch.cat(batches).numpy()


# augment: each training image turned by up to ROTATE degrees, scaled by up to SCALE either
# way and shifted by up to SHIFT pixels, as handwriting varies
ROTATE, SCALE, SHIFT = 12.0, 0.1, 2.0


def augmented(
    images: torch.Tensor, generator: torch.Generator, colour: bool = False
) -> torch.Tensor:
    """(B, H, W) or (B, H, W, C) uint8 -> float pixels in 0..255 of the same shape, each image
    moved by a random affine map drawn from `generator` (the shuffling one, so a checkpoint
    holds its state). With `colour`, each is then recoloured (see recoloured)."""
    count, height, width = images.shape[:3]
    draws = torch.rand(count, 4, generator=generator) * 2 - 1  # (B, 4) in [-1, 1]
    angle = draws[:, 0] * math.radians(ROTATE)
    scale = 1 + draws[:, 1] * SCALE
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    shift_x, shift_y = draws[:, 2] * SHIFT * 2 / width, draws[:, 3] * SHIFT * 2 / height
    theta = torch.stack(  # (B, 2, 3): output coordinates -> where to sample the input
        [torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1
    ).to(images.device)
    grid = F.affine_grid(theta, [count, 1, height, width], align_corners=False)
    if images.ndim == 3:
        pixels = images.unsqueeze(1).float()  # (B, 1, H, W)
        moved = F.grid_sample(pixels, grid, align_corners=False).squeeze(1)
    else:
        pixels = images.permute(0, 3, 1, 2).float()  # (B, C, H, W)
        moved = F.grid_sample(pixels, grid, align_corners=False).permute(0, 2, 3, 1)
    return recoloured(moved, generator) if colour else moved


def recoloured(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, H, W[, C]) float pixels in 0..255, each image's channels put in a random order and,
    one time in two, inverted (torchvision's RandomChannelPermutation and RandomInvert). For
    classes that colour does not tell apart, such as digits in any ink on any background: the
    CNN on tinted digits came within 1 point of the same digits in grey with it, 1.25 without."""
    count = len(pixels)
    inverted = (torch.rand(count, generator=generator) < 0.5).to(pixels.device)
    if pixels.ndim == 4:
        order = torch.rand(count, pixels.shape[3], generator=generator).argsort(dim=1)
        order = order.to(pixels.device)[:, None, None, :].expand_as(pixels)
        pixels = pixels.gather(3, order)
    inverted = inverted.view(count, *[1] * (pixels.ndim - 1))
    return torch.where(inverted, 255 - pixels, pixels)


class Logits(torch.nn.Module):
    """Training calls logits() but DistributedDataParallel hooks forward(): this joins them."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.logits(images)


def fit(
    model,
    train: Split,
    val: Split,
    config: TrainConfig,
    on_epoch: OnEpoch | None = None,
    ranks: Ranks | None = None,
    checkpoints: Checkpoints | None = None,
) -> FitResult:
    """Train `model` on the `train` split, pick the epoch with the lowest
    val_loss, and leave the model holding that epoch's weights. Under several ranks each step's
    batch_size images are shared among them, and each image of an epoch is trained on once.
    `checkpoints` may give a state to resume from and take the state after every epoch, and
    every config.checkpoint_every batches within one: a state that goes on from the middle of
    an epoch to the numbers of a run never stopped."""
    from tqdm.auto import tqdm

    ranks = ranks or Ranks(0, 1, train.device)
    steady_allocations()  # the same for data in memory and streamed
    labels = train.labels
    steps = ranks.steps(len(labels), config.batch_size)
    if config.max_batches:
        steps = min(steps, config.max_batches)
    network = ranks.wrap(Logits(model))
    if config.compile:
        network = torch.compile(network)
    # bf16 for the forward pass; autocast keeps the loss and the weights in float32
    autocast = torch.autocast(train.device.type, torch.bfloat16, enabled=config.precision == "bf16")
    optimizer = make_optimizer(model, config)
    total = config.epochs * steps
    warmup = warmup_share(total)
    generator = torch.Generator().manual_seed(config.seed)  # the shuffling order, seeded apart
    parts = {"model": model, "optimizer": optimizer}
    snapshot = Snapshot("classifier", parts, generator, checkpoints, ranks.main)
    history, done, state = snapshot.restore()
    best_loss, best_state, best_epoch, stale = math.inf, None, 0, 0
    trained = [0, 0.0]  # images and seconds, for images_per_s
    if state:
        best = state["best"]
        best_loss, best_epoch, stale = best["loss"], best["epoch"], best["stale"]
        best_state = best["weights"]
    position = state.get("position")  # where a checkpoint within an epoch was saved
    show = None if ranks.main else True  # tqdm: None shows on a terminal, True hides
    progress = tqdm(
        total=config.epochs * steps,
        initial=done * steps + (position["batch"] if position else 0),
        desc=model.family,
        unit="batch",
        disable=show,
    )
    for epoch in range(done + 1, config.epochs + 1):
        model.train()
        # The loss is summed on the device and read once an epoch: no step waits for the host.
        loss_sum, seen, skip = torch.zeros((), device=train.device), 0, 0
        at_start = generator.get_state()  # what draws this epoch's order
        if position:  # this epoch's order, then the generators as they were at the checkpoint
            at_start, now = position["order_rng"], generator.get_state()
            generator.set_state(at_start)
        chunks = ranks.batches(train.order(generator), config.batch_size, steps)
        if position:
            generator.set_state(now)
            skip, seen = position["batch"], position["seen"]
            loss_sum += position["loss_sum"]
            position = None
        started = time.perf_counter()
        todo = chunks[skip:]
        for step, (chunk, inputs) in enumerate(
            zip(todo, train.batches(todo), strict=True), skip + 1
        ):
            batch = chunk.to(train.device)
            # inputs: (B, H, W[, C]) uint8
            if config.augment in ("true", "colour"):  # "auto": the job decides, seeing the data
                inputs = augmented(inputs, generator, colour=config.augment == "colour")
            with autocast:
                loss = F.cross_entropy(network(inputs), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step(*one_cycle(optimizer.steps, total, config.lr, warmup))
            loss_sum += loss.detach() * len(batch)
            seen += len(batch)
            progress.update()
            if config.checkpoint_every and step % config.checkpoint_every == 0 < len(chunks) - step:
                best = {
                    "loss": best_loss,
                    "epoch": best_epoch,
                    "stale": stale,
                    "weights": best_state,
                }
                within = {"batch": step, "order_rng": at_start, "loss_sum": loss_sum.item()}
                snapshot.save(epoch - 1, history, best=best, position={**within, "seen": seen})
        summed, seen = ranks.sum(torch.stack([loss_sum, loss_sum.new_tensor(seen)])).tolist()
        trained[0] += seen
        trained[1] += time.perf_counter() - started
        train_loss = summed / seen
        if not math.isfinite(train_loss):
            progress.close()
            raise TrainingError(
                f"train_loss became {train_loss} in epoch {epoch} (lr={config.lr}); "
                f"expected a finite loss: lower lr. The last good epoch was {epoch - 1}"
            )
        checked = evaluate(model, val.images, val.labels)
        metrics = {
            "train_loss": train_loss,
            "val_loss": checked.loss,
            "val_accuracy": checked.accuracy,
        }
        history.append(metrics)
        progress.set_postfix(epoch=epoch, **{k: round(v, 4) for k, v in metrics.items()})
        if on_epoch:
            on_epoch(metrics, epoch)
        if checked.loss < best_loss:
            best_loss, best_epoch, stale = checked.loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        best = {"loss": best_loss, "epoch": best_epoch, "stale": stale, "weights": best_state}
        snapshot.save(epoch, history, best=best)
        if config.patience and stale >= config.patience:
            break
    progress.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    speed = trained[0] / trained[1] if trained[1] else 0.0
    return FitResult(history, best_epoch, len(history) < config.epochs, speed)
