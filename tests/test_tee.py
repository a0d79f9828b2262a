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
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.head[-1].bias.add_(1e-3)
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
