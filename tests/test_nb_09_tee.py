"""Notebook 09: the attestation and key-release protocol, executed in fast mode; what its prose
says is asserted."""

from pets_lite import results, tee


def test_trusted_execution_notebook(executed, data_available):
    r = executed("09_trusted_execution", timeout=300)
    # the enclave path gives the plaintext model's answers, on the whole test split
    assert r["max_prob_diff"] < 1e-5
    assert 0.8 < r["enclave_auc"] <= 1.0 and r["n_images"] == 624
    assert r["plaintext_in_ciphertext"] is False
    # "Only the genuine enclave gets the key": every tampered case is refused, by its own check
    outcomes, refused_by = r["outcomes"], r["refused_by"]
    assert list(outcomes) == list(tee.EXPECTED_REFUSALS)
    for case, expected in tee.EXPECTED_REFUSALS.items():
        assert outcomes[case] == ("accepted" if expected is None else "REFUSED"), case
        assert refused_by[case] == (expected.__name__ if expected else ""), case
    # what the prose quotes: milliseconds per session, a small constant per message
    assert 0 < r["session_ms"] < 500
    assert 500 < r["evidence_bytes"] < 5000
    assert 16 < r["ciphertext_overhead_bytes"] < 200
    assert r["aes_gcm_mb_per_s"] > 1


def test_tee_book_row(executed, data_available):
    r = executed("09_trusted_execution", timeout=300)
    (row,) = results.chapter_rows(r, "09")
    assert row.key == "tee-sim" and row.family == "hardware" and row.stage == "inference"
    assert row.test_auc == r["enclave_auc"] and row.epsilon is None
    assert row.per == "image" and row.seconds == r["seconds_per_image"] > 0
    assert row.megabytes == r["megabytes_per_image"] > 784e-6  # at least the pixels of one image
    assert "chip vendor" in row.trusted and "no hardware isolation" in row.trusted
