#!/usr/bin/env python
"""De-identification throughput and leaks, side by side: pets_lite.deid, dicognito, pydicom/deid.

Every tool runs the same way in one process over the same files (every DICOM file that ships in
pydicom's test data), reading each file and writing a new one; the script prints files per second
and megabytes (10^6 bytes of input) per second for

* ``pets_lite.deid`` with the pixel check (pixels decoded, burned-in text found and masked),
* ``pets_lite.deid`` without it (``burned_in="skip"``; header only, as the others do),
* dicognito (``Anonymizer().anonymize``, its defaults; it checks no pixels),
* pydicom/deid's default recipe (``replace_identifiers`` with ``DeidRecipe()``, its defaults;
  it checks no pixels either),

and, for each tool's outputs, the values the independent checker (:mod:`pets_lite.leakcheck`,
Annex E's basic reading, no options) finds surviving: values that Table E.1-1 requires to go
(private tags, descriptions, device serial numbers, ...). The other tools follow policies of their
own (dicognito, for one, keeps private tags and descriptions), so their count says where they
differ from the Basic Profile, not that each value names a patient. The two other tools are
benchmark-only dependencies, installed with exact pins and not needed by any test:

    pip install dicognito==0.19.0 deid==0.4.13
    python benchmarks/deid_throughput.py [--repeat 1] [--limit N]

A failed file counts against no tool's speed (its time is still spent) and is listed as failed.
Timings on a shared or busy machine are noisy: compare the ratios of one run, not runs.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.data import DATA_ROOT

from pets_lite import deid, leakcheck

KEY = b"benchmark-key-0123456789abcdef!!"


def corpus(limit: int | None = None) -> list[Path]:
    """Every file under pydicom's test data that pydicom reads as DICOM."""
    files = []
    for path in deid.dicom_files(Path(DATA_ROOT) / "test_files"):
        if not deid.looks_dicom(path):
            continue
        try:
            pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not DICOM, whatever pydicom says
            continue
        files.append(path)
    return files[:limit] if limit else files


def ours(pixel_check: bool) -> Callable[[Path, Path], Path]:
    def run(src: Path, out: Path) -> Path:
        deid.deidentify_file(src, out, KEY, burned_in="mask" if pixel_check else "skip")
        return out
    return run


def dicognito_tool() -> Callable[[Path, Path], Path]:
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer(seed="benchmark")

    def run(src: Path, out: Path) -> Path:
        ds = pydicom.dcmread(src)
        anonymizer.anonymize(ds)
        out.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(out)
        return out
    return run


def pydicom_deid_tool() -> Callable[[Path, Path], Path]:
    from deid.config import DeidRecipe
    from deid.dicom import replace_identifiers

    recipe = DeidRecipe()       # the default recipe, deid.dicom

    def run(src: Path, out: Path) -> Path:
        out.parent.mkdir(parents=True, exist_ok=True)
        written = replace_identifiers(dicom_files=[str(src)], deid=recipe, save=True,
                                      output_folder=str(out.parent))
        if not written:
            raise RuntimeError("replace_identifiers wrote nothing")
        return Path(written[0])
    return run


def measure(name: str, tool: Callable[[Path, Path], Path], files: list[Path],
            work: Path) -> dict:
    """Time ``tool`` over ``files`` (outputs under ``work``), then check each output."""
    outputs, failures, done_bytes = [], 0, 0
    start = time.perf_counter()
    for i, src in enumerate(files):
        try:
            out = tool(src, work / name / str(i) / src.name)
        except Exception:  # noqa: BLE001 - a tool's failure is counted, never fatal
            failures += 1
            continue
        outputs.append((src, out))
        done_bytes += src.stat().st_size
    seconds = time.perf_counter() - start
    reports = []
    for src, out in outputs:
        try:
            reports.append(leakcheck.check_file(src, out))
        except Exception:  # noqa: BLE001 - an output the checker cannot read
            failures += 1
    totals = leakcheck.summary(reports)
    return {"tool": name, "files": len(outputs), "failed": failures, "seconds": seconds,
            "files/s": len(outputs) / seconds, "MB/s": done_bytes / 1e6 / seconds,
            "leaks": totals["leaks"], "files with a leak": totals["files with a leak"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="passes over the files per tool")
    parser.add_argument("--limit", type=int, default=None, help="only the first N files")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    logging.getLogger("deid").setLevel(logging.ERROR)
    files = corpus(args.limit) * args.repeat
    tools = {"pets_lite.deid (pixel check)": ours(True),
             "pets_lite.deid (header only)": ours(False)}
    for name, make in (("dicognito 0.19.0", dicognito_tool),
                       ("pydicom/deid 0.4.13 default recipe", pydicom_deid_tool)):
        try:
            tools[name] = make()
        except ImportError as exc:
            print(f"{name}: not installed ({exc}); pip install dicognito==0.19.0 deid==0.4.13")
    rows = []
    with tempfile.TemporaryDirectory(prefix="deid-bench-") as tmp:
        for name, tool in tools.items():      # warm-up: imports, plug-ins, caches
            measure(name, tool, files[:3], Path(tmp) / "warm")
        shutil.rmtree(Path(tmp) / "warm")
        for name, tool in tools.items():
            rows.append(measure(name, tool, files, Path(tmp)))
    print(f"{len(files)} files ({sum(p.stat().st_size for p in files) / 1e6:.1f} MB)\n")
    print(f"{'tool':<38} {'files':>5} {'failed':>6} {'files/s':>8} {'MB/s':>6} {'leaks':>6} "
          f"{'files w/ leak':>13}")
    for r in rows:
        print(f"{r['tool']:<38} {r['files']:>5} {r['failed']:>6} {r['files/s']:>8.1f} "
              f"{r['MB/s']:>6.2f} {r['leaks']:>6} {r['files with a leak']:>13}")
    by = {r["tool"]: r for r in rows}
    ref = by.get("dicognito 0.19.0")
    if ref:
        for name in ("pets_lite.deid (pixel check)", "pets_lite.deid (header only)"):
            print(f"{name} / dicognito, files per second: "
                  f"{by[name]['files/s'] / ref['files/s']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
