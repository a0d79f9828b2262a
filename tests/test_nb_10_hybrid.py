"""Notebook 10: the hybrid pipeline end to end, and the table over every chapter of the run."""


def test_hybrid_notebook(executed, data_available):
    r = executed("10_hybrid_pipeline", timeout=900)
    assert r["intake_files"] > 0 and r["intake_leaks"] == 0
    assert 0 < r["hybrid_eps"] <= 8.0 * 1.01          # the per-hospital budget holds
    assert all(n == 1 for n in r["hybrid_updates_seen"]), "SecAgg+: the server sees one aggregate"
    assert 0.5 < r["hybrid_test_auc"] <= 1.0
    assert r["hybrid_he_agreement"] >= 0.95
    assert abs(r["hybrid_he_auc"] - r["hybrid_test_auc"]) < 0.2
    assert 0.2 < r["hybrid_attack_auc"] < 0.8
    # The table has the hybrid row plus one row per configuration of the chapters executed before
    # it in this session (all of them in the full suite; none when this test runs alone).
    assert r["table_rows"] >= 1
    if "00_deep_radiomics_baseline" in r["chapters_found"]:
        assert r["table_rows"] >= 2
