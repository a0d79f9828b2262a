import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "data_scripts" / "fetch_data.py"


def run(*args, env=None):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_verify_reports_ok_for_the_official_files(data_available):
    r = run("--verify", "pneumoniamnist", "breastmnist")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("ok ") == 2


def test_unknown_flag_fails_with_a_message():
    r = run("--verify", "nosuchmnist")
    assert r.returncode == 1 and "unknown MedMNIST flag" in r.stderr


def test_verify_of_a_missing_file_fails_without_downloading(tmp_path):
    r = run("--verify", "breastmnist", "--dest", str(tmp_path))
    assert r.returncode == 1 and "FAILED" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_list_prints_the_registry():
    r = run("--list")
    assert r.returncode == 0 and "pneumoniamnist" in r.stdout and "28209eda" in r.stdout
