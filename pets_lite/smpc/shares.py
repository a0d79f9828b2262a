"""What CrypTen's additive shares of an image are, where their randomness comes from, and tests
that a share looks uniform and independent of the secret (which statistics can refute, never
prove: indistinguishability is a property of the generator, not of a sample).

How CrypTen shares a value (``ArithmeticSharedTensor.__init__``): every party draws the same
*pseudo-random zero sharing* (``PRZS``: party i holds ``g_prev - g_next``, two generators whose
seeds it exchanged with its neighbours at ``crypten.init``), and the owner of the value adds its
fixed-point encoding to its own share. Nothing is sent. With two parties and the hospital as
owner, party 0's share is ``g_prev - g_next`` alone, the same whatever the image; the hospital's
share is ``encode(image) - share0``. Both parties can compute ``share0`` (each holds both seeds):
the image stays hidden from party 0 because the hospital's share never leaves the hospital.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import config, crypten_compat
from .parties import HOSPITAL, check_images, run_parties


def _reseed_zero_sharing(crypten, rank: int, seed: int) -> None:
    """Give both parties' PRZS generators seeds derived from ``seed`` (demonstrations only)."""
    cpu = torch.device("cpu")
    crypten.generators["next"][cpu].manual_seed(config.derive_seed(seed, "przs", rank))
    crypten.generators["prev"][cpu].manual_seed(config.derive_seed(seed, "przs", (rank + 1) % 2))


def _share_party(rank: int, images: torch.Tensor, seed: int | None):
    crypten = crypten_compat.crypten_module()
    if seed is not None:
        _reseed_zero_sharing(crypten, rank, seed)
    own = images if rank == HOSPITAL else torch.zeros_like(images)
    secret = crypten.cryptensor(own, src=HOSPITAL)
    return {"share": secret.share.clone().numpy(), "scale": int(secret.encoder.scale)}


def share_images(images: torch.Tensor, provider: str = "TFP",
                 seed: int | None = None) -> dict[str, np.ndarray]:
    """The hospital (party 1) secret-shares ``images``; returns each party's share (int64, the
    ring Z_2^64).

    ``{"share0"`` (the model owner's: the zero sharing alone), ``"share1"`` (the hospital's: the
    one that depends on the image), ``"encoded"`` (the fixed-point secret, share0 + share1 mod
    2^64), ``"scale"}``. ``seed`` fixes the zero sharing's generators (from
    :func:`pets_lite.config.derive_seed`), to show that party 0's share does not depend on the
    image: never share real data that way (both shares become predictable). ``None`` (default):
    CrypTen's own seeds, from ``os.urandom``.
    """
    images = check_images(images)
    values = run_parties(_share_party, args=(images, seed), provider=provider)
    s0, s1 = values[0]["share"], values[1]["share"]
    with np.errstate(over="ignore"):
        encoded = (s0 + s1).astype(np.int64)  # wraps modulo 2^64, as the ring does
    return {"share0": s0, "share1": s1, "encoded": encoded, "scale": values[0]["scale"]}


def _zero_share_party(rank: int, images: torch.Tensor, seed: int):
    crypten = crypten_compat.crypten_module()
    out = []
    for secret in (images, torch.zeros_like(images)):  # an X-ray, then a black image
        _reseed_zero_sharing(crypten, rank, seed)
        own = secret if rank == HOSPITAL else torch.zeros_like(secret)
        out.append(crypten.cryptensor(own, src=HOSPITAL).share.clone().numpy())
    return out


def zero_share_check(images: torch.Tensor, seed: int, provider: str = "TFP") -> dict[str, bool]:
    """Share ``images`` and a black image of the same shape under the same zero-sharing seeds.

    ``"owner_share_identical"``: whether party 0's two shares are equal in every element (True:
    party 0 holds the zero sharing alone, nothing of the image); ``"hospital_share_is_image"``:
    whether the hospital's two shares differ by exactly the encoded image.
    """
    images = check_images(images)
    (owner_img, owner_blank), (hosp_img, hosp_blank) = run_parties(
        _zero_share_party, args=(images, seed), provider=provider)
    encoded = (images * 2**16).long().numpy()  # CrypTen's FixedPointEncoder, 16 fractional bits
    with np.errstate(over="ignore"):
        difference = hosp_img - hosp_blank
    return {"owner_share_identical": bool(np.array_equal(owner_img, owner_blank)),
            "hospital_share_is_image": bool(np.array_equal(difference, encoded))}


def share_statistics(share: np.ndarray, secret: np.ndarray, other_share: np.ndarray | None = None,
                     bins: int = 256) -> dict[str, float]:
    """Tests that a share looks uniform and independent of the secret.

    ``chi2_p``: chi-square test of the top 8 bits against uniform; ``ks_p``: Kolmogorov-Smirnov of
    share / 2^64 against U(0, 1); ``low_chi2_p``: chi-square of the low 8 bits (a mask with few
    random bits leaves them, or the top ones, skewed); ``corr``: Pearson correlation of the share
    with the secret; ``two_sample_p``: KS test between the shares of two different secrets
    (``other_share``). Small p-values refute uniformity; large ones only fail to refute it.
    """
    from scipy import stats

    share = np.asarray(share, dtype=np.int64).ravel()
    secret = np.asarray(secret, dtype=np.float64).ravel()
    if share.size != secret.size:
        raise ValueError(f"share and secret differ in size: {share.size} vs {secret.size}")
    if share.size < 10 * bins:
        raise ValueError(f"need at least {10 * bins} share elements for {bins} bins, got "
                         f"{share.size}")
    unit = to_unit_interval(share)
    words = share.view(np.uint64)
    top = (words >> np.uint64(56)).astype(np.int64)
    low = (words & np.uint64(255)).astype(np.int64)
    out = {"chi2_p": float(stats.chisquare(np.bincount(top, minlength=256)).pvalue),
           "low_chi2_p": float(stats.chisquare(np.bincount(low, minlength=256)).pvalue),
           "ks_p": float(stats.kstest(unit, "uniform").pvalue),
           "corr": float(np.corrcoef(unit, secret)[0, 1]) if secret.std() > 0 else 0.0}
    if other_share is not None:
        out["two_sample_p"] = float(stats.ks_2samp(unit, to_unit_interval(other_share)).pvalue)
    return out


def to_unit_interval(share: np.ndarray) -> np.ndarray:
    """Map ring elements (int64 read as unsigned 64-bit) to [0, 1)."""
    return np.asarray(share, dtype=np.int64).ravel().view(np.uint64).astype(np.float64) / 2.0**64


def same_stream(seed_a: int, seed_b: int, n: int = 64) -> bool:
    """Whether torch's CPU generator (MT19937, the one CrypTen's shares and triples come from)
    gives the same first ``n`` ring elements for two seeds.

    ``same_stream(s, s + 2**32)`` is True: MT19937 is initialised from the low 32 bits of the
    64-bit seed, so CrypTen's seeds (64 bits from ``os.urandom``) carry 32 bits of entropy, a
    search of 2^32 candidates. MT19937 is not a cryptographic generator in any case: its state
    follows from 624 consecutive 32-bit outputs (it is linear over GF(2)).
    """
    draws = []
    for seed in (seed_a, seed_b):
        g = torch.Generator().manual_seed(seed)
        draws.append(torch.randint(-(2**63), 2**63 - 1, (n,), generator=g, dtype=torch.long))
    return bool(torch.equal(*draws))
