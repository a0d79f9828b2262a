"""Apply a profile to a dataset: the walk over every element (nested sequences, file meta,
private tags), the action on each value, the de-identification stamp, and :func:`deidentify`.
"""

from __future__ import annotations

import copy
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from .keys import as_key, date_offset, keyed_uid, mac, pseudonym, shift_date
from .pixels import Box, find_burned_in_text, find_overlay_text, mask_boxes
from .profile import (
    ALLOWLIST_FALLBACK,
    FREE_TEXT_VRS,
    METHOD_CODES,
    TEXT_VRS,
    VR_FALLBACK,
    action_for,
    build_profile,
    element_values,
    is_standard_uid,
)
from .syntax import re_encode, syntax_name, to_little_endian, transfer_syntax

#: Dummy values (action D) by value representation.
DUMMY = {"DA": "19000101", "TM": "000000.00", "DT": "19000101000000", "PN": "ANONYMOUS",
         "AS": "000Y", "IS": "0", "DS": "0", "US": 0, "SS": 0, "UL": 0, "SL": 0, "FL": 0.0,
         "FD": 0.0}
#: Value representations whose removed values are scrubbed from cleaned text.
CLEANED_VRS = FREE_TEXT_VRS | {"PN", "AE"}
#: Binary value representations (a zero-length or dummy value is b"").
BINARY_VRS = frozenset({"OB", "OW", "UN", "OF", "OD", "OL", "OV"})
#: Numeric value representations stored as binary numbers (a zero-length value is None).
NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD"})


@dataclass
class Context:
    """What one de-identification run needs: key, options, and what it has changed so far."""

    key: bytes
    profile: dict[str, str]
    fallback: dict[str, str] = field(default_factory=lambda: dict(VR_FALLBACK))
    shift_dates: bool = False
    keep_private: frozenset = frozenset()   # {(private creator, element low byte)}
    days: int = 0
    replacements: dict[str, str] = field(default_factory=dict)   # identifying text -> substitute
    counts: Counter = field(default_factory=Counter)
    changed_values: set = field(default_factory=set)


def clean_text(text: str, ctx: Context) -> str:
    """``text`` with every identifying string of this dataset replaced (the C action)."""
    for old in sorted(ctx.replacements, key=len, reverse=True):
        if old and old in text:
            text = text.replace(old, ctx.replacements[old])
    return text


def dummy_value(elem: DataElement, ctx: Context):
    """The D action's value: shifted dates (modified-dates option), keyed UIDs, a dummy."""
    if elem.VR in ("DA", "DT") and ctx.shift_dates:
        return shift_values(elem, ctx)
    if elem.VR == "UI":
        return uid_values(elem, ctx)
    if elem.VR in DUMMY:
        return DUMMY[elem.VR]
    if elem.VR in BINARY_VRS:
        return b""
    return "ANONYMIZED"


def uid_values(elem: DataElement, ctx: Context):
    """The U action's value: each non-standard UID replaced by its keyed UID."""
    new = [keyed_uid(v, ctx.key) if v and not is_standard_uid(v) else v
           for v in element_values(elem)]
    return new[0] if len(new) == 1 else new


def shift_values(elem: DataElement, ctx: Context):
    """Every date of ``elem`` moved by the patient's offset ('' when one is unparseable)."""
    new = [shift_date(v, ctx.days) for v in element_values(elem)]
    if any(v is None for v in new):
        return ""
    return new[0] if len(new) == 1 else new


def private_creator(ds: Dataset, tag) -> str | None:
    """The private creator string that reserves the block of the private ``tag``."""
    creator_tag = pydicom.tag.Tag(tag.group, tag.element >> 8)
    return str(ds[creator_tag].value) if creator_tag in ds else None


def keeps_private(ds: Dataset, elem: DataElement, ctx: Context) -> bool:
    """True for a private element the run was asked to keep (by creator and element)."""
    if not ctx.keep_private:
        return False
    if elem.tag.is_private_creator:
        return any(c == str(elem.value) for c, _ in ctx.keep_private)
    return (private_creator(ds, elem.tag), elem.tag.element & 0xFF) in ctx.keep_private


def apply_profile(ds: Dataset, ctx: Context) -> None:
    """Apply the profile to every element of ``ds`` and, recursively, of its sequences."""
    for elem in list(ds):
        tag = elem.tag
        if tag.is_private and keeps_private(ds, elem, ctx):
            ctx.counts["K(private)"] += 1
            continue
        code = action_for(elem, ctx.profile, ctx.fallback)
        if (elem.VR in ("DA", "DT") and ctx.shift_dates and code in ("D", "Z")
                and element_values(elem)):
            code = "D"      # modified-dates option: shift instead of blanking
        ctx.counts[code] += 1
        before = [str(v) for v in element_values(elem)] if elem.VR != "SQ" else []
        if code == "X":
            del ds[tag]
        elif code == "Z":
            elem.value = (Sequence() if elem.VR == "SQ" else b"" if elem.VR in BINARY_VRS
                          else None if elem.VR in NUMBER_VRS else "")
        elif elem.VR == "SQ":       # K, D, U, C on a sequence: keep it, process its items
            for item in elem.value:
                apply_profile(item, ctx)
            continue
        elif code == "D":
            elem.value = dummy_value(elem, ctx)
        elif code == "U":
            elem.value = uid_values(elem, ctx)
        elif code == "C" or (code == "K" and elem.VR in FREE_TEXT_VRS and not tag.is_private
                             and elem.keyword not in ctx.profile):
            # K on free text: scrub this dataset's own identifiers out of it (beyond Annex E:
            # an RT structure set label is often the study ID)
            if elem.VR in TEXT_VRS:
                new = [clean_text(str(v), ctx) for v in element_values(elem)]
                elem.value = new[0] if len(new) == 1 else new
        after = [str(x) for x in element_values(ds[tag])] if tag in ds else []
        ctx.changed_values.update(v for v in before if v.strip() and v not in after)


def patient_key(ds: Dataset) -> str:
    """The identity a dataset's pseudonym and date offset derive from."""
    return str(ds.get("PatientID", "") or ds.get("PatientName", "") or "")


def replacements(ds: Dataset, key: bytes, profile: dict[str, str] | None = None
                 ) -> dict[str, str]:
    """Identifying strings of ``ds`` and what the clean action (C) puts in their place.

    IDs become keyed tokens (the patient ID its pseudonym), name components vanish; with a
    ``profile``, so does any value of at least four characters that the profile removes or
    replaces in a named attribute (an institution, a station, a protocol name), unless the same
    text stands in plain in an attribute the table does not name (``TOSHIBA`` as a manufacturer),
    and each date of the dataset, written as ``YYYYMMDD``, ``YYYY-MM-DD``, ``DD/MM/YYYY`` or
    ``DD.MM.YYYY``, becomes ``[date]``."""
    out = {}
    for kw in ("PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID"):
        for v in element_values(ds[kw]) if kw in ds else []:
            if len(str(v).strip()) >= 3:
                out.setdefault(str(v).strip(), pseudonym(str(v), key) if kw == "PatientID" else
                               "ID" + mac(key, kw, str(v).strip()).hex()[:8].upper())
    plain, removed = set(), []
    for elem in ds.iterall():           # one walk: names, dates, removed and plain text
        vr = elem.VR
        if vr == "SQ":
            continue
        values = element_values(elem)
        if vr == "PN":
            for v in values:
                for part in re.split(r"[\^=]", str(v)):
                    if len(part.strip()) >= 3:
                        out[part.strip()] = ""
        if profile is None or elem.tag.is_private:
            continue
        kw = elem.keyword
        if vr in ("DA", "DT"):
            for v in values:
                d = str(v).strip()[:8]
                if len(d) == 8 and d.isdigit():
                    for form in (d, f"{d[:4]}-{d[4:6]}-{d[6:]}", f"{d[6:]}/{d[4:6]}/{d[:4]}",
                                 f"{d[6:]}.{d[4:6]}.{d[:4]}"):
                        out.setdefault(form, "[date]")
        elif kw and kw not in profile and vr in TEXT_VRS:
            plain.update(str(v).strip() for v in values)
        elif vr in CLEANED_VRS and profile.get(kw) in ("X", "Z", "D"):
            removed.extend(str(v).strip() for v in values)
    for text in removed:
        if len(text) >= 4 and text not in plain:
            out.setdefault(text, "")
    return out


def stamp(ds: Dataset, options: list[str], masked: bool) -> None:
    """Record what was done: PatientIdentityRemoved, the method and its codes (CID 7050)."""
    ds.PatientIdentityRemoved = "YES"
    names = ["basic"] + options + (["clean_pixels"] if masked else [])
    ds.DeidentificationMethod = ("DICOM PS3.15 E.1-1 Basic Profile via pets_lite.deid"
                                 + "".join(f"; {METHOD_CODES[n][1]}" if n in METHOD_CODES
                                           else f"; {n}" for n in names[1:]))[:64]
    seq = Sequence()
    for n in (n for n in names if n in METHOD_CODES):     # no DCM code for an allow-list
        item = Dataset()
        item.CodeValue, item.CodeMeaning = METHOD_CODES[n]
        item.CodingSchemeDesignator = "DCM"
        seq.append(item)
    ds.DeidentificationMethodCodeSequence = seq
    if "shift_dates" in options:
        ds.LongitudinalTemporalInformationModified = "MODIFIED"


@dataclass
class Report:
    """What :func:`deidentify` did to one dataset."""

    source: str
    output: str | None = None
    pseudonym: str = ""
    date_offset_days: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    phi_values_changed: int = 0
    boxes: list[Box] = field(default_factory=list)
    overlay_boxes: list[Box] = field(default_factory=list)
    seconds: float = 0.0
    #: Whether the pixels were decoded and searched for burned-in text.
    pixels_checked: bool = False
    #: The transfer syntax of the output, and why it differs from the input's (empty if not).
    transfer_syntax: str = ""
    syntax_note: str = ""


def deidentify(ds: Dataset, key: bytes | str, *, shift_dates: bool = False,
               retain_patient_characteristics: bool = False, retain_device_identity: bool = False,
               retain_institution_identity: bool = False, clean_descriptors: bool = False,
               keep_private: Iterable[tuple[str, int]] = (),
               burned_in: str = "mask", overrides: dict[str, str] | None = None,
               profile_name: str = "basic", copy_input: bool = True,
               source: str = "<dataset>", patient: str | None = None,
               **detector) -> tuple[Dataset, Report]:
    """A de-identified copy of ``ds`` and its :class:`Report`; ``ds`` is not changed (but see
    ``copy_input``).

    ``burned_in``: ``"mask"`` (detect and mask text in the pixels; undecodable pixels raise),
    ``"detect"`` (report only), or ``"skip"``. ``overrides`` maps keywords to action codes (for
    experiments, e.g. ``{"InstitutionName": "K"}``). ``profile_name``: ``"basic"`` (the table,
    unnamed attributes kept) or ``"allowlist"`` (unnamed free text, times and AE titles removed
    unless named safe). ``patient`` fixes the identity used for the
    pseudonym and date offset (DICOMDIR records use it). ``copy_input=False`` lets it change
    ``ds`` itself instead of a deep copy (for a dataset read for this alone: it saves the copy).
    """
    if burned_in not in ("mask", "detect", "skip"):
        raise ValueError(f"burned_in must be 'mask', 'detect' or 'skip', got {burned_in!r}")
    start = time.perf_counter()
    key = as_key(key)
    out = copy.deepcopy(ds) if copy_input else ds
    profile = build_profile(retain_patient_characteristics, retain_device_identity,
                            clean_descriptors, overrides, retain_institution_identity,
                            profile_name)
    pkey = patient_key(ds) if patient is None else patient
    ctx = Context(key=key, profile=profile, shift_dates=shift_dates,
                  fallback=ALLOWLIST_FALLBACK if profile_name == "allowlist" else VR_FALLBACK,
                  keep_private=frozenset((str(c), int(e)) for c, e in keep_private),
                  days=date_offset(pkey, key) if shift_dates else 0,
                  replacements=replacements(ds, key, profile))
    report = Report(source=source, pseudonym=pseudonym(pkey, key) if pkey else "",
                    date_offset_days=ctx.days)
    boxes: list[Box] = []
    if burned_in != "skip" and "PixelData" in ds:
        boxes = find_burned_in_text(ds, source, **detector)
        report.pixels_checked = True
    report.overlay_boxes = find_overlay_text(ds, **detector) if burned_in != "skip" else []
    was = transfer_syntax(ds)
    if to_little_endian(out):
        report.syntax_note = (f"big-endian input written as {syntax_name(transfer_syntax(out))} "
                              "(Explicit VR Big Endian is retired; binary values byte-swapped)")
    apply_profile(out, ctx)
    if getattr(out, "file_meta", None) is not None:
        apply_profile(out.file_meta, ctx)
        if "SOPInstanceUID" in out:
            out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
        # the software writing the new file is pydicom, not the originating system
        out.file_meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
        out.file_meta.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]
    # pseudonyms instead of the zero-length PatientID / PatientName of the profile
    if pkey and profile.get("PatientID") in ("Z", "D") and "PatientID" in ds:
        out.PatientID = report.pseudonym
    if pkey and profile.get("PatientName") in ("Z", "D") and "PatientName" in ds:
        out.PatientName = f"PSEUDONYM^{report.pseudonym}"
    masked = False
    if boxes and burned_in == "mask":
        mask_boxes(out, boxes, source)
        masked = True
        report.syntax_note = "; ".join(n for n in (report.syntax_note,
                                                   re_encode(out, was)) if n)
    options = [n for n, on in (("shift_dates", shift_dates),
                               ("retain_patient_characteristics", retain_patient_characteristics),
                               ("retain_device_identity", retain_device_identity),
                               ("retain_institution_identity", retain_institution_identity),
                               ("clean_descriptors", clean_descriptors),
                               ("keep_private", bool(ctx.keep_private)),
                               ("allow-list", profile_name == "allowlist")) if on]
    stamp(out, options, masked)
    report.transfer_syntax = syntax_name(transfer_syntax(out))
    report.boxes = boxes
    report.actions = dict(ctx.counts)
    report.phi_values_changed = len(ctx.changed_values)
    report.seconds = time.perf_counter() - start
    return out, report


