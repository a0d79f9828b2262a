"""Notebook 09: the attestation and key-release protocol, executed in fast mode."""


def test_trusted_execution_notebook(executed, data_available):
    r = executed("09_trusted_execution", timeout=300)
    # the enclave path gives the plaintext model's answers
    assert r["max_prob_diff"] < 1e-5
    assert 0.7 < r["enclave_auc"] <= 1.0 and r["n_images"] == 128
    assert r["plaintext_in_ciphertext"] is False
    # every tampered case is refused, by the check meant for it; only the genuine one passes
    outcomes, refused_by = r["outcomes"], r["refused_by"]
    assert outcomes.pop("genuine enclave") == "accepted"
    assert set(outcomes.values()) == {"REFUSED"} and len(outcomes) == 7
    assert refused_by["changed model"] == refused_by["changed code"] == "MeasurementError"
    assert refused_by["replayed quote"] == "ReplayError"
    assert refused_by["wrong chain"] == "ChainError"
    assert refused_by["forged quote"] == "QuoteSignatureError"
    assert refused_by["key substitution"] == "KeyBindingError"
    assert refused_by["tampered ciphertext"] == "DecryptionError"
    # overheads: milliseconds per session, a small constant per message
    assert 0 < r["session_ms"] < 500
    assert 500 < r["evidence_bytes"] < 5000
    assert r["ciphertext_overhead_bytes"] < 200
    assert r["aes_gcm_mb_per_s"] > 1
    assert r["per_batch_overhead_ratio"] > 0
