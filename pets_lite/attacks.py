"""Privacy attacks that measure what a model leaks about its training data.

Membership inference (loss threshold, LiRA) and empirical auditing of DP training with canaries.
Gradient inversion of federated updates lives in :mod:`pets_lite.inversion`.

This module starts with the simplest membership-inference attack, the loss threshold of Yeom et al.
(CSF 2018): training examples tend to have lower loss than unseen ones, so ``-loss`` is a membership
score. Its ROC AUC is 0.5 for a model that leaks nothing through its losses.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn
from torch.utils.data import Dataset

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

    With ``balance`` the larger of the two sets is subsampled (seeded) to the size of the smaller, so
    the AUC is not driven by class imbalance between members and non-members.
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
    return {"auc": float(roc_auc_score(truth, score)), "advantage": float(np.max(tpr - fpr)),
            "fpr": fpr, "tpr": tpr, "member_loss": member_loss, "nonmember_loss": nonmember_loss}


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
                online: bool = True, fixed_variance: bool = True) -> np.ndarray:
    """Membership scores of one target model's examples (higher = more likely a member).

    ``shadow_conf`` and ``shadow_in`` are (K, N): each shadow model's confidence on each example
    and whether the example was in its training set. Online LiRA compares the target's confidence
    with Gaussians fitted to the IN and OUT shadows; offline LiRA uses only the OUT shadows (a
    one-sided test), so it needs no model trained on the example. With ``fixed_variance`` one
    variance is pooled over all examples, as the paper recommends when there are few shadows.
    """
    from scipy.stats import norm

    target_conf = np.asarray(target_conf, float)
    shadow_conf = np.asarray(shadow_conf, float)
    shadow_in = np.asarray(shadow_in, bool)
    if shadow_conf.shape != shadow_in.shape or shadow_conf.shape[1] != target_conf.shape[0]:
        raise ValueError(f"shapes disagree: target {target_conf.shape}, shadows {shadow_conf.shape}, "
                         f"membership {shadow_in.shape}")

    def stats(mask):
        count = mask.sum(0)
        if (count == 0).any():
            raise ValueError("some example has no shadow model on this side: train more shadows")
        mean = (shadow_conf * mask).sum(0) / count
        var = (((shadow_conf - mean) ** 2) * mask).sum(0) / np.maximum(count - 1, 1)
        std = np.sqrt(np.full_like(mean, var.mean()) if fixed_variance else var) + 1e-6
        return mean, std

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


def lira_leave_one_out(confs: np.ndarray, in_mask: np.ndarray, online: bool = True):
    """Attack each of K models in turn with the other K-1 as shadows.

    Returns ``(scores, labels)``, both (K, N): every (model, example) pair is one membership trial,
    which is how Carlini et al. measure TPR at very low FPR with a few thousand examples.
    """
    confs, in_mask = np.asarray(confs), np.asarray(in_mask, bool)
    k = len(confs)
    scores = np.stack([lira_scores(confs[i], np.delete(confs, i, 0), np.delete(in_mask, i, 0),
                                   online=online) for i in range(k)])
    return scores, in_mask.copy()


def clopper_pearson(successes: int, trials: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact two-sided (1 - alpha) confidence interval of a binomial proportion."""
    from scipy.stats import beta

    lo = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    hi = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1,
                                                        trials - successes))
    return lo, hi


def roc_report(scores: np.ndarray, labels: np.ndarray, fprs=(0.001, 0.01)) -> dict:
    """ROC AUC, and TPR at each target FPR with a Clopper-Pearson 95% interval.

    The threshold for a target FPR is the score that at most that fraction of non-members exceed;
    the interval is over the members' count above it, so it says whether a TPR is distinguishable
    from the FPR (chance) with the number of trials we have.
    """
    scores = np.asarray(scores, float).ravel()
    labels = np.asarray(labels, bool).ravel()
    if labels.all() or not labels.any():
        raise ValueError("need both members and non-members to compute an ROC")
    fpr, tpr, _ = roc_curve(labels, scores)
    out = {"auc": float(roc_auc_score(labels, scores)), "fpr": fpr, "tpr": tpr,
           "n_members": int(labels.sum()), "n_nonmembers": int((~labels).sum())}
    member, nonmember = np.sort(scores[labels]), np.sort(scores[~labels])
    for target in fprs:
        allowed = int(np.floor(target * len(nonmember)))
        threshold = nonmember[len(nonmember) - allowed - 1] if allowed < len(nonmember) else -np.inf
        hits = int((member > threshold).sum())
        out[f"tpr@{target:g}"] = hits / len(member)
        out[f"tpr@{target:g}_ci"] = clopper_pearson(hits, len(member))
        out[f"fpr@{target:g}"] = int((nonmember > threshold).sum()) / len(nonmember)
    return out


# ---------------------------------------------------------------------------------------------
# Empirical privacy auditing in one training run (Steinke, Nasr and Jagielski, NeurIPS 2023)
# ---------------------------------------------------------------------------------------------

def audit_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """P[at least ``v`` of ``r`` guesses correct] for an (eps, delta)-DP algorithm.

    ``m`` canaries are each included independently with probability 1/2; the auditor guesses the
    inclusion of ``r`` of them. For eps-DP the number correct is dominated by Binomial(r, q) with
    q = e^eps / (1 + e^eps) (the accuracy of randomized response); delta adds the correction term
    of the paper's Theorem 5.2 (its Appendix D gives the computation implemented here).
    """
    from scipy.stats import binom

    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if eps < 0 or not 0 <= delta <= 1:
        raise ValueError(f"need eps >= 0 and 0 <= delta <= 1, got eps={eps}, delta={delta}")
    q = 1.0 / (1.0 + np.exp(-eps))
    tail = float(binom.sf(v - 1, r, q))
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    pmf = binom.pmf(v - np.arange(1, v + 1), r, q)  # P[Bin = v-1], P[Bin = v-2], ...
    alpha = float(np.max(np.cumsum(pmf) / np.arange(1, v + 1)))
    return min(tail + alpha * delta * 2 * m, 1.0)


def audit_epsilon_lower_bound(m: int, r: int, v: int, delta: float, p: float = 0.05) -> float:
    """The largest eps that the observed ``v`` correct of ``r`` guesses rejects at level ``p``.

    With confidence 1 - p the training algorithm is not (eps, delta)-DP for any smaller eps; 0 when
    the guesses are no better than chance allows.
    """
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if audit_p_value(m, r, v, 0.0, delta) >= p:
        return 0.0
    lo, hi = 0.0, 1.0
    while audit_p_value(m, r, v, hi, delta) < p:
        lo, hi = hi, hi * 2
        if hi > 1e3:
            return float("inf")
    for _ in range(50):
        mid = (lo + hi) / 2
        if audit_p_value(m, r, v, mid, delta) < p:
            lo = mid
        else:
            hi = mid
    return lo


def one_run_audit(scores: np.ndarray, included: np.ndarray, k_pos: int, k_neg: int,
                  delta: float, p: float = 0.05) -> dict:
    """Guess "in" for the ``k_pos`` highest-scoring canaries, "out" for the ``k_neg`` lowest,
    abstain on the rest; return the guesses' accuracy and the eps lower bound they certify.

    ``k_pos`` and ``k_neg`` must be fixed before looking at the scores: choosing them afterwards to
    maximise the bound would void its confidence.
    """
    scores = np.asarray(scores, float)
    included = np.asarray(included, bool)
    m = len(scores)
    if k_pos < 0 or k_neg < 0 or k_pos + k_neg > m or k_pos + k_neg == 0:
        raise ValueError(f"need k_pos, k_neg >= 0 and 0 < k_pos + k_neg <= {m}")
    order = np.argsort(scores)
    correct = int(included[order[m - k_pos:]].sum() if k_pos else 0) \
        + int((~included[order[:k_neg]]).sum())
    r = k_pos + k_neg
    return {"m": m, "guesses": r, "correct": correct, "accuracy": correct / r,
            "eps_lower": audit_epsilon_lower_bound(m, r, correct, delta, p), "p": p}


def make_canaries(dataset: Dataset, m: int, n_classes: int = 2, seed: int = 0):
    """``m`` randomly labelled canaries drawn from ``dataset``, each included with probability 1/2.

    Returns ``(canaries, included)``: a TensorDataset whose labels are drawn uniformly at random,
    independently of the images, and the boolean inclusion draw. Insert ``canaries`` where
    ``included`` into the training set. Random labels follow no rule a model could learn, so it can
    fit them only by memorising each canary; a "shifted" wrong label would not do for two classes
    (it is a flip, a rule the model learns from the included canaries and applies to the others).
    """
    from torch.utils.data import TensorDataset

    x, _ = dataset[:]
    if m > len(x):
        raise ValueError(f"asked for {m} canaries from {len(x)} examples")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(x), m, replace=False)
    labels = torch.from_numpy(rng.integers(0, n_classes, m)).long()
    return TensorDataset(x[pick].clone(), labels), rng.random(m) < 0.5


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

    from . import config
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
