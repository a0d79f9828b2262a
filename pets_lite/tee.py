"""Remote attestation and key release for a trusted execution environment, simulated in software.

**No hardware isolation here.** The "enclave" is an ordinary Python object in the same process; the
"platform attestation key" is an ordinary key in memory. What *is* real is the protocol and its
cryptography (the ``cryptography`` package), so each check a hospital makes before it releases
images to a remote enclave runs, and each one can be seen to fail:

1. **Trust anchor.** The hospital pins the vendor's root certificate (Intel, AMD, Arm, NVIDIA run
   such roots). The vendor certifies each platform's attestation key (an X.509 chain).
2. **Measurement.** Loading the enclave hashes its code and model weights (SHA-256): the analogue of
   SGX's MRENCLAVE / TDX's MRTD / SEV-SNP's launch digest.
3. **Quote.** Challenged with a fresh nonce, the platform signs (ECDSA P-256) the measurement and a
   ``report_data`` field that binds the nonce and the enclave's ephemeral X25519 public key.
4. **Verification.** The hospital checks the chain to its pinned root, the quote's signature, that
   the nonce is the one it just issued (no replay), the measurement against the audited build, and
   that the key it received is the one the quote binds.
5. **Key release.** X25519 key agreement with the attested key, HKDF-SHA256, then AES-256-GCM of the
   images, bound to the quote by the associated data. Only the attested enclave can decrypt.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID
from torch import nn

SIMULATION_NOTICE = ("SIMULATION: real cryptography, no hardware isolation. The enclave and the "
                     "platform key live in this Python process.")
HKDF_INFO = b"pets-lite tee key release v1"


class AttestationError(Exception):
    """Base class: the hospital refuses to release data to this enclave."""


class ChainError(AttestationError):
    """The platform certificate does not chain to the pinned vendor root (or is not valid now)."""


class QuoteSignatureError(AttestationError):
    """The quote's signature does not verify under the certified platform key."""


class ReplayError(AttestationError):
    """The quote answers a nonce other than the fresh one the hospital just issued."""


class MeasurementError(AttestationError):
    """The enclave's code or model differs from the audited build."""


class KeyBindingError(AttestationError):
    """The enclave key received is not the one the quote binds (a key substitution)."""


class DecryptionError(Exception):
    """AES-GCM authentication failed: the ciphertext, nonce, key or associated data differ."""


# ------------------------------------------------------------------------------ measurement

def measure(code: str, model: nn.Module) -> bytes:
    """SHA-256 over the enclave's code and its model weights (names, dtypes, shapes, values)."""
    if not isinstance(code, str) or not code:
        raise ValueError("code must be a non-empty string (the enclave program's source)")
    digest = hashlib.sha256(b"code\0" + code.encode())
    for name, tensor in model.state_dict().items():
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"\0{name}\0{array.dtype}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.digest()


def enclave_program(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The code that runs inside the enclave: class probabilities of decrypted images."""
    model.eval()
    with torch.no_grad():
        return torch.softmax(model(images), dim=1)


#: The audited source the hospital expects (its hash is part of the measurement).
ENCLAVE_SOURCE = inspect.getsource(enclave_program)


# --------------------------------------------------------------------------- vendor, platform

def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Vendor:
    """A hardware vendor's root of trust: an ECDSA P-256 key and its self-signed CA certificate."""

    def __init__(self, name: str = "Simulated TEE Vendor Root CA", days: int = 3650):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.certificate = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=1))
            .not_valid_after(_now() + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256()))

    def certify(self, public_key: ec.EllipticCurvePublicKey, name: str,
                days: int = 365, start: dt.datetime | None = None) -> x509.Certificate:
        """Issue a platform attestation-key certificate (what the vendor does at manufacture)."""
        start = start or _now() - dt.timedelta(minutes=1)
        return (x509.CertificateBuilder().subject_name(_name(name))
                .issuer_name(self.certificate.subject).public_key(public_key)
                .serial_number(x509.random_serial_number()).not_valid_before(start)
                .not_valid_after(start + dt.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(self.key, hashes.SHA256()))


class Platform:
    """A machine with an attestation key certified by ``vendor`` (in hardware, fused in the CPU)."""

    def __init__(self, vendor: Vendor, name: str = "simulated-platform-0", **certify_kw):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.certificate = vendor.certify(self.key.public_key(), name, **certify_kw)

    def sign_quote(self, body: bytes) -> bytes:
        return self.key.sign(body, ec.ECDSA(hashes.SHA256()))


# -------------------------------------------------------------------------------- evidence

def _raw(public_key: x25519.X25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def report_data(nonce: bytes, enclave_key: bytes) -> bytes:
    """What the quote binds: SHA-256(nonce || enclave public key)."""
    return hashlib.sha256(nonce + enclave_key).digest()


@dataclass(frozen=True)
class Evidence:
    """What the enclave sends back to a challenge: the signed quote, the platform certificate, and
    its public key (outside the quote, bound to it through ``report_data``)."""

    quote: bytes
    signature: bytes
    platform_certificate: bytes  # DER
    enclave_key: bytes  # raw X25519 public key

    @property
    def fields(self) -> dict:
        return {k: bytes.fromhex(v) for k, v in json.loads(self.quote).items()}

    def size(self) -> int:
        """Bytes on the wire."""
        return (len(self.quote) + len(self.signature) + len(self.platform_certificate)
                + len(self.enclave_key))

    def with_quote_fields(self, **changes: bytes) -> "Evidence":
        """A copy with quote fields edited but the old signature kept (an attacker's forgery)."""
        body = {k: v.hex() for k, v in {**self.fields, **changes}.items()}
        return Evidence(json.dumps(body, sort_keys=True).encode(), self.signature,
                        self.platform_certificate, self.enclave_key)


def make_quote(platform: Platform, measurement: bytes, nonce: bytes,
               enclave_key: bytes) -> Evidence:
    """The platform signs ``{measurement, nonce, report_data}`` (the quoting step)."""
    body = json.dumps({"measurement": measurement.hex(), "nonce": nonce.hex(),
                       "report_data": report_data(nonce, enclave_key).hex()},
                      sort_keys=True).encode()
    return Evidence(body, platform.sign_quote(body),
                    platform.certificate.public_bytes(serialization.Encoding.DER), enclave_key)


@dataclass(frozen=True)
class Envelope:
    """AES-256-GCM ciphertext of an array, with what the receiver needs to rebuild it."""

    sender_key: bytes  # the sender's ephemeral X25519 public key (raw)
    iv: bytes
    ciphertext: bytes
    aad: bytes
    dtype: str
    shape: tuple[int, ...]

    def size(self) -> int:
        return len(self.sender_key) + len(self.iv) + len(self.ciphertext) + len(self.aad)


def _derive(own: x25519.X25519PrivateKey, peer: bytes, transcript: bytes) -> bytes:
    shared = own.exchange(x25519.X25519PublicKey.from_public_bytes(peer))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=hashlib.sha256(transcript).digest(),
                info=HKDF_INFO).derive(shared)


def seal(key: bytes, array: np.ndarray, sender_key: bytes, aad: bytes) -> Envelope:
    """AES-256-GCM encrypt an array with a fresh 96-bit IV; ``aad`` is authenticated, not hidden."""
    array = np.ascontiguousarray(array)
    iv = os.urandom(12)
    return Envelope(sender_key, iv, AESGCM(key).encrypt(iv, array.tobytes(), aad), aad,
                    str(array.dtype), tuple(array.shape))


def unseal(key: bytes, envelope: Envelope) -> np.ndarray:
    """Decrypt and authenticate; :class:`DecryptionError` if anything was changed."""
    try:
        plain = AESGCM(key).decrypt(envelope.iv, envelope.ciphertext, envelope.aad)
    except InvalidTag as exc:
        raise DecryptionError("AES-GCM authentication failed: the ciphertext, IV, associated data "
                              "or key differ from what was sealed; nothing was decrypted") from exc
    return np.frombuffer(plain, dtype=envelope.dtype).reshape(envelope.shape).copy()


# ------------------------------------------------------------------------------- the enclave

class Enclave:
    """The remote party: loads code and a model, is measured, answers challenges, runs inference.

    Its X25519 key is generated at load and never leaves the object (in hardware: enclave memory).
    """

    def __init__(self, platform: Platform, model: nn.Module, code: str = ENCLAVE_SOURCE):
        self.platform, self.model, self.code = platform, model, code
        self.measurement = measure(code, model)
        self._key = x25519.X25519PrivateKey.generate()
        self.public_key = _raw(self._key.public_key())

    def attest(self, nonce: bytes) -> Evidence:
        """Answer a challenge: a quote over this enclave's measurement, the nonce and its key."""
        return make_quote(self.platform, self.measurement, nonce, self.public_key)

    def run(self, envelope: Envelope, transcript: bytes) -> Envelope:
        """Decrypt images sealed to this enclave, run the model, seal the probabilities back."""
        key = _derive(self._key, envelope.sender_key, transcript)
        images = torch.from_numpy(unseal(key, envelope).astype(np.float32) / 255.0)
        probs = enclave_program(self.model, images).numpy().astype(np.float32)
        return seal(key, probs, self.public_key, envelope.aad + b"|result")


# ------------------------------------------------------------------------------ the hospital

@dataclass
class Session:
    """An attested channel: the key the hospital derived, the transcript it is bound to."""

    key: bytes
    hospital_key: bytes
    transcript: bytes
    timings: dict[str, float] = field(default_factory=dict)


class Hospital:
    """The verifier: pins the vendor root and the audited measurement; issues single-use nonces."""

    def __init__(self, root: x509.Certificate, expected_measurement: bytes):
        self.root, self.expected = root, expected_measurement
        self._pending: set[bytes] = set()

    def challenge(self) -> bytes:
        """A fresh 256-bit nonce, valid for one verification."""
        nonce = os.urandom(32)
        self._pending.add(nonce)
        return nonce

    def verify(self, evidence: Evidence, nonce: bytes, now: dt.datetime | None = None) -> None:
        """Every check, in order; raise the :class:`AttestationError` of the first that fails."""
        now = now or _now()
        try:
            cert = x509.load_der_x509_certificate(evidence.platform_certificate)
        except ValueError as exc:
            raise ChainError(f"the platform certificate does not parse: {exc}") from exc
        try:
            cert.verify_directly_issued_by(self.root)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise ChainError(f"platform certificate {cert.subject.rfc4514_string()!r} is not "
                             f"signed by the pinned root {self.root.subject.rfc4514_string()!r}"
                             ) from exc
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise ChainError(f"platform certificate not valid now ({now:%Y-%m-%d}): valid "
                             f"{cert.not_valid_before_utc:%Y-%m-%d} to "
                             f"{cert.not_valid_after_utc:%Y-%m-%d}")
        try:
            cert.public_key().verify(evidence.signature, evidence.quote, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as exc:
            raise QuoteSignatureError("the quote's signature does not verify under the certified "
                                      "platform key: the quote was altered or forged") from exc
        fields = evidence.fields
        if fields["nonce"] != nonce or nonce not in self._pending:
            raise ReplayError("the quote does not answer the fresh nonce just issued (a replayed "
                              "or stale quote); challenge again")
        self._pending.discard(nonce)  # single use
        if fields["measurement"] != self.expected:
            raise MeasurementError(f"enclave measurement {fields['measurement'].hex()[:16]}... "
                                   f"differs from the audited build {self.expected.hex()[:16]}...: "
                                   "its code or model was changed")
        if fields["report_data"] != report_data(nonce, evidence.enclave_key):
            raise KeyBindingError("the enclave key received is not the key the quote binds: "
                                  "someone substituted it in transit")

    def attest(self, enclave: "Enclave | callable", tamper=None) -> Session:
        """Challenge, verify, and derive the session key; ``tamper(evidence, nonce)`` lets a test or
        a lesson play the attacker between the enclave and the hospital."""
        timings = {}
        t = time.perf_counter()
        nonce = self.challenge()
        evidence = enclave.attest(nonce)
        timings["quote"] = time.perf_counter() - t
        if tamper is not None:
            evidence = tamper(evidence, nonce)
        t = time.perf_counter()
        self.verify(evidence, nonce)
        timings["verify"] = time.perf_counter() - t
        t = time.perf_counter()
        own = x25519.X25519PrivateKey.generate()
        transcript = hashlib.sha256(evidence.quote + evidence.signature).digest()
        key = _derive(own, evidence.enclave_key, transcript)
        timings["key_agreement"] = time.perf_counter() - t
        return Session(key, _raw(own.public_key()), transcript, timings)

    def send(self, session: Session, images: torch.Tensor) -> Envelope:
        """Seal images (as uint8 pixels, their stored form) to the attested enclave."""
        pixels = torch.round(images.detach().cpu() * 255).to(torch.uint8).numpy()
        return seal(session.key, pixels, session.hospital_key, session.transcript)

    def receive(self, session: Session, envelope: Envelope) -> np.ndarray:
        """Open the enclave's sealed answer."""
        return unseal(session.key, envelope)


def rogue_platform(name: str = "rogue-platform") -> Platform:
    """A platform certified by an attacker's own root: software pretending to be a TEE."""
    return Platform(Vendor("Rogue Root CA"), name)


# --------------------------------------------------------------- the lesson's measurements

#: What each tampered case of :func:`tamper_outcomes` must be refused by (None: accepted).
EXPECTED_REFUSALS = {
    "genuine enclave": None,
    "changed model": MeasurementError,
    "changed code": MeasurementError,
    "replayed quote": ReplayError,
    "wrong chain": ChainError,
    "forged quote": QuoteSignatureError,
    "key substitution": KeyBindingError,
    "tampered ciphertext": DecryptionError,
}


def tamper_attempts(hospital: Hospital, enclave: Enclave, platform: Platform, model: nn.Module,
                    images: torch.Tensor) -> dict:
    """The attacker's attempts, one callable per case of :data:`EXPECTED_REFUSALS`, each ending in
    the hospital's own checks.

    * changed model: weights that differ by 1e-3 in one bias (a backdoor looks the same);
    * changed code: the program with one extra line (it could copy the images out);
    * replayed quote: a genuine quote recorded from an earlier, accepted session;
    * wrong chain: software pretending to be a TEE, its key certified by the attacker's own root;
    * forged quote: the changed enclave's quote edited to carry the audited measurement, its
      signature kept;
    * key substitution: a man in the middle replaces the enclave's public key with its own;
    * tampered ciphertext: one bit of the sealed images flipped in transit.
    """
    changed = _changed_copy(model)
    recorded_nonce = hospital.challenge()
    recorded = enclave.attest(recorded_nonce)  # an old, genuine exchange the attacker kept
    hospital.verify(recorded, recorded_nonce)  # accepted then
    attacker_key = _raw(x25519.X25519PrivateKey.generate().public_key())

    def forged():
        return hospital.attest(Enclave(platform, changed), tamper=lambda evidence, nonce:
                               evidence.with_quote_fields(measurement=hospital.expected))

    def flipped():
        session = hospital.attest(enclave)
        envelope = hospital.send(session, images[:4])
        bad = Envelope(envelope.sender_key, envelope.iv,
                       bytes([envelope.ciphertext[0] ^ 1]) + envelope.ciphertext[1:],
                       envelope.aad, envelope.dtype, envelope.shape)
        return enclave.run(bad, session.transcript)

    return {
        "genuine enclave": lambda: hospital.attest(enclave),
        "changed model": lambda: hospital.attest(Enclave(platform, changed)),
        "changed code": lambda: hospital.attest(
            Enclave(platform, model, code=ENCLAVE_SOURCE + "\nleak(images)")),
        "replayed quote": lambda: hospital.attest(enclave, tamper=lambda ev, n: recorded),
        "wrong chain": lambda: hospital.attest(Enclave(rogue_platform(), model)),
        "forged quote": forged,
        "key substitution": lambda: hospital.attest(enclave, tamper=lambda ev, n: Evidence(
            ev.quote, ev.signature, ev.platform_certificate, attacker_key)),
        "tampered ciphertext": flipped,
    }


def _changed_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose last parameter differs by 1e-3."""
    import copy

    changed = copy.deepcopy(model)
    with torch.no_grad():
        list(changed.parameters())[-1].add_(1e-3)
    return changed


def tamper_outcomes(hospital: Hospital, enclave: Enclave, platform: Platform, model: nn.Module,
                    images: torch.Tensor) -> list[dict]:
    """Run every attempt of :func:`tamper_attempts`; one row per case: ``outcome`` ("accepted"
    or "REFUSED"), ``refused_by`` (the error's class name), ``reason`` (its first clause) and
    ``expected`` (the class name :data:`EXPECTED_REFUSALS` names, "" for acceptance)."""
    rows = []
    for case, attempt in tamper_attempts(hospital, enclave, platform, model, images).items():
        expected = EXPECTED_REFUSALS[case]
        row = {"case": case, "outcome": "accepted", "refused_by": "", "reason": "",
               "expected": expected.__name__ if expected else ""}
        try:
            attempt()
        except (AttestationError, DecryptionError) as exc:
            row.update(outcome="REFUSED", refused_by=type(exc).__name__,
                       reason=str(exc).split(":")[0])
        rows.append(row)
    return rows


def _median_seconds(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return float(np.median(samples))


def overheads(hospital: Hospital, enclave: Enclave, model: nn.Module, images: torch.Tensor,
              repeats: int = 20) -> dict:
    """What the simulated protocol costs, as medians over ``repeats`` runs (seconds unless named).

    Per session: ``quote``, ``verify``, ``key_agreement`` and their sum ``session``. Per batch of
    ``images``, measured side by side: ``encrypt``, ``enclave_run`` (decrypt, infer, encrypt),
    ``decrypt_answer`` and the model's ``plaintext`` inference, with the median over rounds of
    (encrypt + enclave run) / plaintext as ``per_batch_overhead_ratio``. Bytes: ``evidence_bytes``,
    ``ciphertext_overhead_bytes`` (beyond the raw pixels), ``answer_bytes``. AES-256-GCM
    throughput ``aes_gcm_mb_per_s``. Per image of one session that serves this batch:
    ``seconds_per_image`` and ``megabytes_per_image``. This is the cost of the protocol's
    cryptography in Python; it says nothing about the cost of hardware isolation."""
    steps = {"quote": [], "verify": [], "key_agreement": []}
    for _ in range(repeats):
        session = hospital.attest(enclave)
        for name in steps:
            steps[name].append(session.timings[name])
    out = {name: float(np.median(v)) for name, v in steps.items()}
    out["session"] = sum(out.values())
    sealed = hospital.send(session, images)
    answer = enclave.run(sealed, session.transcript)
    pixels = torch.round(images * 255) / 255
    per_batch = {"plaintext": [], "encrypt": [], "enclave_run": [], "decrypt_answer": []}
    for _ in range(max(5, repeats // 4)):  # side by side, so that a busy machine slows all alike
        for name, step in (("plaintext", lambda: enclave_program(model, pixels)),
                           ("encrypt", lambda: hospital.send(session, images)),
                           ("enclave_run", lambda: enclave.run(sealed, session.transcript)),
                           ("decrypt_answer", lambda: hospital.receive(session, answer))):
            per_batch[name].append(_median_seconds(step, 1))
    out.update({name: float(np.median(v)) for name, v in per_batch.items()})
    ratios = (np.add(per_batch["encrypt"], per_batch["enclave_run"])
              / np.asarray(per_batch["plaintext"]))
    raw = torch.round(images * 255).to(torch.uint8).numpy()
    aes = _median_seconds(lambda: seal(session.key, raw, session.hospital_key, b""), repeats)
    n = len(images)
    out.update(
        per_batch_overhead_ratio=float(np.median(ratios)),
        evidence_bytes=enclave.attest(hospital.challenge()).size(),
        ciphertext_overhead_bytes=sealed.size() - raw.size, answer_bytes=answer.size(),
        aes_gcm_mb_per_s=raw.size / 1e6 / aes,
        seconds_per_image=(out["session"] + out["encrypt"] + out["enclave_run"]
                           + out["decrypt_answer"]) / n)
    out["megabytes_per_image"] = (out["evidence_bytes"] + sealed.size() + answer.size()) / n / 1e6
    return out
