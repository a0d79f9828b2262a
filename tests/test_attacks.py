"""Attack code on cases with known answers: memorised data is caught, unseen data gives chance,
intervals cover chance for random scores."""

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
    assert report["tpr@0.01"] > 0.1, "memorised examples must be caught at a low FPR"
    offline = attacks.roc_report(*attacks.lira_leave_one_out(
        confidences(noise_data, in_mask, True), in_mask, online=False))
    assert offline["auc"] > 0.7


def test_lira_is_at_chance_on_models_that_leak_nothing():
    """Confidences that do not depend on membership at all: online LiRA must sit at AUC 0.5 with
    four models, as with sixteen. (Leave-one-out over an exactly-half design, with all the other
    models as shadows, scores members below non-members here: about 0.41 with K = 4.)"""
    rng = np.random.default_rng(0)
    for k in (4, 8):
        aucs = []
        for rep in range(12):
            design = attacks.half_membership(k, 200, seed=rep)
            confs = rng.normal(0, 2, 200)[None] + rng.normal(0, 1, (k, 200))
            aucs.append(attacks.roc_report(*attacks.lira_leave_one_out(confs, design))["auc"])
        assert abs(np.mean(aucs) - 0.5) < 0.02, (k, np.mean(aucs))
        with_signal = confs + 1.0 * design
        assert attacks.roc_report(*attacks.lira_leave_one_out(with_signal, design))["auc"] > 0.6


def test_balanced_shadows_give_each_example_equal_in_and_out():
    design = attacks.half_membership(8, 50, seed=0)
    for i in range(8):
        shadow_in = np.delete(design, i, 0)
        use = attacks.balanced_shadows(shadow_in, seed=i)
        assert ((shadow_in & use).sum(0) == (~shadow_in & use).sum(0)).all()
        assert (use.sum(0) == 6).all()  # one shadow of the larger side left out


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


def test_memorisation_control_is_found_by_a_correct_attack():
    g = torch.Generator().manual_seed(0)
    control = attacks.memorisation_control(torch.rand(64, 1, 28, 28, generator=g),
                                           torch.rand(64, 1, 28, 28, generator=g), steps=200)
    assert control["train_loss"] < 0.1 and control["auc"] > 0.9
    lo, hi = control["auc_ci"]
    assert lo <= control["auc"] <= hi and lo > 0.8


def test_auc_interval_covers_chance_for_random_scores():
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(200):
        scores, labels = rng.random(200), rng.random(200) < 0.5
        lo, hi = attacks.auc_interval(attacks.roc_report(scores, labels)["auc"], int(labels.sum()),
                                      int((~labels).sum()))
        covered += lo <= 0.5 <= hi
    assert 0.9 <= covered / 200 <= 0.99  # a 95 % interval
    assert attacks.auc_interval(1.0, 10, 10)[1] == 1.0
    with pytest.raises(ValueError):
        attacks.auc_interval(0.5, 0, 10)


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
