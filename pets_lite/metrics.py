"""The measures every chapter shares: ROC AUC and accuracy for models, SSIM and PSNR for images.

The one home of each: a chapter that scores a classifier, a reconstruction or an attack calls these,
so that "AUC" or "SSIM" means the same computation on every page of the book. SSIM and PSNR are
scikit-image's (data range 1, images in [0, 1]); AUC is scikit-learn's.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from sklearn.metrics import roc_auc_score


class MetricError(ValueError):
    """Inputs a measure cannot score (shapes that disagree, images of the wrong rank...)."""


def auc_score(labels, scores) -> float:
    """ROC AUC: of the positive class for two classes, one-vs-rest macro average otherwise.

    ``scores`` is (N,) (a score for the positive class) or (N, C) (probabilities per class).
    NaN when ``labels`` hold a single class (AUC is undefined there).

    >>> auc_score(np.array([0, 0, 1, 1]), np.array([[.9, .1], [.6, .4], [.3, .7], [.2, .8]]))
    1.0
    """
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores)
    if len(scores) != len(labels):
        raise MetricError(f"{len(labels)} labels but {len(scores)} scores")
    if len(np.unique(labels)) < 2:
        return float("nan")
    if scores.ndim == 1:
        return float(roc_auc_score(labels, scores))
    if scores.shape[1] == 2:
        return float(roc_auc_score(labels, scores[:, 1]))
    return float(roc_auc_score(labels, scores, multi_class="ovr", average="macro",
                               labels=np.arange(scores.shape[1])))


def logit_scores(logits) -> np.ndarray:
    """What to rank for an AUC, from a model's logits (N, C), computed in float64: for two classes
    the logit margin z1 - z0 (rank-equivalent to the probability of class 1, but it never rounds
    to a tie the way a softmax of a confident model does); for more classes the softmax.

    >>> logit_scores(np.array([[0.0, 60.0], [0.0, 50.0]])).tolist()  # softmax would tie at 1.0
    [60.0, 50.0]
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise MetricError(f"logits must be (N, C) with C >= 2, got {z.shape}")
    if z.shape[1] == 2:
        return z[:, 1] - z[:, 0]
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def accuracy(labels, probs) -> float:
    """Share of examples whose most probable class is the label (``probs`` may be logits).

    >>> accuracy(np.array([0, 1, 1]), np.array([[.9, .1], [.2, .8], [.7, .3]]))
    0.6666666666666666
    """
    labels = np.asarray(labels).reshape(-1)
    probs = np.asarray(probs)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise MetricError(f"probs must be (N, C) for {len(labels)} labels, got {probs.shape}")
    return float(np.mean(probs.argmax(1) == labels))


def as_images(images) -> np.ndarray:
    """Single-channel images as float64 (N, H, W), from (N, 1, H, W), (N, H, W) or (H, W)."""
    a = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if a.ndim == 4:
        if a.shape[1] != 1:
            raise MetricError(f"SSIM and PSNR here take single-channel images, got {a.shape}")
        a = a[:, 0]
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise MetricError(f"images must be (N, 1, H, W), (N, H, W) or (H, W); got {a.shape}")
    return a.astype(np.float64)


def ssim(a, b) -> float:
    """SSIM of two images in [0, 1] (the first of each batch).

    >>> x = np.linspace(0, 1, 49).reshape(7, 7); ssim(x, x)
    1.0
    """
    return float(structural_similarity(as_images(a)[0], as_images(b)[0], data_range=1.0))


def psnr(a, b) -> float:
    """PSNR (dB) of two images in [0, 1]; +inf for identical images."""
    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(as_images(a)[0], as_images(b)[0], data_range=1.0))


def ssim_each(originals, reconstructions) -> np.ndarray:
    """SSIM of each original with the reconstruction at the same position."""
    o, r = as_images(originals), as_images(reconstructions)
    if o.shape != r.shape:
        raise MetricError(f"shapes differ: {o.shape} vs {r.shape}")
    return np.array([structural_similarity(p, q, data_range=1.0) for p, q in zip(o, r)])


def pairwise_ssim(originals, reconstructions) -> np.ndarray:
    """SSIM of every original (rows) against every reconstruction (columns)."""
    o, r = as_images(originals), as_images(reconstructions)
    if o.shape[1:] != r.shape[1:]:
        raise MetricError(f"image sizes differ: {o.shape[1:]} vs {r.shape[1:]}")
    return np.array([[structural_similarity(a, b, data_range=1.0) for b in r] for a in o])


def matched_scores(originals, reconstructions) -> dict:
    """Pair each original with a reconstruction (Hungarian assignment on SSIM), then score them.

    An attack on a batch cannot know the batch's order; this gives it the best pairing. Returns
    ``{"ssim", "psnr"}`` (means), per-image lists ``ssim_each`` / ``psnr_each`` and ``order`` (the
    reconstruction matched to each original).
    """
    o, r = as_images(originals), as_images(reconstructions)
    sim = pairwise_ssim(o, r)
    rows, cols = linear_sum_assignment(-sim)
    ss = [float(sim[i, j]) for i, j in zip(rows, cols)]
    with np.errstate(divide="ignore"):
        ps = [float(peak_signal_noise_ratio(o[i], r[j], data_range=1.0))
              for i, j in zip(rows, cols)]
    return {"ssim": float(np.mean(ss)), "psnr": float(np.mean(ps)), "ssim_each": ss,
            "psnr_each": ps, "order": [int(c) for c in cols]}


def best_match(reconstructions, candidates) -> dict:
    """For each reconstruction, its most similar image among ``candidates``.

    ``{"ssim"}`` is the mean over reconstructions of the best SSIM, ``"max"`` the single best and
    ``"index"`` the candidate each matched.
    """
    sim = pairwise_ssim(candidates, reconstructions)
    best = sim.max(axis=0)
    return {"ssim": float(best.mean()), "max": float(best.max()), "ssim_each": best.tolist(),
            "index": sim.argmax(axis=0).tolist()}
