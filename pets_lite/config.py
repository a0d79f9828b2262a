"""Run-wide settings: fast mode, seeds, folders, the compute device, progress bars.

Every notebook reads its defaults from here, so one environment variable switches the whole book
between the quick mode the test-suite uses (``PETS_FAST=1``) and the full mode the book publishes.
This module is the only place that reads an environment variable of the project (see
:data:`ENVIRONMENT`); other modules call the functions below.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
from pathlib import Path

import numpy as np
import torch

_TRUE = {"1", "true", "yes", "on"}

#: Every environment variable the project reads, and what it means (all read in this module).
ENVIRONMENT = {
    "PETS_FAST": "1/true/yes/on: fast mode (small data, few epochs), what the test-suite runs",
    "PETS_DATA_DIR": "folder of the verified MedMNIST .npz files (tests: ../shared/data/medmnist)",
    "PETS_CACHE_DIR": "downloads and the model cache (default $XDG_CACHE_HOME/pets_lite)",
    "PETS_DEVICE": "torch device override, e.g. cpu or cuda:1",
    "PETS_PROGRESS": "auto (live bars), final (one final line: the executed book), off",
    "PETS_EXECUTED_DIR": "where this build's executed notebooks are (set by pets_lite.nbrun)",
    "PETS_CRYPTEN_SHIM": "0 leaves CrypTen unrepaired (the tests show each breakage); default 1",
    "PETS_FL_THREADS": "OpenMP threads of each Flower deployment process (default 1)",
    "PETS_SIZE": "image side for chapters 00, 02 and 03: 28 (default), or MedMNIST+'s 64 or 128",
}


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


def derive_seed(seed: int, *keys: int | str) -> int:
    """A seed for one named stream of a run: ``derive_seed(seed, "hospital", 2, "round", 5)``.

    Built on :class:`numpy.random.SeedSequence` from the run's ``seed``, the number of keys and
    the keys themselves (strings through SHA-256), so distinct ``(seed, *keys)`` give independent
    streams: no formula like ``seed + 1000 * round + k`` that gives run 1 / hospital 0 the stream
    of run 0 / hospital 1000. Returns a non-negative int below 2**63 (torch and NumPy accept it).

    >>> derive_seed(0, "hospital", 1) != derive_seed(1, "hospital", 0)
    True
    >>> derive_seed(3, "x") == derive_seed(3, "x")
    True
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    entropy = [int(seed), len(keys)]
    for key in keys:
        if isinstance(key, str):
            entropy += [1, int.from_bytes(hashlib.sha256(key.encode()).digest()[:16], "big")]
        elif isinstance(key, (int, np.integer)) and not isinstance(key, bool) and key >= 0:
            entropy += [0, int(key)]
        else:
            raise ValueError(f"seed keys must be strings or non-negative ints, got {key!r}")
    words = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return int((int(words[0]) << 32 | int(words[1])) >> 1)


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block with torch's global generator seeded by ``seed``; restore its state after.

    Library code uses this (never :func:`seed_everything`) where a torch call draws from the global
    generator (a model's initial weights), so it does not reset the randomness of the caller.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def environment(values: dict[str, str]):
    """Set environment variables for a block (a notebook kernel inherits them); restore after."""
    unknown = sorted(set(values) - set(ENVIRONMENT) - {"MPLBACKEND"})
    if unknown:
        raise ValueError(f"not a variable of the project: {unknown}; see config.ENVIRONMENT")
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def executed_dir() -> Path | None:
    """Where this build's executed notebooks are (``PETS_EXECUTED_DIR``, set by ``nbrun``)."""
    value = os.environ.get("PETS_EXECUTED_DIR")
    return Path(value) if value else None


def crypten_shim_enabled() -> bool:
    """False only when ``PETS_CRYPTEN_SHIM=0`` (the tests that show each CrypTen breakage)."""
    return _env_flag("PETS_CRYPTEN_SHIM", default=True)


def image_size() -> int:
    """``PETS_SIZE`` as an int (default 28); ``pets_lite.data.check_image_size`` validates it."""
    value = (os.environ.get("PETS_SIZE") or "28").strip()
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"PETS_SIZE must be an image side in pixels (28, 64, 128 or 224), got "
                         f"{value!r}") from None


def fl_threads() -> str:
    """OpenMP threads of each process of a Flower deployment (``PETS_FL_THREADS``, default 1)."""
    return os.environ.get("PETS_FL_THREADS") or "1"


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


def explicit_data_dir() -> Path | None:
    """``PETS_DATA_DIR`` when it is set (tests and CI point it at the shared, verified copies)."""
    explicit = os.environ.get("PETS_DATA_DIR")
    return Path(explicit).expanduser() if explicit else None


def data_dir() -> Path:
    """The folder holding the MedMNIST ``.npz`` files.

    ``PETS_DATA_DIR`` wins; otherwise ``cache_dir() / "medmnist"``, where
    :func:`pets_lite.data.fetch` downloads to.
    """
    return explicit_data_dir() or cache_dir() / "medmnist"


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


def progress_mode() -> str:
    """``PETS_PROGRESS``: ``auto`` (default), ``final`` or ``off``."""
    return os.environ.get("PETS_PROGRESS") or "auto"


def progress(iterable=None, **kwargs):
    """A progress bar: a live widget in JupyterLab, one final text line in the executed book.

    ``PETS_PROGRESS=final`` (the notebook runner sets it) keeps the bar off the output while it runs
    and prints its last state once, so the rendered book shows ``100%|####| 20/20 [...]`` instead of
    a hundred carriage-return updates. ``PETS_PROGRESS=off`` silences it.
    """
    mode = progress_mode()
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
