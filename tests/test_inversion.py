"""Gradient inversion (Inverting Gradients + iDLG): works on one update, fails on an aggregate."""

import functools

import pytest
import torch

from pets_lite import inversion as inv
from pets_lite import metrics, train


@functools.lru_cache(maxsize=1)
def _images():
    from pets_lite import data

    return data.load("pneumoniamnist", "train", size=64, seed=0).tensors


@pytest.fixture
def images(data_available):
    return _images()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return inv.InversionNet()


def test_idlg_recovers_label(model, images):
    x, y = images
    for i in range(8):
        u = inv.client_update(model, x[i:i + 1], y[i:i + 1])
        assert inv.recover_label(u) == int(y[i])


def test_attack_succeeds_on_one_update_and_fails_on_the_aggregate(model, images):
    torch.set_num_threads(1)
    x, y = images
    u = inv.client_update(model, x[:1], y[:1])
    rec = inv.invert(model, u, 1, iterations=150, seed=0)
    assert rec.label_recovered and int(rec.labels[0]) == int(y[0])
    single = metrics.matched_scores(x[:1], rec.images)
    assert single["ssim"] >= 0.8 and single["psnr"] > 12
    # What SecAgg+ lets the server see: the mean of 5 hospitals' updates.
    agg = train.weighted_average([inv.client_update(model, x[i:i + 1], y[i:i + 1])
                               for i in range(1, 6)])
    rec5 = inv.invert(model, agg, 1, iterations=150, seed=0)
    hit = metrics.best_match(rec5.images, x[1:6])
    assert hit["ssim"] < single["ssim"] - 0.2


def test_several_local_steps_are_unrolled(model, images):
    x, y = images
    u1 = inv.client_update(model, x[:2], y[:2], steps=1)
    u3 = inv.client_update(model, x[:2], y[:2], steps=3, lr=0.1)
    assert [a.shape for a in u1] == [a.shape for a in u3]
    assert float(inv.cosine_distance(u1, u3)) > 0  # different, but close for small lr
    assert float(inv.cosine_distance(u1, u3)) < 0.5


def test_metrics_known_answers():
    a = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    assert metrics.psnr(a, (a + 0.1).clamp(0, 1)) < 40
    s = metrics.matched_scores(torch.cat([a, 1 - a]), torch.cat([1 - a, a]))
    assert s["order"] == [1, 0] and s["ssim"] == pytest.approx(1.0)
    assert train.weighted_average([[torch.ones(2)], [torch.zeros(2)]])[0].tolist() == [0.5, 0.5]


def test_bad_inputs(model):
    x = torch.zeros(2, 1, 28, 28)
    with pytest.raises(inv.InversionError, match="one label per image"):
        inv.client_update(model, x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(inv.InversionError, match="steps"):
        inv.client_update(model, x, torch.zeros(2, dtype=torch.long), steps=0)
    with pytest.raises(inv.InversionError, match="batch shaped"):
        inv.client_update(model, x[0], torch.zeros(1, dtype=torch.long))
    u = inv.client_update(model, x, torch.zeros(2, dtype=torch.long))
    with pytest.raises(inv.InversionError, match="pass labels"):
        inv.invert(model, u, batch_size=2)
    with pytest.raises(inv.InversionError, match="tensors"):
        inv.invert(model, u[:2])
    with pytest.raises(inv.InversionError, match="shape"):
        inv.invert(inv.InversionNet(hidden=8), u)
    with pytest.raises(inv.InversionError, match="2 labels"):
        inv.invert(model, u, batch_size=1, labels=[0, 1])
    with pytest.raises(inv.InversionError, match="unknown kind"):
        inv.InversionNet(kind="resnet")
    with pytest.raises(ValueError, match="at least one"):
        train.weighted_average([])
    with pytest.raises(metrics.MetricError, match="sizes differ"):
        metrics.matched_scores(torch.zeros(1, 28, 28), torch.zeros(1, 14, 14))


def test_cnn_variant_runs(images):
    x, y = images
    m = inv.InversionNet(kind="cnn")
    u = inv.client_update(m, x[:1], y[:1])
    rec = inv.invert(m, u, 1, iterations=5)
    assert rec.images.shape == (1, 1, 28, 28) and 0 <= rec.images.min() <= rec.images.max() <= 1
