"""Reading and writing single files: clear errors for what cannot be read, no half-written output,
never an overwrite."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian

from .actions import Report, deidentify
from .dicomdir import DICOMDIR_SOP_CLASS, deidentify_dicomdir
from .keys import DeidError
from .syntax import write_dataset


def read_dicom(path: str | os.PathLike, stop_before_pixels: bool = False) -> Dataset:
    """Read a DICOM file or raise :class:`DeidError` naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise DeidError(f"{path}: no such file")
    try:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
        except InvalidDicomError as exc:
            # A dataset written without preamble and file meta is still DICOM; anything else is not.
            ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
            if not any(k in ds for k in ("SOPClassUID", "PatientID", "Modality",
                                         "StudyInstanceUID")):
                raise DeidError(f"{path}: not a DICOM file ({exc}); check the path") from exc
            complete_meta(ds)
    except DeidError:
        raise
    except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DeidError(f"{path}: unreadable DICOM (truncated or corrupt: {type(exc).__name__}: "
                        f"{str(exc)[:120]}); re-export it from the source system") from exc
    if getattr(ds, "file_meta", None) is not None and "TransferSyntaxUID" not in ds.file_meta:
        complete_meta(ds)
    if len(ds) == 0:
        raise DeidError(f"{path}: parsed as DICOM but holds no data elements; not a DICOM dataset")
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    deflated = ts is not None and getattr(ts, "is_deflated", False)
    if not stop_before_pixels and not deflated and ends_early(ds, path.stat().st_size):
        raise DeidError(f"{path}: truncated (the last data element runs past the end of the file); "
                        "re-export it from the source system")
    if "PixelData" in ds:
        expected = expected_pixel_bytes(ds)
        got = len(ds.PixelData) if ds["PixelData"].value is not None else 0
        ts = ds.file_meta.get("TransferSyntaxUID") if getattr(ds, "file_meta", None) else None
        if expected and (ts is None or not ts.is_compressed) and got < expected:
            raise DeidError(f"{path}: truncated pixel data ({got} of {expected} bytes); "
                            "re-export the file, a partial image cannot be checked or released")
    return ds


def ends_early(ds: Dataset, size: int) -> bool:
    """True when the file stops inside the last top-level element (pydicom reads such files
    silently)."""
    tags = list(ds.keys())
    if not tags:
        return False
    raw = ds.get_item(tags[-1])
    tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
    if tell is None or length is None or length == 0xFFFFFFFF:
        return False
    end = tell + length
    return end > size or 0 < size - end < 8


def complete_meta(ds: Dataset) -> None:
    """Fill the file meta a preamble-less dataset lacks from how it was actually encoded."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = (pydicom.uid.ImplicitVRLittleEndian if implicit else
                                  ExplicitVRLittleEndian if little else
                                  pydicom.uid.ExplicitVRBigEndian)


def expected_pixel_bytes(ds: Dataset) -> int:
    try:
        samples = int(ds.get("SamplesPerPixel", 1))
        if str(ds.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
            samples = 2          # chroma subsampled horizontally: 2 bytes per pixel pair member
        return (int(ds.Rows) * int(ds.Columns) * samples
                * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.BitsAllocated) // 8)
    except (AttributeError, TypeError, ValueError):
        return 0


def write_new(ds: Dataset, out: Path) -> None:
    """Write ``ds`` to ``out`` through a temporary file; never replaces an existing file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".deid-", dir=out.parent)
    os.close(fd)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        for m, kw in (("MediaStorageSOPClassUID", "SOPClassUID"),
                      ("MediaStorageSOPInstanceUID", "SOPInstanceUID")):
            if not meta.get(m) and ds.get(kw):
                meta[m] = DataElement(pydicom.datadict.tag_for_keyword(m), "UI", ds[kw].value)
    full = meta is not None and all(meta.get(m) for m in (
        "TransferSyntaxUID", "MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID"))
    try:
        if full:
            write_dataset(ds, tmp)
        else:            # a dataset that came without file meta is written back the same way
            ds.save_as(tmp, implicit_vr=ds.original_encoding[0],
                       little_endian=ds.original_encoding[1])
        os.link(tmp, out)           # fails if ``out`` appeared meanwhile: no overwrite, ever
    except FileExistsError as exc:
        raise DeidError(f"{out}: already exists; refusing to overwrite, choose a new output "
                        "path") from exc
    finally:
        os.unlink(tmp)


def deidentify_file(src: str | os.PathLike, dst: str | os.PathLike, key: bytes | str,
                    write: bool = True, **options) -> Report:
    """De-identify the DICOM file ``src`` into the new file ``dst`` (never overwritten, never
    ``src``). With ``write=False`` (a dry run) everything is done but the writing."""
    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise DeidError(f"{dst}: already exists; refusing to overwrite, choose a new output path")
    if dst.resolve() == src.resolve():
        raise DeidError(f"{src}: output path equals input path; the input is never modified")
    ds = read_dicom(src)
    meta = getattr(ds, "file_meta", None) or Dataset()
    patient_ids = options.pop("patient_ids", ())
    if str(meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_SOP_CLASS:
        out, report = deidentify_dicomdir(ds, key, source=str(src), patient_ids=patient_ids,
                                          **options)
    else:
        out, report = deidentify(ds, key, source=str(src), copy_input=False, **options)
    if write:
        write_new(out, dst)
        report.output = str(dst)
    return report


