"""Run-wide settings: fast mode, seeds, the data directory and the compute device.

Every notebook reads its defaults from here, so one environment variable switches the whole book
between the quick mode the test-suite uses (``PETS_FAST=1``) and the full mode the book publishes.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

_TRUE = {"1", "true", "yes", "on"}


def _env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in _TRUE


def is_fast() -> bool:
    """True when ``PETS_FAST`` is set to a true value (1/true/yes/on), read at call time.

    >>> import os; os.environ["PETS_FAST"] = "1"; is_fast()
    True
    >>> os.environ["PETS_FAST"] = "0"; is_fast()
    False
    """
    return _env_flag("PETS_FAST")


#: Fast mode as it was when the package was imported (a notebook's parameters cell reads this).
FAST: bool = is_fast()


def seed_everything(seed: int = 0, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and torch; optionally ask torch for deterministic kernels.

    Returns a ``torch.Generator`` seeded with ``seed`` for data loaders and samplers.

    >>> g = seed_everything(3); a = torch.rand(2, generator=g)
    >>> g = seed_everything(3); bool(torch.equal(a, torch.rand(2, generator=g)))
    True
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        if torch.backends.cudnn.is_available():
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def project_root() -> Path:
    """The repository root (the folder that holds ``pets_lite/``)."""
    return Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Where downloads and cached artefacts live when ``PETS_DATA_DIR`` is not set.

    ``PETS_CACHE_DIR`` wins, then ``$XDG_CACHE_HOME/pets_lite``, then ``~/.cache/pets_lite``.
    """
    explicit = os.environ.get("PETS_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "pets_lite"


def data_dir() -> Path:
    """The folder holding the MedMNIST ``.npz`` files.

    ``PETS_DATA_DIR`` wins (tests and CI point it at the shared, verified copies); otherwise
    ``cache_dir() / "medmnist"``, where :func:`pets_lite.data.fetch` downloads to.
    """
    explicit = os.environ.get("PETS_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    return cache_dir() / "medmnist"


def device() -> torch.device:
    """CUDA when available, CPU otherwise; ``PETS_DEVICE`` (e.g. ``cpu``, ``cuda:1``) overrides."""
    override = os.environ.get("PETS_DEVICE")
    if override:
        dev = torch.device(override)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"PETS_DEVICE={override!r} asks for CUDA, but torch sees no CUDA device; "
                "unset PETS_DEVICE or set it to 'cpu'."
            )
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def peak_memory_mib() -> float:
    """Peak resident memory so far (MiB) of this process or its largest finished child (Ray
    workers, CrypTen parties...), whichever is larger. Linux reports ``ru_maxrss`` in KiB."""
    import resource

    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024.0


def progress(iterable=None, **kwargs):
    """A progress bar: a live widget in JupyterLab, one final text line in the executed book.

    ``PETS_PROGRESS=final`` (the notebook runner sets it) keeps the bar off the output while it runs
    and prints its last state once, so the rendered book shows ``100%|####| 20/20 [...]`` instead of
    a hundred carriage-return updates. ``PETS_PROGRESS=off`` silences it.
    """
    mode = os.environ.get("PETS_PROGRESS", "auto")
    if mode == "off":
        kwargs["disable"] = True
    if mode == "final":
        import io

        from tqdm.std import tqdm as text_tqdm

        return _FinalLineBar(text_tqdm(iterable, file=io.StringIO(), ascii=True, **kwargs))
    from tqdm.auto import tqdm as auto_tqdm

    return auto_tqdm(iterable, **kwargs)


class _FinalLineBar:
    """Wraps a tqdm bar that writes to a buffer; prints the bar's final state on close."""

    def __init__(self, bar):
        self._bar = bar
        self._closed = False
        self._enabled = not bar.disable  # tqdm sets .disable when it closes itself

    def __iter__(self):
        try:
            yield from self._bar
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getattr__(self, name):
        return getattr(self._bar, name)

    def close(self):
        if not self._closed:
            self._closed = True
            line = str(self._bar)
            self._bar.close()
            if self._enabled:
                print(line, flush=True)
