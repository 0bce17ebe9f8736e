"""The shared classifier loop: learning, determinism, early stopping, divergence, evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import synthetic_digits
from neuroflow.errors import NeuroflowError, TrainingError
from neuroflow.families import CNNConfig, MLPConfig
from neuroflow.models.build import build_classifier
from neuroflow.settings import TrainConfig
from neuroflow.training import classifier as loop
from neuroflow.training.batches import to_device
from neuroflow.training.classifier import Evaluation, evaluate, fit, make_optimizer
from neuroflow.training.device import resolve_device, seed_everything
from neuroflow.training.optim import one_cycle

MEAN, STD = 0.1307, 0.3081
CLASSES = list(range(10))
SMALL = {"mlp": MLPConfig(hidden=(64,)), "cnn": CNNConfig(channels=(8, 16), hidden=32)}
METRICS = {"train_loss", "val_loss", "val_accuracy"}


def quick(**overrides) -> TrainConfig:
    """A CPU run of a few small-batch epochs over 400 images."""
    return TrainConfig(**{"epochs": 3, "batch_size": 32, "device": "cpu", **overrides})


def seeded_classifier(family: str, seed: int = 0):
    seed_everything(seed)
    return build_classifier(family, SMALL[family], (28, 28), MEAN, STD, CLASSES)


@pytest.fixture(scope="module")
def digits():
    """(train, val) as (images, labels) tensors on the CPU: 400 and 100 synthetic digits."""
    train = to_device(*synthetic_digits(400, seed=0), "cpu")
    val = to_device(*synthetic_digits(100, seed=1), "cpu")
    return train, val


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_to_device_keeps_uint8_images_and_makes_int64_labels():
    images, labels = to_device(*synthetic_digits(20), "cpu")
    assert images.dtype == torch.uint8 and images.shape == (20, 28, 28)
    assert labels.dtype == torch.int64 and labels.shape == (20,)
    assert images.device.type == labels.device.type == "cpu"


@pytest.mark.parametrize("family", sorted(SMALL))
def test_fit_learns_synthetic_digits(family, digits):
    train, val = digits
    model = seeded_classifier(family)
    before = evaluate(model, *val).accuracy
    result = fit(model, train, val, quick())
    assert before < 0.5  # chance level before training, so the gain is the loop's doing
    assert len(result.history) == 3
    assert result.history[-1]["val_accuracy"] > 0.9
    assert evaluate(model, *val).accuracy > 0.9
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert 1 <= result.best_epoch <= 3
    assert result.stopped_early is False


@pytest.mark.parametrize("family", sorted(SMALL))
def test_bf16_autocast_learns_as_float32_does(family, digits, monkeypatch):
    """precision=bf16 runs the forward pass in bfloat16 (on this CPU too) and still learns."""
    dtypes = []
    cross_entropy = F.cross_entropy

    def seen(logits, *args, **kwargs):
        dtypes.append(logits.dtype)
        return cross_entropy(logits, *args, **kwargs)

    monkeypatch.setattr(loop.F, "cross_entropy", seen)
    model = seeded_classifier(family)
    result = fit(model, *digits, quick(precision="bf16"))
    assert torch.bfloat16 in dtypes  # the training steps' logits
    assert result.history[-1]["val_accuracy"] > 0.85
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.slow  # torch.compile builds C++ kernels: about a minute on 2 cores
def test_compile_trains_the_compiled_network_and_keeps_the_model_plain(digits):
    model = seeded_classifier("mlp")
    result = fit(model, *digits, quick(compile=True, epochs=2))
    assert result.history[-1]["val_accuracy"] > 0.8
    assert type(model).__name__ == "ImageClassifier"  # what is logged is not the compiled one


@pytest.mark.parametrize("family", sorted(SMALL))
def test_same_seed_gives_identical_history_and_weights(family, digits):
    train, val = digits
    runs = []
    for _ in range(2):
        model = seeded_classifier(family, seed=7)
        result = fit(model, train, val, quick(epochs=2, seed=7))
        runs.append((result, snapshot(model)))
    (first, first_weights), (second, second_weights) = runs
    assert first.history == second.history  # exact float equality
    assert first.best_epoch == second.best_epoch
    assert same_weights(first_weights, second_weights)


def test_different_seeds_give_different_histories(digits):
    train, val = digits
    histories = []
    for seed in (1, 2):
        model = seeded_classifier("mlp", seed=seed)
        histories.append(fit(model, train, val, quick(epochs=2, seed=seed)).history)
    assert histories[0] != histories[1]
    assert histories[0][0]["train_loss"] != histories[1][0]["train_loss"]


@pytest.mark.parametrize(("max_batches", "per_epoch"), [(1, 1), (3, 3), (0, math.ceil(400 / 32))])
def test_max_batches_limits_the_optimizer_steps_per_epoch(
    max_batches, per_epoch, digits, monkeypatch
):
    train, val = digits
    built = []

    def kept(model, config):
        built.append(make_optimizer(model, config))
        return built[-1]

    monkeypatch.setattr(loop, "make_optimizer", kept)
    seen = []
    model = seeded_classifier("mlp")
    config = quick(max_batches=max_batches)
    fit(model, train, val, config, on_epoch=lambda m, e: seen.append(built[0].steps))
    assert seen == [per_epoch, 2 * per_epoch, 3 * per_epoch]


def fake_evaluate(losses):
    """An evaluate() that reports the given val_loss per call, whatever the model does."""
    calls = iter(losses)

    def evaluate(model, images, labels):
        return Evaluation(next(calls), 0.5, np.zeros(len(labels), dtype=np.int64))

    return evaluate


def test_patience_stops_early_and_keeps_the_best_epoch(digits, monkeypatch):
    train, val = digits
    monkeypatch.setattr(loop, "evaluate", fake_evaluate([1.0, 0.5, 0.7, 0.8, 0.9, 1.0]))
    weights = {}
    model = seeded_classifier("mlp")
    result = fit(
        model,
        train,
        val,
        quick(epochs=6, patience=2),
        on_epoch=lambda metrics, epoch: weights.setdefault(epoch, snapshot(model)),
    )
    assert [m["val_loss"] for m in result.history] == [1.0, 0.5, 0.7, 0.8]
    assert result.stopped_early is True
    assert result.best_epoch == 2
    assert same_weights(snapshot(model), weights[2])
    assert not same_weights(snapshot(model), weights[4])  # the rollback changed something


def test_patience_zero_never_stops_early(digits, monkeypatch):
    train, val = digits
    monkeypatch.setattr(loop, "evaluate", fake_evaluate([1.0, 0.5, 0.7, 0.8, 0.9]))
    result = fit(seeded_classifier("mlp"), train, val, quick(epochs=5, patience=0))
    assert len(result.history) == 5
    assert result.stopped_early is False
    assert result.best_epoch == 2


def test_patience_with_a_tiny_lr_stops_when_nothing_improves(digits):
    train, val = digits
    model = seeded_classifier("mlp")
    result = fit(model, train, val, quick(epochs=8, lr=1e-30, patience=2, max_batches=1))
    assert result.stopped_early is True
    assert len(result.history) < 8
    assert result.best_epoch <= len(result.history) - 2


def test_on_epoch_is_called_once_per_epoch_with_the_metrics(digits):
    train, val = digits
    calls = []
    result = fit(
        seeded_classifier("mlp"),
        train,
        val,
        quick(epochs=3),
        on_epoch=lambda metrics, epoch: calls.append((dict(metrics), epoch)),
    )
    assert [epoch for _, epoch in calls] == [1, 2, 3]
    assert [metrics for metrics, _ in calls] == result.history
    for metrics, _ in calls:
        assert set(metrics) == METRICS
        assert all(math.isfinite(value) for value in metrics.values())
        assert 0.0 <= metrics["val_accuracy"] <= 1.0


def test_a_huge_lr_diverges_with_a_one_line_training_error(digits):
    train, val = digits
    with pytest.raises(TrainingError) as caught:
        fit(seeded_classifier("mlp"), train, val, quick(epochs=2, lr=1e12))
    message = str(caught.value)
    assert "\n" not in message
    assert "epoch 1" in message
    assert f"lr={1e12}" in message


def test_a_loss_that_turns_nan_later_names_that_epoch(digits, monkeypatch):
    train, val = digits
    model = seeded_classifier("mlp")
    logits, training_calls = model.logits, 0

    def poisoned(x):  # fine for the first epoch's two batches, NaN from then on
        nonlocal training_calls
        training_calls += model.training
        return logits(x) * (float("nan") if training_calls > 2 else 1.0)

    monkeypatch.setattr(model, "logits", poisoned)
    epochs = []
    with pytest.raises(TrainingError) as caught:
        fit(
            model,
            train,
            val,
            quick(epochs=4, lr=0.001, max_batches=2),
            on_epoch=lambda m, e: epochs.append(e),
        )
    message = str(caught.value)
    assert epochs == [1]
    assert "\n" not in message
    assert "nan in epoch 2 (lr=0.001)" in message
    assert "last good epoch was 1" in message
    assert isinstance(caught.value, NeuroflowError)


@pytest.mark.parametrize("eval_batch", [loop.EVAL_BATCH, 7])  # 7 leaves a ragged last batch
def test_evaluate_matches_numpy_accuracy_and_torch_cross_entropy(eval_batch, monkeypatch):
    monkeypatch.setattr(loop, "EVAL_BATCH", eval_batch)
    images, labels = to_device(*synthetic_digits(50, seed=3), "cpu")
    model = seeded_classifier("cnn")
    model.train()  # evaluate() must switch dropout and batch norm off itself
    result = evaluate(model, images, labels)
    assert model.training is False
    with torch.no_grad():
        logits = model.logits(images)
    assert result.predictions.shape == (50,)
    np.testing.assert_array_equal(result.predictions, logits.argmax(dim=1).numpy())
    assert result.accuracy == pytest.approx(np.mean(result.predictions == labels.numpy()))
    assert result.loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)


def test_evaluate_is_perfect_on_a_model_that_knows_the_answers():
    images, labels = to_device(*synthetic_digits(30, seed=4), "cpu")
    model = seeded_classifier("mlp")
    truth = F.one_hot(labels, 10).float() * 100  # (N, C): confident and right

    model.logits = lambda x: truth[: len(x)]
    result = evaluate(model, images, labels)
    assert result.accuracy == 1.0
    assert result.loss == pytest.approx(0.0, abs=1e-6)


TORCH_OPTIMIZERS = {  # what each name means in torch.optim, which optim.py must match
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.02, weight_decay=0.001),
    "adam": lambda params: torch.optim.Adam(params, lr=0.02, weight_decay=0.001),
    "sgd": lambda params: torch.optim.SGD(
        params, lr=0.02, weight_decay=0.001, momentum=0.9, nesterov=True
    ),
}


@pytest.mark.parametrize("name", list(TORCH_OPTIMIZERS))
def test_each_optimizer_and_the_one_cycle_schedule_match_torch_optim(name):
    """Step for step, the same weights as torch.optim's class under OneCycleLR."""
    config = TrainConfig(optimizer=name, lr=0.02, weight_decay=0.001)
    ours, theirs = seeded_classifier("mlp").eval(), seeded_classifier("mlp").eval()  # no dropout
    optimizer = make_optimizer(ours, config)
    reference = TORCH_OPTIMIZERS[name](theirs.parameters())
    total, warmup = 12, loop.warmup_share(12)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        reference, max_lr=0.02, total_steps=total, pct_start=warmup
    )
    images = torch.randint(0, 256, (total, 16, 28, 28), generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 10, (total, 16), generator=torch.Generator().manual_seed(2))
    for step in range(total):
        lr, momentum = one_cycle(optimizer.steps, total, 0.02, warmup)
        assert lr == pytest.approx(schedule.get_last_lr()[0], rel=1e-12), step
        for model in (ours, theirs):
            F.cross_entropy(model.logits(images[step]), labels[step]).backward()
        optimizer.step(lr, momentum)
        reference.step()
        schedule.step()
        optimizer.zero_grad()
        reference.zero_grad()
    assert optimizer.steps == total
    for key, mine in ours.state_dict().items():
        assert torch.allclose(mine, theirs.state_dict()[key], rtol=0, atol=1e-6), key


def test_make_optimizer_refuses_an_unknown_name():
    # by the config, before any optimizer is built
    with pytest.raises(ValueError, match="TrainConfig.optimizer: 'rmsprop' is not one of 'adamw'"):
        make_optimizer(seeded_classifier("mlp"), TrainConfig(optimizer="rmsprop"))


no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


@no_cuda
def test_auto_device_is_cpu_without_cuda():
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@no_cuda
def test_cuda_device_without_cuda_is_an_error():
    with pytest.raises(NeuroflowError, match="device 'cuda' was asked for"):
        resolve_device("cuda")


@pytest.mark.parametrize("batches", [1, 2, 3, 5, 9, 10, 11, 20, 30])
def test_any_number_of_steps_has_a_valid_one_cycle_schedule(digits, batches):
    """10 steps in all once divided by a zero-length warm-up."""
    model = seeded_classifier("mlp")
    config = quick(epochs=1, batch_size=400 // batches + (400 % batches > 0), patience=0)
    result = fit(model, *digits, config)
    assert math.isfinite(result.history[0]["train_loss"])
