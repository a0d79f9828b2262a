"""Privacy attacks that measure what a model leaks about its training data.

Membership inference: the loss threshold and LiRA, with the intervals that say when a result is
indistinguishable from chance. Auditing DP training with canaries lives in :mod:`pets_lite.audit`,
gradient inversion of federated updates in :mod:`pets_lite.inversion`.

This module starts with the simplest membership-inference attack, the loss threshold of Yeom et al.
(CSF 2018): training examples tend to have lower loss than unseen ones, so ``-loss`` is a membership
score. Its ROC AUC is 0.5 for a model that leaks nothing through its losses.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_curve
from torch import nn
from torch.utils.data import Dataset

from . import config, metrics
from .train import loader


@torch.no_grad()
def per_example_loss(model: nn.Module, dataset: Dataset, batch_size: int = 512) -> np.ndarray:
    """Cross-entropy loss of every example, in dataset order."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    losses = []
    for x, y in loader(dataset, batch_size):
        logits = model(x.to(device))
        losses.append(nn.functional.cross_entropy(logits, y.to(device), reduction="none").cpu())
    model.train(was_training)
    return torch.cat(losses).numpy()


def loss_threshold_attack(model: nn.Module, members: Dataset, nonmembers: Dataset,
                          balance: bool = True, seed: int = 0) -> dict:
    """Yeom et al.'s attack: score ``-loss``; report ROC AUC, best advantage (TPR - FPR) and losses.

    With ``balance`` the larger of the two sets is subsampled (seeded) to the size of the smaller,
    so the AUC is not driven by class imbalance between members and non-members.
    """
    member_loss = per_example_loss(model, members)
    nonmember_loss = per_example_loss(model, nonmembers)
    if balance:
        rng = np.random.default_rng(seed)
        n = min(len(member_loss), len(nonmember_loss))
        member_loss = rng.choice(member_loss, n, replace=False)
        nonmember_loss = rng.choice(nonmember_loss, n, replace=False)
    truth = np.r_[np.ones(len(member_loss)), np.zeros(len(nonmember_loss))]
    score = -np.r_[member_loss, nonmember_loss]
    fpr, tpr, _ = roc_curve(truth, score)
    lo, hi = auc_interval(metrics.auc_score(truth, score), len(member_loss), len(nonmember_loss))
    return {"auc": metrics.auc_score(truth, score), "auc_ci": (lo, hi),
            "advantage": float(np.max(tpr - fpr)), "fpr": fpr, "tpr": tpr,
            "member_loss": member_loss, "nonmember_loss": nonmember_loss}


def auc_interval(auc: float, n_pos: int, n_neg: int, z: float = 1.96) -> tuple[float, float]:
    """An approximate 95% confidence interval of an ROC AUC from ``n_pos`` positives and ``n_neg``
    negatives (the standard error of Hanley and McNeil, Radiology 1982), clipped to [0, 1]. An
    interval that contains 0.5 says the attack cannot be told from a coin with these trials.

    >>> lo, hi = auc_interval(0.5, 300, 300); round(hi - 0.5, 3)
    0.046
    """
    if n_pos < 1 or n_neg < 1 or not 0 <= auc <= 1:
        raise ValueError(f"need n_pos, n_neg >= 1 and 0 <= auc <= 1, got {n_pos}, {n_neg}, {auc}")
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) \
        / (n_pos * n_neg)
    half = z * float(np.sqrt(max(var, 0.0)))
    return max(0.0, auc - half), min(1.0, auc + half)


def memorisation_control(members: torch.Tensor, nonmembers: torch.Tensor, steps: int = 300,
                         hidden: int = 256, seed: int = 0) -> dict:
    """The attack's positive control: a model that can fit its training set only by memorising
    it. The images ``members`` and ``nonmembers`` get labels drawn at random (seeded), an MLP
    is trained on the members to low loss (full-batch Adam, ``steps`` steps), and
    :func:`loss_threshold_attack` runs against it. A correct attack finds its members well above
    chance; a broken one (a flipped sign, scores unrelated to the losses) does not. Returns the
    attack's result with the model's final ``train_loss``."""
    from torch.utils.data import TensorDataset

    g = torch.Generator().manual_seed(config.derive_seed(seed, "control labels"))
    xm, xn = torch.as_tensor(members), torch.as_tensor(nonmembers)
    ym = torch.randint(0, 2, (len(xm),), generator=g)
    yn = torch.randint(0, 2, (len(xn),), generator=g)
    with config.seeded(seed):
        model = nn.Sequential(nn.Flatten(), nn.Linear(xm[0].numel(), hidden), nn.ReLU(),
                              nn.Linear(hidden, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(xm), ym)
        loss.backward()
        optimizer.step()
    result = loss_threshold_attack(model, TensorDataset(xm, ym), TensorDataset(xn, yn), seed=seed)
    result["train_loss"] = float(loss.detach())
    return result


# ---------------------------------------------------------------------------------------------
# LiRA: the likelihood-ratio membership attack of Carlini et al. (S&P 2022)
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def logit_confidence(model: nn.Module, dataset: Dataset, batch_size: int = 512) -> np.ndarray:
    """LiRA's per-example statistic: phi = log p_y - log(1 - p_y), computed stably from logits.

    Carlini et al. use this logit-scaled confidence because, unlike the loss or the raw
    probability, it is close to Gaussian across models trained with or without the example.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for x, y in loader(dataset, batch_size):
        z = model(x.to(device)).double()
        y = y.to(device)
        true = z.gather(1, y[:, None])[:, 0]
        others = z.scatter(1, y[:, None], float("-inf"))
        out.append((true - torch.logsumexp(others, dim=1)).cpu())
    model.train(was_training)
    return torch.cat(out).numpy()


def candidate_pool(members: Dataset, nonmembers: Dataset, n_members: int, n_nonmembers: int,
                   seed: int = 0):
    """LiRA's candidate pool: ``n_members`` images drawn at random (seeded) from ``members`` (a
    target's training split) and ``n_nonmembers`` from ``nonmembers``. Returns ``(pool,
    is_member, unused)``: the pool (a TensorDataset, members first), which of its images come from
    ``members``, and the indices of the ``members`` images not drawn (for other experiments)."""
    from torch.utils.data import TensorDataset

    rng = np.random.default_rng(seed)
    xm, ym = members[:]
    xn, yn = nonmembers[:]
    if n_members > len(xm) or n_nonmembers > len(xn):
        raise ValueError(f"asked for {n_members} + {n_nonmembers} candidates from {len(xm)} + "
                         f"{len(xn)} images")
    order = rng.permutation(len(xm))
    pick_m = torch.from_numpy(order[:n_members])
    pick_n = torch.from_numpy(rng.permutation(len(xn))[:n_nonmembers])
    pool = TensorDataset(torch.cat([xm[pick_m], xn[pick_n]]), torch.cat([ym[pick_m], yn[pick_n]]))
    is_member = np.r_[np.ones(n_members, bool), np.zeros(n_nonmembers, bool)]
    return pool, is_member, order[n_members:]


def half_membership(n_models: int, n_examples: int, seed: int = 0) -> np.ndarray:
    """A (K, N) boolean design in which every example is in exactly half of the K models.

    >>> m = half_membership(4, 10); m.shape, set(m.sum(0).tolist())
    ((4, 10), {2})
    """
    if n_models < 2 or n_models % 2:
        raise ValueError(f"LiRA needs an even number of models >= 2, got {n_models}")
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((n_models, n_examples)), axis=0)
    return order < n_models // 2


def lira_scores(target_conf: np.ndarray, shadow_conf: np.ndarray, shadow_in: np.ndarray,
                online: bool = True, fixed_variance: bool = True,
                use: np.ndarray | None = None) -> np.ndarray:
    """Membership scores of one target model's examples (higher = more likely a member).

    ``shadow_conf`` and ``shadow_in`` are (K, N): each shadow model's confidence on each example
    and whether the example was in its training set. Online LiRA compares the target's confidence
    with Gaussians fitted to the IN and OUT shadows; offline LiRA uses only the OUT shadows (a
    one-sided test), so it needs no model trained on the example. With ``fixed_variance`` one
    variance is pooled over all examples, as the paper recommends when there are few shadows
    (a pooled variance does not change the ranking, so it cannot change the ROC). ``use`` (K, N),
    when given, says which shadows enter each example's fits (:func:`balanced_shadows`).
    """
    from scipy.stats import norm

    target_conf = np.asarray(target_conf, float)
    shadow_conf = np.asarray(shadow_conf, float)
    shadow_in = np.asarray(shadow_in, bool)
    use = np.ones_like(shadow_in) if use is None else np.asarray(use, bool)
    if (shadow_conf.shape != shadow_in.shape or use.shape != shadow_in.shape
            or shadow_conf.shape[1] != target_conf.shape[0]):
        raise ValueError(f"shapes disagree: target {target_conf.shape}, shadows "
                         f"{shadow_conf.shape}, membership {shadow_in.shape}, use {use.shape}")

    def stats(side):
        mask = side & use
        count = mask.sum(0)
        if (count == 0).any():
            raise ValueError("some example has no shadow model on this side: train more shadows")
        mean = (shadow_conf * mask).sum(0) / count
        squares = (((shadow_conf - mean) ** 2) * mask).sum(0)
        if fixed_variance:
            dof = int(np.maximum(count - 1, 0).sum())
            std = np.full_like(mean, np.sqrt(squares.sum() / dof) if dof else 1.0)
        else:
            std = np.sqrt(squares / np.maximum(count - 1, 1))
        return mean, std + 1e-6

    mu_out, sd_out = stats(~shadow_in)
    if not online:
        return norm.logcdf(target_conf, mu_out, sd_out)
    mu_in, sd_in = stats(shadow_in)
    return norm.logpdf(target_conf, mu_in, sd_in) - norm.logpdf(target_conf, mu_out, sd_out)


def center_per_model(confs: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """Subtract each model's mean confidence over the pool (per class when ``labels`` are given).

    Models of one recipe differ by a global shift (one is more confident about "pneumonia" than
    another); with few shadows that shift, not membership, can dominate the Gaussian fits. The
    attacker sees the target's confidences on the whole pool, so removing the shift is a legitimate
    calibration (in the spirit of Watson et al.'s difficulty calibration).
    """
    confs = np.array(confs, float, copy=True)
    if labels is None:
        return confs - confs.mean(axis=1, keepdims=True)
    labels = np.asarray(labels)
    for c in np.unique(labels):
        cols = labels == c
        confs[:, cols] -= confs[:, cols].mean(axis=1, keepdims=True)
    return confs


def balanced_shadows(shadow_in: np.ndarray, seed: int = 0) -> np.ndarray:
    """Which shadows to use for each example so that it has as many IN as OUT shadows: the surplus
    of the larger side is left out, chosen at random (seeded), independently of any target.

    Leave-one-out over a design in which every example is IN for exactly half of the K models
    needs this: a target that trained on an example leaves K/2 - 1 IN shadows and K/2 OUT, a
    target that did not leaves K/2 and K/2 - 1. The side with fewer shadows has the noisier mean,
    and online LiRA then scores members *lower* than non-members of a model that leaks nothing
    (ROC AUC about 0.41 with K = 4, 0.48 with K = 8). With equal counts on both sides the score of
    a non-leaking model has the same law for members and non-members.

    >>> balanced_shadows(np.array([[1, 0], [1, 1], [0, 1]], bool)).sum(0).tolist()
    [2, 2]
    """
    shadow_in = np.asarray(shadow_in, bool)
    rank = np.random.default_rng(seed).random(shadow_in.shape)
    use = np.ones_like(shadow_in)
    surplus = shadow_in.sum(0) - (~shadow_in).sum(0)
    for j in np.flatnonzero(surplus):
        side = shadow_in[:, j] if surplus[j] > 0 else ~shadow_in[:, j]
        candidates = np.flatnonzero(side)
        use[candidates[np.argsort(rank[candidates, j])[:abs(surplus[j])]], j] = False
    return use


def lira_leave_one_out(confs: np.ndarray, in_mask: np.ndarray, online: bool = True,
                       seed: int = 0):
    """Attack each of K models in turn with the other K-1 as shadows, each example's fits on equal
    numbers of IN and OUT shadows (:func:`balanced_shadows`).

    Returns ``(scores, labels)``, both (K, N): every (model, example) pair is one membership trial,
    which is how Carlini et al. measure TPR at very low FPR with a few thousand examples.
    """
    confs, in_mask = np.asarray(confs), np.asarray(in_mask, bool)
    scores = []
    for i in range(len(confs)):
        shadow_in = np.delete(in_mask, i, 0)
        use = balanced_shadows(shadow_in, config.derive_seed(seed, "balanced shadows", i))
        scores.append(lira_scores(confs[i], np.delete(confs, i, 0), shadow_in, online=online,
                                  use=use))
    return np.stack(scores), in_mask.copy()


def lira_report(confs: np.ndarray, design: np.ndarray, labels: np.ndarray | None = None,
                online: bool = True, seed: int = 0) -> dict:
    """LiRA against a training recipe: ``confs`` (K, N) of K models trained on halves of a pool by
    ``design`` (K, N), each model's confidences centred (per class with ``labels``,
    :func:`center_per_model`), attacked in turn with the others as balanced shadows
    (:func:`lira_leave_one_out`). Returns :func:`roc_report` with ``auc_ci`` and the trials'
    ``scores`` and ``labels``."""
    scores, truth = lira_leave_one_out(center_per_model(confs, labels), design, online=online,
                                       seed=seed)
    report = roc_report(scores, truth)
    report["auc_ci"] = auc_interval(report["auc"], report["n_members"], report["n_nonmembers"])
    report.update(scores=scores, labels=truth)
    return report


def offline_lira(model: nn.Module, pool: Dataset, shadow_confs: np.ndarray, design: np.ndarray,
                 members: np.ndarray, labels: np.ndarray | None = None) -> dict:
    """Offline LiRA against one trained ``model``: its confidences on ``pool``, centred like the
    shadows', scored against the OUT shadows (``shadow_confs`` and ``design``, (K, N));
    ``members`` says which pool images the model trained on. :func:`roc_report` with ``auc_ci``."""
    phi = center_per_model(logit_confidence(model, pool)[None], labels)[0]
    scores = lira_scores(phi, center_per_model(shadow_confs, labels), design, online=False)
    report = roc_report(scores, members)
    report["auc_ci"] = auc_interval(report["auc"], report["n_members"], report["n_nonmembers"])
    return report


def verdict(lo: float, hi: float, chance) -> str:
    """What an interval ``[lo, hi]`` of an attack's rate says against the rate of a coin:
    ``chance`` is a number (0.5 for an AUC) or the interval of the false-positive rate the
    threshold achieved (a coin's true-positive rate equals its false-positive rate, and that rate
    is itself measured on a finite set of non-members).

    >>> verdict(0.004, 0.02, 0.01), verdict(0.03, 0.08, 0.01), verdict(0.011, 0.04, (0.003, 0.025))
    ('indistinguishable from chance', 'above chance', 'indistinguishable from chance')
    """
    low, high = (chance, chance) if np.isscalar(chance) else (min(chance), max(chance))
    if lo > high:
        return "above chance"
    return "indistinguishable from chance" if hi >= low else "below chance"


def clopper_pearson(successes: int, trials: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact two-sided (1 - alpha) confidence interval of a binomial proportion."""
    from scipy.stats import beta

    lo = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    hi = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1,
                                                        trials - successes))
    return lo, hi


def roc_report(scores: np.ndarray, labels: np.ndarray, fprs=(0.001, 0.01)) -> dict:
    """ROC AUC, and TPR at each target FPR with a Clopper-Pearson 95% interval (and the interval
    of the FPR the threshold achieved).

    The threshold for a target FPR is the score that at most that fraction of non-members exceed;
    the TPR's interval is over the members' count above it, the FPR's over the non-members'.
    A TPR is distinguishable from chance (a coin's TPR is its FPR) with the trials we have when
    the two intervals do not overlap (:func:`verdict`). The trials of a leave-one-out attack are
    not independent, so the intervals are, if anything, too narrow.
    """
    scores = np.asarray(scores, float).ravel()
    labels = np.asarray(labels, bool).ravel()
    if labels.all() or not labels.any():
        raise ValueError("need both members and non-members to compute an ROC")
    fpr, tpr, _ = roc_curve(labels, scores)
    out = {"auc": metrics.auc_score(labels, scores), "fpr": fpr, "tpr": tpr,
           "n_members": int(labels.sum()), "n_nonmembers": int((~labels).sum())}
    member, nonmember = np.sort(scores[labels]), np.sort(scores[~labels])
    for target in fprs:
        allowed = int(np.floor(target * len(nonmember)))
        threshold = nonmember[len(nonmember) - allowed - 1] if allowed < len(nonmember) else -np.inf
        hits = int((member > threshold).sum())
        out[f"tpr@{target:g}"] = hits / len(member)
        out[f"tpr@{target:g}_ci"] = clopper_pearson(hits, len(member))
        false = int((nonmember > threshold).sum())
        out[f"fpr@{target:g}"] = false / len(nonmember)
        out[f"fpr@{target:g}_ci"] = clopper_pearson(false, len(nonmember))
    return out


def lira_models(name: str, recipe, pool: Dataset, k: int, build, train_fn, seed: int = 0,
                progress: bool = True, **key) -> tuple[np.ndarray, np.ndarray]:
    """Train ``k`` models of one training recipe, each on a random half of ``pool``; return their
    confidences on the whole pool (K, N) and the membership design (K, N).

    ``train_fn(model, subset)`` trains a fresh ``build()`` model in place and returns a JSON-able
    dict. Model i is built under its own seed, ``derive_seed(recipe.seed, "lira model", i)``, and
    goes through the model cache, keyed by that recipe (a :class:`pets_lite.recipes.Recipe`),
    ``k``, its index, the design seed, the pool's size and any ``key`` material (e.g. how the pool
    was drawn), so a notebook run twice, or two chapters sharing a recipe, train it once.
    """
    from torch.utils.data import TensorDataset

    from .recipes import cached_model

    tensors = pool.tensors if hasattr(pool, "tensors") else pool[:]
    in_mask = half_membership(k, len(tensors[0]), seed)
    confs = []
    for i in config.progress(range(k), desc=f"LiRA models: {name}", disable=not progress):
        idx = torch.from_numpy(np.flatnonzero(in_mask[i]))
        subset = TensorDataset(*(t[idx] for t in tensors))
        model_recipe = recipe.replace(seed=config.derive_seed(recipe.seed, "lira model", i))
        model, _, _ = cached_model(f"lira-{name}", model_recipe, build,
                                   lambda m, s=subset: train_fn(m, s), k=k, index=i,
                                   design_seed=seed, pool=len(tensors[0]), **key)
        confs.append(logit_confidence(model, pool))
    return np.stack(confs), in_mask
