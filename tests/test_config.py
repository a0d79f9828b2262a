
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


def test_derive_seed_streams_do_not_collide():
    from pets_lite.config import derive_seed

    seen = {}
    for seed in range(4):
        for round_ in range(3):
            for k in (0, 1, 999, 1000, 1001):
                s = derive_seed(seed, "round", round_, "hospital", k)
                assert s not in seen, (seed, round_, k, seen.get(s))
                seen[s] = (seed, round_, k)
                assert 0 <= s < 2**63
    # the old formula's collision: seed + 1000 * round + k
    assert derive_seed(1, "hospital", 0) != derive_seed(0, "hospital", 1000)
    # keys of different lengths and kinds are different streams
    assert derive_seed(0, 1) != derive_seed(0, 1, 0) and derive_seed(0, "1") != derive_seed(0, 1)
    assert derive_seed(5, "a", 2) == derive_seed(5, "a", 2)
    import pytest

    with pytest.raises(ValueError):
        derive_seed(-1)
    with pytest.raises(ValueError):
        derive_seed(0, 1.5)


def test_seeded_restores_the_callers_generator():
    import torch

    from pets_lite.config import seeded

    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    with seeded(42):
        inside = torch.rand(3)
    assert torch.equal(torch.rand(3), expected)
    with seeded(42):
        assert torch.equal(torch.rand(3), inside)


def test_only_config_reads_the_environment():
    """Every environment variable is read in config.py (other modules call its functions)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readers = re.compile(r"os\.environ\.get|os\.getenv|os\.environ\[[^]]+\](?!\s*=)")
    offenders = []
    paths = sorted((root / "pets_lite").rglob("*.py")) + sorted((root / "benchmarks").glob("*.py"))
    for path in paths:
        if path.name == "config.py" and path.parent.name == "pets_lite":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if readers.search(line):
                offenders.append(f"{path.relative_to(root)}:{i}: {line.strip()}")
    assert not offenders, "read the environment through pets_lite.config:\n" + "\n".join(offenders)
