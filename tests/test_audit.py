"""pets_lite.audit: the one-run audit on mechanisms with known epsilon (randomized response), its
ceiling, and audited training runs that memorise their canaries or never see them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from pets_lite import audit


def linear():
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 2))


def fit_to_zero_loss(model, dataset, steps=100):
    """Full-batch Adam: uniform-noise images in 784 dimensions are separable, so it memorises."""
    x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    y = torch.stack([torch.as_tensor(dataset[i][1]) for i in range(len(dataset))])
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return float("inf")


@pytest.mark.parametrize("eps", [0.5, 2.0])
def test_audit_of_randomized_response_is_calibrated(eps):
    """Randomized response is exactly eps-DP. At p = 0.05 the audited lower bound may exceed eps in
    at most ~5% of runs (that is what the confidence means), and should come close to eps."""
    bounds = []
    for seed in range(60):
        rng = np.random.default_rng(seed)
        m = 2000
        included = rng.random(m) < 0.5
        truthful = rng.random(m) < np.exp(eps) / (1 + np.exp(eps))
        scores = np.where(truthful == included, 1.0, -1.0) + rng.normal(0, 1e-3, m)
        bounds.append(audit.one_run_audit(scores, included, 500, 500, delta=0.0)["eps_lower"])
    bounds = np.array(bounds)
    assert (bounds > eps).mean() <= 0.1
    assert np.median(bounds) > 0.6 * eps


def test_audit_of_chance_guesses_is_zero_and_delta_only_lowers_the_bound():
    rng = np.random.default_rng(0)
    included = rng.random(1000) < 0.5
    assert audit.one_run_audit(rng.random(1000), included, 100, 100, 1e-5)["eps_lower"] < 0.5
    assert audit.audit_epsilon_lower_bound(1000, 200, 100, 1e-5) == 0.0
    assert audit.audit_epsilon_lower_bound(1000, 200, 170, 1e-3) \
        <= audit.audit_epsilon_lower_bound(1000, 200, 170, 0.0)


@pytest.mark.parametrize("args", [(10, 20, 5, 1.0, 0.0), (10, 5, 6, 1.0, 0.0), (10, 5, 3, -1, 0.0),
                                  (10, 5, 3, 1.0, 2.0)])
def test_audit_p_value_rejects_bad_input(args):
    with pytest.raises(ValueError):
        audit.audit_p_value(*args)


def test_audit_ceiling_is_all_guesses_correct():
    ceiling = audit.audit_ceiling(200, 40, 1e-5)
    assert ceiling == audit.audit_epsilon_lower_bound(200, 40, 40, 1e-5)
    assert 2.4 < ceiling < 2.7  # 20 + 20 guesses cannot certify epsilon = 8
    assert audit.audit_ceiling(2000, 1000, 1e-5) > 5


def test_canary_audit_of_a_memorising_and_of_a_blind_training_run():
    g = torch.Generator().manual_seed(0)
    canaries = TensorDataset(torch.rand(80, 1, 28, 28, generator=g),
                             torch.randint(0, 2, (80,), generator=g))
    included = np.random.default_rng(0).random(80) < 0.5
    base = TensorDataset(torch.rand(16, 1, 28, 28, generator=g), torch.randint(0, 2, (16,)))

    def blind(model, dataset):  # never looks at the data
        return 0.0

    seen = audit.canary_audit(linear, fit_to_zero_loss, base, canaries, included, 10, delta=1e-5)
    assert seen["canary_auc"] > 0.9 and seen["eps_lower"] > 0.5 and seen["upper"] == float("inf")
    assert seen["eps_lower"] <= seen["ceiling"]
    unseen = audit.canary_audit(linear, blind, base, canaries, included, 10, delta=1e-5)
    lo, hi = unseen["canary_auc_ci"]
    assert unseen["eps_lower"] == 0.0 and lo <= 0.5 <= hi


def test_canaries_have_random_labels_and_are_half_included():
    x = torch.rand(400, 1, 28, 28)
    y = torch.zeros(400, dtype=torch.long)  # one class: a rule-based canary label would be constant
    canaries, included = audit.make_canaries(TensorDataset(x, y), 300, seed=0)
    cx, cy = canaries[:]
    original = {tuple(row.flatten()[:5].tolist()) for row in x}
    assert all(tuple(r.flatten()[:5].tolist()) in original for r in cx)
    # labels independent of the images: both classes, about half each, whatever the true labels
    assert 100 < int(cy.sum()) < 200
    assert 100 < included.sum() < 200
    with pytest.raises(ValueError, match="canaries"):
        audit.make_canaries(TensorDataset(x, y), 401)
