"""Notebook 05: encrypted inference, executed in fast mode, results asserted in ranges."""


def test_he_notebook(executed, data_available):
    r = executed("05_homomorphic_encryption", timeout=900)
    assert r["fast"] is True and r["n_test"] == 624
    # key separation: the server's context is public and decryption there was refused
    assert r["server_is_private"] is False and r["server_decrypt_refused"] is True
    # the batched encrypted path agrees with plaintext on the whole test set
    assert r["agreement"] >= 0.99
    assert 0 <= r["max_logit_diff"] <= 1e-2
    assert r["enc_plain_auc_diff"] < 0.005
    # the x^2 model learns (fast mode: 1,200 images) and stays near the ReLU baseline
    assert 0.8 < r["he_plain_auc"] <= 1.0 and 0.8 < r["baseline_auc"] <= 1.0
    assert r["auc_gap"] < 0.08
    # parameters within the 128-bit bound for N = 8192; logits inside the batched headroom
    assert r["batched_total_bits"] <= 218 and r["tutorial_total_bits"] <= 218
    assert r["max_abs_logit"] < 64
    # cost: batched much faster per image, public context much smaller without Galois keys
    assert r["speedup"] >= 10
    assert r["public_context_mib_batched"] * 5 < r["public_context_mib_tutorial"]
    assert r["tutorial_agreement"] >= 0.0 and r["tutorial_max_logit_diff"] < 1.0
