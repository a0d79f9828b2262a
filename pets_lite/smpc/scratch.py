"""Two-party additive secret sharing in Z_2^64 and a Beaver-triple multiplication, from scratch in
NumPy: what CrypTen does under its tensors, small enough to read in one sitting.

A real number x is encoded in fixed point, ``x_bar = trunc(2^16 x)`` (as CrypTen's
``FixedPointEncoder`` does), an element of the ring Z_2^64 (NumPy's int64 arithmetic wraps modulo
2^64). Sharing draws a uniform mask r and hands ``r`` to one party and ``x_bar - r`` to the other:
each share alone is uniform whatever x is (a one-time pad in the ring). A product of two shared
values uses a triple ``(a, b, c = a b)`` from a dealer: the parties open ``eps = x - a`` and
``delta = y - b`` (one-time pads again, as long as each triple is used once) and compute shares of
``x y = c + eps b + delta a + eps delta`` locally. The product carries scale 2^32; each party
divides its own share by 2^16 (CrypTen's two-party truncation), which is off by one unit at most,
except with probability about |x y| / 2^63, when the shares' sum wraps and the result is wrong by
2^48 units.

Randomness comes from :class:`RingRandom`: the operating system's CSPRNG (``os.urandom``) by
default; a seed gives a reproducible, *non-cryptographic* stream (NumPy's PCG64) for tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .. import config

#: Fractional bits of the fixed-point encoding (CrypTen's default precision).
FRACTION_BITS = 16
SCALE = 1 << FRACTION_BITS
#: Largest |x| that encodes without wrapping around the ring.
MAX_ABS = 2.0 ** (63 - FRACTION_BITS)


class RingRandom:
    """Uniform elements of Z_2^64 (as int64): ``os.urandom`` when ``seed`` is None (a CSPRNG), else
    NumPy's PCG64 seeded through :func:`pets_lite.config.derive_seed` (reproducible, not
    cryptographic: for tests and demonstrations only)."""

    def __init__(self, seed: int | None = None):
        self.seed = seed
        self._rng = (None if seed is None
                     else np.random.default_rng(config.derive_seed(seed, "smpc", "ring")))

    def ring(self, shape) -> np.ndarray:
        n = int(np.prod(shape, dtype=np.int64))
        if self._rng is None:
            words = np.frombuffer(os.urandom(8 * n), dtype=np.int64)
        else:
            words = self._rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max,
                                       size=n, dtype=np.int64, endpoint=True)
        return words.reshape(shape).copy()


def encode(x) -> np.ndarray:
    """Fixed point: ``trunc(2^16 x)`` as int64, computed from float32 like CrypTen's encoder."""
    values = np.asarray(x, dtype=np.float32).astype(np.float64)
    if not np.isfinite(values).all() or (np.abs(values) >= MAX_ABS).any():
        raise ValueError(f"values must be finite with |x| < 2^{63 - FRACTION_BITS} to encode")
    return np.trunc(values * SCALE).astype(np.int64)


def decode(encoded) -> np.ndarray:
    """Back to real numbers (the ring element read as a signed int64, divided by 2^16)."""
    return np.asarray(encoded, dtype=np.int64).astype(np.float64) / SCALE


def share(secret: np.ndarray, source: RingRandom) -> tuple[np.ndarray, np.ndarray]:
    """Split ring elements into two additive shares: ``(r, secret - r)`` with a fresh uniform r."""
    secret = np.asarray(secret, dtype=np.int64)
    mask = source.ring(secret.shape)
    with np.errstate(over="ignore"):
        return mask, secret - mask


def reconstruct(share0: np.ndarray, share1: np.ndarray) -> np.ndarray:
    """The secret: the sum of the shares modulo 2^64."""
    with np.errstate(over="ignore"):
        return np.asarray(share0, dtype=np.int64) + np.asarray(share1, dtype=np.int64)


@dataclass
class Triple:
    """Shares of a Beaver triple ``(a, b, c = a b mod 2^64)``: ``a[i]`` is party i's share of a.
    It may be used for one multiplication only."""

    a: tuple[np.ndarray, np.ndarray]
    b: tuple[np.ndarray, np.ndarray]
    c: tuple[np.ndarray, np.ndarray]
    used: bool = field(default=False)

    def consume(self) -> Triple:
        if self.used:
            raise ValueError("this Beaver triple was used already: two products opened with one "
                             "triple reveal x - x' and y - y'; ask the dealer for a fresh one")
        self.used = True
        return self


class Dealer:
    """The trusted dealer (CrypTen's TTP): hands out fresh triples; sees no input."""

    def __init__(self, source: RingRandom | None = None):
        self.source = source or RingRandom()
        self.issued = 0

    def triple(self, shape) -> Triple:
        source = self.source
        a, b = source.ring(shape), source.ring(shape)
        with np.errstate(over="ignore"):
            c = a * b
        self.issued += 1
        return Triple(share(a, source), share(b, source), share(c, source))


def beaver_multiply(x: tuple[np.ndarray, np.ndarray], y: tuple[np.ndarray, np.ndarray],
                    triple: Triple) -> tuple[tuple[np.ndarray, np.ndarray], dict]:
    """Shares of ``x y mod 2^64`` from shares of x and y; also returns what was opened
    (``{"epsilon": x - a, "delta": y - b}``, which both parties see)."""
    t = triple.consume()
    with np.errstate(over="ignore"):
        eps = reconstruct(x[0] - t.a[0], x[1] - t.a[1])      # round 1: both open x - a ...
        delta = reconstruct(y[0] - t.b[0], y[1] - t.b[1])    # ... and y - b, in one exchange
        z0 = t.c[0] + eps * t.b[0] + delta * t.a[0] + eps * delta  # party 0 adds eps delta once
        z1 = t.c[1] + eps * t.b[1] + delta * t.a[1]
    return (z0, z1), {"epsilon": eps, "delta": delta}


def truncate(share_value: np.ndarray) -> np.ndarray:
    """One party's share divided by 2^16, rounding toward zero (CrypTen's ``div_``, 2 parties)."""
    s = np.asarray(share_value, dtype=np.int64)
    q = s // SCALE
    return q + ((s % SCALE != 0) & (s < 0))


def multiply(x, y, source: RingRandom | None = None, dealer: Dealer | None = None) -> dict:
    """Party 0 shares ``x``, party 1 shares ``y``; one Beaver multiplication; truncation.

    Returns ``{"shares_x", "shares_y", "raw" (x_bar y_bar mod 2^64, reconstructed before
    truncation), "product" (decoded after truncation), "opened" (epsilon, delta)}``.
    """
    source = source or RingRandom()
    dealer = dealer or Dealer(source)
    x_bar, y_bar = encode(x), encode(y)
    if x_bar.shape != y_bar.shape:
        raise ValueError(f"x and y differ in shape: {x_bar.shape} vs {y_bar.shape}")
    sx, sy = share(x_bar, source), share(y_bar, source)
    z, opened = beaver_multiply(sx, sy, dealer.triple(x_bar.shape))
    return {"shares_x": sx, "shares_y": sy, "raw": reconstruct(*z),
            "product": decode(reconstruct(truncate(z[0]), truncate(z[1]))), "opened": opened}


def _crypten_product_party(rank: int, x, y):
    import torch

    from .. import crypten_compat

    crypten = crypten_compat.crypten_module()
    from crypten.mpc.primitives import ArithmeticSharedTensor, beaver

    xs = ArithmeticSharedTensor(torch.as_tensor(x) if rank == 0 else torch.zeros(len(x)), src=0)
    ys = ArithmeticSharedTensor(torch.as_tensor(y) if rank == 1 else torch.zeros(len(y)), src=1)
    raw = beaver.mul(xs, ys).reveal()  # the ring product, before truncation
    product = (crypten.cryptensor(torch.as_tensor(x) if rank == 0 else torch.zeros(len(x)), src=0)
               * crypten.cryptensor(torch.as_tensor(y) if rank == 1 else torch.zeros(len(y)),
                                    src=1)).get_plain_text()
    return {"raw": raw.numpy(), "product": product.numpy().astype(np.float64)}


def crypten_multiply(x, y, provider: str = "TTP") -> dict:
    """The same product in CrypTen, two real parties: ``{"raw" (ring product before
    truncation), "product" (CrypTen's x * y, decoded)}``, to compare with :func:`multiply`."""
    from .parties import run_parties

    x = np.asarray(x, dtype=np.float32).ravel()
    y = np.asarray(y, dtype=np.float32).ravel()
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"x and y must be non-empty and of one shape, got {x.shape}, {y.shape}")
    values = run_parties(_crypten_product_party, args=(x, y), provider=provider)
    return {"raw": values[0]["raw"], "product": values[0]["product"]}
