"""Notebook 07: LiRA on the recipes and models of chapters 00 and 02, and the one-run audit."""

import math


def test_attacks_and_audits_notebook(executed, data_available):
    r = executed("07_privacy_attacks_and_audits", timeout=600)
    for key in ("lira_auc_baseline", "lira_auc_dp8", "lira_auc_dp1"):
        assert 0.3 < r[key] < 0.9, key
    for key in ("tpr_0001_ci_baseline", "tpr_0001_ci_dp1"):
        lo, hi = r[key]
        assert 0.0 <= lo <= hi <= 1.0
    # The audit invariant: never certify more than the accountant promises.
    for row in r["audit"]:
        upper = float(row["upper"])  # "inf" for the non-private run
        assert 0.0 <= row["lower"] <= upper, row
    assert math.isinf(float(r["audit"][0]["upper"]))
    # The weakest-privacy run (non-private) memorises its randomly labelled canaries: the audit
    # certifies a positive epsilon there.
    assert r["audit"][0]["lower"] > 0, r["audit"]
