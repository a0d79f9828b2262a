"""Run every mutant of the registry against the tests that must catch it; print a table.

    python tests/mutants/run.py [--only NAME ...] [--jobs 2] [--list]

Exit status 0 when every mutant applies and is caught; 1 when one survives, no longer applies, or
breaks the library so badly that its tests cannot even run (a mutant must leave the code running).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _registry():
    """tests/mutants/registry.py, loaded by path."""
    import importlib.util

    if "mutant_registry" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "mutant_registry", Path(__file__).resolve().parent / "registry.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["mutant_registry"] = module
        spec.loader.exec_module(module)
    return sys.modules["mutant_registry"]


MUTANTS = _registry().MUTANTS
Mutant = _registry().Mutant


def apply(mutant: Mutant, package: Path) -> None:
    """Patch the copy of the package at ``package``; a clear error if the patch does not apply."""
    path = package / mutant.file
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise LookupError(f"{mutant.name}: the text to replace occurs {count} times in "
                          f"pets_lite/{mutant.file} (must be exactly once): update the mutant")
    path.write_text(text.replace(mutant.old, mutant.new))


def run_one(mutant: Mutant, timeout: float) -> dict:
    """Apply ``mutant`` to a copy of pets_lite and run its tests; classify the outcome."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as tmp:
        package = Path(tmp) / "pets_lite"
        shutil.copytree(ROOT / "pets_lite", package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        try:
            apply(mutant, package)
        except LookupError as exc:
            return {"mutant": mutant, "outcome": "does not apply", "detail": str(exc),
                    "seconds": 0.0}
        env = {**os.environ, "PYTHONPATH": tmp + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "PETS_FAST": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        # -P: no current folder on sys.path, so `import pets_lite` finds the mutated copy
        probe = "import pets_lite; print(pets_lite.__file__)"
        where = subprocess.run([sys.executable, "-P", "-c", probe], cwd=ROOT, env=env,
                               capture_output=True, text=True)
        if not where.stdout.startswith(tmp):
            return {"mutant": mutant, "outcome": "broken", "seconds": 0.0,
                    "detail": f"the tests would import {where.stdout.strip()}, not the mutant"}
        cmd = [sys.executable, "-P", "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider",
               "--no-header", *mutant.tests]
        try:
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"mutant": mutant, "outcome": "timed out", "detail": f"> {timeout:.0f} s",
                    "seconds": time.perf_counter() - start}
    out = done.stdout + done.stderr
    failed = re.findall(r"^FAILED (\S+)", out, re.M)
    if done.returncode == 1 and failed:
        outcome, detail = "caught", failed[0]
    elif done.returncode == 0:
        outcome, detail = "SURVIVED", "every test passed on the mutant"
    else:
        outcome = "broken"
        detail = f"pytest exit {done.returncode}: " + (out.strip().splitlines() or ["?"])[-1]
    return {"mutant": mutant, "outcome": outcome, "detail": detail,
            "seconds": time.perf_counter() - start}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="run these mutants only")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per mutant")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)
    names = [m.name for m in MUTANTS]
    if len(set(names)) != len(names):
        print("mutant names must be unique", file=sys.stderr)
        return 1
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.only and len(chosen) != len(args.only):
        print(f"unknown mutants: {sorted(set(args.only) - set(names))}", file=sys.stderr)
        return 1
    if args.list:
        for m in chosen:
            print(f"{m.chapter:>4}  {m.name:<36} {m.why}")
        return 0
    start = time.perf_counter()
    print(f"{len(chosen)} mutants, {args.jobs} at a time", flush=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_one, m, args.timeout) for m in chosen]
        results = []
        for future in concurrent.futures.as_completed(futures):
            r = future.result()
            results.append(r)
            print(f"  {r['outcome']:<15} {r['mutant'].name} ({r['seconds']:.0f} s)", flush=True)
    results.sort(key=lambda r: (r["mutant"].chapter, r["mutant"].name))
    print(f"\n{'chapter':<8} {'mutant':<36} {'outcome':<15} caught by / detail")
    for r in results:
        print(f"{r['mutant'].chapter:<8} {r['mutant'].name:<36} {r['outcome']:<15} {r['detail']}")
    bad = [r for r in results if r["outcome"] != "caught"]
    print(f"\n{len(results) - len(bad)} of {len(results)} mutants caught in "
          f"{time.perf_counter() - start:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
