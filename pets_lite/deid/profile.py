"""The confidentiality profile as data, and the action it gives one element.

The Basic Application Level Confidentiality Profile of DICOM PS3.15 Annex E is a table: for each
attribute, an action code (``D`` dummy, ``Z`` zero length, ``X`` remove, ``K`` keep, ``C`` clean,
``U`` replace UID). :data:`BASIC_PROFILE` holds that table as data; the compound codes the standard
allows (``X/Z``, ``Z/D``, ``X/Z/D``, ``X/D``, ``X/Z/U*``) are resolved by :data:`COMPOUND`; options
are override tables (:data:`OPTIONS`). :func:`build_profile` resolves it all into one
keyword -> action table and :func:`action_for` gives the action of one element. The table
itself (617 attributes of the 2025 edition) is in :mod:`pets_lite.deid.table`.
"""

from __future__ import annotations

import functools

import pydicom
from pydicom.dataelem import DataElement
from pydicom.uid import UID_dictionary

from .table import (
    BASIC_PROFILE,
    CLEAN_DESCRIPTORS,
    RETAIN_DEVICE_IDENTITY,
    RETAIN_INSTITUTION_IDENTITY,
    RETAIN_PATIENT_CHARACTERISTICS,
)

#: Action codes of PS3.15 Annex E.
ACTIONS = {"D": "replace with a dummy value", "Z": "replace with a zero-length value",
           "X": "remove", "K": "keep", "C": "clean (scrub identifying text)",
           "U": "replace UID with a consistent keyed one"}

#: How the standard's compound codes resolve when the IOD's attribute type is not looked up:
#: the most protective choice that keeps a type 2 attribute present.
COMPOUND = {"Z/D": "D", "X/D": "D", "X/Z": "Z", "X/Z/D": "Z", "X/Z/U*": "U", "U*": "U"}

#: Repeating groups of Table E.1-1: (group mask, group value, element or None for all) -> action.
#: Curve data (50xx,xxxx) and overlay data and comments (60xx,3000), (60xx,4000) are removed.
REPEATING_GROUPS: dict[tuple[int, int, int | None], str] = {
    (0xFF00, 0x5000, None): "X", (0xFF00, 0x6000, 0x3000): "X", (0xFF00, 0x6000, 0x4000): "X",
}

#: Where this module goes beyond the printed table, each with its reason (still data, not ifs).
PROJECT_ADDITIONS: dict[str, tuple[str, str]] = {
    "SourceApplicationEntityTitle": ("X", "file meta: the sending station's AE title names the "
                                          "device"),
    "RetrieveAETitle": ("X", "names the archive node"),
    "StationAETitle": ("X", "names the acquiring station"),
    "ModifyingDeviceManufacturer": ("X", "names who modified the data; not in the 2025 table"),
    "ContextGroupExtensionCreatorUID": ("U", "a UID of the organisation that extended a context "
                                             "group; not in the 2025 table"),
    "CreatorVersionUID": ("U", "a UID of the creating software's version; not in the 2025 "
                               "table"),
    "ReferencedFileID": ("C", "DICOMDIR paths often use the patient ID as a folder name"),
    "ContentSequence": ("X", "the table's D asks for dummy content; without the Clean Structured "
                             "Content option a report's text is removed, not kept"),
    "PatientIdentityRemoved": ("K", "set by this module"),
    "DeidentificationMethod": ("K", "set by this module"),
    "DeidentificationMethodCodeSequence": ("K", "set by this module"),
}

#: Catch-all by value representation for attributes the table does not name (our strengthening:
#: Annex E is a list of known attributes; these keep unknown ones from leaking).
VR_FALLBACK: dict[str, str] = {"UI": "U", "PN": "Z", "DA": "Z", "DT": "Z"}

#: The allow-list profile (the practice of curated archives such as TCIA): an attribute the table
#: does not name and whose value representation can carry text that identifies (free text, times,
#: AE titles) is removed unless it is named here as safe. Numbers and code strings pass as in the
#: Basic Profile; what the table names is treated as the table says.
ALLOWLIST_FALLBACK: dict[str, str] = {**VR_FALLBACK, **{vr: "X" for vr in (
    "LO", "SH", "LT", "ST", "UT", "UC", "UR", "TM", "AE")}}
#: What the allow-list profile keeps by name: coded concepts, the product, the acquisition
#: technique, the display, waveform channels. Nothing here names a person, a place or a device.
SAFE_ATTRIBUTES = frozenset({
    "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning",
    "CodingSchemeName",
    "CodingSchemeResponsibleOrganization", "LongCodeValue", "URNCodeValue", "MappingResourceName",
    "ImplementationClassUID", "ImplementationVersionName", "Manufacturer",
    "ManufacturerModelName", "SoftwareVersions", "SequenceName", "FilterType",
    "ConvolutionKernel", "ReceiveCoilName", "TransmitCoilName", "PlateType",
    "AcquisitionDeviceProcessingCode", "TransducerData", "ProcessingFunction",
    "PositionReferenceIndicator", "RescaleType", "WindowCenterWidthExplanation",
    "LUTExplanation", "MultiplexGroupLabel", "ChannelLabel", "DimensionDescriptionLabel",
    "SegmentAlgorithmName",
})
#: The profiles :func:`build_profile` and the command line know.
PROFILES = ("basic", "allowlist")

#: Options of Annex E this module implements: name -> {keyword: action} overrides (the option
#: columns of Table E.1-1).
OPTIONS: dict[str, dict[str, str]] = {
    "retain_patient_characteristics": RETAIN_PATIENT_CHARACTERISTICS,
    "retain_device_identity": RETAIN_DEVICE_IDENTITY,
    "retain_institution_identity": RETAIN_INSTITUTION_IDENTITY,
    "clean_descriptors": CLEAN_DESCRIPTORS,
}

#: DICOM codes (scheme DCM, CID 7050) recorded in DeidentificationMethodCodeSequence.
METHOD_CODES = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "clean_pixels": ("113101", "Clean Pixel Data Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "shift_dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "retain_institution_identity": ("113112", "Retain Institution Identity Option"),
    "keep_private": ("113111", "Retain Safe Private Option"),
}

#: Value representations of free text (kept text of these is scrubbed of the dataset's own IDs).
FREE_TEXT_VRS = frozenset({"LO", "SH", "LT", "ST", "UT", "UC"})
#: Value representations whose values are text.
TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST",
                      "TM", "UC", "UR", "UT", "UI"})


def resolve(code: str) -> str:
    """One of D/Z/X/K/C/U for a code of the table (compound codes via :data:`COMPOUND`)."""
    code = COMPOUND.get(code, code)
    if code not in ACTIONS:
        raise ValueError(f"unknown action code {code!r}; use one of {sorted(ACTIONS)} or "
                         f"{sorted(COMPOUND)}")
    return code


def build_profile(retain_patient_characteristics: bool = False,
                  retain_device_identity: bool = False, clean_descriptors: bool = False,
                  overrides: dict[str, str] | None = None,
                  retain_institution_identity: bool = False,
                  profile: str = "basic") -> dict[str, str]:
    """The resolved keyword -> action table: Basic Profile, our additions, the allow-list's safe
    attributes (``profile="allowlist"``), options, then overrides (a new dict each call; the
    table behind it is built once per set of arguments)."""
    return dict(_built(retain_patient_characteristics, retain_device_identity, clean_descriptors,
                       tuple(sorted((overrides or {}).items())), retain_institution_identity,
                       profile))


@functools.lru_cache(maxsize=64)
def _built(retain_patient_characteristics: bool, retain_device_identity: bool,
           clean_descriptors: bool, overrides: tuple[tuple[str, str], ...],
           retain_institution_identity: bool, profile: str) -> dict[str, str]:
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    table = {k: resolve(v) for k, v in BASIC_PROFILE.items()}
    table.update({k: v for k, (v, _why) in PROJECT_ADDITIONS.items()})
    if profile == "allowlist":
        table.update({k: "K" for k in SAFE_ATTRIBUTES if k not in table})
    for name, on in (("retain_patient_characteristics", retain_patient_characteristics),
                     ("retain_device_identity", retain_device_identity),
                     ("retain_institution_identity", retain_institution_identity),
                     ("clean_descriptors", clean_descriptors)):
        if on:
            table.update(OPTIONS[name])
    for k, v in overrides:
        if pydicom.datadict.tag_for_keyword(k) is None:
            raise ValueError(f"override {k!r} is not a DICOM keyword (e.g. 'InstitutionName')")
        table[k] = resolve(v)
    return table


def element_values(elem: DataElement) -> list:
    """The values of ``elem`` as a list (empty for an empty element)."""
    v = elem.value
    if v is None or v == "":
        return []
    if isinstance(v, (list, pydicom.multival.MultiValue)):
        return list(v)
    return [v]


def is_standard_uid(value: str) -> bool:
    """True for a UID the DICOM standard defines (SOP classes, transfer syntaxes, ...)."""
    return str(value).strip() in UID_dictionary


def action_for(elem: DataElement, profile: dict[str, str],
               fallback: dict[str, str] = VR_FALLBACK) -> str:
    """The action for one element: keyword table, repeating groups, private tags, then the
    fallback by value representation (:data:`VR_FALLBACK`, or :data:`ALLOWLIST_FALLBACK`)."""
    tag = elem.tag
    if tag.is_private:
        return "X"
    if elem.keyword and elem.keyword in profile:
        return profile[elem.keyword]
    for (mask, group, element), code in REPEATING_GROUPS.items():
        if tag.group & mask == group and (element is None or tag.element == element):
            return code
    if elem.VR == "UI":
        return "K" if all(is_standard_uid(v) for v in element_values(elem) if v) else "U"
    return fallback.get(elem.VR, "K")
