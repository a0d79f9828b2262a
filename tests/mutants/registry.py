"""The registry of mutants: each breaks one protection while the code still runs.

A mutant is a textual patch of one library file (``old`` must occur exactly once, so a mutant
that no longer applies is reported, never silently skipped) and the fast tests that must fail
on the patched library. ``python tests/mutants/run.py`` (``make mutants``) applies each to a copy
of ``pets_lite`` and runs its tests against the copy (``PYTHONPATH``, so notebook kernels, Ray
workers and CrypTen parties run the mutant too).

Keep each mutant's tests the fastest that catch it; a mutant runs a notebook test only when
nothing faster catches it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    """One sabotage: ``file`` (relative to ``pets_lite/``), the exact ``old`` text, its ``new``
    replacement, the ``tests`` (pytest node ids) that must catch it, and the ``chapter`` (two
    digits, or "lib" for the lower layer) whose protection it breaks."""

    name: str
    chapter: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str


def _collect() -> list[Mutant]:
    """Every mutant of the ``m_*.py`` files beside this one (one file per area, so that work on
    different chapters never edits the same file). Each holds ``MUTANTS``, a list of dicts with
    the fields of :class:`Mutant`."""
    import importlib.util
    import sys
    from pathlib import Path

    found: list[Mutant] = []
    for path in sorted(Path(__file__).resolve().parent.glob("m_*.py")):
        name = f"mutants_{path.stem}"
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        found.extend(Mutant(**entry) for entry in sys.modules[name].MUTANTS)
    return found


MUTANTS: list[Mutant] = _collect()
