"""Notebook 08: split learning, executed in fast mode, results asserted in ranges."""


def test_split_learning_notebook(executed, data_available):
    r = executed("08_split_learning", timeout=300)
    assert r["fast"] is True and r["n_train"] == 600
    # split learning computes the centralized model: same weights, same AUC
    assert r["max_weight_diff"] < 1e-4
    assert 0.75 < r["vanilla_test_auc"] <= 1.0 and 0.75 < r["ushaped_test_auc"] <= 1.0
    assert abs(r["vanilla_test_auc"] - r["central_test_auc"]) < 0.01
    assert 0.5 < r["vanilla_test_acc"] <= 1.0
    # labels cross only in vanilla split learning
    assert r["vanilla_label_bytes"] > 600 * 8 and r["ushaped_label_bytes"] == 0
    # activations + gradients at cut 1: 2 x 600 x 32x14x14 float32 = 30 MB, plus headers
    assert 27 < r["vanilla_mb_per_epoch"] < 35
    assert r["ushaped_mb_per_epoch"] > r["vanilla_mb_per_epoch"]
    by_cut = r["mb_per_epoch_by_cut"]
    assert by_cut[0] > by_cut[1] > by_cut[2] > 0
    # FedAvg ships far less for this small model
    assert 0 < r["fedavg_mb_per_round"] < r["vanilla_mb_per_epoch"] / 5
    assert 0.5 < r["fedavg_test_auc"] <= 1.0
    # the inversion attack beats guessing, and noise makes it worse
    assert r["ssim_by_cut"][0] > r["ssim_mean_image"] + 0.1
    assert r["ssim_by_cut"][0] >= r["ssim_by_cut"][2] - 0.02
    assert min(r["noise_ssim"]) < r["clean_ssim"] - 0.05
    assert r["noise_ssim"][-1] <= r["noise_ssim"][0] + 0.02  # more noise, no better attack
    assert all(0.0 <= a <= 1.0 for a in r["noise_auc"] + r["nopeek_auc"])
