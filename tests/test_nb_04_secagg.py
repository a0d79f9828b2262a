"""Notebook 04: gradient inversion succeeds on one update, fails on the SecAgg+ aggregate."""


def test_secagg_notebook(executed, data_available):
    r = executed("04_secure_aggregation", timeout=600)
    # One hospital, one image: the image comes back, label first (iDLG).
    assert r["label_acc_b1"] == 1.0
    assert 0.8 <= r["ssim_b1"] <= 1.0 and r["psnr_b1"] > 12
    # A bigger batch behind the update is harder to invert.
    by_batch = {int(k): v for k, v in r["ssim_by_batch"].items()}
    assert by_batch[max(by_batch)] < r["ssim_b1"]
    # SecAgg+: the server's strategy receives one aggregate instead of every update.
    assert r["server_sees_plain"] >= 3 and r["server_sees_secagg"] == 1
    assert r["secagg_max_error"] < 1e-2
    assert r["dropout_completed"] is True and r["dropout_max_error"] < 1e-2
    assert r["secagg_bytes_ratio"] > 1 and r["secagg_time_ratio"] > 0
    # The attack on an aggregate of >= 3 hospitals is clearly worse than on one update.
    for k, v in r["ssim_aggregate"].items():
        assert v < r["ssim_b1"] - 0.1, (k, v)
    # Hospitals with several images each: the aggregate's reconstructions match the hospitals'
    # images hardly better than as many unrelated X-rays, and far worse than one clean update.
    for k, v in r["ssim_aggregate_local"].items():
        assert v - r["ssim_aggregate_local_unrelated"][k] < 0.1, (k, v)
        assert v < r["ssim_b1"] - 0.4, (k, v)
    # Heavy client-side noise destroys the reconstruction.
    dp = {float(k): v for k, v in r["ssim_dp"].items()}
    assert dp[max(dp)] < dp[0.0]
