"""Guards over the mutation harness: every chapter has a mutant, every mutant names real tests."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

from pets_lite import nbrun

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def registry():
    """tests/mutants/registry.py, loaded by path (test modules import no other test module)."""
    if "mutant_registry" not in sys.modules:
        path = TESTS / "mutants" / "registry.py"
        spec = importlib.util.spec_from_file_location("mutant_registry", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["mutant_registry"] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    return sys.modules["mutant_registry"]


def chapters_without_mutants(chapters: list[str], mutants) -> list[str]:
    covered = {m.chapter for m in mutants}
    return [c for c in chapters if c not in covered]




def test_every_chapter_has_a_mutant():
    chapters = [p.stem[:2] for p in nbrun.notebook_paths()]
    missing = chapters_without_mutants(chapters, registry().MUTANTS)
    assert not missing, (f"chapters with no mutant in tests/mutants/registry.py: {missing}; "
                         "every protection needs a sabotage its tests catch")


def test_the_chapter_guard_can_fail():
    reg = registry()
    one = reg.Mutant("x", "00", "data.py", "a", "b", ("tests/test_data.py::t",), "why")
    assert chapters_without_mutants(["00", "99"], [one]) == ["99"]


def test_every_mutant_names_tests_that_exist_and_a_real_file():
    reg = registry()
    problems = []
    for m in reg.MUTANTS:
        if not (ROOT / "pets_lite" / m.file).exists():
            problems.append(f"{m.name}: no file pets_lite/{m.file}")
        if not m.tests:
            problems.append(f"{m.name}: names no test")
        for node in m.tests:
            path, _, name = node.partition("::")
            test_file = ROOT / path
            func = re.sub(r"\[.*\]$", "", name.split("::")[-1])
            if not test_file.exists() or (func and f"def {func}(" not in test_file.read_text()):
                problems.append(f"{m.name}: no test {node}")
    assert not problems, "\n".join(problems)
    assert len({m.name for m in reg.MUTANTS}) == len(reg.MUTANTS), "mutant names must be unique"
