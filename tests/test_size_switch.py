"""The image-size switch (PETS_SIZE) on files the test makes: the development machines cannot
download the MedMNIST+ files, so a registered toy data set stands in for them."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import torch

from pets_lite import data, fl, he, recipes, smpc, train
from pets_lite.recipes import RecipeError


def archive(side: int, n: int = 48, seed: int = 0) -> bytes:
    """A MedMNIST-shaped archive: class 1 brighter in the centre, images of ``side`` px."""
    rng = np.random.default_rng(seed)
    out = {}
    for split in data.SPLITS:
        y = np.arange(n) % 2
        x = rng.integers(0, 120, (n, side, side), dtype=np.uint8)
        c = slice(side // 4, 3 * side // 4)
        x[y == 1, c, c] += 120
        out[f"{split}_images"], out[f"{split}_labels"] = x, y.reshape(n, 1)
    buf = io.BytesIO()
    np.savez(buf, **out)
    return buf.getvalue()


@pytest.fixture
def toy_sizes(monkeypatch, tmp_path):
    """``toymnist`` at 28 and 64 px, registered with its own checksums."""
    blobs = {28: archive(28), 64: archive(64)}
    (tmp_path / "toymnist.npz").write_bytes(blobs[28])
    (tmp_path / "toymnist_64.npz").write_bytes(blobs[64])
    entry = data.FlagInfo("toymnist", hashlib.md5(blobs[28]).hexdigest(), "binary-class", 1,
                          {0: "a", 1: "b"}, md5_by_size={64: hashlib.md5(blobs[64]).hexdigest()})
    monkeypatch.setitem(data.REGISTRY, "toymnist", entry)
    monkeypatch.setenv("PETS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PETS_CACHE_DIR", str(tmp_path / "cache"))
    return "toymnist"


def test_at_size_adds_a_block_per_doubling_and_keys_the_cache():
    r = train.BASELINE
    assert (r.at_size(64).depth, r.at_size(128).depth, r.at_size(224).depth) == (4, 5, 6)
    assert r.at_size(128).at_size(28) == r
    k28, k64 = recipes.cache_key("m", r), recipes.cache_key("m", r.at_size(64))
    assert k28 != k64 and k64["data_md5"] == data.info(r.flag).md5_for(64)
    with pytest.raises(RecipeError, match="no official MedMNIST file"):
        r.at_size(100)


def test_encrypted_chapters_refuse_other_sizes():
    for recipe in (he.HE_RECIPE, smpc.MPC_RECIPE):
        with pytest.raises(RecipeError, match="28 x 28 images only"):
            recipe.at_size(64)


def test_the_baseline_trains_at_64_px(toy_sizes):
    recipe = train.BASELINE.replace(epochs=1, width=4, batch_size=16)
    model, splits, history = train.baseline_model(flag=toy_sizes, fast=False, recipe=recipe,
                                                  image_size=64, progress=False)
    assert splits["train"].tensors[0].shape[-2:] == (64, 64)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 4
    assert 0.0 <= train.evaluate(model, splits["test"])["auc"] <= 1.0
    again, _, _ = train.baseline_model(flag=toy_sizes, fast=False, recipe=recipe, image_size=28,
                                       progress=False)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in again.modules()) == 3


def test_a_federation_runs_at_64_px(toy_sizes):
    cfg = fl.FLConfig(flag=toy_sizes, n_hospitals=2, scheme="iid", rounds=1, width=4,
                      min_size=5, batch_size=16, client_eval=False).at_size(64)
    assert cfg.depth == 4
    result = fl.run_in_process([cfg])[cfg.name]
    assert len(result.rounds) == 2 and np.isfinite(result.test_auc)
    shapes = {tuple(v.shape) for k, v in result.state_dict.items() if k.endswith("weight")}
    assert any(s[:2] == (32, 16) for s in shapes), "the fourth block is there"
