
import functools

import numpy as np
import pytest
import torch

from pets_lite import metrics, models, train


@pytest.fixture
def toy(toy_xrays):
    """This module's toy X-rays (the shared factory in conftest.py)."""
    return functools.partial(toy_xrays, kind="left", contrast=0.4)


def small():
    return models.SmallCNN(width=4, depth=2)


def test_fit_learns_and_selects_on_validation(toy):
    torch.manual_seed(0)
    m = small()
    h = train.fit(m, toy(), toy(128, 1), epochs=4, lr=1e-2, batch_size=32, progress=False)
    assert len(h.train_loss) == 4 and len(h.val_auc) == 4
    assert h.best_epoch == int(np.argmax(h.val_auc))
    assert train.evaluate(m, toy(128, 1))["auc"] == pytest.approx(h.best_val_auc)
    assert train.evaluate(m, toy(128, 2))["auc"] > 0.9


def test_fit_is_deterministic_for_a_seed(toy):
    states = []
    for _ in range(2):
        torch.manual_seed(123)
        m = small()
        train.fit(m, toy(), None, epochs=2, lr=1e-2, batch_size=32, seed=5, progress=False)
        states.append(torch.cat([p.flatten() for p in m.parameters()]))
    assert torch.equal(states[0], states[1])


def test_fit_rejects_zero_epochs(toy):
    with pytest.raises(ValueError, match="epochs"):
        train.fit(small(), toy(), epochs=0)


def test_auc_score_binary_multiclass_and_degenerate():
    assert metrics.auc_score(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]])) == 1.0
    y = np.array([0, 1, 2, 0, 1, 2])
    p = np.eye(3)[y] * 0.8 + 0.2 / 3
    assert metrics.auc_score(y, p) == 1.0
    assert np.isnan(metrics.auc_score(np.array([1, 1]), np.array([[0.1, 0.9], [0.3, 0.7]])))


def test_evaluate_reports_loss_and_accuracy(toy):
    m = small()
    r = train.evaluate(m, toy(64))
    assert set(r) == {"auc", "acc", "loss"} and 0 <= r["acc"] <= 1 and r["loss"] > 0


def test_best_on_validation_keeps_and_restores_the_best_epoch():
    from torch import nn

    from pets_lite.train import BestOnValidation, History

    model, history = nn.Linear(2, 1), History()
    scores = iter([0.6, 0.8, 0.7])
    best = BestOnValidation(history, [model], lambda: {"auc": next(scores), "acc": 0.5})
    kept = None
    for epoch in range(3):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        best.update(epoch)
        if epoch == 1:
            kept = model.weight.clone()
    best.restore()
    assert history.best_epoch == 1 and history.val_auc == [0.6, 0.8, 0.7]
    assert torch.equal(model.weight, kept)
    no_val = BestOnValidation(History(), [model])
    assert no_val.update(4) is None and no_val.history.best_epoch == 4


def test_train_epoch_reports_the_loss_without_the_penalty_and_steps():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    before = model.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    plain, n = train.train_epoch(model, [(x, y)], opt)
    assert n == 16 and plain > 0 and not torch.equal(before, model.weight)
    penalised, _ = train.train_epoch(model, [(x, y)], opt, penalty=lambda: torch.tensor(100.0))
    assert penalised < 10  # the penalty steers the step but is not reported as loss


def test_weighted_average_is_fedavgs_mean():
    a = [np.array([1.0, 1.0]), np.array([0.0])]
    b = [np.array([4.0, 4.0]), np.array([3.0])]
    out = train.weighted_average([a, b], [2, 1])
    assert out[0].tolist() == [2.0, 2.0] and out[1].tolist() == [1.0]
    assert train.weighted_average([a, b])[1].tolist() == [1.5]
    with pytest.raises(ValueError, match="positive"):
        train.weighted_average([a, b], [1, 0])
    with pytest.raises(ValueError, match="same number"):
        train.weighted_average([a, b[:1]])
