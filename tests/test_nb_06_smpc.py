"""Notebook 06: secure multi-party computation, executed in fast mode; each measured claim of its
prose asserted with a tolerance a broken PET would break, and every value the prose quotes
recorded."""

import json
import re
from pathlib import Path

import pytest

from pets_lite.results import chapter_rows

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "06_secure_mpc.ipynb"
GLUE = re.compile(r"\{glue:text\}`([A-Za-z0-9_]+)")


def test_secure_mpc_notebook(executed, data_available):
    r = executed("06_secure_mpc", timeout=300)
    assert r["fast"] is True
    quoted = {name for cell in json.loads(NOTEBOOK.read_text())["cells"]
              if cell["cell_type"] == "markdown" for name in GLUE.findall("".join(cell["source"]))}
    assert quoted and not quoted - set(r), f"the prose quotes unrecorded values: {quoted - set(r)}"
    # Party 0's share is the zero sharing alone; the image is in the hospital's share only.
    assert r["owner_share_identical"] is True and r["hospital_share_is_image"] is True
    # The hospital's share (the one that depends on the image) is not refuted as uniform, nor told
    # apart from a black image's share; the same tests do refute the two broken "shares".
    assert min(r["share_chi2_p"], r["share_low_chi2_p"], r["share_ks_p"],
               r["share_two_sample_p"]) > 1e-4
    assert abs(r["share_corr"]) < 0.05
    assert r["encoded_chi2_p"] < 1e-6 and r["encoded_ks_p"] < 1e-6 and r["weak_chi2_p"] < 1e-6
    assert r["share_reconstruction_error"] < 2.0**-16
    assert r["mt_seed_collision"] is True and r["n_share_elements"] == 16 * 28 * 28
    # From scratch: the same ring element as CrypTen's product, within the truncation's unit after.
    assert r["scratch_n"] == 28 and r["scratch_equal_in_ring"] is True
    assert r["scratch_units_from_crypten"] <= 2 and r["scratch_units_from_exact"] <= 2
    # Private inference: the hospital alone gets logits that match plaintext.
    assert r["n_private"] >= 100
    assert r["agreement"] >= 0.99 and r["logit_error"] < 0.05
    assert r["owner_saw_output"] is False
    assert abs(r["private_auc"] - r["plain_auc"]) < 0.01
    assert r["model_test_auc"] > 0.8
    assert r["inference_rounds"] > 0 and r["inference_mb"] > 1
    assert r["inference_slowdown"] > 1
    # Where MPC is slow: additions are free, comparisons and max pooling are not.
    assert r["op_add_rounds"] == 0 and r["op_avgpool_rounds"] == 0
    assert r["op_compare_rounds"] > 5 * r["op_mul_rounds"] > 0
    assert r["op_compare_bytes_ratio"] > 5
    assert r["op_maxpool_rounds"] > r["op_relu_rounds"] > r["op_compare_rounds"]
    assert r["op_softmax_rounds"] > r["op_relu_rounds"]
    # The network prediction: from the measured rounds and bytes, slower with every ms of delay.
    n, rounds, mb = r["n_private"], r["inference_rounds"], r["inference_mb"]
    for rtt in (1, 10, 50):
        assert r["inference_seconds_per_image"] < r[f"net_{rtt}ms_low"] <= r[f"net_{rtt}ms_high"]
    assert r["net_1ms_high"] < r["net_10ms_high"] < r["net_50ms_high"]
    assert r["net_50ms_high"] - r["net_10ms_high"] == pytest.approx(rounds * 0.040 / n)
    assert r["net_transfer_s_per_image"] == pytest.approx(mb * 8 / 100 / n)
    assert r["net_transfer_s_per_image"] > r["net_latency_50ms_s_per_image"]  # bytes dominate
    # Private training tracks plaintext training with the same steps.
    assert r["n_hospital_a"] > 0 and r["n_hospital_b"] > r["n_hospital_a"]
    assert abs(r["train_private_auc"] - r["train_plain_auc"]) < 0.03
    assert r["train_private_auc"] > 0.7
    assert r["train_rounds"] > r["train_steps"] > 0
    assert r["train_slowdown"] > 1
    # The book-wide row: MPC AUC, seconds and megabytes per image.
    (row,) = chapter_rows(r, "06")
    assert row.key == "mpc-2pc" and row.family == "cryptography" and row.stage == "inference"
    assert row.test_auc == r["private_auc"] and row.per == "image"
    assert row.seconds == r["inference_seconds_per_image"]
    assert row.megabytes == pytest.approx(r["inference_mb"] / r["n_private"])
