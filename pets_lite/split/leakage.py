"""What the other party of split learning learns from the messages it receives.

* The server's **inversion** of the cut-layer activations (He et al., ACSAC 2019, with query
  access): a ridge decoder fitted on public images maps activations back to pixels; reconstructions
  are scored with SSIM (:mod:`pets_lite.metrics`). A linear decoder is a lower bound on what a
  deep decoder recovers.
* **Label leakage** from the returned gradients (Li et al., "Label Leakage and Protection in
  Two-party Split Learning", ICLR 2022): the party that does not compute the loss receives, for
  each example, the gradient of the loss with respect to what it sent. Its norm and its direction
  carry the label. :class:`GradientLog` records what that party can compute from them during
  training (:func:`pets_lite.split.train_split`'s ``on_gradient``); :func:`label_leakage` scores it.
* The dependence that **NoPeek** penalises, measured (:func:`activation_dcor`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import metrics
from . import Hospital, distance_correlation

#: Li et al.'s label scores: the gradient's norm, or its direction (cosine similarity with the
#: gradient of one example whose label the attacker knows).
LEAK_METHODS = ("norm", "cosine")


@torch.no_grad()
def query_activations(hospital: Hospital, images: torch.Tensor,
                      batch_size: int = 512) -> torch.Tensor:
    """What the hospital would send for ``images`` (its front layers, plus its noise if any)."""
    return torch.cat([hospital.activations(images[i:i + batch_size], train=False)
                      for i in range(0, len(images), batch_size)])


@torch.no_grad()
def activation_dcor(hospital: Hospital, images: torch.Tensor, batch_size: int = 100) -> float:
    """Mean distance correlation between ``images`` and what the hospital sends for them (noise
    included), over consecutive batches of ``batch_size``: the dependence NoPeek penalises,
    measured the same way with it on or off (the sample statistic depends on the batch size)."""
    if batch_size < 2 or len(images) < batch_size:
        raise ValueError(f"need batch_size >= 2 and at least batch_size images; got batch_size="
                         f"{batch_size} and {len(images)} images")
    acts = query_activations(hospital, images)
    return float(np.mean([float(distance_correlation(images[i:i + batch_size],
                                                     acts[i:i + batch_size]))
                          for i in range(0, len(images) - batch_size + 1, batch_size)]))


class RidgeInversion:
    """The server's inversion model: ridge regression from standardised activations to pixels.

    Closed form, so it trains in a second on two cores; the ridge strength is picked from
    ``alphas`` on a held-out fifth of the public pairs. A linear decoder is a lower bound on what a
    deep decoder (He et al. 2019) recovers.
    """

    def __init__(self, alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0), seed: int = 0):
        self.alphas, self.seed = alphas, seed

    def fit(self, acts: torch.Tensor, images: torch.Tensor) -> RidgeInversion:
        from sklearn.linear_model import Ridge

        if len(acts) != len(images) or len(acts) < 5:
            raise ValueError(f"need as many activations as images, at least 5; got {len(acts)} "
                             f"and {len(images)}")
        a = acts.reshape(len(acts), -1).double().numpy()
        self.mean, self.std = a.mean(0), a.std(0) + 1e-6
        a = (a - self.mean) / self.std
        x = images.reshape(len(images), -1).double().numpy()
        self.shape = tuple(images.shape[1:])
        order = np.random.default_rng(self.seed).permutation(len(a))
        hold, fit = order[: len(a) // 5], order[len(a) // 5:]
        scale = a.shape[1] / 100.0  # the penalty grows with the number of features
        errors = [np.mean((Ridge(alpha=al * scale).fit(a[fit], x[fit]).predict(a[hold])
                           - x[hold]) ** 2) for al in self.alphas]
        self.alpha = float(self.alphas[int(np.argmin(errors))])
        self.model = Ridge(alpha=self.alpha * scale).fit(a, x)
        return self

    def __call__(self, acts: torch.Tensor) -> torch.Tensor:
        a = (acts.reshape(len(acts), -1).double().numpy() - self.mean) / self.std
        out = np.clip(self.model.predict(a), 0.0, 1.0)
        return torch.from_numpy(out).float().reshape(len(acts), *self.shape)


def inversion_attack(hospital: Hospital, public: torch.Tensor, targets: torch.Tensor,
                     seed: int = 0) -> dict:
    """The server's attack: learn to invert the hospital's activations on ``public`` images, then
    reconstruct ``targets`` from their activations. Returns SSIM/MSE and the reconstructions;
    ``ssim_mean_image`` is the SSIM of guessing the mean public image (learning nothing)."""
    decoder = RidgeInversion(seed=seed).fit(query_activations(hospital, public), public)
    recons = decoder(query_activations(hospital, targets))
    scores = metrics.ssim_each(targets, recons)
    mean_image = public.mean(0, keepdim=True).expand_as(targets)
    return {"ssim": float(scores.mean()), "ssim_per_image": scores,
            "mse": float(nn.functional.mse_loss(recons, targets)),
            "ssim_mean_image": float(metrics.ssim_each(targets, mean_image).mean()),
            "recons": recons, "decoder": decoder}


class GradientLog:
    """What the party receiving the label party's gradients can compute from them, batch by batch
    (Li et al. 2022): each example's gradient norm and the cosine similarity of every pair in the
    batch (the raw gradients are not kept). Beside them, kept apart, the batch's true labels: the
    experimenter scores the attack with them; the scores never depend on them."""

    def __init__(self):
        self.norms: list[np.ndarray] = []
        self.cosines: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []

    def add(self, grad: torch.Tensor, labels: torch.Tensor) -> None:
        if len(grad) != len(labels):
            raise ValueError(f"{len(grad)} gradients but {len(labels)} labels")
        g = grad.detach().reshape(len(grad), -1).double()
        norms = g.norm(dim=1)
        unit = g / norms.clamp_min(1e-300)[:, None]
        self.norms.append(norms.numpy())
        self.cosines.append((unit @ unit.T).numpy())
        self.labels.append(labels.detach().numpy().copy())


def label_leakage(log: GradientLog, target: int, method: str = "norm") -> float:
    """Li et al.'s label-leakage AUC: the mean over batches of the ROC AUC with which a score
    computed from the returned gradients alone picks out the examples of class ``target``.

    ``"norm"``: each example's gradient norm, largest for the examples the model fits worst (under
    class imbalance, the minority class: choose it as ``target``). ``"cosine"``: the attacker knows
    the label of one example of ``target`` per batch (the first) and scores every other example by
    the cosine similarity of its gradient with that one's (which is left out). Batches in which the
    scored examples hold one class only (AUC undefined) are skipped.
    """
    if method not in LEAK_METHODS:
        raise ValueError(f"method must be one of {LEAK_METHODS}, got {method!r}")
    if not log.labels:
        raise ValueError("the gradient log is empty: pass its add method to "
                         "train_split(..., on_gradient=log.add)")
    aucs = []
    for norms, cosines, labels in zip(log.norms, log.cosines, log.labels):
        is_target = labels == target
        if method == "norm":
            scores, keep = norms, np.ones(len(labels), dtype=bool)
        elif is_target.any():
            ref = int(np.flatnonzero(is_target)[0])
            scores, keep = cosines[ref], np.arange(len(labels)) != ref
        else:
            continue
        auc = metrics.auc_score(is_target[keep].astype(int), scores[keep])
        if np.isfinite(auc):
            aucs.append(auc)
    if not aucs:
        raise ValueError(f"no logged batch holds examples of class {target} and of another class")
    return float(np.mean(aucs))
