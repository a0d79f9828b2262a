"""pets_lite.fl.secagg on the in-process grid: the server sees only the sum (in what its strategy
is handed AND in what crosses the wire), the sum is right, and a round with a dropout completes."""

import functools

import numpy as np
import pytest
import torch

from pets_lite import inversion as inv
from pets_lite import train
from pets_lite.fl import FLConfigError, secagg


def test_clip_and_noise():
    u = [torch.full((10,), 3.0), torch.full((2, 5), 4.0)]
    clipped = secagg.clip_and_noise(u, clip=1.0, noise_multiplier=0.0)
    norm = float(torch.sqrt(sum((c ** 2).sum() for c in clipped)))
    assert norm == pytest.approx(1.0, rel=1e-5)
    a = secagg.clip_and_noise(u, 1.0, 1.0, seed=1)
    b = secagg.clip_and_noise(u, 1.0, 1.0, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    noise = torch.cat([(x - c).flatten() for x, c in zip(a, clipped)])
    assert float(noise.std()) == pytest.approx(1.0, rel=0.5)  # sigma * clip
    with pytest.raises(FLConfigError, match="clip must be > 0"):
        secagg.clip_and_noise(u, 0.0, 1.0)


def test_bad_inputs():
    x, y = torch.zeros(3, 1, 1, 28, 28), torch.zeros(3, 1, dtype=torch.long)
    with pytest.raises(inv.InversionError, match="clients, batch"):
        inv.ClientStep(x[0], y)
    step, init = inv.ClientStep(x, y), secagg.model_parameters(inv.InversionNet())
    for n, exps, match in [
            (1, [secagg.Experiment("a")], "at least 2 clients"),
            (3, [], "at least one"),
            (3, [secagg.Experiment("a"), secagg.Experiment("a")], "unique"),
            (3, [secagg.Experiment("a", drop_client=5)], "drop_client=5"),
            (2, [secagg.Experiment("a", drop_client=1)], ">= 3 clients"),
            (3, [secagg.Experiment("a", rounds=0)], "rounds must be >= 1")]:
        with pytest.raises(FLConfigError, match=match):
            secagg.simulate(step, init, n, exps, engine="in-process")


N = 3


@functools.lru_cache(maxsize=1)
def _run():
    from pets_lite import data

    x, y = data.load("pneumoniamnist", "train", size=64, seed=0).tensors
    step = inv.ClientStep(x[:N].reshape(N, 1, 1, 28, 28), y[:N].reshape(N, 1))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        init = secagg.model_parameters(inv.InversionNet())
    res = secagg.simulate(step, init, N, [secagg.Experiment("plain", secure=False),
                                          secagg.Experiment("secagg"),
                                          secagg.Experiment("dropout", drop_client=1)],
                          engine="in-process", keep_wire=True)
    new = [step(k, init) for k in range(N)]
    return step, init, new, res


def _max_error(got, want) -> float:
    return max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(got, want))


def test_the_sum_is_the_mean_of_the_updates_and_a_dropout_round_completes(data_available):
    step, init, new, res = _run()
    plain, sec, drop = res["plain"], res["secagg"], res["dropout"]
    assert all(r.engine == "in-process" for r in res.values())
    truth = train.weighted_average(new)
    assert _max_error(plain.aggregates[0], truth) < 1e-6     # FedAvg: the exact mean
    assert _max_error(sec.aggregates[0], truth) < 1e-4       # SecAgg+: the mean, quantised
    assert _max_error(sec.aggregates[0], init) > 100 * _max_error(sec.aggregates[0], truth)
    # Hospital 1 fails after the key exchange; the round still completes without it.
    assert len(drop.aggregates) == 1 and drop.failures[0] == 1
    assert _max_error(drop.aggregates[0], train.weighted_average([new[0], new[2]])) < 1e-4


def test_the_strategy_is_handed_one_aggregate_instead_of_every_update(data_available):
    _, _, _, res = _run()
    assert res["plain"].distinct_seen() == N
    assert res["secagg"].distinct_seen() == 1 and res["dropout"].distinct_seen() == 1


def test_only_masked_vectors_cross_the_wire(data_available):
    """What the server process received, not only what its strategy was handed: in plain FedAvg
    every hospital's update is on the wire; under SecAgg+ no vector on the wire correlates with
    any hospital's update (a masked vector is uniform noise modulo 2^32)."""
    _, init, new, res = _run()
    size = sum(p.size for p in init)
    assert min(res["plain"].wire_leak(new)) > 0.999
    for name in ("secagg", "dropout"):
        leak = res[name].wire_leak(new)
        assert max(leak) < 6 / np.sqrt(size), (name, leak)
    # Without knowing the updates: a plain reply is a term of the mean it is part of; a masked
    # vector is independent of the sum the server learns.
    assert min(res["plain"].wire_vs_aggregate()) > 0.3
    assert max(res["secagg"].wire_vs_aggregate()) < 6 / np.sqrt(size)


def test_secagg_costs_message_rounds_and_bytes(data_available):
    _, init, _, res = _run()
    plain, sec = res["plain"].rounds[0], res["secagg"].rounds[0]
    assert plain["exchanges"] == 1 and sec["exchanges"] == 4  # setup, keys, masked upload, unmask
    model_bytes = sum(p.nbytes for p in init)
    assert N * model_bytes < plain["bytes_received"] < 1.1 * N * model_bytes
    assert sec["bytes_sent"] + sec["bytes_received"] > plain["bytes_sent"] + plain["bytes_received"]
    assert res["secagg"].bytes_total == sec["bytes_sent"] + sec["bytes_received"]


def test_the_wire_measure_sees_an_unmasked_update():
    from pets_lite.fl import wire

    rng = np.random.default_rng(0)
    start, update = rng.normal(size=5000), 0.01 * rng.normal(size=5000)
    assert wire.update_correlation(start + update, start, update) > 0.999
    quantised = np.round((start + update + 8) * 2**18)  # SecAgg+'s quantisation without masks
    assert wire.update_correlation(quantised, start, update) > 0.99
    masked = (quantised + rng.integers(0, 2**32, 5000)) % 2**32
    assert abs(wire.update_correlation(masked, start, update)) < 0.1
    with pytest.raises(ValueError, match="sizes differ"):
        wire.update_correlation(start[:10], start, update)
