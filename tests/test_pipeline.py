"""pets_lite.pipeline: the hybrid's federated DP-SGD under SecAgg+ (in-process grid), its noise
and accounting, and the book-wide table over the chapters' typed rows."""

from __future__ import annotations

import functools
import math

import nbformat
import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from pets_lite import models, pipeline
from pets_lite.fl import secagg
from pets_lite.results import ROWS_NAME, BookRow, BookRowError


@pytest.fixture
def toy(toy_xrays):
    """This module's toy X-rays (the shared factory in conftest.py)."""
    return functools.partial(toy_xrays, kind="top", contrast=0.4)


def small():
    return models.SmallCNN(width=4, depth=2)


@functools.lru_cache(maxsize=1)
def _hybrid_run(toy_xrays):
    def toy(n, seed):
        return toy_xrays(n, seed, kind="top", contrast=0.4)

    hospitals, test = [toy(60, 1), toy(40, 2), toy(80, 3)], toy(64, 9)
    return pipeline.federated_dp(hospitals, small, test, rounds=1, epsilon=4.0, batch_size=16,
                                 engine="in-process", keep_wire=True)


@pytest.fixture
def hybrid(toy_xrays):
    """The hybrid's training on 3 toy hospitals for 1 round (run once per session)."""
    return _hybrid_run(toy_xrays)


def test_each_hospital_spends_its_budget_and_no_more(hybrid):
    _, result = hybrid
    assert len(result.rounds) == 1 and 0 <= result.rounds[0]["test_auc"] <= 1
    assert all(s > 0 for s in result.sigma)
    assert all(4.0 - 0.1 < e <= 4.0 for e in result.epsilon), result.epsilon


def test_the_hybrid_runs_under_secagg(hybrid):
    """SecAgg+ on the hybrid's path: its strategy is handed one aggregate, in SecAgg+'s four
    exchanges, and the wire carries only masked vectors, uncorrelated with the aggregate they
    sum to (test_secagg shows the same measure seeing plain FedAvg's updates)."""
    model, result = hybrid
    size = sum(p.numel() for p in model.parameters())
    assert result.secure and result.engine == "in-process"
    assert result.rounds[0]["updates_seen_by_server"] == 1 and result.rounds[0]["exchanges"] == 4
    assert len(result.wire_vs_aggregate) == 3
    assert max(result.wire_vs_aggregate) < 6 / math.sqrt(size)
    assert result.bytes_total > 3 * 4 * size  # three masked 64-bit vectors at least


def test_every_hospital_adds_its_planned_noise():
    """On black images every per-sample gradient of the first convolution is exactly zero, so
    its weights can move only through DP-SGD's noise: with the planned noise they all move."""
    black = TensorDataset(torch.zeros(40, 1, 28, 28), torch.arange(40) % 2)
    plan = pipeline.calibrate([black], rounds=1, epsilon=4.0, delta=1e-5, local_epochs=1,
                              batch_size=16)
    assert plan[0]["sigma"] > 0.5
    with torch.random.fork_rng():
        torch.manual_seed(0)
        start = secagg.model_parameters(small())
    new = pipeline.DPUpdate([black], small, plan, lr=1e-2)(0, start, 1)
    moved = np.abs(new[0] - start[0])
    assert moved.shape == start[0].shape and (moved > 1e-6).mean() > 0.9


@pytest.mark.parametrize("kwargs, match", [({"rounds": 0}, "rounds"),
                                           ({"epsilon": 0.0}, "ε|epsilon")])
def test_federated_dp_rejects_bad_settings(toy, kwargs, match):
    args = {"rounds": 1, "epsilon": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        pipeline.federated_dp([toy(20, 1), toy(20, 2)], small, toy(20, 3), engine="in-process",
                              **args)


# -- the book-wide table -----------------------------------------------------------------------

def _executed(path, values: dict, peak_mib: float | None = None):
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


OWN = dict(family="none", stage="training", trusted="the trainer sees every image")


def _rows(*rows: BookRow) -> dict:
    return {ROWS_NAME: [r.to_record() for r in rows]}


def _build(tmp_path, dp1_tpr=0.001):
    _executed(tmp_path / "00_deep_radiomics_baseline.ipynb",
              _rows(BookRow("baseline", technique="none", epsilon=math.inf, test_auc=0.95,
                            **OWN)), peak_mib=812.5)
    _executed(tmp_path / "02_differential_privacy.ipynb",
              _rows(BookRow("dp-eps8", technique="DP-SGD", epsilon=7.9, test_auc=0.9, **OWN),
                    BookRow("dp-eps1", technique="DP-SGD", epsilon=0.99, test_auc=0.8, **OWN)))
    _executed(tmp_path / "07_privacy_attacks_and_audits.ipynb",
              _rows(BookRow("baseline", membership_tpr=0.02),
                    BookRow("dp-eps8", membership_tpr=0.002),
                    BookRow("dp-eps1", membership_tpr=dp1_tpr)))
    _executed(tmp_path / "10_hybrid_pipeline.ipynb",  # an earlier build's copy: never a source
              _rows(BookRow("hybrid", technique="old", test_auc=0.5, **OWN)))


HYBRID = BookRow("hybrid", technique="FL + DP + SecAgg+ + HE", family="hybrid",
                 stage="all stages", trusted="the SecAgg+ threshold", epsilon=8.0, test_auc=0.8)


def test_the_table_merges_the_rows_the_chapters_recorded(tmp_path):
    _build(tmp_path)
    chapters = pipeline.chapter_results(tmp_path)
    assert sorted(chapters) == ["00_deep_radiomics_baseline", "02_differential_privacy",
                                "07_privacy_attacks_and_audits"]
    rows = {r.key: r for r in pipeline.book_table(chapters, [HYBRID])}
    assert list(rows) == ["baseline", "dp-eps8", "dp-eps1", "hybrid"]
    assert rows["baseline"].test_auc == 0.95 and rows["baseline"].membership_tpr == 0.02
    assert math.isinf(rows["baseline"].epsilon) and rows["baseline"].peak_mib == 812.5
    assert rows["dp-eps1"].membership_tpr == 0.001 and rows["hybrid"].technique.startswith("FL")
    frame = pipeline.table_frame(list(rows.values()))
    assert frame.loc["dp-eps8", "test AUC"] == 0.9 and "LiRA TPR at 0.1% FPR" in frame


def test_a_chapter_that_ran_without_its_rows_fails_by_name(tmp_path):
    _build(tmp_path, dp1_tpr=None)
    chapters = pipeline.chapter_results(tmp_path)
    with pytest.raises(BookRowError, match=r"chapter 07 did not record \['membership_tpr'\] on "
                                           "row 'dp-eps1'"):
        pipeline.book_table(chapters, [HYBRID])
    _executed(tmp_path / "03_federated_learning.ipynb", {"auc_central": 0.9})
    with pytest.raises(BookRowError, match="chapter 03 recorded no book rows"):
        pipeline.book_table(pipeline.chapter_results(tmp_path), [HYBRID])
    _executed(tmp_path / "03_federated_learning.ipynb",
              _rows(BookRow("fedavg", technique="FedAvg", **OWN)))
    with pytest.raises(BookRowError, match="chapter 03's row 'fedavg' holds no measurement"):
        pipeline.book_table(pipeline.chapter_results(tmp_path), [HYBRID])
    with pytest.raises(BookRowError, match="chapter 10 recorded no row 'hybrid'"):
        pipeline.book_table({}, [BookRow("other", technique="x", test_auc=0.5, **OWN)])


def test_no_executed_folder_gives_no_results(monkeypatch, tmp_path):
    monkeypatch.delenv("PETS_EXECUTED_DIR", raising=False)
    assert pipeline.chapter_results() == {}
    assert pipeline.chapter_results(tmp_path / "missing") == {}
