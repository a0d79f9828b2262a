"""Notebook 00: the pipeline without privacy, executed in fast mode, results asserted in ranges."""


def test_baseline_notebook(executed, data_available):
    r = executed("00_deep_radiomics_baseline", timeout=300)
    assert r["fast"] is True and r["n_train"] == 1200
    # Fast mode: 5 epochs on 1,200 images. Far above chance, below a perfect score.
    assert 0.8 < r["test_auc"] < 1.0
    assert 0.5 < r["test_acc"] <= 1.0
    assert r["val_auc"] > 0.8
    # A small model after few epochs: membership leakage near chance, never far from it.
    assert 0.3 < r["mia_auc"] < 0.75
    assert 0.0 <= r["mia_advantage"] <= 0.5
    assert 0 < r["train_seconds"] < 120
