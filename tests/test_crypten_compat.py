"""pets_lite.crypten_compat: one test per torch-2.13 breakage of CrypTen 0.4.1, and the shim
applied on first use (never when pets_lite.smpc is imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pets_lite import crypten_compat

ROOT = Path(__file__).resolve().parent.parent


# One fresh interpreter, where importing pets_lite.smpc applies no fix, shows each breakage and then
# the same step with its fix applied (the fixes apply one by one, in order).
_BREAKAGES = r"""
import io, json, os, sys, traceback
import torch
from torch import nn
from pets_lite import crypten_compat, net

report = {}
def attempt(key, step):
    try:
        report[key] = "ok: " + str(step())
    except BaseException:
        report[key] = traceback.format_exc()

def export(crypten, batchnorm):
    extra = [nn.BatchNorm2d(2)] if batchnorm else []
    net = nn.Sequential(nn.Conv2d(1, 2, 3), *extra, nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)).eval()
    return type(crypten.nn.from_pytorch(net, torch.zeros(1, 1, 4, 4))).__name__

def save_load(crypten):
    buf = io.BytesIO()
    crypten.save(crypten.cryptensor(torch.tensor([1.5, -2.0])), buf)
    buf.seek(0)
    return crypten.load(buf).get_plain_text().tolist()

fixes = []
attempt("1 without", lambda: crypten_compat.apply_shim(fixes).__name__)
for name in [m for m in sys.modules if m == "crypten" or m.startswith("crypten.")]:
    del sys.modules[name]  # forget the half-finished import
fixes.append("onnx_registration")
attempt("1 with", lambda: crypten_compat.apply_shim(fixes).__name__)
c = crypten_compat.apply_shim(fixes)
attempt("2 without", lambda: export(c, False))
fixes.append("onnx_dynamo")
attempt("2 with", lambda: export(crypten_compat.apply_shim(fixes), False))
attempt("3 without", lambda: export(c, True))
fixes.append("onnx_dedup")
attempt("3 with", lambda: export(crypten_compat.apply_shim(fixes), True))
os.environ.update(WORLD_SIZE="1", RANK="0", DISTRIBUTED_BACKEND="gloo",
                  RENDEZVOUS=f"tcp://127.0.0.1:{net.free_port()}")
c.init()
attempt("4 without", lambda: save_load(c))
fixes.append("load_weights_only")
attempt("4 with", lambda: save_load(crypten_compat.apply_shim(fixes)))
c.uninit()
print("REPORT" + json.dumps(report))
"""


@pytest.fixture(scope="module")
def breakages() -> dict[str, str]:
    """Each breakage without and with its fix, from one unshimmed interpreter."""
    env = {**os.environ, "PETS_CRYPTEN_SHIM": "0", "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", _BREAKAGES], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and "REPORT" in done.stdout, done.stderr[-3000:]
    return json.loads(done.stdout.split("REPORT", 1)[1])


def test_breakage_1_import_needs_registration_alias(breakages):
    assert "No module named 'torch.onnx._internal.registration'" in breakages["1 without"]
    assert breakages["1 with"] == "ok: crypten", breakages["1 with"]


def test_breakage_2_export_needs_torchscript_exporter(breakages):
    assert "No module named 'onnxscript'" in breakages["2 without"]
    assert breakages["2 with"] == "ok: Graph", breakages["2 with"]


def test_breakage_3_batchnorm_needs_no_initializer_dedup(breakages):
    assert "does not support ONNX op Identity" in breakages["3 without"]
    assert breakages["3 with"] == "ok: Graph", breakages["3 with"]


def test_breakage_4_load_needs_full_unpickling(breakages):
    assert "Weights only load failed" in breakages["4 without"]
    assert breakages["4 with"] == "ok: [1.5, -2.0]", breakages["4 with"]


def test_shim_rejects_unknown_fix():
    with pytest.raises(ValueError, match="unknown shim fix"):
        crypten_compat.apply_shim(("onnx_registration", "typo"))


_LAZY = r"""
import sys
import pets_lite.smpc
print("IMPORTED" if "crypten" in sys.modules else "NOT IMPORTED")
from pets_lite import crypten_compat
crypten = crypten_compat.crypten_module()
print("APPLIED " + ",".join(crypten_compat.applied()))
"""


def _run(code: str, shim: str) -> str:
    env = {**os.environ, "PETS_CRYPTEN_SHIM": shim, "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)
    return done.stdout + done.stderr


def test_importing_smpc_leaves_crypten_alone_until_first_use():
    out = _run(_LAZY, "1")
    assert "NOT IMPORTED" in out, out[-2000:]
    assert "APPLIED " + ",".join(crypten_compat.FIXES) in out, out[-2000:]


def test_the_switch_leaves_crypten_unrepaired():
    out = _run(_LAZY, "0")
    assert "NOT IMPORTED" in out
    assert "No module named 'torch.onnx._internal.registration'" in out, out[-2000:]


def test_every_breakage_names_its_upstream_issue():
    for name in crypten_compat.FIXES:
        failure, cause, issue = crypten_compat.BREAKAGES[name]
        assert failure and cause and issue
        assert issue.startswith(("CrypTen#", "none found")), (name, issue)
    assert "CrypTen#455" in crypten_compat.BREAKAGES["onnx_dedup"][2]
