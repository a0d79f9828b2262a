"""MedMNIST data: checksum-verified resolution of the official files, loading, subsets, and the
one partitioner over hospitals.

The official files and their MD5 sums are in :mod:`pets_lite.catalog` (its names, ``info``,
``REGISTRY``, ``FlagInfo``, ``register``, are importable from here too). Resolution order for a
flag's file at an image size (``<flag>.npz`` at 28 px, ``<flag>_<size>.npz`` for MedMNIST+):

1. ``$PETS_DATA_DIR/<file>`` when ``PETS_DATA_DIR`` is set (tests and CI point it at the shared,
   verified copies);
2. the user cache, ``pets_lite.config.cache_dir() / "medmnist"``;
3. a download from the official Zenodo record into the user cache, with a progress bar.

Whatever the source, the file's MD5 must equal the official one before a single array is read; a
file that fails is refused, never used, and a download that fails leaves nothing behind (it is
written to a temporary name and renamed only after it verifies).

We do not use the ``medmnist`` package: it requires torchvision, which cannot be imported beside the
CPU build of torch this project pins.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from . import config
from .catalog import (  # noqa: F401
    IMAGE_SIZES,
    REGISTRY,
    ZENODO_RECORD,
    DataError,
    FlagInfo,
    check_image_size,
    info,
    register,
)

SPLITS = ("train", "val", "test")
NPZ_KEYS = tuple(f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels"))

#: Sizes of the seeded, stratified subsets used in fast mode (``None`` keeps the whole split).
FAST_SIZES: dict[str, int | None] = {"train": 1200, "val": 300, "test": None}


class ChecksumError(DataError):
    """A file's MD5 differs from the official one: it is refused."""


class DataUnavailableError(DataError, FileNotFoundError):
    """The file is not on disk and could not be downloaded."""


class DataFormatError(DataError):
    """The file verifies but does not hold what a MedMNIST archive must hold."""


def md5sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The hex MD5 digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


_VERIFIED: dict[tuple[str, int, int], str] = {}


def verify(path: str | os.PathLike, flag: str, image_size: int = 28) -> Path:
    """Check ``path`` against the official MD5 of ``flag`` at ``image_size``;
    :class:`ChecksumError` if it differs."""
    path = Path(path)
    meta = info(flag)
    expected = meta.md5_for(image_size)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    actual = _VERIFIED.get(key) or md5sum(path)
    if actual != expected:
        name = meta.filename_for(image_size)
        raise ChecksumError(
            f"{path} is not the official {name}: MD5 {actual}, expected {expected}. "
            f"The file is refused and was not read. Delete it and fetch it again "
            f"(python data_scripts/fetch_data.py {flag}"
            f"{'' if image_size == 28 else f' --size {image_size}'}), or download "
            f"{meta.url_for(image_size)} by hand."
        )
    _VERIFIED[key] = actual
    return path


def candidates(flag: str, image_size: int = 28) -> list[Path]:
    """The places :func:`resolve` looks for ``flag``'s file at ``image_size``, in order."""
    name = info(flag).filename_for(image_size)
    places = []
    explicit = config.explicit_data_dir()
    if explicit is not None:
        places.append(explicit / name)
    places.append(config.cache_dir() / "medmnist" / name)
    return places


def fetch(flag: str, dest_dir: str | os.PathLike | None = None, url: str | None = None,
          progress: bool = True, timeout: float = 60.0, image_size: int = 28) -> Path:
    """Download ``flag`` at ``image_size`` to ``dest_dir`` (default: the user cache), verify its
    MD5, move it in place.

    Nothing half-written is left: the bytes go to a temporary file in ``dest_dir`` that is removed
    on any failure, and only a file whose MD5 verifies is renamed to its official name
    (``<flag>.npz``, ``<flag>_<size>.npz``). An existing verified file is kept and returned
    without downloading.
    """
    meta = info(flag)
    expected = meta.md5_for(image_size)
    filename = meta.filename_for(image_size)
    dest_dir = Path(dest_dir) if dest_dir is not None else config.cache_dir() / "medmnist"
    target = dest_dir / filename
    if target.exists():
        return verify(target, flag, image_size)
    url = url or meta.url_for(image_size)
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{flag}.", suffix=".part", dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (known URL)
            except (urllib.error.URLError, OSError) as exc:
                raise DataUnavailableError(
                    f"{filename} is not on disk and could not be downloaded from {url} "
                    f"({exc}). "
                    f"Download it on a machine with network access and put it at {target}, "
                    f"or set PETS_DATA_DIR to a folder that holds it."
                ) from exc
            with response:
                total = int(response.headers.get("Content-Length") or 0) or None
                from tqdm.auto import tqdm

                with tqdm(total=total, unit="B", unit_scale=True, desc=filename,
                          disable=not progress) as bar:
                    for block in iter(lambda: response.read(1 << 16), b""):
                        out.write(block)
                        bar.update(len(block))
        actual = md5sum(tmp)
        if actual != expected:
            raise ChecksumError(
                f"the download of {filename} from {url} has MD5 {actual}, expected {expected}; "
                "it was discarded. Try again; if it persists, the source has changed."
            )
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def resolve(flag: str, download: bool = True, image_size: int = 28) -> Path:
    """The verified local path of ``flag``'s archive at ``image_size``, downloading it if no copy
    is on disk."""
    meta = info(flag)
    meta.md5_for(image_size)  # an unknown size fails here, before any look-up
    for path in candidates(flag, image_size):
        if path.exists():
            return verify(path, flag, image_size)
    if not download:
        where = " or ".join(str(p) for p in candidates(flag, image_size))
        size_arg = "" if image_size == 28 else f" --size {image_size}"
        raise DataUnavailableError(
            f"{meta.filename_for(image_size)} not found at {where}. Fetch it with "
            f"`python data_scripts/fetch_data.py {flag}{size_arg}` (needs network), or download "
            f"{meta.url_for(image_size)} and put it in one of those places."
        )
    return fetch(flag, image_size=image_size)


def load_arrays(flag: str, split: str, image_size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Raw ``(images uint8, labels)`` of one split, from the verified archive at ``image_size``."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
    path = resolve(flag, image_size=image_size)
    with np.load(path) as archive:
        missing = [k for k in (f"{split}_images", f"{split}_labels") if k not in archive.files]
        if missing:
            raise DataFormatError(
                f"{path} lacks {missing}; a MedMNIST archive holds {list(NPZ_KEYS)}. "
                f"It has {archive.files}."
            )
        images, labels = archive[f"{split}_images"], archive[f"{split}_labels"]
    if images.ndim < 3 or images.shape[1:3] != (image_size, image_size):
        raise DataFormatError(f"{path} holds images of shape {images.shape[1:]}, not "
                              f"{image_size} x {image_size}")
    return images, labels


def stratified_subset(labels: np.ndarray | torch.Tensor, size: int, seed: int = 0) -> np.ndarray:
    """Indices of a seeded subset of ``size`` that keeps each class's share (at least one each).

    >>> y = np.array([0] * 90 + [1] * 10)
    >>> idx = stratified_subset(y, 20, seed=0); len(idx), int((y[idx] == 1).sum())
    (20, 2)
    """
    labels = np.asarray(labels).reshape(len(labels), -1)[:, 0]
    n = len(labels)
    if size <= 0:
        raise ValueError(f"subset size must be positive, got {size}")
    if size >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.maximum(1, np.floor(counts / n * size).astype(int))
    while quota.sum() < size:  # hand out what flooring left, largest remainder first
        remainder = counts / n * size - quota
        quota[int(np.argmax(remainder))] += 1
    while quota.sum() > size:
        quota[int(np.argmax(quota))] -= 1
    chosen = [rng.choice(np.flatnonzero(labels == c), q, replace=False)
              for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))


def to_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N,H,W) or (N,H,W,C) to float32 (N,C,H,W) in [0, 1]; labels to int64 (N,)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    elif x.ndim == 4:
        x = x.permute(0, 3, 1, 2).contiguous()
    else:
        raise DataFormatError(f"expected images of shape (N,H,W) or (N,H,W,C), got "
                              f"{tuple(x.shape)}")
    y = torch.from_numpy(np.asarray(labels)).long()
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    return x, y


def load(flag: str, split: str, fast: bool | None = None, size: int | None = None,
         seed: int = 0, image_size: int = 28) -> TensorDataset:
    """A split as a ``TensorDataset`` of float32 images in [0,1] (N, C, S, S), S = ``image_size``
    (28, or a MedMNIST+ size: 64, 128, 224), and int64 labels.

    In fast mode (``fast`` or, when ``None``, ``PETS_FAST``) the split is cut to a seeded,
    stratified subset of ``FAST_SIZES[split]``; ``size`` asks for a subset of that size in any mode.
    """
    images, labels = load_arrays(flag, split, image_size)
    fast = config.is_fast() if fast is None else fast
    if size is None and fast:
        size = FAST_SIZES.get(split)
    if size is not None:
        index = stratified_subset(labels, size, seed=seed)
        images, labels = images[index], labels[index]
    return TensorDataset(*to_tensors(images, labels))


def load_splits(flag: str, fast: bool | None = None, seed: int = 0,
                image_size: int = 28) -> dict[str, TensorDataset]:
    """``{"train", "val", "test"}`` datasets of ``flag`` (see :func:`load`)."""
    return {split: load(flag, split, fast=fast, seed=seed, image_size=image_size)
            for split in SPLITS}


def class_counts(dataset: TensorDataset) -> dict[int, int]:
    """Label histogram of a dataset built by :func:`load`."""
    values, counts = torch.unique(dataset.tensors[1], return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


# ------------------------------------------------------------------------------------------------
# Hospital partitions (chapter 03): split one data set over N simulated hospitals.
#
# A partition is a matrix of proportions P (hospitals x classes): hospital k receives the share
# P[k, c] of class c. IID gives every hospital 1/N of every class; label skew draws each class's
# column from Dirichlet(alpha) (small alpha: each class concentrates in few hospitals); quantity
# skew draws one vector of hospital sizes from Dirichlet(alpha) and keeps every hospital's label
# mix. The same P applied to the validation split gives each hospital a local validation set with
# its own label mix, as a real hospital would have.
# ------------------------------------------------------------------------------------------------

#: The partition schemes :func:`hospital_proportions` knows.
PARTITION_SCHEMES = ("iid", "dirichlet", "quantity")


class PartitionError(DataError, ValueError):
    """Partition parameters that cannot be met (alpha <= 0, more hospitals than samples...)."""


def _labels_1d(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise PartitionError(
            f"labels must be a 1-D array of integer class ids, got dtype {labels.dtype} and shape "
            f"{labels.shape}; pass dataset.tensors[1] of a dataset built by pets_lite.data.load"
        )
    return labels


def _check_partition_args(n: int, n_hospitals, scheme: str, alpha, min_size) -> None:
    if scheme not in PARTITION_SCHEMES:
        raise PartitionError(f"unknown partition scheme {scheme!r}; choose one of "
                             f"{PARTITION_SCHEMES}")
    if isinstance(n_hospitals, bool) or not isinstance(n_hospitals, (int, np.integer)) \
            or n_hospitals < 1:
        raise PartitionError(f"n_hospitals must be a positive int, got {n_hospitals!r}")
    if n_hospitals > n:
        raise PartitionError(
            f"cannot split {n} samples over {n_hospitals} hospitals: every hospital needs at least "
            f"one sample; use at most {n} hospitals or a larger data set"
        )
    bad_alpha = (not isinstance(alpha, (int, float, np.floating)) or isinstance(alpha, bool)
                 or not np.isfinite(alpha) or alpha <= 0)
    if scheme != "iid" and bad_alpha:
        raise PartitionError(
            f"alpha must be a finite number > 0 for the {scheme!r} scheme, got {alpha!r}; small "
            "values (0.1) give strong skew, large values (100) approach IID"
        )
    if not isinstance(min_size, (int, np.integer)) or min_size < 1:
        raise PartitionError(f"min_size must be a positive int, got {min_size!r}")
    if min_size * n_hospitals > n:
        raise PartitionError(
            f"min_size={min_size} samples for each of {n_hospitals} hospitals needs "
            f"{min_size * n_hospitals} samples, but there are only {n}; lower min_size or "
            "n_hospitals"
        )


def proportion_counts(labels, proportions: np.ndarray) -> np.ndarray:
    """Samples per (hospital, class) that ``proportions`` (hospitals x classes) gives ``labels``.

    >>> proportion_counts(np.array([0, 0, 0, 0, 1, 1]), np.array([[.5, 1.], [.5, 0.]])).tolist()
    [[2, 2], [2, 0]]
    """
    labels = _labels_1d(labels)
    proportions = np.asarray(proportions, dtype=float)
    counts = np.bincount(labels, minlength=proportions.shape[1])
    if len(counts) > proportions.shape[1]:
        raise PartitionError(
            f"labels hold {len(counts)} classes but the proportions matrix has "
            f"{proportions.shape[1]} columns"
        )
    bounds = np.rint(np.cumsum(proportions, axis=0) * counts[None, :]).astype(int)
    bounds[-1] = counts  # the last hospital takes what rounding left
    return np.diff(np.vstack([np.zeros_like(counts), bounds]), axis=0)


def hospital_proportions(labels, n_hospitals: int = 3, scheme: str = "iid", alpha: float = 0.5,
                         seed: int = 0, min_size: int = 10, max_draws: int = 1000) -> np.ndarray:
    """A seeded (hospitals x classes) matrix: the share of each class that each hospital holds.

    Dirichlet draws are repeated (seeded) until every hospital holds at least ``min_size`` of
    ``labels``; a clear error if ``max_draws`` draws never manage it.

    >>> y = np.array([0] * 60 + [1] * 40)
    >>> hospital_proportions(y, 2, "iid").tolist()
    [[0.5, 0.5], [0.5, 0.5]]
    >>> p = hospital_proportions(y, 4, "dirichlet", alpha=0.3, seed=1)
    >>> p.shape, bool(np.allclose(p.sum(0), 1))
    ((4, 2), True)
    """
    labels = _labels_1d(labels)
    _check_partition_args(len(labels), n_hospitals, scheme, alpha, min_size)
    n_classes = int(labels.max()) + 1 if len(labels) else 0
    if scheme == "iid":
        return np.full((n_hospitals, n_classes), 1.0 / n_hospitals)
    rng = np.random.default_rng(seed)
    for _ in range(max_draws):
        if scheme == "dirichlet":
            p = rng.dirichlet(np.full(n_hospitals, float(alpha)), size=n_classes).T
        else:  # quantity skew: one size vector, the same label mix everywhere
            p = np.repeat(rng.dirichlet(np.full(n_hospitals, float(alpha)))[:, None], n_classes, 1)
        if proportion_counts(labels, p).sum(1).min() >= min_size:
            return p
    raise PartitionError(
        f"{max_draws} seeded draws of the {scheme!r} scheme with alpha={alpha} never gave each of "
        f"{n_hospitals} hospitals {min_size} samples (of {len(labels)}); raise alpha, or lower "
        "n_hospitals or min_size"
    )


def split_by_proportions(labels, proportions: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """Sorted index arrays, one per hospital, that give each hospital its share of each class."""
    labels = _labels_1d(labels)
    counts = proportion_counts(labels, proportions)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(counts))]
    for c in range(counts.shape[1]):
        members = rng.permutation(np.flatnonzero(labels == c))
        for k, chunk in enumerate(np.split(members, np.cumsum(counts[:, c])[:-1])):
            parts[k].append(chunk)
    return [np.sort(np.concatenate(p)).astype(int) for p in parts]


def hospital_partitions(labels, n_hospitals: int = 3, scheme: str = "iid", alpha: float = 0.5,
                        seed: int = 0, min_size: int = 10) -> list[np.ndarray]:
    """Disjoint, seeded index arrays that split ``labels`` over ``n_hospitals`` (they cover all).

    >>> y = np.array([0] * 60 + [1] * 40)
    >>> [len(p) for p in hospital_partitions(y, 4, "iid")]
    [25, 25, 25, 25]
    """
    p = hospital_proportions(labels, n_hospitals, scheme, alpha, seed, min_size)
    return split_by_proportions(labels, p, seed=seed)


def partition_splits(splits: dict[str, TensorDataset], n_hospitals: int = 3, scheme: str = "iid",
                     alpha: float = 0.5, seed: int = 0, min_size: int = 10,
                     keys: tuple[str, ...] = ("train", "val")) -> list[dict[str, TensorDataset]]:
    """Each hospital's ``{"train", "val"}`` datasets: proportions drawn on train, applied to val.

    The test split is not partitioned: it stays the common yardstick every model is scored on.
    """
    missing = [k for k in keys if k not in splits]
    if missing:
        raise PartitionError(f"splits lacks {missing}; pass the dict of pets_lite.data.load_splits")
    p = hospital_proportions(splits[keys[0]].tensors[1].numpy(), n_hospitals, scheme, alpha, seed,
                             min_size)
    out: list[dict[str, TensorDataset]] = [{} for _ in range(n_hospitals)]
    for i, key in enumerate(keys):
        x, y = splits[key].tensors
        for k, index in enumerate(split_by_proportions(y.numpy(), p, seed=seed + i)):
            index = torch.from_numpy(index)
            out[k][key] = TensorDataset(x[index], y[index])
    return out


def partition_summary(parts: list[dict[str, TensorDataset]] | list[TensorDataset],
                      label_names: dict[int, str] | None = None, split: str = "train"):
    """A pandas table, one row per hospital: samples per class, total, and share of the data."""
    import pandas as pd

    datasets = [part[split] if isinstance(part, dict) else part for part in parts]
    all_counts = [class_counts(ds) for ds in datasets]
    names = label_names or {c: str(c) for c in sorted({c for cc in all_counts for c in cc})}
    rows = []
    for k, (ds, counts) in enumerate(zip(datasets, all_counts)):
        row = {"hospital": f"H{k + 1}"}
        for c, name in names.items():
            row[name] = counts.get(c, 0)
        row["total"] = len(ds)
        rows.append(row)
    table = pd.DataFrame(rows).set_index("hospital")
    table["share of data"] = table["total"] / max(int(table["total"].sum()), 1)
    return table
