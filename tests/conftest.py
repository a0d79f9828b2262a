"""Shared test set-up: fast mode, the shared data folder, a private cache, the notebook runner."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data" / "medmnist"
_SESSION_CACHE = tempfile.mkdtemp(prefix="pets-test-cache-")


def pytest_configure(config):
    # Tests never download: they read the official files from the shared folder when it is there.
    if not os.environ.get("PETS_DATA_DIR") and SHARED_DATA.is_dir():
        os.environ["PETS_DATA_DIR"] = str(SHARED_DATA)
    os.environ["PETS_FAST"] = "1"
    # A fresh model cache per test session: notebooks share models within a run, never across runs.
    os.environ["PETS_CACHE_DIR"] = _SESSION_CACHE
    os.environ.setdefault("PETS_PROGRESS", "final")


def pytest_unconfigure(config):
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def executed_dir(tmp_path_factory) -> Path:
    """Where the test-suite writes executed notebooks (the book test builds from them)."""
    return tmp_path_factory.mktemp("executed")


_RUNS: dict[str, tuple] = {}


@pytest.fixture(scope="session")
def executed(executed_dir):
    """``executed(name, timeout=...)``: run notebook ``name`` once per session in fast mode and
    return what it recorded (``pets_lite.results.record``) as a dict. Later calls reuse the run."""
    from pets_lite import nbrun

    def run(name: str, timeout: int = 600) -> dict:
        if name not in _RUNS:
            path = nbrun.notebooks_dir() / f"{name}.ipynb"
            assert path.exists(), f"no notebook {path}"
            nb = nbrun.execute(path, executed_dir / path.name, fast=True, timeout=timeout)
            _RUNS[name] = (nb, nbrun.glued(nb))
        return _RUNS[name][1]

    return run


@pytest.fixture
def data_available() -> bool:
    """Skip a test that needs the MedMNIST files when they are nowhere on disk (a user's machine
    before `make book`); CI always has them through the shared folder."""
    from pets_lite import data

    if not any(p.exists() for p in data.candidates("pneumoniamnist")):
        if os.environ.get("CI"):
            pytest.fail("CI must find the MedMNIST files: set PETS_DATA_DIR")
        pytest.skip("MedMNIST files not on disk: run `python data_scripts/fetch_data.py` first")
    return True


#: Test files that execute notebooks or build the book: marked ``notebook`` (``-m "not notebook"``
#: runs the unit tests alone).
_NOTEBOOK_FILES = ("test_nb_", "test_book.py", "test_browser.py")


def pytest_collection_modifyitems(config, items):
    """Mark the notebook tests; run the book and browser tests last (by then the notebook tests
    have executed every notebook, each under its own timeout)."""
    for item in items:
        if item.path.name.startswith(_NOTEBOOK_FILES):
            item.add_marker(pytest.mark.notebook)
    items.sort(key=lambda item: item.path.name in ("test_book.py", "test_browser.py"))


def load_builder():
    """book/build.py as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("book_build", ROOT / "book" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def built_book(executed, executed_dir, tmp_path_factory):
    """Build the book once per session from every notebook the suite executed; return its folder."""
    from pets_lite import data, nbrun

    if not any(p.exists() for p in data.candidates("pneumoniamnist")):
        pytest.skip("MedMNIST files not on disk: run `python data_scripts/fetch_data.py` first")
    stems = [p.stem for p in nbrun.notebook_paths()]
    for stem in stems:
        executed(stem)
    builder = load_builder()
    work = builder.stage(tmp_path_factory.mktemp("book") / "book",
                         sorted(executed_dir.glob("*.ipynb")))
    log = builder.build_html(work, strict=True, capture=True)
    return {"work": work, "html": work / "_build" / "html", "log": log, "stems": stems}





# ---------------------------------------------------------------------------------------------
# Shared toy data (no test module imports another)
# ---------------------------------------------------------------------------------------------

#: Where the brighter patch of the positive class sits, per kind of toy X-ray.
_TOY_REGIONS = {"centre": (slice(10, 18), slice(10, 18)), "square": (slice(8, 20), slice(8, 20)),
                "top": (slice(0, 14), slice(None)), "left": (slice(None), slice(0, 14))}


def make_toy_xrays(n: int = 96, seed: int = 0, kind: str = "centre", contrast: float = 0.5,
                   balanced: bool = False):
    """Separable toy 'X-rays' (N, 1, 28, 28) in [0, 1]: noise in [0, 0.5), class 1 brighter by
    ``contrast`` in the region of ``kind``; ``balanced`` alternates the labels 0, 1, 0, 1..."""
    import torch
    from torch.utils.data import TensorDataset

    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2 if balanced else torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.5
    rows, cols = _TOY_REGIONS[kind]
    x[:, :, rows, cols] += y.view(-1, 1, 1, 1).float() * contrast
    return TensorDataset(x.clamp(0, 1), y)


@pytest.fixture
def toy_xrays():
    """The toy X-ray factory: ``toy_xrays(n, seed, kind=..., contrast=..., balanced=...)``."""
    return make_toy_xrays


@pytest.fixture
def book_builder():
    """book/build.py as a module (it is a script, not part of the package)."""
    return load_builder()
