"""How good generated images are, judged by a fixed classifier (the evaluator).

FID compares feature statistics in the evaluator's penultimate layer; the inception-style score
and class coverage use its predicted classes. Scores are comparable only under one evaluator.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

COVERAGE_SHARE = 0.01  # a class counts as covered when it gets at least 1% of the samples
SAMPLES = 1000  # generated images scored each time; FID depends on it, so it is fixed


@dataclass
class Judgement:
    features: np.ndarray  # (N, F) penultimate-layer activations
    probabilities: np.ndarray  # (N, C) softmax over classes


@torch.inference_mode()
def sample(generator, latents: torch.Tensor) -> torch.Tensor:
    """(N, H, W) float pixels in 0..255 from an ImageGenerator for (N, latent_dim) latent
    vectors, in eval mode; the generator's mode is left as it was."""
    was_training = generator.training
    generator.eval()
    images = torch.cat([generator(z) for z in latents.split(1000)])
    generator.train(was_training)
    return images


@torch.inference_mode()
def judge(evaluator, pixels: torch.Tensor, batch_size: int = 1000) -> Judgement:
    """Run an ImageClassifier over (N, H, W) raw pixels (0..255)."""
    evaluator.eval()
    features, probabilities = [], []
    for start in range(0, len(pixels), batch_size):
        batch = evaluator.standardize(pixels[start : start + batch_size])
        hidden = evaluator.net.features(batch)  # (B, F)
        features.append(hidden.double().cpu())
        probabilities.append(evaluator.net.head(hidden).softmax(dim=1).double().cpu())
    return Judgement(torch.cat(features).numpy(), torch.cat(probabilities).numpy())


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two (N, F) feature sets."""
    from scipy import linalg

    mu_real, mu_fake = real.mean(axis=0), fake.mean(axis=0)
    cov_real, cov_fake = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    with warnings.catch_warnings():  # ReLU features that never fire make covariances singular
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(cov_real @ cov_fake)
        if not np.isfinite(root).all():  # nudge both covariances off singular, as pytorch-fid
            offset = np.eye(len(cov_real)) * 1e-6
            root = linalg.sqrtm((cov_real + offset) @ (cov_fake + offset))
    trace = np.trace(cov_real) + np.trace(cov_fake) - 2 * np.trace(root.real)
    return float(np.sum((mu_real - mu_fake) ** 2) + trace)


def inception_score(probabilities: np.ndarray) -> float:
    """exp(E_x KL(p(y|x) || p(y))): high when each sample is confidently one class and the
    classes are spread evenly; from 1 to the number of classes."""
    eps = 1e-12
    marginal = probabilities.mean(axis=0, keepdims=True)
    kl = (probabilities * (np.log(probabilities + eps) - np.log(marginal + eps))).sum(axis=1)
    return float(np.exp(kl.mean()))


def class_coverage(probabilities: np.ndarray) -> tuple[float, float]:
    """(share of classes given at least 1% of the samples, entropy in nats of the predicted
    class histogram). A collapsed generator covers few classes with low entropy."""
    classes = probabilities.shape[1]
    counts = np.bincount(probabilities.argmax(axis=1), minlength=classes)
    shares = counts / counts.sum()
    covered = float((shares >= COVERAGE_SHARE).mean())
    nonzero = shares[shares > 0]
    return covered, float(-(nonzero * np.log(nonzero)).sum())


def score(fake_pixels: torch.Tensor, evaluator, real: Judgement) -> dict[str, float]:
    """fid, inception_score, class_coverage and class_entropy of generated (N, H, W) pixels
    against the evaluator's judgement of real images."""
    fake = judge(evaluator, fake_pixels)
    coverage, entropy = class_coverage(fake.probabilities)
    return {
        "fid": fid(real.features, fake.features),
        "inception_score": inception_score(fake.probabilities),
        "class_coverage": coverage,
        "class_entropy": entropy,
    }
