"""The model owner's side (:class:`HEServer`): evaluates the x^2 network on ciphertexts under the
hospital's public context, with no secret key."""

from __future__ import annotations

import time

import numpy as np

from .. import config
from .client import Message, fingerprint, timed
from .model import HEConvNet, check_depth
from .params import CKKSParams, ContextMismatchError, HEError, SecretKeyError


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
        timed(self.timings, "load_context", start)
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
        self._weights = {k: v.detach().double().cpu().numpy()
                         for k, v in model.state_dict().items()}
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
        timed(self.timings, "evaluate", start)
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
                    terms = [cts[(k * i + a) * size + k * j + b]
                             for a in range(k) for b in range(k)]
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
        bits = level_bits(cts[0], self.params)
        lazy = bits >= 3 * self.params.scale_bits + 1  # SEAL's bound on the scale
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


def level_bits(vector, params: CKKSParams) -> int:
    """Bits of the coefficient modulus a ciphertext still has (its level)."""
    primes = vector.ciphertext()[0].coeff_modulus_size()
    return int(sum(params.coeff_mod_bit_sizes[:primes]))


