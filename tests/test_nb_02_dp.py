"""Notebook 02: DP-SGD on PneumoniaMNIST in fast mode; what its prose says is asserted, and the
noise, clipping and sampling of the real optimiser are checked."""

import numpy as np
import pytest

from pets_lite import dp, results


@pytest.fixture
def r(executed, data_available):
    return executed("02_differential_privacy", timeout=900)


def test_accounting(r):
    assert r["fast"] is True and r["n_train"] == 1200 and r["delta"] < 1 / r["n_train"]
    # The documented accountant anchor: today's RDP ~2.60, the old 3.01 from the classic RDP-to-DP
    # conversion; the independent implementation agrees (the prose quotes the gap).
    assert 2.55 < r["anchor_rdp"] < 2.65 and 2.95 < r["anchor_rdp_classic_conversion"] < 3.05
    assert r["anchor_rdp_gap"] < 1e-6
    pld = r["anchor_dp_accounting_pld"]
    assert abs(r["anchor_prv"] - pld) / pld < 0.02
    eps = np.array(r["epsilons"])
    assert list(eps) == [0.5, 1.0, 8.0]
    # Every model spends at most its target under RDP, and smaller budgets need more noise;
    # "PRV / PLD say the true budget is smaller".
    assert np.all(np.array(r["eps_spent_by_eps"]) <= eps + 1e-6)
    assert np.all(np.array(r["eps_spent_by_eps"]) > eps - 0.05)
    assert np.all(np.diff(r["sigmas"]) < 0)
    assert np.all(np.array(r["acct_prv"]) <= np.array(r["acct_rdp"]) + 1e-6)
    assert np.all(np.array(r["acct_dpacc_pld"]) <= np.array(r["acct_rdp"]) + 1e-6)
    assert r["adv_bound_8"] == pytest.approx(dp.advantage_bound(8.0)) and r["adv_bound_8"] > 0.999
    assert r["adv_bound_1"] == pytest.approx(dp.advantage_bound(1.0)) and r["adv_bound_1"] < 0.47


def test_step_anatomy_as_the_prose_reads_it(r):
    # "the noise vector has norm about sigma C sqrt(d) ... the clipped sum of the 256 X-rays
    # nearly reaches |B| C ... a batch of the expected size contributes at most qN C, less than
    # the noise ... one noisy step points only loosely in the direction of the true gradient"
    assert r["anatomy_noise_norm"] == pytest.approx(r["anatomy_expected_noise_norm"], rel=0.05)
    assert r["anatomy_max_norm_after"] <= 1.0 + 1e-5  # C = 1: every example clipped to C
    assert 0.3 * r["anatomy_batch"] < r["anatomy_clipped_sum_norm"] <= r["anatomy_batch"] + 1e-6
    assert r["expected_batch"] == pytest.approx(1200 / 19)
    assert r["anatomy_noise_norm"] > r["expected_batch"]
    assert 0.0 < r["step_cosine_init"] < 0.6, r["step_cosine_init"]
    # Book-keeping clipping gives the instantiated per-sample gradients' norms and clipped sum.
    assert r["bk_norm_rel_error"] < 1e-4 and r["bk_sum_rel_error"] < 1e-4


def test_the_real_optimiser_gets_the_noise_the_accountant_assumes(r):
    # std sigma C / (qN) on the averaged gradient, measured on the step train_dp runs (about
    # 23,500 draws: +-1 % at 2 sigma); a DP-SGD without noise gives ratio 0, half the noise 0.5
    assert r["check_mode"] == "bk"
    assert 0.97 < r["check_std_ratio"] < 1.03, r["check_std_ratio"]
    assert r["check_effective_sigma"] == pytest.approx(r["sigma_demo"], rel=0.03)
    assert r["check_ks_pvalue"] > 1e-3
    assert r["check_clip_error"] < 1e-4  # the noiseless step is the clipped mean
    # Poisson batches: binomial sizes around qN (a shuffled loader: variance ratios near 0)
    assert r["check_mean_batch"] == pytest.approx(r["check_expected_batch"], rel=0.05)
    assert 0.6 < r["check_batch_var_ratio"] < 1.5 and 0.6 < r["check_count_var_ratio"] < 1.5


def test_privacy_utility_and_the_attack(r):
    auc = np.array(r["test_auc_by_eps"])
    assert np.all((auc > 0.5) & (auc < 1.0)), auc
    assert 0.8 < r["baseline_test_auc"] < 1.0 and 0.6 < r["matched_test_auc"] < 1.0
    # "the smallest budget costs the most utility"; "the gap between the grey line and the DP
    # curve is the price of clipping and noise": the matched non-private run beats every DP model.
    assert r["test_auc_lo"] == auc[0] and r["test_auc_hi"] == auc[-1] and r["eps_lo"] == 0.5
    assert auc[0] < auc[-1] - 0.05 and auc[0] == auc.min()
    assert r["matched_test_auc"] > auc.max()
    assert r["val_auc_by_eps"][-1] > 0.6
    # The loss-threshold attack: within DP's ceiling for every DP model, small for every model
    # (the prose quotes the largest advantage).
    adv, ceiling = np.array(r["mia_adv_by_eps"]), np.array(r["mia_ceiling_by_eps"])
    assert np.all(adv <= ceiling), (adv, ceiling)
    assert np.allclose(ceiling, [dp.advantage_bound(e) for e in r["epsilons"]])
    assert r["mia_adv_max"] == max(r["mia_adv_baseline"], adv.max()) and r["mia_adv_max"] < 0.15


def test_practical_advice(r):
    assert r["bn_refused"] is True and r["monai_bn_after"] == 0
    # larger batch: more noise per step (sigma), less on the mean gradient (sigma C / qN)
    assert len(r["val_auc_by_batch"]) == 2 and all(0 < v <= 1 for v in r["val_auc_by_batch"])
    assert np.all(np.diff(r["sigma_by_batch"]) > 0)
    assert np.all(np.diff(r["noise_on_mean_by_batch"]) < 0)
    assert np.all(np.diff(r["sigma_eps8_by_epochs"]) > 0)
    # The side-by-side cost measurement covers every engine; the default is book-keeping, and
    # per-sample clipping costs time (a DP epoch as fast as a plain one would mean no clipping).
    assert r["overhead_modes"] == list(dp.OVERHEAD_MODES) and r["default_mode"] == "bk"
    assert r["overhead_ratio"][0] == 1.0 and all(x > 1.0 for x in r["overhead_ratio"][1:])


def test_dp_book_rows(r):
    rows = {row.key: row for row in results.chapter_rows(r, "02")}
    assert set(rows) == {"dp-eps8", "dp-eps1"}
    for key, eps in (("dp-eps8", 8.0), ("dp-eps1", 1.0)):
        row = rows[key]
        assert row.family == "statistical perturbation" and row.stage == "training"
        assert row.epsilon == r[f"eps_spent_{eps:g}"] and eps - 0.05 < row.epsilon <= eps + 1e-6
        assert row.test_auc == r[f"test_auc_eps{eps:g}"] and row.per == "training run"
        assert "safe" not in row.trusted.lower()
        assert f"TPR - FPR ≤ {dp.advantage_bound(row.epsilon):.3f}" in row.trusted
    assert "no meaningful bound" in rows["dp-eps8"].trusted
