"""CKKS parameters checked against the HomomorphicEncryption.org standard, and this package's
errors."""

from __future__ import annotations

from dataclasses import dataclass

#: HomomorphicEncryption.org standard (Albrecht et al. 2018), Table 1, 128-bit classical security,
#: uniform ternary secret: the largest total coefficient modulus (bits) for each ring dimension N.
HE_STANDARD_128: dict[int, int] = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438,
                                   32768: 881}

#: Input pixels must lie in this range (what pets_lite.data produces and the model was trained on).
ENCODING_RANGE: tuple[float, float] = (0.0, 1.0)

PACKINGS = ("tutorial", "batched")


class HEError(ValueError):
    """Base class of every problem pets_lite.he reports."""


class ParameterError(HEError):
    """CKKS parameters that are insecure or inconsistent."""


class DepthError(HEError):
    """The parameters leave fewer multiplicative levels than the model needs."""


class EncodingRangeError(HEError):
    """Input values outside the range the encoding and the model support."""


class ContextMismatchError(HEError):
    """A ciphertext that was made under another context (other keys or other parameters)."""


class SecretKeyError(HEError):
    """An operation that needs the secret key, attempted where there is none."""



@dataclass(frozen=True)
class CKKSParams:
    """CKKS parameters: ring dimension N, the bit sizes of the coefficient-modulus primes, scale.

    The first prime holds the final result (its bits above the scale bound the result's integer
    part), each middle prime is consumed by one rescale (one multiplicative level), and the last is
    the special prime used only for key switching. ``depth`` is the number of middle primes.

    >>> CKKSParams().depth, CKKSParams().total_bits, CKKSParams().max_bits_128
    (5, 217, 218)
    """

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (36, 29, 29, 29, 29, 29, 36)
    scale_bits: int = 29

    def __post_init__(self):
        n, bits = self.poly_modulus_degree, tuple(self.coeff_mod_bit_sizes)
        object.__setattr__(self, "coeff_mod_bit_sizes", bits)
        if n not in HE_STANDARD_128:
            raise ParameterError(f"poly_modulus_degree must be one of {sorted(HE_STANDARD_128)}, "
                                 f"got {n}")
        if len(bits) < 3:
            raise ParameterError("coeff_mod_bit_sizes needs at least 3 primes (first, one level, "
                                 f"special), got {bits}")
        if any(not 20 <= b <= 60 for b in bits):
            raise ParameterError(f"every prime must have 20..60 bits (SEAL's limits), got {bits}")
        if sum(bits) > HE_STANDARD_128[n]:
            raise ParameterError(
                f"total coefficient modulus {sum(bits)} bits exceeds {HE_STANDARD_128[n]} bits, "
                f"the 128-bit-security bound of the HomomorphicEncryption.org standard for N={n}: "
                "drop a prime, use smaller primes, or double poly_modulus_degree")
        if not all(b == self.scale_bits for b in bits[1:-1]):
            raise ParameterError(f"the middle primes {bits[1:-1]} must equal scale_bits="
                                 f"{self.scale_bits}, so each rescale restores the scale")
        if bits[0] <= self.scale_bits or bits[-1] < max(bits[:-1]):
            raise ParameterError(f"the first prime ({bits[0]} bits) must exceed the scale "
                                 f"({self.scale_bits} bits) and the special prime ({bits[-1]}) "
                                 "must be at least as large as every other prime")

    @property
    def depth(self) -> int:
        """Multiplicative levels: how many rescales a ciphertext survives."""
        return len(self.coeff_mod_bit_sizes) - 2

    @property
    def total_bits(self) -> int:
        """log2 of the whole coefficient modulus, special prime included (what security bounds)."""
        return int(sum(self.coeff_mod_bit_sizes))

    @property
    def max_bits_128(self) -> int:
        """The standard's 128-bit bound on ``total_bits`` for this N."""
        return HE_STANDARD_128[self.poly_modulus_degree]

    @property
    def slots(self) -> int:
        """Values one ciphertext holds (N/2)."""
        return self.poly_modulus_degree // 2

    @property
    def scale(self) -> float:
        return float(2**self.scale_bits)

    @property
    def headroom(self) -> float:
        """Largest |value| the final result may have: 2 ** (first prime bits - scale bits - 1)."""
        return float(2 ** (self.coeff_mod_bit_sizes[0] - self.scale_bits - 1))

    def primes(self) -> list[int]:
        """The primes SEAL's ``CoeffModulus::Create`` picks: for each bit size, the largest primes
        below 2^bits that are 1 mod 2N, handed out smallest first among equal sizes."""
        factor, table = 2 * self.poly_modulus_degree, {}
        for bits in set(self.coeff_mod_bit_sizes):
            count, found, value = self.coeff_mod_bit_sizes.count(bits), [], (1 << bits) - factor + 1
            while len(found) < count and value > (1 << (bits - 1)):
                if is_prime(value):
                    found.append(value)
                value -= factor
            table[bits] = found
        return [table[bits].pop() for bits in self.coeff_mod_bit_sizes]

    def rescale_offsets(self) -> list[float]:
        """``q / 2^s - 1`` for each middle prime: how far each rescale's divisor is from the scale
        (SEAL's primes are 1 mod 2N, so none is a power of two).

        >>> max(abs(o) for o in BATCHED_PARAMS.rescale_offsets()) < 1e-3
        True
        """
        return [q / self.scale - 1.0 for q in self.primes()[1:-1]]

    def describe(self) -> dict:
        """The parameters and their security check as a flat dict (a table row)."""
        return {"N": self.poly_modulus_degree, "slots": self.slots,
                "primes (bits)": list(self.coeff_mod_bit_sizes), "scale": f"2^{self.scale_bits}",
                "depth": self.depth, "log2 q": self.total_bits,
                "128-bit bound (HE standard)": self.max_bits_128,
                "128-bit secure": self.total_bits <= self.max_bits_128}


#: TenSEAL's tutorial parameters: six levels, 218 bits, exactly the 128-bit bound at N = 8192.
TUTORIAL_PARAMS = CKKSParams(8192, (31, 26, 26, 26, 26, 26, 26, 31), 26)
#: The batched path needs five levels (conv, x^2, fc1, x^2, fc2): one prime fewer, which buys
#: 29-bit primes (eight times finer precision) and 36-bit outer primes (results up to 2^6 = 64;
#: 35-bit ones allowed 32, less than the largest logit of the full-mode model).
BATCHED_PARAMS = CKKSParams(8192, (36, 29, 29, 29, 29, 29, 36), 29)


def is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin for n < 3.3e24 (every SEAL prime)."""
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    if n in small:
        return True
    if any(n % p == 0 for p in small):
        return False
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in small:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True

