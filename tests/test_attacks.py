"""Attack code on cases with known answers: memorised data is caught, unseen data gives chance,
and an audit never certifies more than a mechanism's true epsilon."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from pets_lite import attacks

N, K = 64, 8


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 64), nn.ReLU(), nn.Linear(64, 2))


def fit_memorise(model, x, y, steps=150):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


@pytest.fixture(scope="module")
def noise_data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(N, 1, 28, 28, generator=g)
    y = torch.randint(0, 2, (N,), generator=g)  # random labels: fitting them means memorising
    return TensorDataset(x, y)


def confidences(data, in_mask, train_on_target: bool):
    confs = []
    for k in range(len(in_mask)):
        torch.manual_seed(k)
        x, y = data[:]
        if train_on_target:
            idx = torch.from_numpy(np.flatnonzero(in_mask[k]))
            model = fit_memorise(mlp(), x[idx], y[idx])
        else:  # trained on other data of the same kind: never saw the targets
            g = torch.Generator().manual_seed(100 + k)
            model = fit_memorise(mlp(), torch.rand(N // 2, 1, 28, 28, generator=g),
                                 torch.randint(0, 2, (N // 2,), generator=g))
        confs.append(attacks.logit_confidence(model, data))
    return np.stack(confs)


def test_lira_catches_memorised_examples(noise_data):
    in_mask = attacks.half_membership(K, N, seed=0)
    scores, labels = attacks.lira_leave_one_out(confidences(noise_data, in_mask, True), in_mask)
    report = attacks.roc_report(scores, labels)
    assert report["auc"] > 0.8
    assert report["tpr@0.01"] > 0.1, "memorised examples must be caught at a low false-positive rate"
    offline = attacks.roc_report(*attacks.lira_leave_one_out(
        confidences(noise_data, in_mask, True), in_mask, online=False))
    assert offline["auc"] > 0.7


def test_lira_gives_chance_on_a_model_that_never_saw_the_data(noise_data):
    in_mask = attacks.half_membership(K, N, seed=1)
    scores, labels = attacks.lira_leave_one_out(confidences(noise_data, in_mask, False), in_mask)
    report = attacks.roc_report(scores, labels)
    assert abs(report["auc"] - 0.5) < 0.12
    lo, hi = report["tpr@0.01_ci"]
    assert lo <= max(report["fpr@0.01"], 0.01) <= hi or report["tpr@0.01"] < 0.1


def test_loss_threshold_attack_known_answers(noise_data):
    x, y = noise_data[:]
    members, nonmembers = TensorDataset(x[:32], y[:32]), TensorDataset(x[32:], y[32:])
    torch.manual_seed(0)
    memoriser = fit_memorise(mlp(), x[:32], y[:32])
    assert attacks.loss_threshold_attack(memoriser, members, nonmembers)["auc"] > 0.95
    stranger = fit_memorise(mlp(), torch.rand(32, 1, 28, 28), torch.randint(0, 2, (32,)))
    assert abs(attacks.loss_threshold_attack(stranger, members, nonmembers)["auc"] - 0.5) < 0.2


def test_half_membership_design():
    m = attacks.half_membership(8, 100, seed=3)
    assert (m.sum(0) == 4).all() and not (m == attacks.half_membership(8, 100, seed=4)).all()
    with pytest.raises(ValueError, match="even number"):
        attacks.half_membership(3, 10)


def test_roc_report_interval_and_errors():
    rng = np.random.default_rng(0)
    labels = rng.random(20000) < 0.5
    report = attacks.roc_report(rng.random(20000), labels)
    lo, hi = report["tpr@0.001_ci"]
    assert lo <= 0.001 <= hi, "a random score must be indistinguishable from chance"
    with pytest.raises(ValueError, match="both members and non-members"):
        attacks.roc_report(np.ones(3), np.ones(3, bool))
    assert attacks.clopper_pearson(0, 10)[0] == 0 and attacks.clopper_pearson(10, 10)[1] == 1


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
        bounds.append(attacks.one_run_audit(scores, included, 500, 500, delta=0.0)["eps_lower"])
    bounds = np.array(bounds)
    assert (bounds > eps).mean() <= 0.1
    assert np.median(bounds) > 0.6 * eps


def test_audit_of_chance_guesses_is_zero_and_delta_only_lowers_the_bound():
    rng = np.random.default_rng(0)
    included = rng.random(1000) < 0.5
    assert attacks.one_run_audit(rng.random(1000), included, 100, 100, 1e-5)["eps_lower"] < 0.5
    assert attacks.audit_epsilon_lower_bound(1000, 200, 100, 1e-5) == 0.0
    assert attacks.audit_epsilon_lower_bound(1000, 200, 170, 1e-3) \
        <= attacks.audit_epsilon_lower_bound(1000, 200, 170, 0.0)


@pytest.mark.parametrize("args", [(10, 20, 5, 1.0, 0.0), (10, 5, 6, 1.0, 0.0), (10, 5, 3, -1, 0.0),
                                  (10, 5, 3, 1.0, 2.0)])
def test_audit_p_value_rejects_bad_input(args):
    with pytest.raises(ValueError):
        attacks.audit_p_value(*args)


def test_canaries_have_random_labels_and_are_half_included():
    x = torch.rand(400, 1, 28, 28)
    y = torch.zeros(400, dtype=torch.long)  # one class: a rule-based canary label would be constant
    canaries, included = attacks.make_canaries(TensorDataset(x, y), 300, seed=0)
    cx, cy = canaries[:]
    original = {tuple(row.flatten()[:5].tolist()) for row in x}
    assert all(tuple(r.flatten()[:5].tolist()) in original for r in cx)
    # labels independent of the images: both classes, about half each, whatever the true labels
    assert 100 < int(cy.sum()) < 200
    assert 100 < included.sum() < 200
    with pytest.raises(ValueError, match="canaries"):
        attacks.make_canaries(TensorDataset(x, y), 401)
