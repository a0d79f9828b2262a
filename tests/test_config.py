import os

import pytest
import torch

from pets_lite import config


def test_fast_flag_reads_the_environment(monkeypatch):
    for value, expected in [("1", True), ("true", True), ("YES", True), ("0", False), ("", False)]:
        monkeypatch.setenv("PETS_FAST", value)
        assert config.is_fast() is expected
    monkeypatch.delenv("PETS_FAST")
    assert config.is_fast() is False


def test_seed_everything_repeats_random_streams():
    g = config.seed_everything(7)
    a = (torch.rand(3), torch.rand(3, generator=g))
    g = config.seed_everything(7)
    b = (torch.rand(3), torch.rand(3, generator=g))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    config.seed_everything(8)
    assert not torch.equal(a[0], torch.rand(3))


@pytest.mark.parametrize("bad", [-1, 1.5, "0"])
def test_seed_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="seed"):
        config.seed_everything(bad)


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("PETS_DATA_DIR", str(tmp_path / "d"))
    assert config.data_dir() == tmp_path / "d"
    monkeypatch.delenv("PETS_DATA_DIR")
    monkeypatch.setenv("PETS_CACHE_DIR", str(tmp_path / "c"))
    assert config.data_dir() == tmp_path / "c" / "medmnist"
    monkeypatch.delenv("PETS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert config.cache_dir() == tmp_path / "x" / "pets_lite"


def test_device_default_and_override(monkeypatch):
    monkeypatch.delenv("PETS_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert config.device().type == expected
    monkeypatch.setenv("PETS_DEVICE", "cpu")
    assert config.device() == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_override_to_missing_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PETS_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        config.device()


def test_progress_final_mode_prints_one_line(monkeypatch, capsys):
    monkeypatch.setenv("PETS_PROGRESS", "final")
    assert sum(config.progress(range(5), desc="loop")) == 10
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "loop" in out[0] and "5/5" in out[0]


def test_progress_off(monkeypatch, capsys):
    monkeypatch.setenv("PETS_PROGRESS", "off")
    assert list(config.progress(range(3))) == [0, 1, 2]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_progress_final_mode_prints_nothing_when_disabled(monkeypatch, capsys):
    monkeypatch.setenv("PETS_PROGRESS", "final")
    assert list(config.progress(range(3), disable=True)) == [0, 1, 2]
    assert capsys.readouterr().out == ""
