"""Notebook 10: the hybrid pipeline end to end, and the table over every chapter of the run.

Every claim the chapter's prose makes about a measured result is asserted here."""

import math

from pets_lite import pipeline
from pets_lite.results import BookRow


def test_hybrid_notebook(executed, data_available):
    r = executed("10_hybrid_pipeline", timeout=900)
    assert r["intake_files"] > 0 and r["intake_leaks"] == 0
    # Every hospital spends at most its budget (no overrun), and the calibration uses it.
    assert len(r["hybrid_eps_each"]) == 3 and r["hybrid_eps"] == max(r["hybrid_eps_each"])
    assert all(8.0 - 0.1 < e <= 8.0 for e in r["hybrid_eps_each"]), r["hybrid_eps_each"]
    # SecAgg+: the strategy is handed one aggregate; the wire carries only masked vectors.
    assert r["hybrid_updates_seen"] == [1] * r["hybrid_rounds"]
    assert r["hybrid_exchanges"] == [4] * r["hybrid_rounds"]
    assert r["hybrid_wire_vs_aggregate"] < r["hybrid_wire_bound"] < 0.1
    assert 0.5 < r["hybrid_test_auc"] <= 1.0
    # Encrypted inference: the same model, so as close to plaintext as chapter 05 asserts.
    assert r["hybrid_he_agreement"] >= 0.99
    assert r["hybrid_he_max_logit_diff"] <= 1e-2
    assert abs(r["hybrid_he_auc"] - r["hybrid_he_plain_auc"]) < 0.005
    assert r["hybrid_he_s_per_image"] > 0 and r["hybrid_he_seconds"] > 0
    assert 0 < r["intake_seconds"] < r["hybrid_train_seconds"]
    # The loss attack on a DP model stays near chance.
    assert abs(r["hybrid_attack_auc"] - 0.5) < 0.1
    lo, hi = r["hybrid_tpr_001_ci"]
    assert lo <= r["hybrid_tpr_001"] <= hi == r["hybrid_tpr_001_hi"] <= 0.05  # "no better than
    # guessing" at 1 % FPR
    # The table: every chapter that ran in this session has its rows, complete (the notebook
    # itself fails naming the chapter otherwise); the hybrid row is this run's.
    rows = {b["key"]: BookRow.from_record(b, "10") for b in r["table"]}
    ran = [stem[:2] for stem in r["chapters_found"]] + ["10"]
    assert "10" not in [stem[:2] for stem in r["chapters_found"]]
    assert pipeline.table_problems(ran, list(rows.values())) == []
    for chapter in ran:
        for key in pipeline.EXPECTED_ROWS.get(chapter, ()):
            assert key in rows, (chapter, key)
            assert all(getattr(rows[key], f) for f in BookRow.DESCRIBING), (chapter, key)
    hybrid = rows["hybrid"]
    assert hybrid.epsilon == r["hybrid_eps"] and hybrid.test_auc == r["hybrid_test_auc"]
    assert hybrid.per == "round" and math.isclose(hybrid.megabytes, r["hybrid_round_mb"])
    # "DP pays in AUC", when both configurations ran in this session
    auc = r["table_auc"]
    if "baseline" in auc and "dp-eps1" in auc:
        assert auc["dp-eps1"] < auc["baseline"]
