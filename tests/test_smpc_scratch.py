"""pets_lite.smpc.scratch: additive sharing in Z_2^64 and Beaver multiplication from scratch, equal
to CrypTen's in the ring, and each protection shown to fail when it is removed."""

from __future__ import annotations

import numpy as np
import pytest

from pets_lite import smpc
from pets_lite.smpc import scratch


def _reals(n=6000, seed=0, scale=3.0):
    return np.random.default_rng(seed).uniform(-scale, scale, n).astype(np.float32)


def test_encoding_matches_crypten_and_refuses_what_would_wrap():
    x = np.array([0.0, 1.0, -1.5, 0.3, 2.0**-17], dtype=np.float32)
    assert scratch.encode(x).tolist() == [0, 65536, -98304, 19660, 0]  # trunc(2^16 x), as .long()
    assert np.allclose(scratch.decode(scratch.encode(x)), x, atol=2.0**-16)
    for bad in ([np.inf], [np.nan], [2.0**50]):
        with pytest.raises(ValueError, match="finite"):
            scratch.encode(bad)


def test_each_share_is_uniform_and_independent_of_the_secret():
    source = scratch.RingRandom(seed=1)
    secret = scratch.encode(np.abs(_reals()))  # small non-negative numbers: far from uniform
    s0, s1 = scratch.share(secret, source)
    assert np.array_equal(scratch.reconstruct(s0, s1), secret)
    zero0, zero1 = scratch.share(np.zeros_like(secret), source)
    for mine, blank in ((s0, zero0), (s1, zero1)):
        stats = smpc.share_statistics(mine, secret, blank)
        assert min(stats["chi2_p"], stats["low_chi2_p"], stats["ks_p"],
                   stats["two_sample_p"]) > 1e-4, stats
        assert abs(stats["corr"]) < 0.05


def test_every_sharing_draws_a_fresh_mask():
    source = scratch.RingRandom(seed=2)
    x, y = scratch.encode(_reals(seed=3)), scratch.encode(_reals(seed=4))
    x0, x1 = scratch.share(x, source)
    again0, again1 = scratch.share(x, source)
    y0, y1 = scratch.share(y, source)
    assert not np.array_equal(x0, again0) and not np.array_equal(x1, again1)
    with np.errstate(over="ignore"):
        # a reused mask would make the difference of two shares the difference of the secrets
        assert not np.array_equal(x1 - y1, x - y)
    # the OS-backed source (the default) differs between two sources, too
    a, b = scratch.RingRandom(), scratch.RingRandom()
    assert not np.array_equal(a.ring((64,)), b.ring((64,)))


def test_beaver_product_is_exact_in_the_ring_and_within_a_unit_after_truncation():
    x, y = _reals(seed=5), _reals(seed=6)
    out = scratch.multiply(x, y, scratch.RingRandom(seed=7))
    with np.errstate(over="ignore"):
        assert np.array_equal(out["raw"], scratch.encode(x) * scratch.encode(y))
    exact = scratch.encode(x).astype(np.float64) * scratch.encode(y) / 2.0**32
    assert np.abs(out["product"] - exact).max() <= 2.0 / scratch.SCALE


def test_each_multiplication_uses_a_fresh_triple():
    source = scratch.RingRandom(seed=8)
    dealer = scratch.Dealer(source)
    x, x2 = scratch.encode(_reals(seed=9)), scratch.encode(_reals(seed=10))
    y = scratch.encode(_reals(seed=11))
    sy = scratch.share(y, source)
    _, opened1 = scratch.beaver_multiply(scratch.share(x, source), sy, dealer.triple(x.shape))
    _, opened2 = scratch.beaver_multiply(scratch.share(x2, source), sy, dealer.triple(x.shape))
    with np.errstate(over="ignore"):
        # with one triple for both, epsilon1 - epsilon2 would be x - x2: the dealer's mask cancels
        assert not np.array_equal(opened1["epsilon"] - opened2["epsilon"], x - x2)
    stats = smpc.share_statistics(opened1["epsilon"], x)
    assert stats["chi2_p"] > 1e-4 and stats["ks_p"] > 1e-4 and abs(stats["corr"]) < 0.05
    triple = dealer.triple(x.shape)
    scratch.beaver_multiply(scratch.share(x, source), sy, triple)
    with pytest.raises(ValueError, match="used already"):
        scratch.beaver_multiply(scratch.share(x2, source), sy, triple)


def test_shapes_must_agree():
    with pytest.raises(ValueError, match="differ in shape"):
        scratch.multiply(np.zeros(3), np.zeros(4))


def test_equal_to_crypten_in_the_ring():
    x, y = _reals(n=256, seed=12), _reals(n=256, seed=13)
    ours = scratch.multiply(x, y)
    theirs = scratch.crypten_multiply(x, y, provider="TFP")
    assert np.array_equal(ours["raw"], theirs["raw"])  # the same ring element, bit for bit
    assert np.abs(ours["product"] - theirs["product"]).max() <= 2.0 / scratch.SCALE
    with pytest.raises(ValueError, match="non-empty"):
        scratch.crypten_multiply([], [])
