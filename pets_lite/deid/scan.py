"""The de-identifier's own check: which identifying values a dataset holds, and did any survive?

This scanner knows what the de-identifier knows (its keyword lists, its profile); it answers
"did the de-identifier do what it meant to do". Whether what it meant to do is enough is the
question of the independent checker, :mod:`pets_lite.leakcheck`, which shares nothing with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from .profile import TEXT_VRS, action_for, build_profile, element_values, is_standard_uid

#: Keywords whose values identify a person, a place or a device (beyond every PN, DA, DT, UI).
IDENTIFYING_KEYWORDS = frozenset({
    "PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID", "IssuerOfPatientID",
    "AdmissionID", "PatientAddress", "InstitutionName", "InstitutionAddress",
    "InstitutionalDepartmentName", "StationName", "DeviceSerialNumber", "DetectorID", "GantryID",
    "PlateID", "CassetteID", "PatientTelephoneNumbers", "MedicalRecordLocator",
    "RequestedProcedureID", "PerformedProcedureStepID",
    "FillerOrderNumberImagingServiceRequest", "PlacerOrderNumberImagingServiceRequest",
    "PerformedStationAETitle", "ScheduledStationAETitle", "SourceApplicationEntityTitle",
    "ReferringPhysicianAddress", "PersonAddress", "ReferringPhysicianTelephoneNumbers",
})


def walk(ds: Dataset, meta: bool = True) -> Iterator[DataElement]:
    """Every element of ``ds``: file meta first, then the dataset, sequence items included."""
    if meta and getattr(ds, "file_meta", None) is not None:
        yield from ds.file_meta
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from walk(item, meta=False)


def identifying_values(ds: Dataset, min_length: int = 4) -> dict[str, str]:
    """Every identifying value in ``ds`` (value -> keyword): names, IDs, dates, places, devices,
    UIDs.

    Looks everywhere: file meta, nested sequences, private tags (any text value of a private
    element counts). Values shorter than ``min_length`` and standard UIDs are left out.
    """
    found: dict[str, str] = {}
    shared = retained_public_values(ds)
    for elem in walk(ds):
        kw = elem.keyword or str(elem.tag)
        if elem.VR == "SQ":
            continue
        take = (elem.VR in ("PN", "DA", "DT") or kw in IDENTIFYING_KEYWORDS or elem.tag.is_private
                or (elem.VR == "UI" and kw not in ("TransferSyntaxUID", "ImplementationClassUID")))
        if not take or (elem.tag.is_private and elem.VR not in TEXT_VRS):
            continue
        for v in element_values(elem):
            text = str(v).strip()
            if elem.tag.is_private and not (re.search(r"[A-Za-z]", text)
                                            or re.fullmatch(r"\d{6,}", text)):
                continue     # private measurements ("5.000000") identify no one
            if elem.tag.is_private and any(text in kept for kept in shared):
                continue     # the same text stands in a public attribute the profile keeps
            if elem.VR == "UI" and is_standard_uid(text):
                continue
            if elem.VR == "DT":
                text = text[:8]
            if len(text) >= min_length and not re.fullmatch(r"[0\W_]*", text):
                found[text] = kw
            if elem.VR == "PN":
                for part in re.split(r"[\^=]", str(v)):
                    if len(part.strip()) >= min_length:
                        found.setdefault(part.strip(), kw)
    return found


BULK_KEYWORDS = {"PixelData", "FloatPixelData", "DoubleFloatPixelData", "WaveformData",
                 "EncapsulatedDocument", "OverlayData", "SpectroscopyData", "CurveData"}


def searchable_text(ds: Dataset) -> str:
    """All values of ``ds`` as one string (file meta, sequences and private tags included;
    bulk pixel and waveform data left out, other binary values decoded as Latin-1)."""
    parts = []
    for elem in walk(ds):
        if (elem.VR == "SQ" or elem.keyword in BULK_KEYWORDS
                or (elem.tag.group & 0xFF00) in (0x6000, 0x5000) and elem.tag.element == 0x3000):
            continue
        v = elem.value
        if isinstance(v, bytes):
            parts.append(v.decode("latin-1"))
        else:
            parts.extend(str(x) for x in element_values(elem))
    return "\x00".join(parts)


#: Public attributes the Basic Profile keeps that name a product, not a person or a place.
NON_IDENTIFYING_KEPT = frozenset({"Manufacturer", "ManufacturerModelName", "BodyPartExamined",
                                  "SoftwareVersions", "Modality", "ImageType"})


def retained_public_values(ds: Dataset) -> set[str]:
    """Text of the public attributes the Basic Profile keeps and that identify no one."""
    profile = build_profile()
    return {str(v).strip() for e in walk(ds) if e.keyword and not e.tag.is_private
            and e.VR in TEXT_VRS and e.VR not in ("PN", "DA", "DT", "UI")
            and e.keyword not in IDENTIFYING_KEYWORDS and action_for(e, profile) == "K"
            for v in element_values(e) if str(v).strip()}


def leaked_values(original: Dataset, deidentified: Dataset, min_length: int = 4) -> dict[str, str]:
    """Identifying values of ``original`` that still appear anywhere in ``deidentified``.

    A value is not counted when it is exactly the text of a kept product attribute of the
    original (MR_small's institution is 'TOSHIBA', which is also its Manufacturer)."""
    text = searchable_text(deidentified)
    tokens = set(re.split(r"[\x00\\]", text))
    found = identifying_values(original, min_length)
    products = {str(v).strip() for e in walk(original) if e.keyword in NON_IDENTIFYING_KEPT
                for v in element_values(e)}
    return {v: kw for v, kw in found.items() if not any(v in p for p in products)
            and (v in tokens if is_uid_like(v) else v in text)}


def is_uid_like(value: str) -> bool:
    """True for a value shaped like a UID. UIDs are compared as whole values: a root such as
    1.2.826 is a prefix of many unrelated UIDs."""
    return bool(re.fullmatch(r"\d+(\.\d+){2,}", value))
