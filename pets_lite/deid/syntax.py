"""Transfer syntaxes: what is written, and why.

Decoding is pydicom's, through the pinned pylibjpeg plug-ins (libjpeg: JPEG baseline, extended,
lossless and JPEG-LS; openjpeg: JPEG 2000; rle: RLE Lossless); deflated files pydicom inflates
itself. Two cases change the transfer syntax of the output, and the report says so:

* masked pixels of a compressed file are re-encoded as RLE Lossless: lossless, so the decoded
  pixels outside the boxes stay exactly what the viewer showed before (a lossy re-encoding would
  degrade a lossy original a second time), and supported by every DICOM viewer;
* a big-endian file (Explicit VR Big Endian, retired since 2004) is written as Explicit VR Little
  Endian with consistent file meta: pydicom writes the new encoding but leaves the byte order of
  binary values (OW, OF, OD, OL, OV) to the caller, so :func:`to_little_endian` swaps them, the
  pixel data by its Bits Allocated (OW words hold two 8-bit samples; OB pixel data, and any
  compressed pixel data, is a byte stream, the same in either encoding).
"""

from __future__ import annotations

import io
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, RLELossless

#: The syntax masked pixels of a compressed file are re-encoded with.
RE_ENCODE = RLELossless
#: Binary value representations and the size of one value (their byte order must be swapped).
SWAPPED = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def transfer_syntax(ds: Dataset) -> UID | None:
    """The transfer syntax of ``ds`` (None when it came without one)."""
    meta = getattr(ds, "file_meta", None)
    return None if meta is None else meta.get("TransferSyntaxUID")


def syntax_name(uid: UID | str | None) -> str:
    """A transfer syntax's name, as the standard gives it."""
    return getattr(uid, "name", str(uid)) if uid else "(none)"


def _swapped(value: bytes, width: int) -> bytes:
    if width == 1 or len(value) % width:
        return value
    return np.frombuffer(value, dtype=f">u{width}").astype(f"<u{width}").tobytes()


def _swap(ds: Dataset) -> None:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _swap(item)
        elif int(elem.tag) == 0x7FE00010 and isinstance(elem.value, (bytes, bytearray)):
            # OB is a byte stream; OW holds words, 8-bit samples too (two to a word)
            bits = int(ds.get("BitsAllocated", 8))
            width = 1 if elem.VR == "OB" else max(2, bits // 8)
            elem.value = _swapped(elem.value, width)
        elif elem.VR in SWAPPED and isinstance(elem.value, (bytes, bytearray)):
            elem.value = _swapped(elem.value, SWAPPED[elem.VR])


def to_little_endian(ds: Dataset) -> bool:
    """Convert a big-endian dataset in place to Explicit VR Little Endian; True if it was one."""
    ts = transfer_syntax(ds)
    if ts is None or ts.is_little_endian:
        return False
    _swap(ds)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return True


def re_encode(ds: Dataset, was: UID | None) -> str:
    """After masking: re-encode a formerly compressed dataset losslessly; the note for the report
    (empty when nothing changed)."""
    if was is None or not was.is_compressed:
        return ""
    try:
        ds.compress(RE_ENCODE, generate_instance_uid=False)
    except Exception as exc:  # noqa: BLE001 - the encoder refuses some layouts
        return (f"masked pixels written uncompressed ({syntax_name(ExplicitVRLittleEndian)}): "
                f"{syntax_name(RE_ENCODE)} refused them ({str(exc)[:80]}); input was "
                f"{syntax_name(was)}")
    lossy = " (lossy: re-encoding it lossily would degrade it a second time)" if getattr(
        was, "is_lossy", False) else ""
    return (f"masked pixels re-encoded as {syntax_name(RE_ENCODE)}, lossless; input was "
            f"{syntax_name(was)}{lossy}")


def write_dataset(ds: Dataset, fp: str | BinaryIO) -> None:
    """Write ``ds`` as a DICOM file in the encoding its file meta names (after
    :func:`to_little_endian`, that may differ from how it was read)."""
    ts = transfer_syntax(ds)
    pydicom.dcmwrite(fp, ds, implicit_vr=ts.is_implicit_VR, little_endian=ts.is_little_endian,
                     enforce_file_format=True)


def encoded(ds: Dataset) -> bytes:
    """``ds`` as the bytes :func:`write_dataset` writes."""
    buf = io.BytesIO()
    write_dataset(ds, buf)
    return buf.getvalue()
