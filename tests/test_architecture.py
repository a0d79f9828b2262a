"""The import rules of docs/architecture.md, checked on the code as it is."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pets_lite"

LOWER = {"config", "net", "netns", "relay", "pki", "metrics", "recipes", "results", "catalog",
         "data", "models", "train"}
PET = {"deid", "dp", "clipping", "fl", "he", "smpc", "crypten_compat", "split", "tee"}
MEASUREMENT = {"attacks", "audit", "inversion", "leakcheck"}
TOP = {"pipeline", "viz", "nbrun"}
LAYER = {**{m: 0 for m in LOWER}, **{m: 1 for m in PET}, **{m: 2 for m in MEASUREMENT},
         **{m: 3 for m in TOP}}
#: PET modules that compose another PET module (rule 2), and the ones they compose.
COMPOSES = {"dp": {"clipping"}, "smpc": {"crypten_compat"}}


def top_module(path: Path) -> str:
    """``pets_lite/fl/server.py`` -> ``fl``; ``pets_lite/dp.py`` -> ``dp``."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported_modules(path: Path) -> set[str]:
    """The pets_lite modules (top level) that ``path`` imports, relative or absolute."""
    tree = ast.parse(path.read_text())
    own = top_module(path)
    depth = len(path.relative_to(PACKAGE).parts) - 1  # 0: pets_lite/x.py, 1: pets_lite/fl/x.py
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative
                if node.level == depth + 1:  # from the package root: `from . import data`
                    names = ([node.module.split(".")[0]] if node.module
                             else [a.name for a in node.names])
                elif node.level <= depth:  # inside a subpackage: its own modules
                    names = [own]
                else:
                    names = []
                found.update(names)
            elif node.module and node.module.startswith("pets_lite"):
                parts = node.module.split(".")
                found.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "pets_lite" and len(parts) > 1:
                    found.add(parts[1])
    found.discard(own)
    return {m for m in found if m in LAYER}


def library_files() -> list[Path]:
    """Every library file, except the Flower App folder's thin entry points."""
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if "app" not in p.relative_to(PACKAGE).parts[1:-1])


def test_every_module_has_a_layer():
    missing = sorted({top_module(p) for p in library_files()} - set(LAYER) - {"__init__"})
    assert not missing, f"give these modules a layer (here and in docs/architecture.md): {missing}"


def test_no_module_imports_a_layer_above_it_or_borrows_from_a_pet_module():
    problems = []
    for path in library_files():
        own = top_module(path)
        if own == "__init__":
            continue
        for dep in imported_modules(path):
            if LAYER[dep] > LAYER[own]:
                problems.append(f"{path.relative_to(ROOT)} ({own}) imports {dep} (a layer above)")
            elif LAYER[own] == LAYER[dep] == 1 and dep not in COMPOSES.get(own, set()):
                problems.append(f"{path.relative_to(ROOT)} imports the PET module {dep}: move the "
                                "helper it needs to the lower layer, or declare the composition")
    assert not problems, "\n".join(problems)


def private_uses(source: str, modules: set[str]) -> list[str]:
    """``from x import _name`` and ``mod._name`` for a pets_lite module ``mod`` in ``source``."""
    out = []
    tree = ast.parse(source)
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith(
                "pets_lite")):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    out.append(f"from {node.module or '.'} import {a.name}")
                elif a.name in modules:
                    aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("pets_lite."):
                    aliases[a.asname or a.name.split(".")[-1]] = a.name.split(".")[1]
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            out.append(f"{node.value.id}.{node.attr}")
    return out


def test_no_module_uses_a_private_name_of_another():
    modules = set(LAYER)
    problems = []
    for path in library_files():
        for use in private_uses(path.read_text(), modules):
            problems.append(f"{path.relative_to(ROOT)}: {use}")
    assert not problems, "\n".join(problems)


def notebook_source(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    return "\n".join(re.sub(r"^[!%].*$", "", c, flags=re.M) for c in code)


def test_notebooks_import_no_private_name():
    problems = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for use in private_uses(notebook_source(path), set(LAYER)):
            problems.append(f"{path.name}: {use}")
    assert not problems, "\n".join(problems)


def test_the_private_name_check_can_fail():
    assert private_uses("from pets_lite import deid\ndeid._frames(1)", {"deid"}) == ["deid._frames"]
    assert private_uses("from .fl import _ray_start_failed", set()) == [
        "from fl import _ray_start_failed"]
    assert private_uses("from pets_lite import deid\ndeid.frames(1)", {"deid"}) == []


def test_library_modules_stay_small():
    """No library module over about 500 lines (split it along its concerns)."""
    big = {str(p.relative_to(ROOT)): n for p in library_files()
           if (n := len(p.read_text().splitlines())) > 520}
    assert not big, f"modules over 520 lines: {big}"
