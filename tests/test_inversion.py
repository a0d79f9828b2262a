"""Gradient inversion (Inverting Gradients + iDLG): works on one update, fails on an aggregate."""

import functools

import numpy as np
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


def test_the_attack_helper_is_the_attack_on_one_update(model, images):
    x, y = images
    rec, scores = inv.attack(model, x[:1], y[:1], iterations=150, seed=0)
    assert rec.label_recovered and scores["ssim"] >= 0.8
    rec2, scores2 = inv.attack(model, x[:2], y[:2], iterations=5, seed=0)
    assert not rec2.label_recovered and torch.equal(rec2.labels, y[:2])  # a batch: labels given
    assert len(scores2["ssim_each"]) == 2


def test_client_step_is_each_hospitals_sgd_step(model, images):
    from pets_lite.fl import secagg

    x, y = images
    step = inv.ClientStep(x[:6].reshape(3, 2, 1, 28, 28), y[:6].reshape(3, 2), lr=0.1)
    start = secagg.model_parameters(model)
    new = step(1, start)
    grad = inv.client_update(model, x[2:4], y[2:4], lr=0.1)
    for w, s, g in zip(new, start, grad):
        assert torch.allclose(torch.from_numpy(w), torch.from_numpy(s) - 0.1 * g, atol=1e-6)
    assert all(np.array_equal(a, b) for a, b in zip(new, step(1, start)))  # deterministic


def test_aggregate_attack_against_unrelated_x_rays(model, images):
    x, y = images
    one = inv.aggregate_attack(model, x[10:13], y[10:13], 3, unrelated=[x[20:23], x[23:26]],
                               iterations=60, seed=0)
    assert one["hospitals"] == 3 and one["images"] == 3 and len(one["matched"]) == 1
    assert one["advantage"] == pytest.approx(one["ssim"] - one["unrelated_ssim"])
    hit = metrics.best_match(one["reconstruction"], x[10:13])
    assert one["ssim"] == pytest.approx(hit["ssim"])
    several = inv.aggregate_attack(model, x[30:36], y[30:36], 3, unrelated=[x[40:46]],
                                   iterations=10, seed=0)
    assert several["images"] == 6 and several["reconstruction"].shape == (6, 1, 28, 28)
    with pytest.raises(inv.InversionError, match="one of the hospitals' images"):
        inv.aggregate_attack(model, x[10:13], y[10:13], 3, unrelated=[x[12:15]], iterations=1)
    with pytest.raises(inv.InversionError, match="shared equally"):
        inv.aggregate_attack(model, x[10:14], y[10:14], 3, unrelated=[x[20:24]], iterations=1)
    with pytest.raises(inv.InversionError, match="must hold 3 images"):
        inv.aggregate_attack(model, x[10:13], y[10:13], 3, unrelated=[x[20:22]], iterations=1)
