"""Encrypted inference with CKKS homomorphic encryption (TenSEAL): a hospital client, a model-owner
server, and two ways of packing images into ciphertexts.

Roles
    :class:`HEClient` (the hospital) creates the CKKS context and every key, hands the server a
    *public* context (no secret key), encrypts images and decrypts the returned logits.
    :class:`HEServer` (the model owner) loads the public context and evaluates an
    :class:`HEConvNet` on ciphertexts; it holds no secret key and cannot decrypt.

Packings (what one ciphertext slot holds)
    ``"tutorial"``: TenSEAL's tutorial path. One image per query, im2col-encoded into one
    ciphertext; convolution, vector-matrix products and channel packing use slot rotations, so the
    context carries Galois keys for every power-of-two rotation.
    ``"batched"``: SIMD across the batch. Slot ``b`` of every ciphertext belongs to image ``b``; the
    client encrypts one ciphertext per pixel position (up to ``N/2`` images each), and every layer
    is a per-slot multiply-add. No rotation is ever needed, so no Galois key is generated. Linear
    layers rescale once per output instead of once per term ("lazy rescaling").

Messages that cross the wire are :class:`Message` objects: serialised bytes plus a context
fingerprint, so a ciphertext from another context is refused with a clear error instead of
decrypting to noise.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from . import config, models, train
from .recipes import Recipe, cached_model

#: HomomorphicEncryption.org standard (Albrecht et al. 2018), Table 1, 128-bit classical security,
#: uniform ternary secret: the largest total coefficient modulus (bits) for each ring dimension N.
HE_STANDARD_128: dict[int, int] = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438,
                                   32768: 881}

#: Input pixels must lie in this range (what pets_lite.data produces and the model was trained on).
ENCODING_RANGE: tuple[float, float] = (0.0, 1.0)

PACKINGS = ("tutorial", "batched")


class HEError(ValueError):
    """Base class of every problem this module reports."""


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


# ------------------------------------------------------------------------------------------------
# Parameters
# ------------------------------------------------------------------------------------------------


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
                f"total coefficient modulus {sum(bits)} bits exceeds {HE_STANDARD_128[n]} bits, the "
                f"128-bit-security bound of the HomomorphicEncryption.org standard for N={n}: "
                "drop a prime, use smaller primes, or double poly_modulus_degree")
        if not all(b == self.scale_bits for b in bits[1:-1]):
            raise ParameterError(f"the middle primes {bits[1:-1]} must equal scale_bits="
                                 f"{self.scale_bits}, so each rescale restores the scale")
        if bits[0] <= self.scale_bits or bits[-1] < max(bits[:-1]):
            raise ParameterError(f"the first prime ({bits[0]} bits) must exceed the scale "
                                 f"({self.scale_bits} bits) and the special prime ({bits[-1]}) must "
                                 "be at least as large as every other prime")

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
                if _is_prime(value):
                    found.append(value)
                value -= factor
            table[bits] = found
        return [table[bits].pop() for bits in self.coeff_mod_bit_sizes]

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


# ------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------


class HEConvNet(nn.Module):
    """Patch convolution (kernel = stride = ``patch``) -> x^2 -> linear -> x^2 -> linear.

    The TenSEAL tutorial's architecture (one convolution that the im2col encoding can evaluate,
    square activations, two dense layers) with non-overlapping patches, so that im2col is a
    permutation of the pixels and the batched path encrypts every pixel exactly once.

    >>> HEConvNet(channels=2, hidden=4)(torch.zeros(3, 1, 28, 28)).shape
    torch.Size([3, 2])
    """

    #: Multiplicative levels each packing consumes (TenSEAL's pack_vectors masks: one more).
    DEPTH = {"batched": 5, "tutorial": 6}

    def __init__(self, channels: int = 8, hidden: int = 32, patch: int = 4, image_size: int = 28,
                 n_classes: int = 2):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"patch {patch} must divide image_size {image_size}")
        self.patch, self.image_size, self.channels, self.hidden = patch, image_size, channels, hidden
        self.grid = image_size // patch
        self.conv = nn.Conv2d(1, channels, patch, stride=patch)
        self.act1 = models.Square()
        self.fc1 = nn.Linear(channels * self.grid**2, hidden)
        self.act2 = models.Square()
        self.fc2 = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, self.image_size, self.image_size):
            raise ValueError(f"expected (N, 1, {self.image_size}, {self.image_size}), "
                             f"got {tuple(x.shape)}")
        h = self.act1(self.conv(x)).flatten(1)
        return self.fc2(self.act2(self.fc1(h)))

    @torch.no_grad()
    def intermediates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every layer's output in plaintext (to check the values fit the encoding's headroom)."""
        conv = self.conv(x)
        fc1 = self.fc1((conv**2).flatten(1))
        return {"conv": conv, "fc1": fc1, "logits": self.fc2(fc1**2)}


@dataclass(frozen=True)
class HERecipe(Recipe):
    """The x^2 model's plaintext training: :class:`HEConvNet` sizes, AdamW, best validation epoch.

    The learning rate (3e-3 against 1e-3) and the 30 full-mode epochs were chosen on the validation
    split (``benchmarks/recipe_search.py he``)."""

    channels: int = 8
    hidden: int = 32
    patch: int = 4
    epochs: int = 30
    lr: float = 3e-3
    batch_size: int = 64

    FAST = {"epochs": 10}

    def problems(self) -> list[str]:
        return super().problems() + self.positive("channels", "hidden", "patch", "epochs", "lr",
                                                  "batch_size")


#: The recipe of chapter 05's x^2 model (full mode).
HE_RECIPE = HERecipe()


def he_model(flag: str | None = None, seed: int | None = None, fast: bool | None = None,
             refresh: bool = False, progress: bool = True, recipe: HERecipe = HE_RECIPE,
             **changes):
    """The x^2 model trained in plaintext, cached like the baseline. Returns ``(model, splits, hist)``.

    ``flag``, ``seed`` and ``changes`` replace the recipe's fields; ``fast=None`` follows
    ``PETS_FAST``. Square activations can blow up early in training; small inputs in [0, 1],
    PyTorch's default initialisation, AdamW and best-validation selection kept it stable here.
    """
    from . import data

    given = {k: v for k, v in (("flag", flag), ("seed", seed)) if v is not None}
    recipe = recipe.variant(fast).replace(**given, **changes)
    meta = data.info(recipe.flag)
    splits = data.load_splits(recipe.flag, fast=recipe.fast, seed=recipe.seed)

    def build():
        return HEConvNet(channels=recipe.channels, hidden=recipe.hidden, patch=recipe.patch,
                         n_classes=meta.n_classes)

    def train_fn(model):
        history = train.fit(model, splits["train"], splits["val"], epochs=recipe.epochs,
                            lr=recipe.lr, batch_size=recipe.batch_size, seed=recipe.seed,
                            progress=progress, desc=f"x^2 model {recipe.flag}")
        return {"history": vars(history)}

    model, results, _ = cached_model("he_convnet", recipe, build, train_fn, refresh=refresh)
    model.eval()
    return model, splits, train.History(**results["history"])


# ------------------------------------------------------------------------------------------------
# What crosses the wire
# ------------------------------------------------------------------------------------------------


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


def _as_images(images, image_size: int) -> np.ndarray:
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


def _timed(timings: dict, key: str, start: float) -> None:
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
        _timed(self.timings, "keygen", start)

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

        arr = _as_images(images, self.image_size)
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
        _timed(self.timings, "encrypt", start)
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
        _timed(self.timings, "decrypt", start)
        return out


# ------------------------------------------------------------------------------------------------
# The server (model owner)
# ------------------------------------------------------------------------------------------------


class HEServer:
    """The model owner: evaluates :class:`HEConvNet` on ciphertexts under the client's public
    context. It has no secret key; :meth:`try_decrypt` shows that decryption fails here."""

    def __init__(self, public_context: Message, model: HEConvNet):
        import tenseal as ts

        if not isinstance(public_context, Message) or public_context.kind != "public_context":
            raise HEError("HEServer needs the client's public_context() message")
        if not isinstance(model, HEConvNet):
            raise HEError(f"HEServer evaluates an HEConvNet, got {type(model).__name__}")
        self.packing = public_context.packing
        self.timings: dict[str, float] = {}
        raw = public_context.blobs[0]
        self.context_id = fingerprint(raw)
        if self.context_id != public_context.context_id:
            raise ContextMismatchError("the public context's bytes do not match its fingerprint")
        start = time.perf_counter()
        self._ctx = ts.context_from(raw)
        _timed(self.timings, "load_context", start)
        if self._ctx.is_private() or self._ctx.has_secret_key():
            raise SecretKeyError("the context sent to the server holds the secret key: the client "
                                 "must send public_context(), never its private context")
        params = public_context.meta["params"]
        self.params = CKKSParams(params["N"], tuple(params["primes (bits)"]),
                                 int(str(params["scale"]).split("^")[1]))
        check_depth(model, self.params, self.packing)
        self.image_size = public_context.meta["image_size"]
        if model.image_size != self.image_size:
            raise HEError(f"the model takes {model.image_size} px images, the client sends "
                          f"{self.image_size} px")
        self.model = model.eval()
        self._weights = {k: v.detach().double().cpu().numpy() for k, v in model.state_dict().items()}
        self._primes = self.params.primes()

    @property
    def context(self):
        """The server's TenSEAL context: public keys only."""
        return self._ctx

    def try_decrypt(self, message: Message):
        """Attempt to decrypt a ciphertext here; always raises :class:`SecretKeyError`."""
        import tenseal as ts

        vector = ts.ckks_vector_from(self._ctx, message.blobs[0])
        try:
            vector.decrypt()
        except ValueError as err:
            raise SecretKeyError(f"the server cannot decrypt: {err}") from err
        raise AssertionError("decryption succeeded on the server: the key separation is broken")

    def _load(self, blob: bytes):
        import tenseal as ts

        try:
            return ts.ckks_vector_from(self._ctx, blob)
        except Exception as err:  # SEAL refuses ciphertexts whose parameters differ
            raise ContextMismatchError(f"a ciphertext does not belong to this server's context "
                                       f"({self.context_id}): {err}") from err

    def evaluate(self, query: Message, progress: bool = True) -> Message:
        """Run the model on an encrypted query; return the encrypted logits."""
        if query.kind != "query":
            raise HEError(f"evaluate takes a 'query' message, got {query.kind!r}")
        if query.context_id != self.context_id:
            raise ContextMismatchError(
                f"the query was encrypted under context {query.context_id}, but this server holds "
                f"context {self.context_id}; ask the client to encrypt under the public context it "
                "shared with this server")
        if query.packing != self.packing:
            raise HEError(f"query packing {query.packing!r} != context packing {self.packing!r}")
        start = time.perf_counter()
        if self.packing == "tutorial":
            if query.meta.get("patch") != self.model.patch:
                raise HEError(f"the query was im2col-encoded with {query.meta.get('patch')} px "
                              f"patches, the model uses {self.model.patch} px")
            blobs = [self._tutorial_one(b, query.meta["windows"]) for b in
                     config.progress(query.blobs, desc="encrypted inference (tutorial)",
                                     disable=not progress)]
        else:
            pixels = self.image_size**2
            n_chunks = len(query.meta["chunks"])
            if len(query.blobs) != n_chunks * pixels:
                raise HEError(f"a batched query holds {pixels} ciphertexts per chunk, got "
                              f"{len(query.blobs)} for {n_chunks} chunk(s)")
            blobs = []
            for c in range(n_chunks):
                cts = [self._load(b) for b in query.blobs[c * pixels:(c + 1) * pixels]]
                blobs += [v.serialize() for v in self._batched(cts, progress)]
        _timed(self.timings, "evaluate", start)
        return Message("result", self.packing, self.context_id, blobs,
                       {**query.meta, "n_classes": self.model.fc2.out_features})

    # -- the tutorial path: one im2col-encoded image per ciphertext, rotations inside TenSEAL --
    def _tutorial_one(self, blob: bytes, windows: int) -> bytes:
        import tenseal as ts

        w = self._weights
        vec = self._load(blob)
        # Same correction as the batched path: every rescale divides by a prime q, not by 2^s, so
        # each weight matrix absorbs q / 2^s of the rescales between it and the previous one.
        r_conv = self._ratio(vec)
        channels = [vec.conv2d_im2col((kernel[0] * r_conv).tolist(), windows) + float(bias)
                    for kernel, bias in zip(w["conv.weight"], w["conv.bias"])]
        r_pack = self._ratio(channels[0])
        vec = ts.CKKSVector.pack_vectors(channels)  # torch's flatten order: channel, then window
        r_sq = self._ratio(vec)                     # (pack_vectors multiplies by a 0/1 mask)
        vec.square_()
        fc1 = w["fc1.weight"].T * (r_pack**2 * r_sq * self._ratio(vec))
        vec = vec.mm(fc1.tolist()) + w["fc1.bias"].tolist()
        r_sq = self._ratio(vec)
        vec.square_()
        fc2 = w["fc2.weight"].T * (r_sq * self._ratio(vec))
        vec = vec.mm(fc2.tolist()) + w["fc2.bias"].tolist()
        return vec.serialize()

    def _batched(self, cts: list, progress: bool) -> list:
        """SIMD across the batch: every ciphertext holds one value of every image."""
        w, m = self._weights, self.model
        k, g, size = m.patch, m.grid, self.image_size
        conv_w, conv_b = w["conv.weight"][:, 0], w["conv.bias"]
        # conv: output (c, i, j) = sum_(a, b) W[c, a, b] * x[k i + a, k j + b] + bias[c]
        # TenSEAL labels every rescaled ciphertext with the scale 2^s although it divided by a prime
        # q != 2^s, so each rescale multiplies the value by 2^s / q (about 1 - 1e-4). We fold the
        # exact ratio q / 2^s into the next layer's weights (bias excluded): see _ratio.
        feats = []
        bar = config.progress(total=m.channels * g * g + m.hidden + m.fc2.out_features,
                              desc="encrypted inference (batched)", disable=not progress)
        for c in range(m.channels):
            for i in range(g):
                for j in range(g):
                    terms = [cts[(k * i + a) * size + k * j + b] for a in range(k) for b in range(k)]
                    z = self._dot(terms, conv_w[c].ravel(), conv_b[c])
                    sq_ratio = self._ratio(z)
                    z.square_()
                    feats.append(z)  # torch's flatten order: c, i, j
                    bar.update()
        hidden = []
        for h in range(m.hidden):
            z = self._dot(feats, w["fc1.weight"][h] * sq_ratio, w["fc1.bias"][h])
            sq2_ratio = self._ratio(z)
            z.square_()
            hidden.append(z)
            bar.update()
        out = []
        for o in range(m.fc2.out_features):
            out.append(self._dot(hidden, w["fc2.weight"][o] * sq2_ratio, w["fc2.bias"][o]))
            bar.update()
        bar.close()
        return out

    def _ratio(self, vector) -> float:
        """q / 2^s for the prime the next rescale of ``vector`` divides by (its last prime)."""
        primes = vector.ciphertext()[0].coeff_modulus_size()
        return self._primes[primes - 1] / self.params.scale

    def _dot(self, cts: list, weights: np.ndarray, bias: float):
        """sum_i w_i * ct_i + bias with one rescale (lazy) when the modulus left allows it."""
        level_bits = _level_bits(cts[0], self.params)
        lazy = level_bits >= 3 * self.params.scale_bits + 1  # SEAL's bound on the scale
        ratio = self._ratio(cts[0])  # the prime this layer's own rescale divides by, over 2^s
        pairs = [(ct, float(wt) * ratio) for ct, wt in zip(cts, weights) if wt != 0.0]
        if not pairs:
            raise HEError("a row of all-zero weights cannot be evaluated (transparent ciphertext)")
        if lazy:
            self._ctx.auto_rescale = False
            try:  # products stay at scale^2: no rescale per term
                acc = pairs[0][0] * pairs[0][1]
                for ct, wt in pairs[1:]:
                    acc.add_(ct * wt)
            finally:
                self._ctx.auto_rescale = True
            # multiply by the plaintext integer 1 (1/scale encoded at the scale), then rescale once
            acc.mul_(1.0 / self.params.scale)
        else:
            acc = pairs[0][0] * pairs[0][1]
            for ct, wt in pairs[1:]:
                acc.add_(ct * wt)
        acc.add_(float(bias))
        return acc


def _is_prime(n: int) -> bool:
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


def _level_bits(vector, params: CKKSParams) -> int:
    """Bits of the coefficient modulus a ciphertext still has (its level)."""
    primes = vector.ciphertext()[0].coeff_modulus_size()
    return int(sum(params.coeff_mod_bit_sizes[:primes]))


def check_depth(model: HEConvNet, params: CKKSParams, packing: str) -> None:
    """Raise :class:`DepthError` when ``params`` cannot hold ``model``'s multiplications."""
    need = HEConvNet.DEPTH[packing]
    if params.depth < need:
        raise DepthError(
            f"the {packing} path needs {need} multiplicative levels (conv, x^2, fc1, x^2, fc2"
            f"{', plus one for the channel packing' if packing == 'tutorial' else ''}), but the "
            f"parameters {list(params.coeff_mod_bit_sizes)} give {params.depth}: add "
            f"{need - params.depth} prime(s) of {params.scale_bits} bits (the total must stay "
            f"<= {params.max_bits_128} bits at N={params.poly_modulus_degree}) or double N")


# ------------------------------------------------------------------------------------------------
# One round trip, measured
# ------------------------------------------------------------------------------------------------


def run_path(model: HEConvNet, images, packing: str = "batched", params: CKKSParams | None = None,
             progress: bool = True) -> dict:
    """Client keygen -> public context -> encrypt -> server evaluate -> decrypt, timed and sized.

    Returns ``{"logits", "seconds": {keygen, encrypt, evaluate, decrypt, total}, "bytes":
    {public_context, query, result}, "n_images", "packing", "galois_keys", "params"}``.
    """
    client = HEClient(packing, params, image_size=model.image_size, patch=model.patch)
    public = client.public_context()
    server = HEServer(public, model)
    query = client.encrypt(images)
    result = server.evaluate(query, progress=progress)
    return summarise(client, server, public, query, result, client.decrypt(result))


def summarise(client: HEClient, server: HEServer, public: Message, query: Message,
              result: Message, logits: np.ndarray) -> dict:
    """The record :func:`run_path` returns, from a round trip the caller ran step by step."""
    seconds = {"keygen": client.timings["keygen"], "encrypt": client.timings["encrypt"],
               "evaluate": server.timings["evaluate"] + server.timings["load_context"],
               "decrypt": client.timings["decrypt"]}
    seconds["total"] = float(sum(seconds.values()))
    return {"logits": logits, "seconds": seconds, "n_images": int(len(logits)),
            "packing": client.packing, "galois_keys": bool(server.context.has_galois_keys()),
            "params": client.params,
            "bytes": {"public_context": public.nbytes, "query": query.nbytes,
                      "result": result.nbytes}}


def cost_row(run: dict) -> dict:
    """One row of the cost table: seconds per stage and per image, MiB on the wire."""
    n, s, b = run["n_images"], run["seconds"], run["bytes"]
    mib = 2.0**20
    return {"path": run["packing"], "images": n, "keygen s": s["keygen"], "encrypt s": s["encrypt"],
            "evaluate s": s["evaluate"], "decrypt s": s["decrypt"],
            "s / image (enc+eval+dec)": (s["encrypt"] + s["evaluate"] + s["decrypt"]) / n,
            "public context MiB": b["public_context"] / mib, "query MiB": b["query"] / mib,
            "query MiB / image": b["query"] / mib / n, "result MiB": b["result"] / mib,
            "Galois keys": run["galois_keys"]}
