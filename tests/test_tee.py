"""pets_lite.tee: the attestation and key-release protocol, accepted and refused case by case."""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import replace

import numpy as np
import pytest
import torch

from pets_lite import tee
from pets_lite.models import SmallCNN


@pytest.fixture(scope="module")
def world():
    torch.manual_seed(0)
    model = SmallCNN(width=4, depth=2).eval()
    vendor = tee.Vendor()
    platform = tee.Platform(vendor)
    enclave = tee.Enclave(platform, model)
    return model, vendor, platform, enclave


def hospital_for(world):
    model, vendor, _, _ = world
    return tee.Hospital(vendor.certificate, tee.measure(tee.ENCLAVE_SOURCE, model))


def changed_copy(model):
    """The model with one bias changed by 1e-3 (what a backdoor looks like to the hospital)."""
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.head[-1].bias.add_(1e-3)
    return changed


def test_round_trip_gives_the_plaintext_predictions(world):
    model, _, _, enclave = world
    hospital = hospital_for(world)
    session = hospital.attest(enclave)
    images = torch.rand(5, 1, 28, 28)
    envelope = hospital.send(session, images)
    assert images.numpy().tobytes() not in envelope.ciphertext
    probs = hospital.receive(session, enclave.run(envelope, session.transcript))
    pixels = torch.round(images * 255) / 255
    expected = torch.softmax(model(pixels), 1).detach().numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    assert set(session.timings) == {"quote", "verify", "key_agreement"}
    # ciphertext = plaintext + 16-byte tag
    assert len(envelope.ciphertext) == 5 * 28 * 28 + 16


def test_changed_weights_or_code_fail_measurement(world):
    model, _, platform, _ = world
    hospital = hospital_for(world)
    changed = changed_copy(model)
    with pytest.raises(tee.MeasurementError, match="code or model was changed"):
        hospital.attest(tee.Enclave(platform, changed))
    with pytest.raises(tee.MeasurementError):
        hospital.attest(tee.Enclave(platform, model, code=tee.ENCLAVE_SOURCE + "\n# leak()"))


def test_replayed_quote_is_refused(world):
    enclave = world[3]
    hospital = hospital_for(world)
    old_nonce = hospital.challenge()
    recorded = enclave.attest(old_nonce)
    hospital.verify(recorded, old_nonce)  # accepted once
    with pytest.raises(tee.ReplayError):
        hospital.verify(recorded, old_nonce)  # the nonce is single use
    with pytest.raises(tee.ReplayError, match="replayed or stale"):
        hospital.attest(enclave, tamper=lambda evidence, nonce: recorded)


def test_wrong_chain_and_expired_certificate(world):
    model, vendor, _, _ = world
    hospital = hospital_for(world)
    with pytest.raises(tee.ChainError, match="not signed by the pinned root"):
        hospital.attest(tee.Enclave(tee.rogue_platform(), model))
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=800)
    expired = tee.Platform(vendor, start=old, days=365)
    with pytest.raises(tee.ChainError, match="not valid now"):
        hospital.attest(tee.Enclave(expired, model))
    with pytest.raises(tee.ChainError, match="does not parse"):
        hospital.attest(world[3], tamper=lambda e, n: replace(e, platform_certificate=b"junk"))


def test_forged_quote_and_key_substitution(world):
    enclave = world[3]
    hospital = hospital_for(world)
    with pytest.raises(tee.QuoteSignatureError):
        hospital.attest(enclave, tamper=lambda e, n: e.with_quote_fields(measurement=b"\0" * 32))
    with pytest.raises(tee.KeyBindingError, match="substituted"):
        hospital.attest(enclave, tamper=lambda e, n: replace(e, enclave_key=bytes(32)))


def test_tampered_ciphertext_and_wrong_key(world):
    enclave = world[3]
    hospital = hospital_for(world)
    session = hospital.attest(enclave)
    envelope = hospital.send(session, torch.rand(2, 1, 28, 28))
    flipped = bytes([envelope.ciphertext[0] ^ 1]) + envelope.ciphertext[1:]
    with pytest.raises(tee.DecryptionError, match="nothing was decrypted"):
        enclave.run(replace(envelope, ciphertext=flipped), session.transcript)
    with pytest.raises(tee.DecryptionError):  # another enclave cannot open it
        other = tee.Enclave(world[2], world[0])
        other.run(envelope, session.transcript)


def test_measure_rejects_empty_code_and_is_stable(world):
    model = world[0]
    assert tee.measure("x", model) == tee.measure("x", copy.deepcopy(model))
    assert len(tee.measure("x", model)) == 32
    with pytest.raises(ValueError, match="non-empty"):
        tee.measure("", model)


def test_a_forged_quote_claiming_the_audited_measurement_is_refused(world):
    """The forgery that matters: a changed enclave's quote edited to carry the audited
    measurement. Only the signature check stands between it and the key."""
    model, _, platform, _ = world
    hospital = hospital_for(world)
    changed = changed_copy(model)
    with pytest.raises(tee.QuoteSignatureError, match="altered or forged"):
        hospital.attest(tee.Enclave(platform, changed),
                        tamper=lambda e, n: e.with_quote_fields(measurement=hospital.expected))


def test_a_nonce_the_hospital_never_issued_is_refused(world):
    enclave = world[3]
    hospital = hospital_for(world)
    stale = bytes(32)  # never issued by this hospital
    with pytest.raises(tee.ReplayError):
        hospital.verify(enclave.attest(stale), stale)


def test_tamper_outcomes_refuse_each_case_by_its_own_check(world):
    model, _, platform, enclave = world
    rows = tee.tamper_outcomes(hospital_for(world), enclave, platform, model,
                               torch.rand(4, 1, 28, 28))
    assert [r["case"] for r in rows] == list(tee.EXPECTED_REFUSALS)
    for r in rows:
        assert r["refused_by"] == r["expected"], r
        assert r["outcome"] == ("accepted" if r["case"] == "genuine enclave" else "REFUSED")


def test_overheads_are_measured_and_consistent(world):
    model, _, _, enclave = world
    images = torch.rand(8, 1, 28, 28)
    o = tee.overheads(hospital_for(world), enclave, model, images, repeats=3)
    assert o["session"] == pytest.approx(o["quote"] + o["verify"] + o["key_agreement"])
    assert all(o[k] > 0 for k in ("encrypt", "enclave_run", "plaintext", "aes_gcm_mb_per_s"))
    # ciphertext: the pixels plus a constant (tag, IV, key, associated data), not per image
    assert 16 < o["ciphertext_overhead_bytes"] < 200 and 500 < o["evidence_bytes"] < 5000
    per_image = (o["evidence_bytes"] + 8 * 784 + o["ciphertext_overhead_bytes"]
                 + o["answer_bytes"]) / 8 / 1e6
    assert o["megabytes_per_image"] == pytest.approx(per_image)
