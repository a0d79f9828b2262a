"""Notebook 07: LiRA on the recipes and models of chapters 00 and 02, and the one-run audit; what
its prose says is asserted."""

import math

from pets_lite import attacks, results

KEYS = ("baseline", "dp8", "dp1")


def test_lira_intervals_and_the_epsilon_1_recipe_at_chance(executed, data_available):
    r = executed("07_privacy_attacks_and_audits", timeout=900)
    for key in KEYS:
        auc, (lo, hi) = r[f"lira_auc_{key}"], r[f"lira_auc_ci_{key}"]
        assert lo < auc < hi, key
        tpr, (tlo, thi) = r[f"lira_tpr_001_{key}"], r[f"lira_tpr_001_ci_{key}"]
        assert tlo <= tpr <= thi, key
        # the verdict the prose quotes is the one the interval gives
        assert r[f"lira_verdict_{key}"] == attacks.verdict(tlo, thi, r[f"lira_fpr_001_ci_{key}"])
    # "the eps = 1 curve hugs the diagonal: we cannot tell the attack from a coin"
    lo, hi = r["lira_auc_ci_dp1"]
    assert lo <= 0.5 <= hi and abs(r["lira_auc_dp1"] - 0.5) < 0.05
    assert r["lira_verdict_dp1"] == "indistinguishable from chance"
    # Balanced shadows: no recipe is scored below chance (the unbalanced leave-one-out gave
    # AUC ~0.38 for all three recipes in fast mode).
    for key in KEYS:
        assert r[f"lira_auc_ci_{key}"][1] >= 0.5, key
    for key in KEYS:  # offline LiRA on the chapters' own models
        lo, hi = r[f"model_lira_auc_ci_{key}"]
        assert lo < r[f"model_lira_auc_{key}"] < hi and hi - lo < 0.2, key


def test_audit_never_overclaims_and_dp_removes_what_the_non_private_run_leaks(executed,
                                                                             data_available):
    r = executed("07_privacy_attacks_and_audits", timeout=900)
    runs = {row["run"]: row for row in r["audit"]}
    assert list(runs) == ["non-private", "DP-SGD ε=1", "DP-SGD ε=8", "DP-SGD ε=64"]
    assert math.isinf(float(runs["non-private"]["upper"]))
    for row in runs.values():
        # never certify more than the accountant promises, nor more than the guesses can
        assert 0.0 <= row["eps_lower"] <= min(float(row["upper"]), row["ceiling"]) + 1e-9, row
    # 20 + 20 guesses cannot certify epsilon = 8: the prose says so and quotes the ceiling
    assert r["audit_guesses"] == 40 and 2.4 < r["audit_ceiling"] < 2.7
    # The non-private run memorises its randomly labelled canaries: the audit certifies a positive
    # epsilon and the canaries' confidence separates included from excluded ones.
    assert r["audit_lower_baseline"] > 0
    lo, hi = runs["non-private"]["canary_auc_ci"]
    assert lo > 0.5 and r["canary_verdict_baseline"] == "above chance"
    # At eps = 1 the same canaries cannot be told from chance and nothing is certified. A DP-SGD
    # without its noise memorises them (fast mode: canary AUC ~0.74, certified eps ~0.58).
    lo, hi = runs["DP-SGD ε=1"]["canary_auc_ci"]
    assert lo <= 0.5 <= hi and r["canary_verdict_dp1"] == "indistinguishable from chance"
    assert r["audit_lower_dp1"] == 0.0
    assert r["canary_auc_dp1"] < r["canary_auc_baseline"] - 0.05


def test_membership_rows_of_the_book_table(executed, data_available):
    r = executed("07_privacy_attacks_and_audits", timeout=900)
    rows = {row.key: row for row in results.chapter_rows(r, "07")}
    assert set(rows) == {"baseline", "dp-eps8", "dp-eps1"}
    for key, short in (("baseline", "baseline"), ("dp-eps8", "dp8"), ("dp-eps1", "dp1")):
        row = rows[key]
        assert row.membership_tpr == r[f"lira_tpr_0001_{short}"]
        assert row.technique is None and row.test_auc is None  # measured here: only membership
