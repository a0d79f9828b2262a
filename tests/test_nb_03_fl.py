"""Notebook 03: federated learning across hospitals, executed in fast mode, results in ranges.

Every claim the chapter's prose makes about a measured result is asserted here."""

from pets_lite.results import BookRow


def test_federated_learning_notebook(executed, data_available):
    r = executed("03_federated_learning", timeout=900)
    assert r["fast"] is True and r["n_hospitals"] == 3 and r["rounds"] >= 2
    assert r["engine"] in ("ray", "in-process")
    # Fast mode: 1,200 images, a few rounds/epochs. Every model learns, none is perfect.
    assert 0.75 < r["auc_central"] < 1.0
    assert 0.75 < r["auc_fedavg_iid"] < 1.0
    for a in ("0.5", "0.1"):
        assert 0.6 < r[f"auc_fedavg_a{a}"] < 1.0
        assert 0.6 < r[f"auc_fedprox_a{a}"] < 1.0
        assert 0.0 <= r[f"auc_local_min_a{a}"] <= r[f"auc_local_mean_a{a}"] < 1.0
        # "a hospital alone ... its model is poor": clearly below the federation
        assert r[f"auc_local_mean_a{a}"] < r[f"auc_fedavg_a{a}"] - 0.05
    # "averaging models reaches ... of the pooled AUC"; "the federation recovers ..."
    assert r["fedavg_iid_over_central"] > 0.9
    assert r["fedavg_a05_over_central"] > 0.85 and r["fedavg_a01_over_central"] > 0.85
    assert r["fedprox_a05_over_central"] > 0.85
    # "... of the hospitals gain": most of them do
    assert r["hospitals_gaining_a0.5"] >= 2
    # Communication: per round 3 downloads to train, 3 to evaluate, 3 uploads of one model
    # (serialised messages: the weights plus a little configuration and metrics).
    assert 8.9 * r["model_bytes"] < r["bytes_per_round"] < 9.5 * r["model_bytes"]
    assert abs(r["run_mb"] - r["mb_per_round"] * r["rounds"]) < 1e-6 * r["run_mb"]
    assert 0.3 < r["run_over_images"] < 10
    assert 0 < r["round_seconds"] < 60
    # The crash: one failure reported, every round completed, the model still learned.
    assert r["crash_failed"] == 1 and r["crash_rounds_completed"] >= 2
    assert r["crash_final_auc"] > 0.6
    # The server reads label mixes from the updates: ranks agree, and the hospital richest in
    # pneumonia is the one with the largest bias signal in most rounds.
    assert r["label_leak_spearman"] > 0.3
    assert r["label_leak_top"] >= 0.5 and r["label_leak_updates"] >= 6
    # Its row of the book-wide table: complete, and the numbers of this run.
    (row,) = [BookRow.from_record(b, "03") for b in r["book_rows"]]
    assert row.key == "fedavg" and row.family == "learning paradigms" and row.per == "round"
    assert row.test_auc == r["auc_fedavg_a0.5"] and row.megabytes == r["mb_per_round"]
    assert 0 < row.seconds < 60
