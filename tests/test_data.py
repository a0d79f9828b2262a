"""pets_lite.data: registry, verified resolution, atomic fetch, loading, and every error path."""

from __future__ import annotations

import hashlib
import io
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from pets_lite import data


@pytest.fixture
def official(data_available) -> Path:
    return data.resolve("pneumoniamnist", download=False)


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """An empty data world: no PETS_DATA_DIR, an empty cache."""
    monkeypatch.delenv("PETS_DATA_DIR", raising=False)
    monkeypatch.setenv("PETS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def test_registry_has_the_2d_flags_with_md5s():
    assert {"pneumoniamnist", "breastmnist", "pathmnist", "dermamnist", "bloodmnist",
            "organamnist"} <= set(data.REGISTRY)
    for meta in data.REGISTRY.values():
        assert len(meta.md5) == 32 and int(meta.md5, 16) >= 0
        assert meta.url.startswith("https://zenodo.org/records/10519652/files/")
        assert meta.url.endswith(f"{meta.flag}.npz?download=1")


def test_registry_md5s_match_the_shared_checksum_list():
    sums = Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist" / "MD5SUMS"
    if not sums.exists():
        pytest.skip("no shared MD5SUMS beside the checkout")
    for line in sums.read_text().split("\n"):
        if line.strip():
            md5, name = line.split()
            assert data.info(name.removesuffix(".npz")).md5 == md5


def test_unknown_flag_is_a_clear_error():
    with pytest.raises(data.DataError, match="unknown MedMNIST flag 'pneumonia'.*pneumoniamnist"):
        data.info("pneumonia")


def test_load_gives_normalised_tensors(official):
    ds = data.load("pneumoniamnist", "test", fast=False)
    x, y = ds.tensors
    assert x.shape == (624, 1, 28, 28) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.max()) > 0.5
    assert y.dtype == torch.int64 and y.shape == (624,) and set(y.tolist()) == {0, 1}


def test_fast_mode_subset_is_stratified_and_seeded(official):
    full = data.load("pneumoniamnist", "train", fast=False)
    a = data.load("pneumoniamnist", "train", fast=True, seed=0)
    b = data.load("pneumoniamnist", "train", fast=True, seed=0)
    c = data.load("pneumoniamnist", "train", fast=True, seed=1)
    assert len(a) == data.FAST_SIZES["train"]
    assert torch.equal(a.tensors[0], b.tensors[0]) and not torch.equal(a.tensors[0], c.tensors[0])
    share_full = full.tensors[1].float().mean().item()
    share_fast = a.tensors[1].float().mean().item()
    assert abs(share_full - share_fast) < 0.01


def test_stratified_subset_keeps_rare_classes():
    y = np.array([0] * 995 + [1] * 5)
    idx = data.stratified_subset(y, 10, seed=0)
    assert len(idx) == 10 and (y[idx] == 1).sum() >= 1
    with pytest.raises(ValueError):
        data.stratified_subset(y, 0)


def test_corrupted_copy_is_refused(official, monkeypatch, tmp_path):
    bad = tmp_path / "pneumoniamnist.npz"
    raw = bytearray(official.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
    monkeypatch.setenv("PETS_DATA_DIR", str(tmp_path))
    with pytest.raises(data.ChecksumError, match="expected 28209eda62fecd6e6a2d98b1501bb15f"):
        data.load("pneumoniamnist", "test")
    assert bad.exists(), "a refused file is left for the user to inspect, not silently deleted"


def test_missing_file_without_network_says_where_and_what(isolated):
    with pytest.raises(data.DataUnavailableError) as err:
        data.resolve("breastmnist", download=False)
    message = str(err.value)
    assert "breastmnist.npz" in message and "zenodo.org" in message and "fetch_data.py" in message


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_failed_download_says_what_to_do_and_leaves_nothing(isolated):
    dest = isolated / "dl"
    url = f"http://127.0.0.1:{_closed_port()}/breastmnist.npz"
    with pytest.raises(data.DataUnavailableError, match="Download it on a machine"):
        data.fetch("breastmnist", dest_dir=dest, url=url, progress=False, timeout=5)
    assert list(dest.iterdir()) == []


def test_fetch_verifies_and_writes_atomically(official, isolated):
    dest = isolated / "dl"
    path = data.fetch("pneumoniamnist", dest_dir=dest, url=official.as_uri(), progress=False)
    assert path == dest / "pneumoniamnist.npz"
    assert data.md5sum(path) == data.info("pneumoniamnist").md5
    assert sorted(p.name for p in dest.iterdir()) == ["pneumoniamnist.npz"]
    # a second fetch finds the verified file and does not download
    assert data.fetch("pneumoniamnist", dest_dir=dest, url="http://127.0.0.1:1/x") == path


def test_corrupted_download_is_discarded(official, isolated):
    corrupt = isolated / "corrupt.npz"
    shutil.copy(official, corrupt)
    with open(corrupt, "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    dest = isolated / "dl"
    with pytest.raises(data.ChecksumError, match="discarded"):
        data.fetch("pneumoniamnist", dest_dir=dest, url=corrupt.as_uri(), progress=False)
    assert list(dest.iterdir()) == [], "no partial or unverified file may remain"


def test_resolve_prefers_pets_data_dir_then_cache(official, monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    (cache / "medmnist").mkdir(parents=True)
    shutil.copy(official, cache / "medmnist" / "pneumoniamnist.npz")
    monkeypatch.setenv("PETS_CACHE_DIR", str(cache))
    monkeypatch.setenv("PETS_DATA_DIR", str(official.parent))
    assert data.resolve("pneumoniamnist") == official.parent / "pneumoniamnist.npz"
    monkeypatch.setenv("PETS_DATA_DIR", str(tmp_path / "empty"))
    assert data.resolve("pneumoniamnist") == cache / "medmnist" / "pneumoniamnist.npz"


def test_archive_missing_keys_is_a_clear_error(monkeypatch, tmp_path):
    buf = io.BytesIO()
    np.savez(buf, train_images=np.zeros((2, 28, 28), np.uint8), train_labels=np.zeros((2, 1)))
    blob = buf.getvalue()
    (tmp_path / "toymnist.npz").write_bytes(blob)
    toy = data.FlagInfo("toymnist", hashlib.md5(blob).hexdigest(), "binary-class", 1,
                        {0: "a", 1: "b"})
    monkeypatch.setitem(data.REGISTRY, "toymnist", toy)
    monkeypatch.setenv("PETS_DATA_DIR", str(tmp_path))
    assert len(data.load("toymnist", "train", fast=False)) == 2
    with pytest.raises(data.DataFormatError, match=r"lacks \['test_images', 'test_labels'\]"):
        data.load("toymnist", "test")
    with pytest.raises(data.DataError, match="unknown split"):
        data.load("toymnist", "holdout")


def test_rgb_images_become_channels_first():
    x, y = data.to_tensors(np.zeros((4, 28, 28, 3), np.uint8), np.zeros((4, 1), np.int64))
    assert x.shape == (4, 3, 28, 28) and y.shape == (4,)
    with pytest.raises(data.DataFormatError, match="expected images of shape"):
        data.to_tensors(np.zeros((4, 28), np.uint8), np.zeros(4))


def test_every_flag_has_its_medmnist_plus_files():
    for meta in data.REGISTRY.values():
        assert set(meta.md5_by_size) == {64, 128, 224}, meta.flag
        assert meta.url_for(128).endswith(f"files/{meta.flag}_128.npz?download=1")
        assert len({meta.md5, *meta.md5_by_size.values()}) == 4, "every size is its own file"
    assert data.info("pneumoniamnist").md5_for(64) == "8f4eceb4ccffa70c672198ea285246c6"


@pytest.mark.parametrize("size", [0, 32, 100, "64", True])
def test_a_size_without_an_official_file_is_a_clear_error(size):
    with pytest.raises(data.DataError, match="no official MedMNIST file"):
        data.info("pneumoniamnist").md5_for(size)
    with pytest.raises(data.DataError, match="no official MedMNIST file"):
        data.load("pneumoniamnist", "train", image_size=size)


def toy_archive(side: int, n: int = 6) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    arrays = {}
    for split in data.SPLITS:
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1)
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_the_size_switch_loads_a_registered_file_of_that_size(monkeypatch, tmp_path):
    """The development machines cannot download MedMNIST+; a test registers its own small file."""
    small, big = toy_archive(28), toy_archive(64)
    (tmp_path / "toymnist.npz").write_bytes(small)
    (tmp_path / "toymnist_64.npz").write_bytes(big)
    entry = data.FlagInfo("toymnist", hashlib.md5(small).hexdigest(), "binary-class", 1,
                          {0: "a", 1: "b"}, md5_by_size={64: hashlib.md5(big).hexdigest()})
    monkeypatch.setitem(data.REGISTRY, "toymnist", entry)
    monkeypatch.setenv("PETS_DATA_DIR", str(tmp_path))
    assert data.load("toymnist", "train", fast=False).tensors[0].shape == (6, 1, 28, 28)
    splits = data.load_splits("toymnist", fast=False, image_size=64)
    assert splits["val"].tensors[0].shape == (6, 1, 64, 64)
    with pytest.raises(data.DataError, match="toymnist has no official file at 128 px"):
        data.load("toymnist", "train", image_size=128)
    # the 64 px file is checked against its own checksum, not the 28 px one
    (tmp_path / "toymnist_64.npz").write_bytes(big[:-1] + b"x")
    with pytest.raises(data.ChecksumError, match=r"toymnist_64.npz.*--size 64"):
        data.load("toymnist", "train", image_size=64)


def test_a_file_whose_images_have_another_size_is_refused(monkeypatch, tmp_path):
    wrong = toy_archive(28)
    (tmp_path / "toymnist_64.npz").write_bytes(wrong)
    entry = data.FlagInfo("toymnist", "0" * 32, "binary-class", 1, {0: "a", 1: "b"},
                          md5_by_size={64: hashlib.md5(wrong).hexdigest()})
    monkeypatch.setitem(data.REGISTRY, "toymnist", entry)
    monkeypatch.setenv("PETS_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DataFormatError, match="not 64 x 64"):
        data.load("toymnist", "test", image_size=64)


def test_register_validates_and_returns_the_replaced_entry(monkeypatch):
    monkeypatch.setattr(data, "REGISTRY", dict(data.REGISTRY))
    import pets_lite.catalog as catalog

    monkeypatch.setattr(catalog, "REGISTRY", data.REGISTRY)
    good = data.FlagInfo("mine", "a" * 32, "binary-class", 1, {0: "x", 1: "y"})
    assert data.register(good) is None and data.info("mine") is good
    with pytest.raises(data.DataError, match="32 lower-case hex"):
        data.register(data.FlagInfo("mine", "XYZ", "binary-class", 1, {0: "x"}))
    with pytest.raises(data.DataError, match="no official MedMNIST file"):
        data.register(data.FlagInfo("mine", "a" * 32, "binary-class", 1, {0: "x"},
                                    md5_by_size={96: "b" * 32}))


def test_pets_size_is_read_by_config(monkeypatch):
    from pets_lite import config

    monkeypatch.delenv("PETS_SIZE", raising=False)
    assert config.image_size() == 28
    monkeypatch.setenv("PETS_SIZE", "128")
    assert config.image_size() == 128
    monkeypatch.setenv("PETS_SIZE", "big")
    with pytest.raises(ValueError, match="PETS_SIZE must be"):
        config.image_size()
