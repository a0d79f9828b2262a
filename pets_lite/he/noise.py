"""The noise a CKKS result carries, what hiding it would cost, and the depth of an activation.

Circuit privacy: a result ciphertext should tell the hospital, which decrypts it, nothing but the
model's output. In CKKS it carries the noise the server's computation left, and that noise
depends on the weights (its size grows with them, and two weightings of one function leave
different noise; ``tests/test_he_noise.py`` shows it). The hospital reads it without knowing the
model: the model computes on real numbers, so the imaginary part of every decoded slot is noise
alone (:func:`result_noise`). *Noise flooding* hides it: before returning, the server adds an
encryption of zero whose noise is uniform and ``2^sigma`` times larger; the statistical distance
between the flooded results of two weightings is then at most ``2^-sigma`` per coefficient, N
times that over a ciphertext, so sigma must also cover log2 N (the smudging argument of
Gentry's thesis). The price is sigma bits of precision, bought back with sigma more
bits in every prime of the chain (:func:`flooding_cost`). The same flooding, on the hospital's
side before it releases a decryption, is the countermeasure to Li and Micciancio's IND-CPA^D
attack (:mod:`pets_lite.he.leakage`), at the same cost.
"""

from __future__ import annotations

import copy
import math
import tempfile

import numpy as np
import torch

from .client import HEClient, Message
from .model import HEConvNet
from .params import HE_STANDARD_128, CKKSParams

#: SEAL's largest prime (bits).
MAX_PRIME_BITS = 60


def result_noise(client: HEClient, result: Message) -> dict[str, float]:
    """What the hospital can read of the noise in a batched result: the imaginary parts of every
    decoded slot (the message is real). ``{"imag_std", "imag_max", "noise_bits"}`` with
    ``noise_bits = log2(imag_max * scale)``: the noise in units of the integer coefficients."""
    import tenseal.sealapi as sealapi

    from .leakage import load_ciphertext, to_sealapi

    ctx = client.context
    seal_context = ctx.seal_context().data
    key = to_sealapi(ctx.secret_key().data, seal_context, "SecretKey")
    decryptor, encoder = sealapi.Decryptor(seal_context, key), sealapi.CKKSEncoder(seal_context)
    imag, scale = [], None
    with tempfile.TemporaryDirectory(prefix="pets-he-") as folder:
        for blob in result.blobs:
            ct = load_ciphertext(ctx, blob, folder)
            plain = sealapi.Plaintext()
            decryptor.decrypt(ct, plain)
            imag.append(np.imag(np.asarray(encoder.decode_complex(plain))))
            scale = ct.scale
    imag = np.concatenate(imag)
    peak = float(np.abs(imag).max())
    return {"imag_std": float(imag.std()), "imag_max": peak,
            "noise_bits": math.log2(peak * scale) if peak > 0 else float("-inf")}


def equivalent_weighting(model: HEConvNet, t: float) -> HEConvNet:
    """A copy of ``model`` that computes the same function with other weights: ``fc1`` times
    ``t`` (the square then carries ``t^2``) and ``fc2``'s weights divided by ``t^2``."""
    if not t > 0:
        raise ValueError(f"t must be positive, got {t!r}")
    other = copy.deepcopy(model).eval()
    with torch.no_grad():
        other.fc1.weight.mul_(t)
        other.fc1.bias.mul_(t)
        other.fc2.weight.div_(t * t)
    return other


def weighting_leak(t: float = 0.25, seed: int = 0, image_size: int = 8,
                   n_images: int = 64) -> dict[str, float]:
    """Two servers evaluate the same function (a small random :class:`HEConvNet` and its
    :func:`equivalent_weighting` by ``t``) on the same encrypted images; what the hospital reads
    of each result's noise (:func:`result_noise`'s ``imag_max``), and the largest difference of
    the two models' plaintext outputs (zero up to float rounding)."""
    from .. import config
    from .client import HEClient
    from .server import HEServer

    with config.seeded(config.derive_seed(seed, "he", "weighting leak")):
        model = HEConvNet(channels=2, hidden=3, patch=4, image_size=image_size).eval()
    other = equivalent_weighting(model, t)
    g = torch.Generator().manual_seed(config.derive_seed(seed, "he", "weighting leak images"))
    x = torch.rand(n_images, 1, image_size, image_size, generator=g)
    client = HEClient("batched", image_size=image_size, patch=4)
    public = client.public_context()
    noise = [result_noise(client, HEServer(public, m).evaluate(client.encrypt(x), progress=False))
             ["imag_max"] for m in (model, other)]
    with torch.no_grad():
        gap = float((model(x) - other(x)).abs().max())
    return {"noise": noise[0], "noise_reweighted": noise[1], "ratio": noise[1] / noise[0],
            "function_gap": gap}


def flooding_cost(params: CKKSParams, noise: float, sigma: int = 40,
                  keep_bits: float | None = None) -> dict:
    """What flooding with ``2^sigma`` times the noise costs a parameter set.

    ``noise``: the largest error of a result in value units (e.g. :func:`result_noise`'s
    ``imag_max``); the result then has ``p = -log2(noise)`` bits after the binary point, and
    flooding leaves ``p - sigma``. To keep ``keep_bits`` of them (default: all ``p``), the scale,
    hence every middle prime, the first prime and the special prime, needs ``extra`` more bits.
    Returns the new prime sizes, total, whether SEAL can hold them (primes <= 60 bits), the
    smallest N whose 128-bit bound admits the total, and ``extra_levels``: the added bits
    counted in primes of the current scale.
    """
    if not noise > 0 or sigma < 0:
        raise ValueError(f"noise must be positive and sigma >= 0, got {noise!r}, {sigma!r}")
    precision = -math.log2(noise)
    keep = precision if keep_bits is None else float(keep_bits)
    extra = max(0, math.ceil(sigma - (precision - keep)))
    bits = [params.coeff_mod_bit_sizes[0] + extra]
    bits += [b + extra for b in params.coeff_mod_bit_sizes[1:-1]]
    bits.append(max(params.coeff_mod_bit_sizes[-1] + extra, max(bits)))
    total = int(sum(bits))
    fits = [n for n, bound in sorted(HE_STANDARD_128.items()) if total <= bound]
    return {"sigma": sigma, "precision_bits": precision, "keep_bits": keep,
            "extra_bits_per_prime": extra, "primes (bits)": bits, "total_bits": total,
            "added_bits": total - params.total_bits,
            "extra_levels": (total - params.total_bits) / params.scale_bits,
            "seal_can_hold": max(bits) <= MAX_PRIME_BITS,
            "smallest_N": fits[0] if fits else None,
            "fits_current_N": total <= params.max_bits_128}


def activation_levels(a: float = 0.1, b: float = 1.0, params: CKKSParams | None = None,
                      n: int = 64, seed: int = 0) -> dict[str, float]:
    """Multiplicative levels that an activation consumes on a real TenSEAL ciphertext.

    ``"x^2"``: the square alone; ``"a x^2 + b x, a folded"``: ``x^2 + (b / a) x``, with ``a`` left
    to the next layer's weights (as the server folds the rescale ratios): ``x`` is multiplied by
    the plaintext ``b / a`` and rescaled, which lands it on the level of ``x^2``, so the sum costs
    no level beyond the square's; ``"a x^2 + b x, naive"``: ``a`` applied to ``x^2`` as well (one
    level more). Also the largest error of each against plaintext, on ``n`` values.
    """
    import tenseal as ts

    from .params import BATCHED_PARAMS

    params = params or BATCHED_PARAMS
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, params.poly_modulus_degree,
                     coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes))
    ctx.global_scale = params.scale
    values = np.random.default_rng(seed).uniform(-2, 2, n)
    x = ts.ckks_vector(ctx, values.tolist())
    level = x.ciphertext()[0].coeff_modulus_size()

    def used(vector) -> int:
        return level - vector.ciphertext()[0].coeff_modulus_size()

    square = x.square()
    folded = square + x * (b / a)            # then multiplied by a inside the next layer
    naive = square * a + x * b
    out = {"x^2": used(square), "a x^2 + b x, a folded": used(folded),
           "a x^2 + b x, naive": used(naive)}
    exact = a * values**2 + b * values
    out["error, folded"] = float(np.abs(a * np.array(folded.decrypt()) - exact).max())
    out["error, naive"] = float(np.abs(np.array(naive.decrypt()) - exact).max())
    return out
