"""Guards over the notebooks folder: every notebook is executed by a test, none carries outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pets_lite import nbrun

TESTS = Path(__file__).resolve().parent


def untested_notebooks(notebooks: list[Path], test_files: list[Path]) -> list[str]:
    """Names of notebooks that no ``executed("<name>")`` call in ``test_files`` runs."""
    source = "\n".join(p.read_text() for p in test_files)
    called = set(re.findall(r"""executed\(\s*["']([^"']+)["']""", source))
    return [p.stem for p in notebooks if p.stem not in called]


def test_every_notebook_is_executed_by_a_test():
    missing = untested_notebooks(nbrun.notebook_paths(), sorted(TESTS.glob("test_nb_*.py")))
    assert not missing, f"notebooks that no test executes: {missing} (add tests/test_nb_<name>.py)"


def test_guard_catches_a_notebook_without_a_test(tmp_path):
    (tmp_path / "99_new_chapter.ipynb").write_text("{}")
    (tmp_path / "test_nb_x.py").write_text('executed("00_deep_radiomics_baseline")')
    assert untested_notebooks([tmp_path / "99_new_chapter.ipynb"], [tmp_path / "test_nb_x.py"]) \
        == ["99_new_chapter"]


def test_there_are_notebooks():
    assert nbrun.notebook_paths(), "no notebooks found"


def test_notebooks_are_committed_without_outputs():
    dirty = {p.name: nbrun.has_outputs(p) for p in nbrun.notebook_paths()}
    dirty = {k: v for k, v in dirty.items() if v}
    assert not dirty, f"clear outputs before committing (cells with outputs): {dirty}"


def test_output_check_catches_outputs(tmp_path):
    nb = {"cells": [{"cell_type": "code", "source": "1", "metadata": {}, "execution_count": 1,
                     "outputs": [{"output_type": "execute_result", "data": {"text/plain": "1"},
                                  "metadata": {}, "execution_count": 1}]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps(nb))
    assert nbrun.has_outputs(path) == [0]


def test_notebooks_have_the_anatomy():
    """Each chapter has a parameters cell, learning objectives, exercises and a summary."""
    for path in nbrun.notebook_paths():
        nb = json.loads(path.read_text())
        text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
        tags = [t for c in nb["cells"] for t in c.get("metadata", {}).get("tags", [])]
        assert "parameters" in tags, f"{path.name}: no cell tagged 'parameters'"
        for heading in ("Learning objectives", "Where this sits", "Exercises", "Summary"):
            assert heading in text, f"{path.name}: no '{heading}' section"


def test_execute_measures_the_kernels_peak_memory(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import numpy as np\nx = np.ones(40_000_000)  # 305 MiB\n"
                                          "del x"),
                nbformat.v4.new_code_cell("from pets_lite.results import record\nrecord('v', 1)")]
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    done = nbrun.execute(path, tmp_path / "out" / "tiny.ipynb", fast=True, timeout=120)
    peak = done.metadata["pets_lite"]["peak_memory_mib"]
    assert 305 < peak < 4000, peak
    assert len(done.cells) == 2, "the probe cell must not stay in the executed notebook"
    written = nbformat.read(tmp_path / "out" / "tiny.ipynb", as_version=4)
    assert nbrun.glued(written) == {"v": 1, "peak_memory_mib": peak}


def test_notebooks_are_valid_and_every_cell_has_an_id():
    import nbformat

    for path in nbrun.notebook_paths():
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        missing = [i for i, cell in enumerate(nb.cells) if not cell.get("id")]
        assert not missing, f"{path.name}: cells {missing} have no id (nbformat 4.5 requires one)"
