"""Hospital partitions (pets_lite.data): IID, Dirichlet label skew, quantity skew, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from pets_lite import data, viz

Y = np.array([0] * 300 + [1] * 700)


def _splits(n_train=1000, n_val=300):
    rng = np.random.default_rng(0)
    make = lambda n: TensorDataset(torch.rand(n, 1, 4, 4),  # noqa: E731
                                   torch.from_numpy(rng.permutation(np.r_[np.zeros(n * 3 // 10),
                                                                          np.ones(n - n * 3 // 10)]
                                                                    ).astype(np.int64)))
    return {"train": make(n_train), "val": make(n_val), "test": make(50)}


@pytest.mark.parametrize("scheme,alpha", [("iid", 0.5), ("dirichlet", 0.5), ("dirichlet", 0.1),
                                          ("quantity", 1.0)])
def test_partitions_are_disjoint_and_cover_everything(scheme, alpha):
    parts = data.hospital_partitions(Y, 4, scheme, alpha, seed=3)
    joined = np.concatenate(parts)
    assert len(parts) == 4
    assert len(joined) == len(Y) and len(np.unique(joined)) == len(Y)
    assert min(len(p) for p in parts) >= 10


def test_partitions_are_seeded():
    a = data.hospital_partitions(Y, 3, "dirichlet", 0.5, seed=1)
    b = data.hospital_partitions(Y, 3, "dirichlet", 0.5, seed=1)
    c = data.hospital_partitions(Y, 3, "dirichlet", 0.5, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a, c))


def test_iid_keeps_label_mix_and_sizes():
    for part in data.hospital_partitions(Y, 4, "iid"):
        assert len(part) == 250
        assert abs(Y[part].mean() - 0.7) < 0.01


def _skew(parts):
    """Mean absolute difference between each hospital's positive share and the global one."""
    return float(np.mean([abs(Y[p].mean() - Y.mean()) for p in parts]))


def test_smaller_alpha_gives_stronger_label_skew():
    skews = {a: np.mean([_skew(data.hospital_partitions(Y, 4, "dirichlet", a, seed=s))
                         for s in range(8)]) for a in (100.0, 0.5, 0.1)}
    assert skews[100.0] < 0.05 < skews[0.5] < skews[0.1]


def test_quantity_skew_changes_sizes_not_label_mix():
    parts = data.hospital_partitions(Y, 4, "quantity", 0.5, seed=0)
    sizes = sorted(len(p) for p in parts)
    assert sizes[-1] > 2 * sizes[0]
    for p in parts:
        assert abs(Y[p].mean() - 0.7) < 0.1


def test_partition_splits_share_proportions_between_train_and_val():
    parts = data.partition_splits(_splits(), 3, "dirichlet", 0.3, seed=0)
    assert len(parts) == 3 and all(set(p) == {"train", "val"} for p in parts)
    train_share = [p["train"].tensors[1].float().mean().item() for p in parts]
    val_share = [p["val"].tensors[1].float().mean().item() if len(p["val"]) else np.nan
                 for p in parts]
    for t, v in zip(train_share, val_share):
        if not np.isnan(v):
            assert abs(t - v) < 0.15
    assert sum(len(p["train"]) for p in parts) == 1000


def test_summary_table_and_plot():
    parts = data.partition_splits(_splits(), 3, "dirichlet", 0.5, seed=0)
    table = data.partition_summary(parts, {0: "normal", 1: "pneumonia"})
    assert list(table.index) == ["H1", "H2", "H3"]
    assert {"normal", "pneumonia", "total", "share of data"} <= set(table.columns)
    assert int(table["total"].sum()) == 1000
    assert abs(table["share of data"].sum() - 1) < 1e-9
    assert (table[["normal", "pneumonia"]].sum(axis=1) == table["total"]).all()
    fig = viz.partition_plot({"alpha 0.5": table})
    assert len(fig.axes) == 1


def test_proportion_counts_rounding_keeps_totals():
    counts = data.proportion_counts(Y, np.array([[1 / 3, 1 / 3]] * 3))
    assert counts.sum(0).tolist() == [300, 700]


@pytest.mark.parametrize("kwargs,match", [
    ({"alpha": 0.0, "scheme": "dirichlet"}, "alpha must be a finite number > 0"),
    ({"alpha": -1.0, "scheme": "quantity"}, "alpha must be a finite number > 0"),
    ({"alpha": float("nan"), "scheme": "dirichlet"}, "alpha"),
    ({"n_hospitals": 0}, "n_hospitals must be a positive int"),
    ({"n_hospitals": 2.5}, "n_hospitals must be a positive int"),
    ({"n_hospitals": 1001}, "cannot split 1000 samples over 1001 hospitals"),
    ({"scheme": "powerlaw"}, "unknown partition scheme"),
    ({"n_hospitals": 200, "min_size": 10}, "needs 2000 samples"),
    ({"min_size": 0}, "min_size must be a positive int"),
])
def test_bad_partition_parameters_are_refused(kwargs, match):
    args = {"n_hospitals": 3, "scheme": "iid", "alpha": 0.5, **kwargs}
    with pytest.raises(data.PartitionError, match=match):
        data.hospital_partitions(Y, **args)


def test_partition_error_is_a_value_error_and_a_data_error():
    with pytest.raises(ValueError):
        data.hospital_partitions(Y, 3, "dirichlet", alpha=0)
    with pytest.raises(data.DataError):
        data.hospital_partitions(Y, 3, "dirichlet", alpha=0)


def test_impossible_min_size_names_the_way_out():
    y = np.array([0] * 95 + [1] * 5)
    with pytest.raises(data.PartitionError, match="raise alpha"):
        data.hospital_partitions(y, 5, "dirichlet", alpha=0.01, min_size=19)


def test_labels_must_be_integer_class_ids():
    with pytest.raises(data.PartitionError, match="integer class ids"):
        data.hospital_partitions(np.array([0.5, 1.5, 2.0]), 2)
    with pytest.raises(data.PartitionError, match="splits lacks"):
        data.partition_splits({"train": _splits()["train"]}, 2)
