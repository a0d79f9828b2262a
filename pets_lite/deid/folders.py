"""Folders: a study tree de-identified into the same tree, folder names that are patient IDs
pseudonymised, per-file failures reported while the rest finishes."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from .actions import Report
from .files import deidentify_file
from .keys import DeidError, as_key, pseudonym


@dataclass
class FolderResult:
    """Per-file outcome of :func:`deidentify_folder`."""

    reports: list[Report] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)   # source path -> error message
    skipped: list[str] = field(default_factory=list)         # not DICOM (README files, ...)
    seconds: float = 0.0


def dicom_files(root: str | os.PathLike) -> Iterator[Path]:
    """Every visible file under ``root``, recursively and sorted (non-DICOM ones are skipped
    later)."""
    for p in sorted(Path(root).rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            yield p


def looks_dicom(path: Path) -> bool:
    """A cheap guess from the name and the first bytes (a preamble, or a dataset's first group);
    reading decides for good."""
    if path.suffix.lower() in (".dcm", ".dicom") or path.name.upper().startswith("DICOMDIR"):
        return True
    with open(path, "rb") as f:
        head = f.read(132)
    if head[128:132] == b"DICM":
        return True
    return path.suffix == "" and len(head) >= 8 and head[0] in (0x02, 0x08) and head[1] == 0x00


def deidentify_folder(src: str | os.PathLike, dst: str | os.PathLike, key: bytes | str,
                      progress: Callable | None = None, write: bool = True,
                      **options) -> FolderResult:
    """De-identify every DICOM file under ``src`` into the same tree under ``dst``.

    Folder names equal to a patient ID become that patient's pseudonym; files that fail are
    reported in ``failures`` (path -> message) and the rest still finish. ``dst`` must not exist.
    With ``write=False`` (a dry run) nothing is written, not even ``dst``.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise DeidError(f"{src}: not a folder; use deidentify_file for a single file")
    if dst.exists():
        raise DeidError(f"{dst}: already exists; refusing to write into it, choose a new folder")
    if dst.resolve().is_relative_to(src.resolve()):
        raise DeidError(f"{dst}: lies inside the input folder {src}; write somewhere else")
    start = time.perf_counter()
    result = FolderResult()
    files = list(dicom_files(src))
    ids = set()
    for p in files:      # first pass: patient IDs, to pseudonymise folder names
        try:
            if looks_dicom(p):
                pid = pydicom.dcmread(p, stop_before_pixels=True,
                                      specific_tags=["PatientID"]).get("PatientID")
                if pid:
                    ids.add(str(pid))
        except Exception:  # noqa: BLE001 - the second pass reports the failure
            pass
    k = as_key(key)
    if write:
        dst.mkdir(parents=True)
    for p in (progress(files, desc="de-identifying") if progress else files):
        if not looks_dicom(p):
            result.skipped.append(str(p))
            continue
        rel = p.relative_to(src)
        out = dst.joinpath(*[pseudonym(part, k) if part in ids else part for part in rel.parts])
        try:
            result.reports.append(deidentify_file(p, out, k, write=write, patient_ids=ids,
                                                  **options))
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the study
            msg = str(exc) if isinstance(exc, DeidError) else f"{p}: {type(exc).__name__}: {exc}"
            result.failures[str(p)] = msg
    result.seconds = time.perf_counter() - start
    return result




def arrange_study(paths: Iterable[str | os.PathLike], dst: str | os.PathLike) -> list[Path]:
    """Copy DICOM files into a tree ``dst/<PatientID>/study-<k>/series-<m>-<Modality>/``, as a
    PACS export arranges them (studies and series numbered per patient in the order met); a file
    that cannot be read goes to ``dst/unsorted/``. Returns the copies; ``dst`` must not exist."""
    dst = Path(dst)
    if dst.exists():
        raise DeidError(f"{dst}: already exists; choose a new folder")
    studies: dict[str, dict[str, int]] = {}
    series: dict[tuple[str, str], dict[str, int]] = {}
    copies = []
    for path in map(Path, paths):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            patient = str(ds.PatientID).strip() or "unknown"
        except Exception:  # noqa: BLE001 - unreadable or no PatientID: not sorted
            target = dst / "unsorted" / path.name
        else:
            study = studies.setdefault(patient, {}).setdefault(
                str(ds.get("StudyInstanceUID", "")), len(studies.get(patient, {})) + 1)
            seq = series.setdefault((patient, str(study)), {})
            number = seq.setdefault(str(ds.get("SeriesInstanceUID", "")), len(seq) + 1)
            target = (dst / patient / f"study-{study}"
                      / f"series-{number}-{ds.get('Modality', 'OT')}" / path.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        copies.append(target)
    return copies
