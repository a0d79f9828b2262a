"""What crosses the wire (:class:`Message`) and the hospital's side of the protocol
(:class:`HEClient`): the only holder of the secret key."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .params import (
    BATCHED_PARAMS,
    ENCODING_RANGE,
    PACKINGS,
    TUTORIAL_PARAMS,
    CKKSParams,
    ContextMismatchError,
    EncodingRangeError,
    HEError,
)


@dataclass
class Message:
    """Serialised ciphertexts (or a public context) plus what the receiver needs to check them."""

    kind: str  # "public_context", "query" or "result"
    packing: str
    context_id: str
    blobs: list[bytes]
    meta: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Bytes that cross the wire (the payload; the few header bytes are left out)."""
        return int(sum(len(b) for b in self.blobs))


def fingerprint(public_context: bytes) -> str:
    """A short identifier of a public context: the SHA-256 of its bytes, 16 hex digits."""
    return hashlib.sha256(public_context).hexdigest()[:16]


def as_images(images, image_size: int) -> np.ndarray:
    """Validate images into a float64 array (N, H, W) in the encoding range, or raise clearly."""
    arr = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    elif arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (image_size, image_size) or arr.shape[0] < 1:
        raise HEError(f"expected grey images of shape (N, 1, {image_size}, {image_size}), "
                      f"(N, {image_size}, {image_size}) or ({image_size}, {image_size}), got "
                      f"{tuple(np.shape(images))}; resize or select the channel first")
    arr = arr.astype(np.float64)
    lo, hi = ENCODING_RANGE
    bad = ~np.isfinite(arr) | (arr < lo) | (arr > hi)
    if bad.any():
        raise EncodingRangeError(
            f"{int(bad.sum())} pixel values lie outside the encoding range [{lo}, {hi}] (min "
            f"{np.nanmin(arr):.3g}, max {np.nanmax(arr):.3g}, non-finite "
            f"{int((~np.isfinite(arr)).sum())}); scale the images to [0, 1] as pets_lite.data does")
    return arr


def timed(timings: dict, key: str, start: float) -> None:
    """Add the seconds since ``start`` to ``timings[key]``."""
    timings[key] = timings.get(key, 0.0) + time.perf_counter() - start


# ------------------------------------------------------------------------------------------------
# The client (hospital)
# ------------------------------------------------------------------------------------------------


class HEClient:
    """The hospital: owns the secret key; encrypts images and decrypts logits.

    ``packing="batched"`` generates relinearisation keys only (no rotation is ever needed);
    ``packing="tutorial"`` also generates TenSEAL's default Galois keys, as its tutorial does;
    its im2col encoding needs the model's patch size, which the model owner publishes.
    """

    def __init__(self, packing: str = "batched", params: CKKSParams | None = None,
                 image_size: int = 28, patch: int = 4):
        import tenseal as ts

        if packing not in PACKINGS:
            raise HEError(f"unknown packing {packing!r}; choose one of {PACKINGS}")
        self.packing, self.image_size, self.patch = packing, image_size, patch
        self.params = params or (TUTORIAL_PARAMS if packing == "tutorial" else BATCHED_PARAMS)
        self.timings: dict[str, float] = {}
        start = time.perf_counter()
        self._ctx = ts.context(ts.SCHEME_TYPE.CKKS, self.params.poly_modulus_degree,
                               coeff_mod_bit_sizes=list(self.params.coeff_mod_bit_sizes))
        self._ctx.global_scale = self.params.scale
        if packing == "tutorial":
            self._ctx.generate_galois_keys()
        public = self._ctx.copy()
        public.make_context_public()  # drops the secret key
        self._public_bytes = public.serialize(save_public_key=True, save_secret_key=False,
                                              save_galois_keys=True, save_relin_keys=True)
        self.context_id = fingerprint(self._public_bytes)
        timed(self.timings, "keygen", start)

    @property
    def context(self):
        """The private TenSEAL context (with the secret key): it never leaves the hospital."""
        return self._ctx

    def public_context(self) -> Message:
        """The public context for the server: public, relinearisation (and Galois) keys only."""
        return Message("public_context", self.packing, self.context_id, [self._public_bytes],
                       {"params": self.params.describe(), "image_size": self.image_size})

    def encrypt(self, images) -> Message:
        """Encrypt images (N, 1, H, W) with values in [0, 1] into a query for the server."""
        import tenseal as ts

        arr = as_images(images, self.image_size)
        start = time.perf_counter()
        if self.packing == "tutorial":  # TenSEAL's im2col encoding, one image per ciphertext
            blobs, windows = [], 0
            for img in arr:
                vec, windows = ts.im2col_encoding(self._ctx, img.tolist(), self.patch, self.patch,
                                                  self.patch)
                blobs.append(vec.serialize())
            meta = {"n_images": len(arr), "layout": "im2col", "patch": self.patch,
                    "windows": windows}
        else:
            slots = self.params.slots
            blobs, chunks = [], []
            for lo in range(0, len(arr), slots):
                chunk = arr[lo:lo + slots].reshape(-1, self.image_size**2)  # (n, pixels)
                chunks.append(len(chunk))
                for pixel in range(chunk.shape[1]):
                    blobs.append(ts.ckks_vector(self._ctx, chunk[:, pixel].tolist()).serialize())
            meta = {"n_images": len(arr), "chunks": chunks, "layout": "pixel-major"}
        timed(self.timings, "encrypt", start)
        return Message("query", self.packing, self.context_id, blobs, meta)

    def decrypt(self, result: Message) -> np.ndarray:
        """Logits (N, n_classes) from the server's encrypted result."""
        import tenseal as ts

        if result.kind != "result":
            raise HEError(f"decrypt takes a 'result' message, got {result.kind!r}")
        if result.context_id != self.context_id:
            raise ContextMismatchError(
                f"this result was computed under context {result.context_id}, but this client's "
                f"context is {self.context_id}: it cannot be decrypted here")
        start = time.perf_counter()
        n_classes = result.meta["n_classes"]
        if self.packing == "tutorial":
            out = np.array([ts.ckks_vector_from(self._ctx, b).decrypt() for b in result.blobs])
        else:
            rows, blobs = [], iter(result.blobs)
            for n in result.meta["chunks"]:
                rows.append(np.stack([np.array(ts.ckks_vector_from(self._ctx, next(blobs))
                                               .decrypt()[:n]) for _ in range(n_classes)], 1))
            out = np.concatenate(rows)
        timed(self.timings, "decrypt", start)
        return out


