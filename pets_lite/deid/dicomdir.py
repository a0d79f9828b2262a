"""DICOMDIR: de-identify the directory records as their patients' data, keep the offsets valid."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from .actions import Report, deidentify
from .keys import keyed_uid, pseudonym
from .profile import element_values
from .syntax import encoded

#: The Media Storage Directory Storage SOP class: a file with it is a DICOMDIR.
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: Byte offsets inside a record, and at the top level, that point at other records.
OFFSET_KEYWORDS = ("OffsetOfTheNextDirectoryRecord", "OffsetOfReferencedLowerLevelDirectoryEntity")
ROOT_KEYWORDS = ("OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity",
                 "OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity")


def record_patients(ds: Dataset) -> list[str]:
    """For each directory record, the PatientID of the PATIENT record above it ('' if none)."""
    recs = list(ds.get("DirectoryRecordSequence", []))
    by_off = {getattr(r, "seq_item_tell", None): i for i, r in enumerate(recs)}
    owner = [""] * len(recs)

    def chain(off, pid, depth=0):
        seen = set()
        while off and off in by_off and off not in seen and depth < 10:
            seen.add(off)
            i = by_off[off]
            r = recs[i]
            here = str(r.get("PatientID", "")) if r.get("DirectoryRecordType") == "PATIENT" else pid
            owner[i] = here
            chain(r.get("OffsetOfReferencedLowerLevelDirectoryEntity", 0), here, depth + 1)
            off = r.get("OffsetOfTheNextDirectoryRecord", 0)

    chain(ds.get(ROOT_KEYWORDS[0], 0), "")
    current = ""
    for i, r in enumerate(recs):  # records the offsets did not reach: fall back to file order
        if r.get("DirectoryRecordType") == "PATIENT":
            current = str(r.get("PatientID", ""))
        if not owner[i]:
            owner[i] = current
    return owner


def deidentify_dicomdir(ds: Dataset, key: bytes | str, source: str = "<DICOMDIR>",
                        patient_ids: Iterable[str] = (), **options) -> tuple[Dataset, Report]:
    """De-identify a DICOMDIR: each record as its patient's data, then recompute the byte
    offsets."""
    options = {**options, "burned_in": "skip"}
    recs = list(ds.get("DirectoryRecordSequence", []))
    index = {getattr(r, "seq_item_tell", None): i for i, r in enumerate(recs)}
    owners = record_patients(ds)
    ids = known_patient_ids(recs) | set(patient_ids)
    top = Dataset()
    top.file_meta = ds.file_meta
    top.preamble = ds.preamble
    for elem in ds:
        if elem.keyword != "DirectoryRecordSequence":
            top.add(elem)
    out, report = deidentify(top, key, source=source, **options)
    new_recs = Sequence()
    total = Counter(report.actions)
    for r, pid in zip(recs, owners):
        nr, rep = deidentify(r, key, source=source, patient=pid, **options)
        for kw in ("PatientIdentityRemoved", "DeidentificationMethod",
                   "DeidentificationMethodCodeSequence",
                   "LongitudinalTemporalInformationModified"):
            if kw in nr and kw not in r:
                del nr[kw]
        if r.get("DirectoryRecordType") == "PATIENT" and "PatientID" in r:
            nr.PatientID = pseudonym(str(r.PatientID), key)
        if "ReferencedFileID" in nr:
            nr.ReferencedFileID = [pseudonym(p, key) if p in ids else p
                                   for p in element_values(r["ReferencedFileID"])]
        total.update(rep.actions)
        report.phi_values_changed += rep.phi_values_changed
        new_recs.append(nr)
    out.DirectoryRecordSequence = new_recs
    out.file_meta.MediaStorageSOPInstanceUID = keyed_uid(
        ds.file_meta.MediaStorageSOPInstanceUID, key)
    # offsets: translate to record indices, write once, read the new item positions, write them in
    for r, nr in zip(recs, new_recs):
        for kw in OFFSET_KEYWORDS:
            if kw in r:
                nr[kw].value = index.get(r[kw].value, -1)
    for kw in ROOT_KEYWORDS:
        if kw in ds:
            out[kw].value = index.get(ds[kw].value, -1)
    idx_fields = [(nr, kw) for nr in new_recs for kw in OFFSET_KEYWORDS if kw in nr] + \
                 [(out, kw) for kw in ROOT_KEYWORDS if kw in out]
    wanted = {(id(o), kw): o[kw].value for o, kw in idx_fields}
    for o, kw in idx_fields:
        o[kw].value = 0
    back = pydicom.dcmread(io.BytesIO(encoded(out)))
    positions = [r.seq_item_tell for r in back.get("DirectoryRecordSequence", [])]
    for o, kw in idx_fields:
        i = wanted[(id(o), kw)]
        o[kw].value = positions[i] if 0 <= i < len(positions) else 0
    report.actions = dict(total)
    return out, report


def known_patient_ids(recs) -> set[str]:
    """The PatientIDs of the PATIENT records."""
    return {str(r.PatientID) for r in recs
            if r.get("DirectoryRecordType") == "PATIENT" and "PatientID" in r}


