"""Notebook 08: split learning, executed in fast mode; each measured claim of its prose asserted."""

from pets_lite import results


def test_split_learning_notebook(executed, data_available):
    r = executed("08_split_learning", timeout=600)
    n = r["n_train"]
    assert r["fast"] is True and n == 1200  # the fast-mode training subset, FedAvg's too
    # split learning computes the centralized model: same weights, same AUC
    assert r["max_weight_diff"] < 1e-4
    assert 0.75 < r["vanilla_test_auc"] <= 1.0 and 0.75 < r["ushaped_test_auc"] <= 1.0
    assert abs(r["vanilla_test_auc"] - r["central_test_auc"]) < 0.01
    assert abs(r["ushaped_test_auc"] - r["central_test_auc"]) < 0.01
    assert 0.5 < r["vanilla_test_acc"] <= 1.0
    # labels cross only in vanilla split learning
    assert r["vanilla_label_bytes"] > n * 8 and r["ushaped_label_bytes"] == 0
    # activations + their gradients: 2 x n x (numbers at the cut) float32, plus .npy headers
    payload = 2 * n * r["cut_values"] * 4 / 1e6
    assert payload < r["vanilla_mb_per_epoch"] < payload * 1.01 + 0.1
    assert r["cut_values"] > r["pixels"] and r["epoch_to_upload"] > 10
    assert r["ushaped_mb_per_epoch"] > r["vanilla_mb_per_epoch"]
    by_cut = r["mb_per_epoch_by_cut"]
    assert by_cut[0] > by_cut[1] > by_cut[2] > 0

    # FedAvg on the package's engine: same images, same initial weights, bytes as the text says
    assert r["fedavg_train_images"] == n
    assert abs(r["fedavg_init_auc"] - r["template_init_auc"]) < 1e-9
    down, up, payload = r["fedavg_bytes_down"], r["fedavg_bytes_up"], r["fedavg_payload_bytes"]
    assert len(down) == len(up) == 2 and len(set(down)) == len(set(up)) == 1  # every round alike
    # N_CLIENTS model copies each way, plus an envelope of at most 2 kB per message
    assert 0 < r["fedavg_envelope_down"] < 2048 and 0 < r["fedavg_envelope_up"] < 2048
    k = r["fedavg_clients"]
    assert down[0] == payload + k * r["fedavg_envelope_down"]
    assert up[0] == payload + k * r["fedavg_envelope_up"]
    assert abs(r["fedavg_mb_per_round"] - (down[0] + up[0]) / 1e6) < 1e-9
    assert 0 < r["fedavg_mb_per_round"] < r["vanilla_mb_per_epoch"] / 5
    assert r["split_to_fedavg_bytes"] > 5
    assert 0.6 < r["fedavg_test_auc"] <= 1.0
    assert r["fedavg_vs_split"] == ("below" if r["fedavg_test_auc"] < r["vanilla_test_auc"]
                                    else "not below")

    # the inversion attack beats guessing, more at shallow cuts
    floor = r["ssim_mean_image"]
    assert r["ssim_by_cut"][0] > floor + 0.1 and r["ssim_cut1"] == r["ssim_by_cut"][0]
    assert r["ssim_by_cut"][0] > r["ssim_by_cut"][2] + 0.02  # deeper cuts keep less of the image
    assert abs(r["ushaped_ssim"] - r["clean_ssim"]) < 0.02  # the same hospital layers

    # label leakage (Li et al.): the returned gradients give the minority class away
    assert 0.1 < r["minority_share"] < 0.5
    for variant in ("vanilla", "ushaped"):
        assert r[f"{variant}_leak_norm_auc"] > 0.8
        assert r[f"{variant}_leak_cosine_auc"] > 0.8
    assert r["ushaped_leak_cosine_auc"] > 0.99 and r["ushaped_min_abs_cosine"] > 0.999

    # noise: at least two levels, each lowering the attack's SSIM, at a cost in AUC
    assert len(r["noise_levels"]) >= 2 and r["noise_levels"] == sorted(r["noise_levels"])
    ssim = [r["clean_ssim"]] + r["noise_ssim"]
    assert all(b < a - 0.03 for a, b in zip(ssim, ssim[1:])), ssim
    assert r["noise_max_ssim"] == r["noise_ssim"][-1] and r["noise_min_ssim"] == r["noise_ssim"][0]
    assert r["noise_auc"][-1] < r["noise_auc"][0] < r["vanilla_test_auc"]
    # NoPeek lowers what it optimises (a disabled NoPeek gives the clean run's dCor exactly)
    assert r["nopeek_first_dcor"] < r["clean_dcor"] - 0.01
    assert r["nopeek_first_auc"] > 0.75
    assert r["nopeek_first_ssim"] == r["nopeek_ssim"][0]

    rows = {row.key: row for row in results.chapter_rows(r, "08")}
    assert set(rows) == {"split-vanilla", "split-ushaped"}
    vanilla, ushaped = rows["split-vanilla"], rows["split-ushaped"]
    assert vanilla.family == ushaped.family == "learning paradigms" and vanilla.per == "epoch"
    assert vanilla.reconstruction_ssim == r["clean_ssim"] and vanilla.test_auc == r[
        "vanilla_test_auc"]
    assert abs(vanilla.megabytes - r["vanilla_mb_per_epoch"]) < 1e-9
    assert ushaped.reconstruction_ssim == r["ushaped_ssim"]
    assert abs(ushaped.megabytes - r["ushaped_mb_per_epoch"]) < 1e-9
