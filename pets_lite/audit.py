"""Empirical privacy auditing in one training run (Steinke, Nasr and Jagielski, NeurIPS 2023).

The accountant of chapter 02 gives an *upper* bound on ε; an audit gives a *lower* bound: an auditor
inserts m canaries, each with probability 1/2, trains once, and guesses which were included. An
(ε, δ)-DP run cannot let it guess much better than randomized response, so many correct guesses
reject every small ε. The bound can never exceed the :func:`audit_ceiling` of the number of guesses
made, however leaky the run.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from . import config, metrics
from .attacks import auc_interval, logit_confidence


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


def audit_ceiling(m: int, r: int, delta: float, p: float = 0.05) -> float:
    """The largest ε that ``r`` guesses about ``m`` canaries can ever certify (all ``r`` correct):
    an audit of a run whose true ε is above this cannot show it, however leaky the run.

    >>> round(audit_ceiling(200, 40, 1e-5), 2)
    2.55
    """
    return audit_epsilon_lower_bound(m, r, r, delta, p)


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


def canary_audit(build, train_fn, base: Dataset, canaries: Dataset, included: np.ndarray,
                 guesses: int, delta: float, seed: int = 0, p: float = 0.05) -> dict:
    """One audited training run (Steinke, Nasr and Jagielski 2023) with black-box scoring.

    ``build()`` makes the model (under ``config.seeded(seed)``); ``train_fn(model, dataset)``
    trains it on ``base`` plus the canaries where ``included`` and returns the accountant's ε for
    the run (``inf`` without DP). Every canary is scored by the trained model's logit confidence in
    its label; the audit guesses "in" for the ``guesses`` highest and "out" for the ``guesses``
    lowest (fixed in advance). Returns the accountant's ``upper`` bound, the audit's result
    (:func:`one_run_audit`), the ``ceiling`` that many guesses can ever certify, and the ROC
    ``canary_auc`` of the scores for inclusion with its interval (:func:`auc_interval`).
    """
    from torch.utils.data import ConcatDataset, Subset

    included = np.asarray(included, bool)
    if len(included) != len(canaries):
        raise ValueError(f"{len(canaries)} canaries but {len(included)} inclusion draws")
    with config.seeded(seed):
        model = build()
    inserted = Subset(canaries, np.flatnonzero(included).tolist())
    upper = float(train_fn(model, ConcatDataset([base, inserted])))
    score = logit_confidence(model, canaries)
    out = one_run_audit(score, included, guesses, guesses, delta=delta, p=p)
    auc = metrics.auc_score(included, score)
    out.update(upper=upper, ceiling=audit_ceiling(len(included), 2 * guesses, delta, p),
               canary_auc=auc, canary_auc_ci=auc_interval(auc, int(included.sum()),
                                                          int((~included).sum())))
    return out
