"""SecAgg+ wrapper: the server sees only the aggregate, and a round with a dropout completes."""

import functools

import pytest
import torch

from pets_lite import inversion as inv
from pets_lite import secagg, train


def test_clip_and_noise():
    u = [torch.full((10,), 3.0), torch.full((2, 5), 4.0)]
    clipped = secagg.clip_and_noise(u, clip=1.0, noise_multiplier=0.0)
    norm = float(torch.sqrt(sum((c ** 2).sum() for c in clipped)))
    assert norm == pytest.approx(1.0, rel=1e-5)
    a = secagg.clip_and_noise(u, 1.0, 1.0, seed=1)
    b = secagg.clip_and_noise(u, 1.0, 1.0, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="clip must be > 0"):
        secagg.clip_and_noise(u, 0.0, 1.0)


def test_bad_inputs():
    x, y = torch.zeros(3, 1, 1, 28, 28), torch.zeros(3, 1, dtype=torch.long)
    with pytest.raises(ValueError, match="clients, batch"):
        secagg.simulate(x[0], y, [secagg.Experiment("a")])
    with pytest.raises(ValueError, match="at least 2 clients"):
        secagg.simulate(x[:1], y[:1], [secagg.Experiment("a")])
    with pytest.raises(ValueError, match="unique"):
        secagg.simulate(x, y, [secagg.Experiment("a"), secagg.Experiment("a")])
    with pytest.raises(ValueError, match="drop_client=5"):
        secagg.simulate(x, y, [secagg.Experiment("a", drop_client=5)])
    with pytest.raises(ValueError, match=">= 3 clients"):
        secagg.simulate(x[:2], y[:2], [secagg.Experiment("a", drop_client=1)])


@functools.lru_cache(maxsize=1)
def _run():
    from pets_lite import data

    x, y = data.load("pneumoniamnist", "train", size=64, seed=0).tensors
    n = 3
    imgs, labs = x[:n].reshape(n, 1, 1, 28, 28), y[:n].reshape(n, 1)
    res = secagg.simulate(imgs, labs, [secagg.Experiment("plain", secure=False),
                                       secagg.Experiment("secagg"),
                                       secagg.Experiment("dropout", drop_client=1)])
    return imgs, labs, res


def test_server_sees_only_the_sum_and_a_dropout_round_completes(data_available):
    imgs, labs, res = _run()
    torch.manual_seed(0)
    model = inv.InversionNet()
    updates = [inv.client_update(model, imgs[i], labs[i]) for i in range(3)]
    plain, sec, drop = res["plain"], res["secagg"], res["dropout"]
    assert plain.distinct_seen() == 3     # FedAvg: every hospital's update, one by one
    assert sec.distinct_seen() == 1       # SecAgg+: a single aggregate
    truth = train.weighted_average(updates)
    for got in (plain.aggregate_update(), sec.aggregate_update()):
        assert max(float((a - b).abs().max()) for a, b in zip(got, truth)) < 1e-2
    # Hospital 1 fails after the key exchange; the round still completes without it.
    assert len(drop.aggregates) == 1 and drop.distinct_seen() == 1 and drop.failures[0] >= 1
    survivors = train.weighted_average([updates[0], updates[2]])
    err = max(float((a - b).abs().max()) for a, b in zip(drop.aggregate_update(), survivors))
    assert err < 1e-2
    assert sec.bytes_total > plain.bytes_total > 0
    assert all(t > 0 for t in sec.round_seconds + plain.round_seconds)
