"""Notebook 06: secure multi-party computation, executed in fast mode, results asserted in ranges."""


def test_secure_mpc_notebook(executed, data_available):
    r = executed("06_secure_mpc", timeout=300)
    assert r["fast"] is True
    # A share is indistinguishable from uniform and from a black image's share; both together
    # reconstruct the image to fixed-point precision.
    assert r["share_chi2_p"] > 1e-4 and r["share_ks_p"] > 1e-4 and r["share_two_sample_p"] > 1e-4
    assert abs(r["share_corr"]) < 0.05
    assert r["share_reconstruction_error"] < 1e-4
    # Private inference: the hospital alone gets logits that match plaintext.
    assert r["n_private"] >= 100
    assert r["agreement"] >= 0.99 and r["logit_error"] < 0.05
    assert r["owner_saw_output"] is False
    assert abs(r["private_auc"] - r["plain_auc"]) < 0.01
    assert r["model_test_auc"] > 0.8
    assert r["inference_rounds"] > 0 and r["inference_bytes"] > 1e6
    assert r["inference_slowdown"] > 1
    # Where MPC is slow: additions are free, comparisons and max pooling are not.
    assert r["op_add_rounds"] == 0 and r["op_avgpool_rounds"] == 0
    assert r["op_compare_rounds"] > 5 * r["op_mul_rounds"] > 0
    assert r["op_maxpool_rounds"] > r["op_relu_rounds"]
    assert r["op_softmax_rounds"] > r["op_relu_rounds"]
    # Private training tracks plaintext training with the same steps.
    assert r["n_hospital_a"] > 0 and r["n_hospital_b"] > r["n_hospital_a"]
    assert abs(r["train_private_auc"] - r["train_plain_auc"]) < 0.03
    assert r["train_private_auc"] > 0.7
    assert r["train_rounds"] > r["train_steps"] > 0
    assert r["train_slowdown"] > 1
