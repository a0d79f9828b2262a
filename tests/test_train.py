import json

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from pets_lite import models, train


def toy(n=256, seed=0):
    """Two classes that differ by the brightness of the image's left half."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.5
    x[:, :, :, :14] += y.view(-1, 1, 1, 1) * 0.4
    return TensorDataset(x, y)


def small():
    return models.SmallCNN(width=4, depth=2)


def test_fit_learns_and_selects_on_validation():
    torch.manual_seed(0)
    m = small()
    h = train.fit(m, toy(), toy(128, 1), epochs=4, lr=1e-2, batch_size=32, progress=False)
    assert len(h.train_loss) == 4 and len(h.val_auc) == 4
    assert h.best_epoch == int(np.argmax(h.val_auc))
    assert train.evaluate(m, toy(128, 1))["auc"] == pytest.approx(h.best_val_auc)
    assert train.evaluate(m, toy(128, 2))["auc"] > 0.9


def test_fit_is_deterministic_for_a_seed():
    states = []
    for _ in range(2):
        torch.manual_seed(123)
        m = small()
        train.fit(m, toy(), None, epochs=2, lr=1e-2, batch_size=32, seed=5, progress=False)
        states.append(torch.cat([p.flatten() for p in m.parameters()]))
    assert torch.equal(states[0], states[1])


def test_fit_rejects_zero_epochs():
    with pytest.raises(ValueError, match="epochs"):
        train.fit(small(), toy(), epochs=0)


def test_auc_score_binary_multiclass_and_degenerate():
    assert train.auc_score(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]])) == 1.0
    y = np.array([0, 1, 2, 0, 1, 2])
    p = np.eye(3)[y] * 0.8 + 0.2 / 3
    assert train.auc_score(y, p) == 1.0
    assert np.isnan(train.auc_score(np.array([1, 1]), np.array([[0.1, 0.9], [0.3, 0.7]])))


def test_evaluate_reports_loss_and_accuracy():
    m = small()
    r = train.evaluate(m, toy(64))
    assert set(r) == {"auc", "acc", "loss"} and 0 <= r["acc"] <= 1 and r["loss"] > 0


def test_model_cache_hits_and_invalidates(monkeypatch, tmp_path):
    monkeypatch.setenv("PETS_CACHE_DIR", str(tmp_path))
    calls = []

    def train_fn(model):
        calls.append(1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        return {"auc": 0.5 + len(calls)}

    torch.manual_seed(0)
    m1, r1, hit1 = train.cached_model("toy", {"lr": 1}, small, train_fn)
    m2, r2, hit2 = train.cached_model("toy", {"lr": 1}, small, train_fn)
    assert (hit1, hit2) == (False, True) and len(calls) == 1 and r1 == r2
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    _, r3, hit3 = train.cached_model("toy", {"lr": 2}, small, train_fn)
    assert not hit3 and len(calls) == 2 and r3["auc"] == 2.5
    _, _, hit4 = train.cached_model("toy", {"lr": 1}, small, train_fn, refresh=True)
    assert not hit4 and len(calls) == 3
    assert not list(tmp_path.rglob("*.tmp")), "no half-written cache files"
    stored = json.loads(next(tmp_path.rglob("toy-*.json")).read_text())
    assert "spec" in stored and "results" in stored


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
