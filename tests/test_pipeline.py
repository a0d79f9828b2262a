"""pets_lite.pipeline: federated DP accounting, parameter vectors, and the book-wide table."""

from __future__ import annotations

import functools
import math

import nbformat
import numpy as np
import pytest
import torch

from pets_lite import models, pipeline


@pytest.fixture
def toy(toy_xrays):
    """This module's toy X-rays (the shared factory in conftest.py)."""
    return functools.partial(toy_xrays, kind="top", contrast=0.4)


def small():
    return models.SmallCNN(width=4, depth=2)


def test_vector_round_trip():
    a, b = small(), small()
    pipeline.load_vector(b, pipeline.state_vector(a))
    assert torch.equal(pipeline.state_vector(a), pipeline.state_vector(b))
    with pytest.raises(ValueError, match="values"):
        pipeline.load_vector(b, torch.zeros(3, dtype=torch.float64))


def test_weighted_mean():
    out = pipeline.weighted_mean([np.ones(3), 3 * np.ones(3)], [1, 3])
    assert np.allclose(out, 2.5)


def test_federated_dp_spends_at_most_the_budget_per_hospital(toy):
    hospitals = [toy(60, 1), toy(40, 2), toy(80, 3)]
    model, result = pipeline.federated_dp(hospitals, small, toy(64, 9), rounds=2, epsilon=4.0,
                                          batch_size=16, progress=False)
    assert len(result.rounds) == 2 and all(0 <= r["test_auc"] <= 1 for r in result.rounds)
    assert all(s > 0 for s in result.sigma)
    assert all(e <= 4.0 * 1.01 for e in result.epsilon), result.epsilon
    assert all(e > 1.0 for e in result.epsilon), "calibration should use most of the budget"


@pytest.mark.parametrize("kwargs, match", [({"rounds": 0}, "rounds"), ({"epsilon": 0.0}, "ε|epsilon")])
def test_federated_dp_rejects_bad_settings(toy, kwargs, match):
    args = {"rounds": 1, "epsilon": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        pipeline.federated_dp([toy(20, 1), toy(20, 2)], small, toy(20, 3), **args)


def _executed(path, values: dict, peak_mib: float | None = None):
    from myst_nb import glue  # noqa: F401  (the notebook mechanism the chapters use)

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [nbformat.v4.new_output(
        "display_data", data={"application/papermill.record/text/plain": repr(v)},
        metadata={"scrapbook": {"name": k, "mime_prefix": "application/papermill.record/"}})
        for k, v in values.items()]
    nb.cells.append(cell)
    if peak_mib is not None:  # what nbrun.execute measures
        nb.metadata["pets_lite"] = {"seconds": 1.0, "fast": True, "peak_memory_mib": peak_mib}
    nbformat.write(nb, path)


def test_table_reads_what_chapters_recorded(tmp_path):
    _executed(tmp_path / "00_deep_radiomics_baseline.ipynb",
              {"test_auc": 0.95, "test_acc": 0.86, "train_seconds": 60.0}, peak_mib=812.5)
    _executed(tmp_path / "02_differential_privacy.ipynb",
              {"epsilons": [1.0, 8.0], "test_auc_by_eps": [0.80, 0.90], "eps_spent_by_eps": [0.99, 7.9]})
    _executed(tmp_path / "07_privacy_attacks_and_audits.ipynb",
              {"tpr_0001_baseline": 0.02, "tpr_0001_dp8": 0.001, "tpr_0001_dp1": 0.0})
    results = pipeline.chapter_results(tmp_path)
    assert set(results) == {"00_deep_radiomics_baseline", "02_differential_privacy",
                            "07_privacy_attacks_and_audits"}
    rows = {r["configuration"]: r for r in pipeline.book_table(results, [{"configuration": "x"}])}
    assert rows["non-private baseline"]["test_auc"] == 0.95
    assert math.isinf(rows["non-private baseline"]["epsilon"])
    assert rows["non-private baseline"]["lira_tpr_0.1%"] == 0.02
    assert rows["DP-SGD ε=8"]["test_auc"] == 0.90 and rows["DP-SGD ε=8"]["epsilon"] == 7.9
    assert rows["DP-SGD ε=1"]["test_auc"] == 0.80
    assert rows["non-private baseline"]["peak_mib"] == 812.5 and rows["DP-SGD ε=1"]["peak_mib"] is None
    assert "x" in rows and "HE inference (CKKS, batched)" not in rows  # chapter 05 did not run


def test_no_executed_folder_gives_no_results(monkeypatch, tmp_path):
    monkeypatch.delenv("PETS_EXECUTED_DIR", raising=False)
    assert pipeline.chapter_results() == {}
    assert pipeline.chapter_results(tmp_path / "missing") == {}
