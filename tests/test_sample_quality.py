"""FID, inception score and class coverage: the numbers the DCGAN is judged by."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neuroflow.families import CNNConfig
from neuroflow.models.build import build_classifier
from neuroflow.training.sample_quality import class_coverage, fid, inception_score, judge, score


def features(count: int, width: int = 16, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, width)) + shift


def one_hot(classes: np.ndarray, num_classes: int = 10) -> np.ndarray:
    return np.eye(num_classes)[classes]


def test_fid_of_a_set_against_itself_is_about_zero():
    real = features(500)
    assert fid(real, real) == pytest.approx(0.0, abs=1e-6)


def test_fid_grows_with_the_distance_between_sets():
    real = features(500)
    near = fid(real, features(500, seed=1))  # same distribution, other samples
    far = fid(real, features(500, seed=2, shift=3.0))  # means 3 apart in 16 dimensions
    noise = fid(real, 50 * features(500, seed=3))
    assert near < 2.0
    assert far == pytest.approx(16 * 9, rel=0.1)  # |mu_a - mu_b|^2 dominates
    assert noise > 10_000


def test_fid_of_near_singular_sets_stays_finite():
    real = features(30, width=64)  # fewer samples than dimensions: singular covariances
    assert math.isfinite(fid(real, features(30, width=64, seed=1)))


def test_inception_score_runs_from_one_to_the_number_of_classes():
    confident_and_even = one_hot(np.arange(1000) % 10)
    collapsed = one_hot(np.zeros(1000, dtype=int))
    unsure = np.full((1000, 10), 0.1)
    assert inception_score(confident_and_even) == pytest.approx(10.0, rel=1e-6)
    assert inception_score(collapsed) == pytest.approx(1.0, rel=1e-6)
    assert inception_score(unsure) == pytest.approx(1.0, rel=1e-6)


def test_class_coverage_of_one_class_and_of_a_balanced_set():
    assert class_coverage(one_hot(np.full(500, 3))) == (pytest.approx(0.1), pytest.approx(0.0))
    covered, entropy = class_coverage(one_hot(np.arange(500) % 10))
    assert covered == 1.0 and entropy == pytest.approx(math.log(10))


def test_a_class_below_one_percent_is_not_covered():
    classes = np.concatenate([np.arange(990) % 9, [9] * 5])  # class 9 gets 5 of 995
    covered, _ = class_coverage(one_hot(classes))
    assert covered == pytest.approx(0.9)


def test_judge_and_score_read_the_evaluators_feature_layer():
    torch.manual_seed(0)
    evaluator = build_classifier(
        "cnn", CNNConfig(channels=(4, 8), hidden=12), (28, 28), 0.1, 0.3, list(range(10))
    )
    pixels = torch.randint(0, 256, (50, 28, 28), dtype=torch.uint8)
    judgement = judge(evaluator, pixels, batch_size=16)
    assert judgement.features.shape == (50, 12)
    np.testing.assert_allclose(judgement.probabilities.sum(axis=1), 1.0, rtol=1e-6)
    with torch.no_grad():
        expected = evaluator.features(pixels).double().numpy()
    np.testing.assert_allclose(judgement.features, expected, rtol=1e-5, atol=1e-6)
    scores = score(pixels.float(), evaluator, judgement)
    assert set(scores) == {"fid", "inception_score", "class_coverage", "class_entropy"}
    assert scores["fid"] == pytest.approx(0.0, abs=1e-3)  # the same images as the real set
