"""DICOM de-identification and pseudonymisation (DICOM PS3.15 Annex E, Basic Profile).

The Basic Application Level Confidentiality Profile is a table: for each attribute, an action code
(``D`` dummy, ``Z`` zero length, ``X`` remove, ``K`` keep, ``C`` clean, ``U`` replace UID).
:data:`BASIC_PROFILE` holds that table as data; :func:`deidentify` walks a dataset (nested
sequences, file meta and private tags included) and applies it. On top of the table:

* UIDs and pseudonyms come from a keyed HMAC-SHA256: the same key maps the same input to the same
  output in every file and every run (studies stay linkable), another key gives unlinkable outputs,
  and only the key holder can re-link a pseudonym to a patient;
* the *Retain Longitudinal Temporal Information with Modified Dates* option shifts every date of a
  patient by one keyed per-patient offset, so intervals survive;
* burned-in text: :func:`detect_text` finds text-like glyph rows in the pixels, :func:`deidentify`
  masks them and reports the boxes (the header is not the only place a name hides);
* :func:`deidentify_file` never touches its input and refuses to overwrite; :func:`deidentify_folder`
  keeps a study tree's structure, pseudonymises folder names that are patient IDs, rewrites DICOMDIR
  indexes with valid offsets, and reports per-file failures while finishing the rest.

Table source: DICOM PS3.15 (2024) Table E.1-1; the compound codes the standard allows (``X/Z``,
``Z/D``, ``X/Z/D``, ``X/D``, ``X/Z/U*``) are resolved by :data:`COMPOUND`.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import hmac
import io
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, UID_dictionary

# ---------------------------------------------------------------------------------------------
# The profile, as data
# ---------------------------------------------------------------------------------------------

#: Action codes of PS3.15 Annex E.
ACTIONS = {"D": "replace with a dummy value", "Z": "replace with a zero-length value",
           "X": "remove", "K": "keep", "C": "clean (scrub identifying text)",
           "U": "replace UID with a consistent keyed one"}

#: How the standard's compound codes resolve when the IOD's attribute type is not looked up:
#: the most protective choice that keeps a type 2 attribute present.
COMPOUND = {"Z/D": "D", "X/D": "D", "X/Z": "Z", "X/Z/D": "Z", "X/Z/U*": "U", "U*": "U"}

#: PS3.15 Table E.1-1, Basic Profile column: keyword -> action code (as printed in the standard).
BASIC_PROFILE: dict[str, str] = {
    "AccessionNumber": "Z", "AcquisitionComments": "X", "AcquisitionContextSequence": "X",
    "AcquisitionDate": "X/Z", "AcquisitionDateTime": "X/D", "AcquisitionDeviceProcessingDescription": "X/D",
    "AcquisitionProtocolDescription": "X", "AcquisitionTime": "X/Z", "ActualHumanPerformersSequence": "X",
    "AdditionalPatientHistory": "X", "AdmissionID": "X", "AdmittingDate": "X",
    "AdmittingDiagnosesCodeSequence": "X", "AdmittingDiagnosesDescription": "X", "AdmittingTime": "X",
    "AffectedSOPInstanceUID": "X", "Allergies": "X", "Arbitrary": "X", "AuthorObserverSequence": "X",
    "BranchOfService": "X", "CassetteID": "X", "ConcatenationUID": "U",
    "ConfidentialityConstraintOnPatientDataDescription": "X", "ContentCreatorName": "Z",
    "ContentCreatorIdentificationCodeSequence": "X", "ContentDate": "Z/D", "ContentSequence": "X",
    "ContentTime": "Z/D", "ContextGroupExtensionCreatorUID": "U", "ContrastBolusAgent": "Z/D",
    "ContributionDateTime": "X/D", "ContributionDescription": "X", "CountryOfResidence": "X",
    "CreatorVersionUID": "U", "CurrentPatientLocation": "X", "CurveDate": "X", "CurveTime": "X",
    "CustodialOrganizationSequence": "X", "DataSetTrailingPadding": "X", "DerivationDescription": "X",
    "DetectorID": "X/D", "DeviceSerialNumber": "X/Z/D", "DeviceUID": "U", "DigitalSignaturesSequence": "X",
    "DimensionOrganizationUID": "U", "DischargeDiagnosisDescription": "X", "DistributionAddress": "X",
    "DistributionName": "X", "DoseReferenceUID": "U", "EthnicGroup": "X",
    "FailedSOPInstanceUIDList": "U", "FiducialUID": "U", "FillerOrderNumberImagingServiceRequest": "Z",
    "FrameComments": "X", "FrameOfReferenceUID": "U", "GantryID": "X", "GeneratorID": "X",
    "GraphicAnnotationSequence": "D", "HumanPerformerName": "X", "HumanPerformerOrganization": "X",
    "IconImageSequence": "X", "IdentifyingComments": "X", "ImageComments": "X",
    "ImagePresentationComments": "X", "ImagingServiceRequestComments": "X", "Impressions": "X",
    "InstanceCreationDate": "X/D", "InstanceCreationTime": "X/Z/D", "InstanceCreatorUID": "U",
    "InstitutionAddress": "X", "InstitutionCodeSequence": "X/Z/D", "InstitutionName": "X/Z/D",
    "InstitutionalDepartmentName": "X", "InsurancePlanIdentification": "X",
    "IntendedRecipientsOfResultsIdentificationSequence": "X", "InterpretationApproverSequence": "X",
    "InterpretationAuthor": "X", "InterpretationDiagnosisDescription": "X", "InterpretationIDIssuer": "X",
    "InterpretationRecorder": "X", "InterpretationText": "X", "InterpretationTranscriber": "X",
    "IrradiationEventUID": "U", "IssuerOfAdmissionID": "X", "IssuerOfPatientID": "X",
    "IssuerOfServiceEpisodeID": "X", "LargePaletteColorLookupTableUID": "U", "MAC": "X",
    "MediaStorageSOPInstanceUID": "U", "MedicalAlerts": "X", "MedicalRecordLocator": "X",
    "MilitaryRank": "X", "ModifiedAttributesSequence": "X", "ModifiedImageDescription": "X",
    "ModifyingDeviceID": "X", "ModifyingDeviceManufacturer": "X", "NameOfPhysiciansReadingStudy": "X",
    "NamesOfIntendedRecipientsOfResults": "X", "Occupation": "X", "OperatorIdentificationSequence": "X",
    "OperatorsName": "X/Z/D", "OriginalAttributesSequence": "X", "OrderCallbackPhoneNumber": "X",
    "OrderEnteredBy": "X", "OrderEntererLocation": "X", "OtherPatientIDs": "X",
    "OtherPatientIDsSequence": "X", "OtherPatientNames": "X", "ParticipantSequence": "X",
    "PatientAddress": "X", "PatientAge": "X", "PatientBirthDate": "Z", "PatientBirthName": "X",
    "PatientBirthTime": "X", "PatientComments": "X", "PatientID": "Z",
    "PatientInsurancePlanCodeSequence": "X", "PatientMotherBirthName": "X", "PatientName": "Z",
    "PatientPrimaryLanguageCodeSequence": "X", "PatientReligiousPreference": "X", "PatientSex": "Z",
    "PatientSexNeutered": "X/Z", "PatientSize": "X", "PatientState": "X", "PatientTelephoneNumbers": "X",
    "PatientTelecomInformation": "X", "PatientTransportArrangements": "X", "PatientWeight": "X",
    "PerformedLocation": "X", "PerformedProcedureStepDescription": "X",
    "PerformedProcedureStepEndDate": "X", "PerformedProcedureStepID": "X",
    "PerformedProcedureStepStartDate": "X", "PerformedProcedureStepStartTime": "X",
    "PerformedStationAETitle": "X", "PerformedStationGeographicLocationCodeSequence": "X",
    "PerformedStationName": "X", "PerformingPhysicianIdentificationSequence": "X",
    "PerformingPhysicianName": "X", "PersonAddress": "X", "PersonIdentificationCodeSequence": "D",
    "PersonName": "D", "PersonTelephoneNumbers": "X", "PhysicianApprovingInterpretation": "X",
    "PhysiciansOfRecord": "X", "PhysiciansOfRecordIdentificationSequence": "X",
    "PhysiciansReadingStudyIdentificationSequence": "X", "PlacerOrderNumberImagingServiceRequest": "Z",
    "PlateID": "X", "PreMedication": "X", "PregnancyStatus": "X", "ProtocolName": "X/D",
    "ReasonForTheImagingServiceRequest": "X", "ReasonForStudy": "X",
    "ReferencedDigitalSignatureSequence": "X", "ReferencedFrameOfReferenceUID": "U",
    "ReferencedGeneralPurposeScheduledProcedureStepTransactionUID": "U",
    "ReferencedImageSequence": "X/Z/U*", "ReferencedPatientAliasSequence": "X",
    "ReferencedPatientSequence": "X", "ReferencedPerformedProcedureStepSequence": "X/Z/D",
    "ReferencedSOPInstanceMACSequence": "X", "ReferencedSOPInstanceUID": "U",
    "ReferencedSOPInstanceUIDInFile": "U", "ReferencedStudySequence": "X/Z",
    "ReferringPhysicianAddress": "X", "ReferringPhysicianIdentificationSequence": "X",
    "ReferringPhysicianName": "Z", "ReferringPhysicianTelephoneNumbers": "X", "RegionOfResidence": "X",
    "RelatedFrameOfReferenceUID": "U", "RequestAttributesSequence": "X", "RequestedContrastAgent": "X",
    "RequestedProcedureComments": "X", "RequestedProcedureDescription": "X/Z",
    "RequestedProcedureID": "X", "RequestedProcedureLocation": "X", "RequestedSOPInstanceUID": "U",
    "RequestingPhysician": "X", "RequestingService": "X", "ResponsibleOrganization": "X",
    "ResponsiblePerson": "X", "ResultsComments": "X", "ResultsDistributionListSequence": "X",
    "ResultsIDIssuer": "X", "ReviewerName": "X/Z", "ScheduledHumanPerformersSequence": "X",
    "ScheduledPatientInstitutionResidence": "X", "ScheduledPerformingPhysicianIdentificationSequence": "X",
    "ScheduledPerformingPhysicianName": "X", "ScheduledProcedureStepDescription": "X",
    "ScheduledProcedureStepEndDate": "X", "ScheduledProcedureStepLocation": "X",
    "ScheduledProcedureStepStartDate": "X", "ScheduledStationAETitle": "X",
    "ScheduledStationGeographicLocationCodeSequence": "X", "ScheduledStationName": "X",
    "ScheduledStationNameCodeSequence": "X", "SeriesDate": "X", "SeriesDescription": "X",
    "SeriesInstanceUID": "U", "SeriesTime": "X", "ServiceEpisodeDescription": "X",
    "ServiceEpisodeID": "X", "SmokingStatus": "X", "SOPInstanceUID": "U", "SourceImageSequence": "X/Z/U*",
    "SpecialNeeds": "X", "StationName": "X/Z/D", "StorageMediaFileSetUID": "U", "StudyComments": "X",
    "StudyDate": "Z", "StudyDescription": "X", "StudyID": "Z", "StudyIDIssuer": "X",
    "StudyInstanceUID": "U", "StudyTime": "Z", "SynchronizationFrameOfReferenceUID": "U",
    "TemplateExtensionCreatorUID": "U", "TemplateExtensionOrganizationUID": "U", "TextComments": "X",
    "TextString": "X", "TimezoneOffsetFromUTC": "X", "TopicAuthor": "X", "TopicKeywords": "X",
    "TopicSubject": "X", "TopicTitle": "X", "TransactionUID": "U", "UID": "U",
    "VerifyingObserverIdentificationCodeSequence": "Z", "VerifyingObserverName": "D",
    "VerifyingObserverSequence": "D", "VerifyingOrganization": "X", "VisitComments": "X",
}

#: Repeating groups of Table E.1-1: (group mask, group value, element or None for all) -> action.
#: Curve data (50xx,xxxx) and overlay data and comments (60xx,3000), (60xx,4000) are removed.
REPEATING_GROUPS: dict[tuple[int, int, int | None], str] = {
    (0xFF00, 0x5000, None): "X", (0xFF00, 0x6000, 0x3000): "X", (0xFF00, 0x6000, 0x4000): "X",
}

#: Where this module goes beyond the printed table, each with its reason (still data, not ifs).
PROJECT_ADDITIONS: dict[str, tuple[str, str]] = {
    "SourceApplicationEntityTitle": ("X", "file meta: the sending station's AE title names the device"),
    "RetrieveAETitle": ("X", "names the archive node"),
    "StationAETitle": ("X", "names the acquiring station"),
    "ReferencedFileID": ("C", "DICOMDIR paths often use the patient ID as a folder name"),
    "PatientIdentityRemoved": ("K", "set by this module"),
    "DeidentificationMethod": ("K", "set by this module"),
    "DeidentificationMethodCodeSequence": ("K", "set by this module"),
}

#: Catch-all by value representation for attributes the table does not name (our strengthening:
#: Annex E is a list of known attributes; these keep unknown ones from leaking).
VR_FALLBACK: dict[str, str] = {"UI": "U", "PN": "Z", "DA": "Z", "DT": "Z"}

#: Options of Annex E this module implements: name -> {keyword: action} overrides.
OPTIONS: dict[str, dict[str, str]] = {
    "retain_patient_characteristics": {k: "K" for k in (
        "PatientAge", "PatientSex", "PatientSize", "PatientWeight", "EthnicGroup", "SmokingStatus",
        "PregnancyStatus", "PatientSexNeutered")},
    "retain_device_identity": {k: "K" for k in (
        "DeviceSerialNumber", "StationName", "DetectorID", "GantryID", "GeneratorID", "PlateID",
        "CassetteID", "DeviceUID")},
    "clean_descriptors": {k: "C" for k in (
        "StudyDescription", "SeriesDescription", "ProtocolName", "ImageComments",
        "AcquisitionDeviceProcessingDescription", "DerivationDescription", "PerformedProcedureStepDescription",
        "RequestedProcedureDescription", "ContrastBolusAgent")},
}

#: DICOM codes (scheme DCM, CID 7050) recorded in DeidentificationMethodCodeSequence.
METHOD_CODES = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "clean_pixels": ("113101", "Clean Pixel Data Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "shift_dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "keep_private": ("113111", "Retain Safe Private Option"),
}

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_DUMMY = {"DA": "19000101", "TM": "000000.00", "DT": "19000101000000", "PN": "ANONYMOUS",
          "AS": "000Y", "IS": "0", "DS": "0", "US": 0, "SS": 0, "UL": 0, "SL": 0, "FL": 0.0, "FD": 0.0}
_FREE_TEXT = {"LO", "SH", "LT", "ST", "UT", "UC"}
_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
             "UR", "UT", "UI"}


class DeidError(ValueError):
    """A file cannot be de-identified; the message names the file and what to do."""


# ---------------------------------------------------------------------------------------------
# Keyed pseudonyms, UIDs and date offsets
# ---------------------------------------------------------------------------------------------

def _as_key(key: bytes | str) -> bytes:
    if isinstance(key, str):
        key = key.encode()
    if not isinstance(key, bytes) or len(key) < 16:
        raise ValueError("the HMAC key must be bytes or str of at least 16 bytes "
                         "(e.g. secrets.token_bytes(32)); keep it secret, it re-links pseudonyms")
    return key


def _mac(key: bytes, purpose: str, value: str) -> bytes:
    return hmac.new(key, f"{purpose}|{value}".encode(), hashlib.sha256).digest()


def keyed_uid(uid: str, key: bytes | str) -> str:
    """A valid UID under the 2.25 root: the first 128 bits of HMAC-SHA256(key, uid) as an integer.

    >>> u = keyed_uid("1.2.3", b"k" * 16); u.startswith("2.25.") and len(u) <= 64
    True
    >>> u == keyed_uid("1.2.3", b"k" * 16) != keyed_uid("1.2.3", b"j" * 16)
    True
    """
    return "2.25." + str(int.from_bytes(_mac(_as_key(key), "uid", str(uid).strip())[:16], "big"))


def pseudonym(patient: str, key: bytes | str) -> str:
    """The keyed pseudonym of a patient identifier: ``PSN`` + 16 hex digits of HMAC-SHA256.

    >>> pseudonym("12345", b"k" * 16) == pseudonym("12345", b"k" * 16)
    True
    """
    return "PSN" + _mac(_as_key(key), "patient", str(patient).strip()).hex()[:16].upper()


def date_offset(patient: str, key: bytes | str, min_days: int = 365, max_days: int = 3650) -> int:
    """The keyed per-patient date shift in days, always negative: between -max_days and -min_days."""
    h = int.from_bytes(_mac(_as_key(key), "date", str(patient).strip())[:8], "big")
    return -(min_days + h % (max_days - min_days + 1))


def shift_date(value: str, days: int) -> str | None:
    """Shift a DA (YYYYMMDD) or the date part of a DT value by ``days``; None if unparseable.

    >>> shift_date("20040229", 1), shift_date("20040101120000.5", -1), shift_date("2004", 1)
    ('20040301', '20031231120000.5', None)
    """
    value = str(value).strip()
    if len(value) < 8 or not value[:8].isdigit():
        return None
    try:
        day = _dt.date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        return None
    return (day + _dt.timedelta(days=days)).strftime("%Y%m%d") + value[8:]


# ---------------------------------------------------------------------------------------------
# The action of one element
# ---------------------------------------------------------------------------------------------

def resolve(code: str) -> str:
    """One of D/Z/X/K/C/U for a code of the table (compound codes via :data:`COMPOUND`)."""
    code = COMPOUND.get(code, code)
    if code not in ACTIONS:
        raise ValueError(f"unknown action code {code!r}; use one of {sorted(ACTIONS)} or {sorted(COMPOUND)}")
    return code


def build_profile(retain_patient_characteristics: bool = False, retain_device_identity: bool = False,
                  clean_descriptors: bool = False, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The resolved keyword -> action table: Basic Profile, our additions, options, then overrides."""
    table = {k: resolve(v) for k, v in BASIC_PROFILE.items()}
    table.update({k: v for k, (v, _why) in PROJECT_ADDITIONS.items()})
    for name, on in (("retain_patient_characteristics", retain_patient_characteristics),
                     ("retain_device_identity", retain_device_identity),
                     ("clean_descriptors", clean_descriptors)):
        if on:
            table.update(OPTIONS[name])
    for k, v in (overrides or {}).items():
        if pydicom.datadict.tag_for_keyword(k) is None:
            raise ValueError(f"override {k!r} is not a DICOM keyword (e.g. 'InstitutionName')")
        table[k] = resolve(v)
    return table


def _is_standard_uid(value: str) -> bool:
    return str(value).strip() in UID_dictionary


def action_for(elem: DataElement, profile: dict[str, str]) -> str:
    """The action for one element: keyword table, repeating groups, private tags, VR fallback."""
    tag = elem.tag
    if tag.is_private:
        return "X"
    if elem.keyword and elem.keyword in profile:
        return profile[elem.keyword]
    for (mask, group, element), code in REPEATING_GROUPS.items():
        if tag.group & mask == group and (element is None or tag.element == element):
            return code
    if elem.VR == "UI":
        values = elem.value if isinstance(elem.value, (list, pydicom.multival.MultiValue)) else [elem.value]
        return "K" if all(_is_standard_uid(v) for v in values if v) else "U"
    return VR_FALLBACK.get(elem.VR, "K")


# ---------------------------------------------------------------------------------------------
# Walking a dataset
# ---------------------------------------------------------------------------------------------

@dataclass
class Context:
    """What one de-identification run needs: key, options, and what it has changed so far."""

    key: bytes
    profile: dict[str, str]
    shift_dates: bool = False
    keep_private: frozenset = frozenset()   # {(private creator, element low byte)}
    days: int = 0
    replacements: dict[str, str] = field(default_factory=dict)   # identifying text -> substitute
    counts: Counter = field(default_factory=Counter)
    changed_values: set = field(default_factory=set)


def _values(elem: DataElement) -> list:
    v = elem.value
    if v is None or v == "":
        return []
    if isinstance(v, (list, pydicom.multival.MultiValue)):
        return list(v)
    return [v]


def _clean_text(text: str, ctx: Context) -> str:
    for old in sorted(ctx.replacements, key=len, reverse=True):
        if old and old in text:
            text = text.replace(old, ctx.replacements[old])
    return text


def _dummy(elem: DataElement, ctx: Context):
    if elem.VR in ("DA", "DT") and ctx.shift_dates:
        return _shift_values(elem, ctx)
    if elem.VR == "UI":
        return _uid_values(elem, ctx)
    if elem.VR in _DUMMY:
        return _DUMMY[elem.VR]
    if elem.VR in ("OB", "OW", "UN", "OF", "OD", "OL", "OV"):
        return b""
    return "ANONYMIZED"


def _uid_values(elem: DataElement, ctx: Context):
    new = [keyed_uid(v, ctx.key) if v and not _is_standard_uid(v) else v for v in _values(elem)]
    return new[0] if len(new) == 1 else new


def _shift_values(elem: DataElement, ctx: Context):
    new = [shift_date(v, ctx.days) for v in _values(elem)]
    if any(v is None for v in new):
        return ""
    return new[0] if len(new) == 1 else new


def _private_creator(ds: Dataset, tag) -> str | None:
    creator_tag = pydicom.tag.Tag(tag.group, tag.element >> 8)
    return str(ds[creator_tag].value) if creator_tag in ds else None


def _keep_private(ds: Dataset, elem: DataElement, ctx: Context) -> bool:
    if not ctx.keep_private:
        return False
    if elem.tag.is_private_creator:
        return any(c == str(elem.value) for c, _ in ctx.keep_private)
    return (_private_creator(ds, elem.tag), elem.tag.element & 0xFF) in ctx.keep_private


def _apply(ds: Dataset, ctx: Context) -> None:
    """Apply the profile to every element of ``ds`` and, recursively, of its sequences."""
    for elem in list(ds):
        tag = elem.tag
        if tag.is_private and _keep_private(ds, elem, ctx):
            ctx.counts["K(private)"] += 1
            continue
        code = action_for(elem, ctx.profile)
        if elem.VR in ("DA", "DT") and ctx.shift_dates and code in ("D", "Z") and _values(elem):
            code = "D"      # modified-dates option: shift instead of blanking
        ctx.counts[code] += 1
        before = [str(v) for v in _values(elem)] if elem.VR != "SQ" else []
        if code == "X":
            del ds[tag]
        elif code == "Z":
            elem.value = Sequence() if elem.VR == "SQ" else (b"" if elem.VR in ("OB", "OW", "UN") else
                                                              None if elem.VR in ("US", "SS", "UL", "SL", "FL", "FD") else "")
        elif elem.VR == "SQ":       # K, D, U, C on a sequence: keep it, process its items
            for item in elem.value:
                _apply(item, ctx)
            continue
        elif code == "D":
            elem.value = _dummy(elem, ctx)
        elif code == "U":
            elem.value = _uid_values(elem, ctx)
        elif code == "C" or (code == "K" and elem.VR in _FREE_TEXT and not tag.is_private
                             and elem.keyword not in ctx.profile):
            # K on free text: scrub this dataset's own identifiers out of it (beyond Annex E:
            # an RT structure set label is often the study ID)
            if elem.VR in _TEXT_VRS:
                new = [_clean_text(str(v), ctx) for v in _values(elem)]
                elem.value = new[0] if len(new) == 1 else new
        ctx.changed_values.update(v for v in before if v.strip()
                                  and (tag not in ds or str(v) not in [str(x) for x in _values(ds[tag])]))


def _patient_key(ds: Dataset) -> str:
    return str(ds.get("PatientID", "") or ds.get("PatientName", "") or "")


def _replacements(ds: Dataset, key: bytes) -> dict[str, str]:
    """Identifying strings of ``ds`` (names, IDs) and what the clean action puts in their place."""
    out = {}
    for kw in ("PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID"):
        for v in _values(ds[kw]) if kw in ds else []:
            if len(str(v).strip()) >= 3:
                out[str(v).strip()] = (pseudonym(str(v), key) if kw == "PatientID" else
                                       "ID" + _mac(key, kw, str(v).strip()).hex()[:8].upper())
    for elem in ds.iterall():
        if elem.VR == "PN":
            for v in _values(elem):
                for part in re.split(r"[\^=]", str(v)):
                    if len(part.strip()) >= 3:
                        out[part.strip()] = ""
    return out


def _stamp(ds: Dataset, options: list[str], masked: bool) -> None:
    ds.PatientIdentityRemoved = "YES"
    names = ["basic"] + options + (["clean_pixels"] if masked else [])
    ds.DeidentificationMethod = ("DICOM PS3.15 E.1-1 Basic Profile via pets_lite.deid"
                                 + "".join(f"; {METHOD_CODES[n][1]}" for n in names[1:]))[:64]
    seq = Sequence()
    for n in names:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = METHOD_CODES[n][0], "DCM", METHOD_CODES[n][1]
        seq.append(item)
    ds.DeidentificationMethodCodeSequence = seq
    if "shift_dates" in options:
        ds.LongitudinalTemporalInformationModified = "MODIFIED"


# ---------------------------------------------------------------------------------------------
# Burned-in text: detection and masking
# ---------------------------------------------------------------------------------------------

@dataclass
class Box:
    """A masked region: rows [top, bottom), columns [left, right), and how many glyphs it held."""

    top: int
    left: int
    bottom: int
    right: int
    glyphs: int

    @property
    def area(self) -> int:
        """Pixels inside the box."""
        return (self.bottom - self.top) * (self.right - self.left)


def display_planes(ds: Dataset, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Luminance and colour saturation in [0, 1] of one decoded frame as a viewer shows it."""
    pi = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    arr = frame
    if pi == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut
        arr = apply_color_lut(frame, ds).astype(np.float64)
        arr = arr / max(float(arr.max()), 1.0)
    elif arr.ndim == 3:
        arr = arr.astype(np.float64)
        arr = arr / max(float(2 ** int(ds.get("BitsStored", 8)) - 1), 1.0)
    if arr.ndim == 3:
        lum = arr @ np.array([0.299, 0.587, 0.114])
        mx, mn = arr.max(-1), arr.min(-1)
        sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-9), 0.0)
    else:
        a = arr.astype(np.float64)
        lo, hi = np.percentile(a, 0.5), a.max()
        lum = np.clip((a - lo) / max(hi - lo, 1e-9), 0, 1)
        if pi == "MONOCHROME1":
            lum = 1.0 - lum
        sat = np.zeros_like(lum)
    return lum, sat


def detect_text(lum: np.ndarray, sat: np.ndarray | None = None, contrast: float = 0.2,
                max_saturation: float = 0.6, glyph_height: tuple[int, int] = (5, 24),
                min_glyphs: int = 2, max_background_mad: float = 0.04,
                uniformity: float = 0.5) -> list[Box]:
    """Boxes around rows of text-like glyphs in a luminance image (values in [0, 1]).

    Burned-in annotations are rendered, not imaged: thin strokes of one bright, unsaturated colour,
    a few pixels to a couple of dozen high, standing in horizontal rows on a flat background.
    Steps: (1) white top-hat (image minus its grey opening with a square wider than a stroke)
    keeps thin bright structures and drops large bright regions; pixels above ``contrast`` that
    are not strongly coloured (Doppler) are candidates; (2) 8-connected components of glyph size
    whose pixels share one intensity (median at least ``uniformity`` of the peak: rendered
    strokes are flat, anatomy ridges are graded) are glyphs; (3) glyphs joined by a horizontal closing of about one glyph height form a text
    row (dots and colons join a row but do not count as glyphs); a row needs ``min_glyphs``
    glyphs whose vertical extents share one line (a diagonal vessel breaks into staggered
    pieces, characters stand side by side) and a flat surround (median absolute deviation of the non-stroke pixels in its box at
    most ``max_background_mad``), which speckle and anatomy fail.
    """
    from scipy import ndimage as ndi

    if lum.ndim != 2 or lum.size == 0:
        raise ValueError(f"detect_text needs a 2-D image, got shape {lum.shape}")
    lum = np.asarray(lum, dtype=np.float64)
    tophat = lum - ndi.grey_opening(lum, size=(7, 7))
    cand = tophat > contrast
    if sat is not None:
        cand &= sat <= max_saturation
    labels, n = ndi.label(cand, structure=np.ones((3, 3)))
    if n == 0:
        return []
    lo, hi = glyph_height
    small = np.zeros(n + 1, bool)   # stroke-sized pieces: glyphs, dots, colons, minus signs
    glyph = np.zeros(n + 1, bool)   # pieces tall enough to be a character
    heights = np.zeros(n + 1, int)
    objects = ndi.find_objects(labels)
    for i, sl in enumerate(objects, start=1):
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        heights[i] = h
        small[i] = h <= hi and w <= 2 * hi
        if small[i] and h >= lo:
            vals = lum[sl][labels[sl] == i]
            glyph[i] = np.median(vals) >= uniformity * vals.max()
    if not glyph.any():
        return []
    typical = int(np.median(heights[glyph]))
    smask = small[labels]
    joined = ndi.binary_closing(smask, structure=np.ones((1, max(3, typical))), iterations=1)
    joined = ndi.binary_dilation(joined | smask, structure=np.ones((1, max(3, typical // 2))))
    rows, _ = ndi.label(joined)
    boxes = []
    for sl in ndi.find_objects(rows):
        ids = np.unique(labels[sl][smask[sl]])
        ids = ids[glyph[ids]]
        if len(ids) < min_glyphs:
            continue
        spans = np.array([(objects[i - 1][0].start, objects[i - 1][0].stop) for i in ids])
        centres = spans.mean(axis=1)
        mid = np.median(centres)
        aligned = ((spans[:, 0] <= mid) & (mid < spans[:, 1])).sum()
        if aligned < min_glyphs:
            continue            # pieces stacked or staggered, not standing on one text line
        pad = 2
        t, l = max(sl[0].start - pad, 0), max(sl[1].start - pad, 0)
        b, r = min(sl[0].stop + pad, lum.shape[0]), min(sl[1].stop + pad, lum.shape[1])
        stroke = ndi.binary_dilation(cand[t:b, l:r], iterations=2)
        bg = lum[t:b, l:r][~stroke]
        if bg.size and np.median(np.abs(bg - np.median(bg))) > max_background_mad:
            continue            # textured surround (speckle, anatomy): not an annotation
        boxes.append(Box(int(t), int(l), int(b), int(r), int(len(ids))))
    return _merge(boxes)


def _merge(boxes: list[Box]) -> list[Box]:
    out: list[Box] = []
    for b in sorted(boxes, key=lambda b: (b.top, b.left)):
        for o in out:
            if b.top < o.bottom and o.top < b.bottom and b.left < o.right and o.left < b.right:
                o.top, o.left = min(o.top, b.top), min(o.left, b.left)
                o.bottom, o.right = max(o.bottom, b.bottom), max(o.right, b.right)
                o.glyphs += b.glyphs
                break
        else:
            out.append(Box(b.top, b.left, b.bottom, b.right, b.glyphs))
    return out


def _frames(ds: Dataset, arr: np.ndarray) -> np.ndarray:
    """Decoded pixels as (frames, rows, cols[, samples])."""
    n = int(ds.get("NumberOfFrames", 1) or 1)
    return arr if n > 1 else arr[None]


def decoded_pixels(ds: Dataset, source: str = "<dataset>") -> np.ndarray:
    """The decoded pixel array, or a :class:`DeidError` naming the file and the transfer syntax."""
    if "PixelData" not in ds:
        raise DeidError(f"{source}: has no Pixel Data (7FE0,0010), so there is nothing to inspect or "
                        "mask for burned-in text; de-identify it with burned_in='skip'")
    try:
        return ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for undecodable data
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(ts, "name", ts)
        raise DeidError(f"{source}: cannot decode pixel data (transfer syntax {name}) to check it for "
                        f"burned-in text ({type(exc).__name__}: {str(exc)[:120]}); install a decoder "
                        "plug-in (pylibjpeg, pyjpegls) or pass burned_in='skip' if the pixels are "
                        "known to be clean") from exc


def find_burned_in_text(ds: Dataset, source: str = "<dataset>", max_frames: int = 8,
                        **detector) -> list[Box]:
    """Text boxes in the pixels of ``ds`` (union over up to ``max_frames`` evenly spaced frames)."""
    frames = _frames(ds, decoded_pixels(ds, source))
    picks = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).astype(int))
    boxes: list[Box] = []
    for i in picks:
        lum, sat = display_planes(ds, frames[i])
        boxes.extend(detect_text(lum, sat, **detector))
    return _merge(boxes)


def find_overlay_text(ds: Dataset, **detector) -> list[Box]:
    """Text boxes in the 1-bit overlay planes (60xx,3000) of ``ds``."""
    boxes: list[Box] = []
    for group in range(0x6000, 0x6020, 2):
        if (group, 0x3000) in ds:
            try:
                ov = ds.overlay_array(group)
            except Exception:  # noqa: BLE001 - a malformed overlay is removed anyway
                continue
            ov = ov if ov.ndim == 2 else ov.max(0)
            boxes.extend(detect_text(ov.astype(np.float64), None, **detector))
    return boxes


def mask_boxes(ds: Dataset, boxes: list[Box], source: str = "<dataset>") -> np.ndarray:
    """Fill every box in every frame with the median of its border; returns the new pixel array."""
    arr = np.array(decoded_pixels(ds, source), copy=True)
    frames = _frames(ds, arr)
    for b in boxes:
        for f in frames:
            region = f[b.top:b.bottom, b.left:b.right]
            border = np.concatenate([region[0], region[-1], region[:, 0], region[:, -1]])
            f[b.top:b.bottom, b.left:b.right] = np.median(border, axis=0).astype(f.dtype)
    pi = str(ds.PhotometricInterpretation)
    if arr.ndim >= 3 and arr.shape[-1] == 3 and pi.startswith("YBR"):
        pi = "RGB"       # pydicom decodes YBR to RGB by default
    meta = getattr(ds, "file_meta", None)
    if meta is not None and not meta.get("TransferSyntaxUID", ExplicitVRLittleEndian).is_little_endian:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian     # set_pixel_data writes little endian
    try:
        ds.set_pixel_data(arr, pi, int(ds.BitsStored), generate_instance_uid=False)
    except Exception as exc:  # noqa: BLE001
        raise DeidError(f"{source}: could not write the masked pixels back ({exc})") from exc
    return arr


# ---------------------------------------------------------------------------------------------
# Datasets, files and folders
# ---------------------------------------------------------------------------------------------

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


def deidentify(ds: Dataset, key: bytes | str, *, shift_dates: bool = False,
               retain_patient_characteristics: bool = False, retain_device_identity: bool = False,
               clean_descriptors: bool = False, keep_private: Iterable[tuple[str, int]] = (),
               burned_in: str = "mask", overrides: dict[str, str] | None = None,
               source: str = "<dataset>", patient: str | None = None, **detector) -> tuple[Dataset, Report]:
    """A de-identified copy of ``ds`` and its :class:`Report`; ``ds`` itself is never changed.

    ``burned_in``: ``"mask"`` (detect and mask text in the pixels; undecodable pixels raise),
    ``"detect"`` (report only), or ``"skip"``. ``overrides`` maps keywords to action codes (for
    experiments, e.g. ``{"InstitutionName": "K"}``). ``patient`` fixes the identity used for the
    pseudonym and date offset (DICOMDIR records use it).
    """
    if burned_in not in ("mask", "detect", "skip"):
        raise ValueError(f"burned_in must be 'mask', 'detect' or 'skip', got {burned_in!r}")
    start = time.perf_counter()
    key = _as_key(key)
    out = copy.deepcopy(ds)
    profile = build_profile(retain_patient_characteristics, retain_device_identity, clean_descriptors,
                            overrides)
    pkey = _patient_key(ds) if patient is None else patient
    ctx = Context(key=key, profile=profile, shift_dates=shift_dates,
                  keep_private=frozenset((str(c), int(e)) for c, e in keep_private),
                  days=date_offset(pkey, key) if shift_dates else 0,
                  replacements=_replacements(ds, key))
    report = Report(source=source, pseudonym=pseudonym(pkey, key) if pkey else "",
                    date_offset_days=ctx.days)
    boxes: list[Box] = []
    if burned_in != "skip" and "PixelData" in ds:
        boxes = find_burned_in_text(ds, source, **detector)
    report.overlay_boxes = find_overlay_text(ds, **detector) if burned_in != "skip" else []
    _apply(out, ctx)
    if getattr(out, "file_meta", None) is not None:
        _apply(out.file_meta, ctx)
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
    options = [n for n, on in (("shift_dates", shift_dates),
                               ("retain_patient_characteristics", retain_patient_characteristics),
                               ("retain_device_identity", retain_device_identity),
                               ("clean_descriptors", clean_descriptors),
                               ("keep_private", bool(ctx.keep_private))) if on]
    _stamp(out, options, masked)
    report.boxes = boxes
    report.actions = dict(ctx.counts)
    report.phi_values_changed = len(ctx.changed_values)
    report.seconds = time.perf_counter() - start
    return out, report


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
            if not any(k in ds for k in ("SOPClassUID", "PatientID", "Modality", "StudyInstanceUID")):
                raise DeidError(f"{path}: not a DICOM file ({exc}); check the path") from exc
            _complete_meta(ds)
    except DeidError:
        raise
    except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DeidError(f"{path}: unreadable DICOM (truncated or corrupt: {type(exc).__name__}: "
                        f"{str(exc)[:120]}); re-export it from the source system") from exc
    if getattr(ds, "file_meta", None) is not None and "TransferSyntaxUID" not in ds.file_meta:
        _complete_meta(ds)
    if len(ds) == 0:
        raise DeidError(f"{path}: parsed as DICOM but holds no data elements; not a DICOM dataset")
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    deflated = ts is not None and getattr(ts, "is_deflated", False)
    if not stop_before_pixels and not deflated and _ends_early(ds, path.stat().st_size):
        raise DeidError(f"{path}: truncated (the last data element runs past the end of the file); "
                        "re-export it from the source system")
    if "PixelData" in ds:
        expected = _expected_pixel_bytes(ds)
        got = len(ds.PixelData) if ds["PixelData"].value is not None else 0
        ts = ds.file_meta.get("TransferSyntaxUID") if getattr(ds, "file_meta", None) else None
        if expected and (ts is None or not ts.is_compressed) and got < expected:
            raise DeidError(f"{path}: truncated pixel data ({got} of {expected} bytes); "
                            "re-export the file, a partial image cannot be checked or released")
    return ds


def _ends_early(ds: Dataset, size: int) -> bool:
    """True when the file stops inside the last top-level element (pydicom reads such files silently)."""
    tags = list(ds.keys())
    if not tags:
        return False
    raw = ds.get_item(tags[-1])
    tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
    if tell is None or length is None or length == 0xFFFFFFFF:
        return False
    end = tell + length
    return end > size or 0 < size - end < 8


def _complete_meta(ds: Dataset) -> None:
    """Fill the file meta a preamble-less dataset lacks from how it was actually encoded."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = (pydicom.uid.ImplicitVRLittleEndian if implicit else
                                  ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian)


def _expected_pixel_bytes(ds: Dataset) -> int:
    try:
        samples = int(ds.get("SamplesPerPixel", 1))
        if str(ds.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
            samples = 2          # chroma subsampled horizontally: 2 bytes per pixel pair member
        return (int(ds.Rows) * int(ds.Columns) * samples
                * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.BitsAllocated) // 8)
    except (AttributeError, TypeError, ValueError):
        return 0


def _write_new(ds: Dataset, out: Path) -> None:
    """Write ``ds`` to ``out`` through a temporary file; never replaces an existing file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".deid-", dir=out.parent)
    os.close(fd)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        for m, kw in (("MediaStorageSOPClassUID", "SOPClassUID"), ("MediaStorageSOPInstanceUID", "SOPInstanceUID")):
            if not meta.get(m) and ds.get(kw):
                meta[m] = DataElement(pydicom.datadict.tag_for_keyword(m), "UI", ds[kw].value)
    full = meta is not None and all(meta.get(m) for m in (
        "TransferSyntaxUID", "MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID"))
    try:
        if full:
            ds.save_as(tmp, enforce_file_format=True)
        else:            # a dataset that came without file meta is written back the same way
            ds.save_as(tmp, implicit_vr=ds.original_encoding[0], little_endian=ds.original_encoding[1])
        os.link(tmp, out)           # fails if ``out`` appeared meanwhile: no overwrite, ever
    except FileExistsError as exc:
        raise DeidError(f"{out}: already exists; refusing to overwrite, choose a new output path") from exc
    finally:
        os.unlink(tmp)


def deidentify_file(src: str | os.PathLike, dst: str | os.PathLike, key: bytes | str,
                    **options) -> Report:
    """De-identify the DICOM file ``src`` into the new file ``dst`` (never overwritten, never ``src``)."""
    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise DeidError(f"{dst}: already exists; refusing to overwrite, choose a new output path")
    if dst.resolve() == src.resolve():
        raise DeidError(f"{src}: output path equals input path; the input is never modified")
    ds = read_dicom(src)
    meta = getattr(ds, "file_meta", None) or Dataset()
    patient_ids = options.pop("patient_ids", ())
    if str(meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_SOP_CLASS:
        out, report = deidentify_dicomdir(ds, key, source=str(src), patient_ids=patient_ids, **options)
    else:
        out, report = deidentify(ds, key, source=str(src), **options)
    _write_new(out, dst)
    report.output = str(dst)
    return report


# ---------------------------------------------------------------------------------------------
# DICOMDIR: de-identify the records, keep the offsets valid
# ---------------------------------------------------------------------------------------------

_OFFSET_KWS = ("OffsetOfTheNextDirectoryRecord", "OffsetOfReferencedLowerLevelDirectoryEntity")
_ROOT_KWS = ("OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity",
             "OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity")


def _record_patients(ds: Dataset) -> list[str]:
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

    chain(ds.get(_ROOT_KWS[0], 0), "")
    current = ""
    for i, r in enumerate(recs):  # records the offsets did not reach: fall back to file order
        if r.get("DirectoryRecordType") == "PATIENT":
            current = str(r.get("PatientID", ""))
        if not owner[i]:
            owner[i] = current
    return owner


def deidentify_dicomdir(ds: Dataset, key: bytes | str, source: str = "<DICOMDIR>",
                        patient_ids: Iterable[str] = (), **options) -> tuple[Dataset, Report]:
    """De-identify a DICOMDIR: each record as its patient's data, then recompute the byte offsets."""
    options = {**options, "burned_in": "skip"}
    recs = list(ds.get("DirectoryRecordSequence", []))
    index = {getattr(r, "seq_item_tell", None): i for i, r in enumerate(recs)}
    owners = _record_patients(ds)
    ids = _known_patient_ids(recs) | set(patient_ids)
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
        for kw in ("PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
                   "LongitudinalTemporalInformationModified"):
            if kw in nr and kw not in r:
                del nr[kw]
        if r.get("DirectoryRecordType") == "PATIENT" and "PatientID" in r:
            nr.PatientID = pseudonym(str(r.PatientID), key)
        if "ReferencedFileID" in nr:
            nr.ReferencedFileID = [pseudonym(p, key) if p in ids else p
                                   for p in _values(r["ReferencedFileID"])]
        total.update(rep.actions)
        report.phi_values_changed += rep.phi_values_changed
        new_recs.append(nr)
    out.DirectoryRecordSequence = new_recs
    out.file_meta.MediaStorageSOPInstanceUID = keyed_uid(ds.file_meta.MediaStorageSOPInstanceUID, key)
    # offsets: translate to record indices, write once, read the new item positions, write them in
    for r, nr in zip(recs, new_recs):
        for kw in _OFFSET_KWS:
            if kw in r:
                nr[kw].value = index.get(r[kw].value, -1)
    for kw in _ROOT_KWS:
        if kw in ds:
            out[kw].value = index.get(ds[kw].value, -1)
    idx_fields = [(nr, kw) for nr in new_recs for kw in _OFFSET_KWS if kw in nr] + \
                 [(out, kw) for kw in _ROOT_KWS if kw in out]
    wanted = {(id(o), kw): o[kw].value for o, kw in idx_fields}
    for o, kw in idx_fields:
        o[kw].value = 0
    buf = io.BytesIO()
    out.save_as(buf, enforce_file_format=True)
    back = pydicom.dcmread(io.BytesIO(buf.getvalue()))
    positions = [r.seq_item_tell for r in back.get("DirectoryRecordSequence", [])]
    for o, kw in idx_fields:
        i = wanted[(id(o), kw)]
        o[kw].value = positions[i] if 0 <= i < len(positions) else 0
    report.actions = dict(total)
    return out, report


def _known_patient_ids(recs) -> set[str]:
    return {str(r.PatientID) for r in recs if r.get("DirectoryRecordType") == "PATIENT" and "PatientID" in r}


# ---------------------------------------------------------------------------------------------
# Folders
# ---------------------------------------------------------------------------------------------

@dataclass
class FolderResult:
    """Per-file outcome of :func:`deidentify_folder`."""

    reports: list[Report] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)   # source path -> error message
    skipped: list[str] = field(default_factory=list)         # not DICOM (README files, ...)
    seconds: float = 0.0


def dicom_files(root: str | os.PathLike) -> Iterator[Path]:
    """Every visible file under ``root``, recursively and sorted (non-DICOM ones are skipped later)."""
    for p in sorted(Path(root).rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            yield p


def _looks_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom") or path.name.upper().startswith("DICOMDIR"):
        return True
    with open(path, "rb") as f:
        head = f.read(132)
    if head[128:132] == b"DICM":
        return True
    return path.suffix == "" and len(head) >= 8 and head[0] in (0x02, 0x08) and head[1] == 0x00


def deidentify_folder(src: str | os.PathLike, dst: str | os.PathLike, key: bytes | str,
                      progress: Callable | None = None, **options) -> FolderResult:
    """De-identify every DICOM file under ``src`` into the same tree under ``dst``.

    Folder names equal to a patient ID become that patient's pseudonym; files that fail are
    reported in ``failures`` (path -> message) and the rest still finish. ``dst`` must not exist.
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
            if _looks_dicom(p):
                pid = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["PatientID"]).get("PatientID")
                if pid:
                    ids.add(str(pid))
        except Exception:  # noqa: BLE001 - the second pass reports the failure
            pass
    k = _as_key(key)
    dst.mkdir(parents=True)
    for p in (progress(files, desc="de-identifying") if progress else files):
        if not _looks_dicom(p):
            result.skipped.append(str(p))
            continue
        rel = p.relative_to(src)
        out = dst.joinpath(*[pseudonym(part, k) if part in ids else part for part in rel.parts])
        try:
            result.reports.append(deidentify_file(p, out, k, patient_ids=ids, **options))
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the study
            msg = str(exc) if isinstance(exc, DeidError) else f"{p}: {type(exc).__name__}: {exc}"
            result.failures[str(p)] = msg
    result.seconds = time.perf_counter() - start
    return result


# ---------------------------------------------------------------------------------------------
# Checks: what identifying values are there, and did any survive?
# ---------------------------------------------------------------------------------------------

#: Keywords whose values identify a person, a place or a device (beyond every PN, DA, DT, UI).
IDENTIFYING_KEYWORDS = frozenset({
    "PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID", "IssuerOfPatientID", "AdmissionID",
    "PatientAddress", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "StationName", "DeviceSerialNumber", "DetectorID", "GantryID", "PlateID", "CassetteID",
    "PatientTelephoneNumbers", "MedicalRecordLocator", "RequestedProcedureID", "PerformedProcedureStepID",
    "FillerOrderNumberImagingServiceRequest", "PlacerOrderNumberImagingServiceRequest",
    "PerformedStationAETitle", "ScheduledStationAETitle", "SourceApplicationEntityTitle",
    "ReferringPhysicianAddress", "PersonAddress", "ReferringPhysicianTelephoneNumbers",
})


def _walk(ds: Dataset, meta: bool = True) -> Iterator[DataElement]:
    if meta and getattr(ds, "file_meta", None) is not None:
        yield from ds.file_meta
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _walk(item, meta=False)


def identifying_values(ds: Dataset, min_length: int = 4) -> dict[str, str]:
    """Every identifying value in ``ds`` (value -> keyword): names, IDs, dates, places, devices, UIDs.

    Looks everywhere: file meta, nested sequences, private tags (any text value of a private
    element counts). Values shorter than ``min_length`` and standard UIDs are left out.
    """
    found: dict[str, str] = {}
    shared = retained_public_values(ds)
    for elem in _walk(ds):
        kw = elem.keyword or str(elem.tag)
        if elem.VR == "SQ":
            continue
        take = (elem.VR in ("PN", "DA", "DT") or kw in IDENTIFYING_KEYWORDS or elem.tag.is_private
                or (elem.VR == "UI" and kw not in ("TransferSyntaxUID", "ImplementationClassUID")))
        if not take or (elem.tag.is_private and elem.VR not in _TEXT_VRS):
            continue
        for v in _values(elem):
            text = str(v).strip()
            if elem.tag.is_private and not (re.search(r"[A-Za-z]", text) or re.fullmatch(r"\d{6,}", text)):
                continue     # private measurements ("5.000000") identify no one
            if elem.tag.is_private and any(text in kept for kept in shared):
                continue     # the same text stands in a public attribute the profile keeps
            if elem.VR == "UI" and _is_standard_uid(text):
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


_BULK = {"PixelData", "FloatPixelData", "DoubleFloatPixelData", "WaveformData", "EncapsulatedDocument",
         "OverlayData", "SpectroscopyData", "CurveData"}


def searchable_text(ds: Dataset) -> str:
    """All values of ``ds`` as one string (file meta, sequences and private tags included;
    bulk pixel and waveform data left out, other binary values decoded as Latin-1)."""
    parts = []
    for elem in _walk(ds):
        if elem.VR == "SQ" or elem.keyword in _BULK or (elem.tag.group & 0xFF00) in (0x6000, 0x5000) \
                and elem.tag.element == 0x3000:
            continue
        v = elem.value
        if isinstance(v, bytes):
            parts.append(v.decode("latin-1"))
        else:
            parts.extend(str(x) for x in _values(elem))
    return "\x00".join(parts)


#: Public attributes the Basic Profile keeps that name a product, not a person or a place.
NON_IDENTIFYING_KEPT = frozenset({"Manufacturer", "ManufacturerModelName", "BodyPartExamined",
                                  "SoftwareVersions", "Modality", "ImageType"})


def retained_public_values(ds: Dataset) -> set[str]:
    """Text of the public attributes the Basic Profile keeps and that identify no one."""
    profile = build_profile()
    return {str(v).strip() for e in _walk(ds) if e.keyword and not e.tag.is_private
            and e.VR in _TEXT_VRS and e.VR not in ("PN", "DA", "DT", "UI")
            and e.keyword not in IDENTIFYING_KEYWORDS and action_for(e, profile) == "K"
            for v in _values(e) if str(v).strip()}


def leaked_values(original: Dataset, deidentified: Dataset, min_length: int = 4) -> dict[str, str]:
    """Identifying values of ``original`` that still appear anywhere in ``deidentified``.

    A value is not counted when it is exactly the text of a kept product attribute of the
    original (MR_small's institution is 'TOSHIBA', which is also its Manufacturer)."""
    text = searchable_text(deidentified)
    tokens = set(re.split(r"[\x00\\]", text))
    shared = retained_public_values(original)
    found = identifying_values(original, min_length)
    products = {str(v).strip() for e in _walk(original) if e.keyword in NON_IDENTIFYING_KEPT
                for v in _values(e)}
    return {v: kw for v, kw in found.items() if not any(v in p for p in products)
            and (v in tokens if _is_uid_like(v) else v in text)}


def _is_uid_like(value: str) -> bool:
    """UIDs are compared as whole values: a root such as 1.2.826 is a prefix of many unrelated UIDs."""
    return bool(re.fullmatch(r"\d+(\.\d+){2,}", value))
