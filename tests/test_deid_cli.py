"""The command pets-lite-deid (python -m pets_lite.deid): reports, exit status, refusals, keys."""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pydicom.data import DATA_ROOT

from pets_lite import leakcheck
from pets_lite.deid import cli

ROOT = Path(__file__).resolve().parent.parent
FILES = Path(DATA_ROOT) / "test_files"


@pytest.fixture
def study(tmp_path):
    """A small study folder: two good files, a truncated one, a text file posing as DICOM."""
    src = tmp_path / "study" / "PAT1" / "CT"
    src.mkdir(parents=True)
    shutil.copy(FILES / "CT_small.dcm", src / "1.dcm")
    shutil.copy(FILES / "MR_small_bigendian.dcm", src / "2.dcm")
    return tmp_path / "study"


def key_file(tmp_path, mode=0o600):
    path = tmp_path / "site.key"
    path.write_text("a-secret-key-of-more-than-sixteen-bytes\n")
    path.chmod(mode)
    return path


def test_new_key_is_private_and_never_printed_and_a_folder_is_done(tmp_path, study, capsys):
    key = tmp_path / "new.key"
    report = tmp_path / "report.json"
    rc = cli.main([str(study), str(tmp_path / "out"), "--key-file", str(key), "--new-key",
                   "--report", str(report), "--no-progress", "--shift-dates"])
    out = capsys.readouterr()
    assert rc == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_text().strip()) == 64
    assert key.read_text().strip() not in out.out + out.err
    assert "2 files de-identified, 0 failed" in out.out
    rows = json.loads(report.read_text())
    assert stat.S_IMODE(report.stat().st_mode) == 0o600
    assert [r["status"] for r in rows] == ["ok", "ok"] and all(r["pixels_checked"] for r in rows)
    assert {r["transfer_syntax"] for r in rows} == {"Explicit VR Little Endian"}
    assert "big-endian" in " ".join(r["syntax_note"] for r in rows)
    for r in rows:
        assert Path(r["output"]).exists()
        assert leakcheck.check_file(r["source"], r["output"],
                                    leakcheck.Retention(frozenset("m"))).ok
    # a second --new-key refuses to overwrite the key
    rc = cli.main([str(study), str(tmp_path / "out2"), "--key-file", str(key), "--new-key"])
    assert rc == 2 and "refusing to overwrite a key" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


def test_failures_give_exit_status_1_and_a_csv_row_each_the_rest_is_written(tmp_path, study,
                                                                            capsys):
    (study / "PAT1" / "CT" / "3.dcm").write_bytes((FILES / "CT_small.dcm").read_bytes()[:700])
    (study / "PAT1" / "CT" / "4.dcm").write_text("not a DICOM file at all\n" * 10)
    report = tmp_path / "report.csv"
    rc = cli.main([str(study), str(tmp_path / "out"), "--key-file", str(key_file(tmp_path)),
                   "--report", str(report), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1
    rows = list(csv.DictReader(report.open()))
    by_name = {Path(r["source"]).name: r for r in rows}
    assert by_name["1.dcm"]["status"] == by_name["2.dcm"]["status"] == "ok"
    assert by_name["3.dcm"]["status"] == "failed" and "truncated" in by_name["3.dcm"]["error"]
    assert by_name["4.dcm"]["status"] == "failed" and "not a DICOM" in by_name["4.dcm"]["error"]
    assert "3.dcm" in err and "4.dcm" in err
    assert json.loads(by_name["1.dcm"]["actions"])["X"] > 0
    assert Path(by_name["1.dcm"]["output"]).exists()


def test_single_bad_files_fail_with_a_reason(tmp_path, capsys):
    key = str(key_file(tmp_path))
    text = tmp_path / "notes.dcm"
    text.write_text("hello\n" * 50)
    assert cli.main([str(text), str(tmp_path / "o.dcm"), "--key-file", key]) == 1
    assert "not a DICOM file" in capsys.readouterr().err
    assert cli.main([str(FILES / "MR_truncated.dcm"), str(tmp_path / "o.dcm"), "--key-file",
                     key]) == 1
    assert "truncated" in capsys.readouterr().err
    assert not (tmp_path / "o.dcm").exists()


def test_refusals_change_nothing(tmp_path, study, capsys):
    key = key_file(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert cli.main([str(study), str(out), "--key-file", str(key)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    key.chmod(0o644)
    assert cli.main([str(study), str(tmp_path / "o2"), "--key-file", str(key)]) == 2
    assert "chmod 600" in capsys.readouterr().err and not (tmp_path / "o2").exists()
    key.chmod(0o600)
    assert cli.main([str(study), str(tmp_path / "o3"), "--key-file", str(tmp_path / "none")]) == 2
    assert "--new-key" in capsys.readouterr().err
    assert cli.main([str(study), str(tmp_path / "o4"), "--key-file", str(key), "--new-key",
                     "--dry-run"]) == 2
    assert cli.main([str(study), str(tmp_path / "o5"), "--key-file", str(key), "--report",
                     str(tmp_path / "r.txt")]) == 2
    assert not any((tmp_path / f"o{i}").exists() for i in range(2, 6))


def test_dry_run_reports_and_writes_nothing(tmp_path, study, capsys):
    report = tmp_path / "dry.json"
    rc = cli.main([str(study), str(tmp_path / "out"), "--key-file", str(key_file(tmp_path)),
                   "--dry-run", "--report", str(report), "--no-progress",
                   "--profile", "allowlist"])
    assert rc == 0 and "dry run, nothing written" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()
    rows = json.loads(report.read_text())
    assert len(rows) == 2 and all(r["output"] is None and r["status"] == "ok" for r in rows)


def test_module_and_console_script_entry_points():
    done = subprocess.run([sys.executable, "-m", "pets_lite.deid", "--help"], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0 and "--key-file" in done.stdout and "--dry-run" in done.stdout
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, func = scripts["pets-lite-deid"].partition(":")
    assert (module, func) == ("pets_lite.deid.cli", "main") and callable(cli.main)
