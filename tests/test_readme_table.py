"""book/readme_table.py writes the README's notebook table from what a build recorded."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import nbformat
import pytest

from pets_lite import nbrun
from pets_lite.results import BookRow

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def script():
    spec = importlib.util.spec_from_file_location("readme_table", ROOT / "book" / "readme_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def executed(folder: Path, stem: str, values: dict, seconds: float, fast: bool = False) -> None:
    """An executed notebook as nbrun.execute writes it, with ``values`` glued."""
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("record(...)")
    cell.outputs = [nbformat.v4.new_output(
        "display_data", data={nbrun.GLUE_MIME: repr(v)},
        metadata={"scrapbook": {"name": k, "mime_prefix": ""}}) for k, v in values.items()]
    nb.cells = [cell]
    nb.metadata["pets_lite"] = {"seconds": seconds, "fast": fast, "peak_memory_mib": 812.0}
    nbformat.write(nb, folder / f"{stem}.ipynb")


def test_the_table_comes_from_the_build(script, tmp_path):
    own = dict(family="none", stage="all stages", trusted="the trainer")
    executed(tmp_path, "00_base", {"book_rows": [BookRow(
        "baseline", technique="baseline", epsilon=math.inf, test_auc=0.9512, seconds=48.0,
        per="training run", **own).to_record()]}, 90.0)
    executed(tmp_path, "07_attacks", {"book_rows": [BookRow(
        "baseline", membership_tpr=0.00125).to_record()]}, 600.0)
    text = script.table(tmp_path)
    assert "| 00 | [`00_base`](notebooks/00_base.ipynb) | none (the reference point) |" in text
    assert "| full | 1.5 | 812 | baseline: test AUC 0.951, ε = ∞, LiRA TPR@0.1% 0.12 %, " \
           "48 s/training run |" in text
    assert "| 07 |" in text and "| 10.0 |" in text  # 07 owns no row: its cell stays empty
    readme = "intro\n<!-- notebook-table:start -->\nold\n<!-- notebook-table:end -->\nrest\n"
    new = script.rewrite(readme, text)
    assert "old" not in new and new.startswith("intro\n") and new.endswith("rest\n")
    with pytest.raises(SystemExit, match="markers"):
        script.rewrite("no markers", text)


def test_the_readme_carries_the_markers():
    text = (ROOT / "README.md").read_text()
    assert "<!-- notebook-table:start -->" in text and "<!-- notebook-table:end -->" in text
