"""Notebook 04: gradient inversion succeeds on one update, fails on the SecAgg+ aggregate.

Every claim the chapter's prose makes about a measured result is asserted here."""

from pets_lite.results import BookRow


def test_secagg_notebook(executed, data_available):
    r = executed("04_secure_aggregation", timeout=900)
    # One hospital, one image: the image comes back, label first (iDLG).
    assert r["label_acc_b1"] == 1.0
    assert 0.8 <= r["ssim_b1"] <= 1.0 and r["psnr_b1"] > 12
    # A bigger batch behind the update is harder to invert; several local steps do not stop it.
    by_batch = {int(k): v for k, v in r["ssim_by_batch"].items()}
    assert r["ssim_b_max"] == by_batch[r["batch_max"]] < r["ssim_b1"] - 0.2
    assert r["ssim_local_steps"] > 0.8
    # SecAgg+: the server's strategy is handed one aggregate instead of every update ...
    assert r["engine"] in ("ray", "in-process")
    assert r["server_sees_plain"] == 3 and r["server_sees_secagg"] == 1
    # ... and what crossed the wire shows every update in the clear, and none under SecAgg+.
    assert r["wire_leak_plain"] > 0.99
    assert r["wire_leak_secagg"] < r["wire_leak_bound"] < 0.1
    # The secure sum is the mean, to SecAgg+'s quantisation; so is the dropout round's.
    assert r["secagg_max_error"] < 1e-3 * r["update_max"]
    assert r["dropout_failed"] == 1 and r["dropout_max_error"] < 1e-3 * r["update_max"]
    # Cost: four message exchanges instead of one, more time and more bytes.
    assert r["exchanges_plain"] == 1 and r["exchanges_secagg"] == 4
    assert r["secagg_time_ratio"] > 1 and r["secagg_bytes_ratio"] > 1
    assert r["secagg_round_mb"] > r["plain_round_mb"] > 0
    # The attack on an aggregate of one-image hospitals: clearly worse than on one update, but
    # still better than against unrelated X-rays ("works in part").
    for k, v in r["ssim_aggregate"].items():
        assert v < r["ssim_b1"] - 0.1, (k, v)
        assert v > r["ssim_aggregate_unrelated"][k], (k, v)
    assert r["advantage_aggregate_min"] > 0.05
    # Hospitals with several images each: the aggregate's reconstructions match the hospitals'
    # images no better than as many unrelated X-rays, and far worse than one clean update.
    assert r["advantage_local_max"] < 0.1
    for k, v in r["ssim_aggregate_local"].items():
        assert abs(v - r["ssim_aggregate_local_unrelated"][k]) <= r["advantage_local_max"] + 1e-9
        assert v < r["ssim_b1"] - 0.4, (k, v)
    # Client-side noise: already the smallest multiplier buries the image below chance.
    dp = {float(k): v for k, v in r["ssim_dp"].items()}
    assert dp[r["dp_noise_low"]] == r["ssim_dp_low"] < r["ssim_chance"] < dp[0.0]
    # The rows of the book-wide table: its own, and the inversion of one FedAvg update.
    rows = {b["key"]: BookRow.from_record(b, "04") for b in r["book_rows"]}
    assert set(rows) == {"secagg", "fedavg"}
    assert rows["fedavg"].reconstruction_ssim == r["ssim_b1"] and rows["fedavg"].technique is None
    sec = rows["secagg"]
    assert sec.family == "cryptography" and sec.per == "round"
    assert sec.reconstruction_ssim == max(r["ssim_aggregate"].values())
    assert sec.seconds == r["secagg_round_seconds"] and sec.megabytes == r["secagg_round_mb"]
