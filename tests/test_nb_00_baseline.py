"""Notebook 00: the pipeline without privacy, in fast mode; what its prose says is asserted."""

import math

from pets_lite import attacks, results


def test_baseline_notebook(executed, data_available):
    r = executed("00_deep_radiomics_baseline", timeout=300)
    assert r["fast"] is True and r["n_train"] == 1200
    # Fast mode: 5 epochs on 1,200 images. Far above chance, below a perfect score.
    assert 0.8 < r["test_auc"] < 1.0
    assert 0.5 < r["test_acc"] <= 1.0
    # "The validation AUC is higher than the test AUC" (the test split's distribution shift)
    assert r["val_auc"] > r["test_auc"]
    assert r["train_seconds"] > 0 and r["epochs"] == 5


def test_the_attack_is_measured_with_its_interval_and_works_where_there_is_a_leak(executed,
                                                                                   data_available):
    r = executed("00_deep_radiomics_baseline", timeout=300)
    lo, auc, hi = r["mia_auc_lo"], r["mia_auc"], r["mia_auc_hi"]
    assert lo < auc < hi and hi - lo < 0.12  # 300 + 300 trials resolve about +-0.05
    # the verdict the prose quotes is the one the interval gives
    assert r["mia_verdict"] == attacks.verdict(lo, hi, 0.5)
    # "a small model ... has barely begun to memorise": fast mode's attack stays near chance
    assert abs(auc - 0.5) < 0.1 and r["mia_advantage"] < 0.2
    # the positive control: against a memorising model the attack must find the members. A
    # sign-flipped attack scores it near 0, scores unrelated to the losses near 0.5.
    assert r["control_train_loss"] < 0.5
    assert r["control_auc"] > 0.65 and r["control_auc_lo"] > 0.55, r["control_auc"]


def test_baseline_book_row(executed, data_available):
    r = executed("00_deep_radiomics_baseline", timeout=300)
    (row,) = results.chapter_rows(r, "00")
    assert row.key == "baseline" and row.family == "none" and row.stage == "all stages"
    assert math.isinf(row.epsilon) and row.membership_tpr is None  # chapter 07 measures it
    assert row.test_auc == r["test_auc"]
    assert row.seconds == r["train_seconds"] and row.per == "training run"
    assert "every user of the released model" in row.trusted
