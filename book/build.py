#!/usr/bin/env python
"""Execute every notebook once and build the Jupyter Book from the executed copies.

    python book/build.py            # full mode (what `make book` runs)
    python book/build.py --fast     # fast mode, for a quick look
    python book/build.py --reuse    # keep executed copies newer than their source
    python book/build.py --fast --only 02 --workdir /tmp/mybook   # a private copy, one chapter

The executed notebooks go to book/notebooks/ (ignored by git); the book's configuration turns
execution off, so Sphinx never runs a notebook a second time. Timings go to
book/_build/timings.json (they feed the README's table).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pets_lite import nbrun

HERE = Path(__file__).resolve().parent


def execute_all(out_dir: Path, fast: bool, reuse: bool, only: list[str] | None = None) -> dict:
    """Execute the chapter notebooks into ``out_dir``; return ``{name: seconds}``."""
    timings = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in nbrun.notebook_paths():
        if only and not any(key in path.stem for key in only):
            continue
        target = out_dir / path.name
        if reuse and target.exists() and target.stat().st_mtime > path.stat().st_mtime:
            print(f"reuse    {path.name}", flush=True)
            continue
        print(f"execute  {path.name} ({'fast' if fast else 'full'} mode)", flush=True)
        start = time.perf_counter()
        nbrun.execute(path, target, fast=fast, timeout=3600)
        timings[path.stem] = round(time.perf_counter() - start, 1)
        print(f"done     {path.name} in {timings[path.stem]:.0f} s", flush=True)
    return timings


def build_html(source: Path, strict: bool = True, capture: bool = False):
    """``jupyter-book build`` of ``source``; warnings are errors when ``strict``.

    Returns the path of ``index.html``, or the build's log when ``capture`` (a failed build raises
    ``CalledProcessError`` with the log in ``.stdout``)."""
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(source),
           "--builder", "html"]
    if strict:
        cmd += ["-W", "--keep-going"]
    if capture:
        done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
        return done.stdout
    subprocess.run(cmd, check=True)
    return source / "_build" / "html" / "index.html"


def stage_mathjax(dest: Path) -> Path:
    """Copy MathJax 3 (``tex-chtml.js`` and its fonts) from the pinned ``django-static-mathjax``
    package into the book's static folder, so the book renders formulas without a CDN."""
    import mathjax  # the django-static-mathjax package: MathJax's own files, no Django needed

    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(es5 / "tex-chtml.js", dest / "tex-chtml.js")
    shutil.copytree(es5 / "output" / "chtml" / "fonts" / "woff-v2",
                    dest / "output" / "chtml" / "fonts" / "woff-v2", dirs_exist_ok=True)
    return dest


def stage(workdir: Path, executed: list[Path] = ()) -> Path:
    """Copy the book's sources (not its build or executed notebooks) to ``workdir``, then the
    ``executed`` notebooks into ``workdir/notebooks``; return ``workdir``."""
    workdir = Path(workdir)
    if workdir.resolve() != HERE:
        shutil.copytree(HERE, workdir, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("_build", "notebooks", "_static",
                                                      "__pycache__"))
    (workdir / "notebooks").mkdir(parents=True, exist_ok=True)
    stage_mathjax(workdir / "_static" / "mathjax")
    for nb in executed:
        shutil.copy2(nb, workdir / "notebooks" / Path(nb).name)
    return workdir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="execute in fast mode")
    parser.add_argument("--reuse", action="store_true", help="keep up-to-date executed copies")
    parser.add_argument("--only", nargs="*", help="execute only notebooks whose name has these")
    parser.add_argument("--workdir", type=Path, default=HERE,
                        help="build in a copy of the book here (default: book/ itself)")
    parser.add_argument("--no-strict", action="store_true", help="do not turn warnings into errors")
    args = parser.parse_args()
    start = time.perf_counter()
    workdir = stage(args.workdir)
    timings = execute_all(workdir / "notebooks", fast=args.fast, reuse=args.reuse, only=args.only)
    if args.only:  # a preview: the other chapters appear unexecuted, so cross-links still resolve
        for path in nbrun.notebook_paths():
            if not (workdir / "notebooks" / path.name).exists():
                shutil.copy2(path, workdir / "notebooks" / path.name)
    index = build_html(workdir, strict=not args.no_strict)
    timings["_total_seconds"] = round(time.perf_counter() - start, 1)
    timings["_mode"] = "fast" if args.fast else "full"
    (workdir / "_build" / "timings.json").write_text(json.dumps(timings, indent=1))
    print(f"\nThe book is at {index}  (total {timings['_total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
