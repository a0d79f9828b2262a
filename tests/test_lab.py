"""`make lab` starts JupyterLab on the notebooks, also as root (as CI and containers run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from pets_lite import net

ROOT = Path(__file__).resolve().parent.parent


def test_make_lab_serves_the_notebooks(tmp_path):
    port = net.free_port()
    args = (f"--no-browser --port={port} --IdentityProvider.token= "
            f"--ServerApp.password= --ServerApp.root_dir={ROOT / 'notebooks'}")
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")}
    proc = subprocess.Popen(["make", "-s", "lab", f"LAB_ARGS={args}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 90
        listing = None
        while time.time() < deadline and proc.poll() is None:
            try:
                url = f"http://127.0.0.1:{port}/api/contents"
                with urllib.request.urlopen(url, timeout=2) as r:
                    listing = json.load(r)
                break
            except OSError:
                time.sleep(1)
        output = proc.stdout.read() if proc.poll() is not None else "(still running)"
        assert listing is not None, f"JupyterLab did not answer; its output:\n{output}"
        names = {item["name"] for item in listing["content"]}
        assert "00_deep_radiomics_baseline.ipynb" in names
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
