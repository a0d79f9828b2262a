"""Execute the notebooks and read back what they recorded: one mechanism for tests and the book.

A notebook records results with :func:`pets_lite.results.record` (myst-nb ``glue``); after
:func:`execute` runs it headless, :func:`glued` returns those values as a dict, and the test-suite
asserts on them in ranges.
"""

from __future__ import annotations

import ast
import json
import os
import time
from pathlib import Path

from . import config

GLUE_MIME = "application/papermill.record/text/plain"


def notebooks_dir() -> Path:
    """The repository's ``notebooks/`` folder."""
    return config.project_root() / "notebooks"


def notebook_paths() -> list[Path]:
    """Every chapter notebook, in order (files starting with ``_`` or ``.`` are not chapters)."""
    return sorted(p for p in notebooks_dir().glob("*.ipynb") if not p.name.startswith(("_", ".")))


def has_outputs(path: str | os.PathLike) -> list[int]:
    """Indices of code cells in ``path`` that carry outputs or execution counts."""
    nb = json.loads(Path(path).read_text())
    return [i for i, cell in enumerate(nb["cells"]) if cell["cell_type"] == "code"
            and (cell.get("outputs") or cell.get("execution_count") is not None)]


def execute(path: str | os.PathLike, out_path: str | os.PathLike | None = None, fast: bool = True,
            timeout: int = 900, extra_env: dict[str, str] | None = None):
    """Run a notebook top to bottom in a fresh kernel; write the executed copy to ``out_path``.

    ``fast`` sets ``PETS_FAST`` for the kernel; ``timeout`` bounds every cell (seconds). Returns the
    executed ``NotebookNode`` with ``metadata.pets_lite = {"seconds", "fast", "peak_memory_mib"}``
    added (the kernel's peak memory, read by a probe cell that is run last and not kept). A failing
    cell raises ``nbclient.exceptions.CellExecutionError`` naming the cell and the error.
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    env = {"PETS_FAST": "1" if fast else "0", "PETS_PROGRESS": "final", "MPLBACKEND": "inline",
           **(extra_env or {})}
    if out_path is not None:  # chapter 10 reads what the chapters before it recorded in this build
        env.setdefault("PETS_EXECUTED_DIR", str(Path(out_path).resolve().parent))
    start = time.perf_counter()
    with config.environment(env):
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        nb.cells.append(_probe_cell())  # runs last, read and removed below
        try:
            client.execute()
        finally:
            probe = nb.cells.pop()
        peak = _probe_value(probe)
    nb.metadata["pets_lite"] = {"seconds": round(time.perf_counter() - start, 1), "fast": fast,
                                "peak_memory_mib": peak}
    if out_path is not None:
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_suffix(".tmp")
        nbformat.write(nb, tmp)
        tmp.replace(out_path)
    return nb


#: Run in the kernel after the last cell: the chapter's peak memory (config.peak_memory_mib).
_PEAK_PROBE = "from pets_lite.config import peak_memory_mib as _peak; print(round(_peak(), 1))"


def _probe_cell():
    import nbformat

    return nbformat.v4.new_code_cell(_PEAK_PROBE, metadata={"tags": ["remove-cell"]})


def _probe_value(cell) -> float | None:
    """The probe's printed number, or None (a probe never fails a build; no value is shown)."""
    try:
        return float(cell.outputs[0]["text"].strip())
    except (IndexError, KeyError, ValueError):
        return None


def glued(nb) -> dict:
    """The values a notebook recorded with :func:`pets_lite.results.record`, by name."""
    values = {}
    peak = nb.get("metadata", {}).get("pets_lite", {}).get("peak_memory_mib")
    if peak is not None:  # measured by execute(), not recorded by the notebook
        values["peak_memory_mib"] = peak
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            meta = output.get("metadata", {}).get("scrapbook")
            if meta and GLUE_MIME in output.get("data", {}):
                values[meta["name"]] = ast.literal_eval(output["data"][GLUE_MIME])
    return values
