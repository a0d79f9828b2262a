"""The confidentiality profile as data, and the action it gives one element.

The Basic Application Level Confidentiality Profile of DICOM PS3.15 Annex E is a table: for each
attribute, an action code (``D`` dummy, ``Z`` zero length, ``X`` remove, ``K`` keep, ``C`` clean,
``U`` replace UID). :data:`BASIC_PROFILE` holds that table as data; the compound codes the standard
allows (``X/Z``, ``Z/D``, ``X/Z/D``, ``X/D``, ``X/Z/U*``) are resolved by :data:`COMPOUND`; options
are override tables (:data:`OPTIONS`). :func:`build_profile` resolves it all into one
keyword -> action table and :func:`action_for` gives the action of one element.
"""

from __future__ import annotations

import pydicom
from pydicom.dataelem import DataElement
from pydicom.uid import UID_dictionary

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
    "AcquisitionDate": "X/Z", "AcquisitionDateTime": "X/D",
    "AcquisitionDeviceProcessingDescription": "X/D", "AcquisitionProtocolDescription": "X",
    "AcquisitionTime": "X/Z", "ActualHumanPerformersSequence": "X",
    "AdditionalPatientHistory": "X", "AdmissionID": "X", "AdmittingDate": "X",
    "AdmittingDiagnosesCodeSequence": "X", "AdmittingDiagnosesDescription": "X",
    "AdmittingTime": "X", "AffectedSOPInstanceUID": "X", "Allergies": "X", "Arbitrary": "X",
    "AuthorObserverSequence": "X", "BranchOfService": "X", "CassetteID": "X",
    "ConcatenationUID": "U", "ConfidentialityConstraintOnPatientDataDescription": "X",
    "ContentCreatorName": "Z", "ContentCreatorIdentificationCodeSequence": "X",
    "ContentDate": "Z/D", "ContentSequence": "X", "ContentTime": "Z/D",
    "ContextGroupExtensionCreatorUID": "U", "ContrastBolusAgent": "Z/D",
    "ContributionDateTime": "X/D", "ContributionDescription": "X", "CountryOfResidence": "X",
    "CreatorVersionUID": "U", "CurrentPatientLocation": "X", "CurveDate": "X", "CurveTime": "X",
    "CustodialOrganizationSequence": "X", "DataSetTrailingPadding": "X",
    "DerivationDescription": "X", "DetectorID": "X/D", "DeviceSerialNumber": "X/Z/D",
    "DeviceUID": "U", "DigitalSignaturesSequence": "X", "DimensionOrganizationUID": "U",
    "DischargeDiagnosisDescription": "X", "DistributionAddress": "X", "DistributionName": "X",
    "DoseReferenceUID": "U", "EthnicGroup": "X", "FailedSOPInstanceUIDList": "U",
    "FiducialUID": "U", "FillerOrderNumberImagingServiceRequest": "Z", "FrameComments": "X",
    "FrameOfReferenceUID": "U", "GantryID": "X", "GeneratorID": "X",
    "GraphicAnnotationSequence": "D", "HumanPerformerName": "X", "HumanPerformerOrganization": "X",
    "IconImageSequence": "X", "IdentifyingComments": "X", "ImageComments": "X",
    "ImagePresentationComments": "X", "ImagingServiceRequestComments": "X", "Impressions": "X",
    "InstanceCreationDate": "X/D", "InstanceCreationTime": "X/Z/D", "InstanceCreatorUID": "U",
    "InstitutionAddress": "X", "InstitutionCodeSequence": "X/Z/D", "InstitutionName": "X/Z/D",
    "InstitutionalDepartmentName": "X", "InsurancePlanIdentification": "X",
    "IntendedRecipientsOfResultsIdentificationSequence": "X",
    "InterpretationApproverSequence": "X", "InterpretationAuthor": "X",
    "InterpretationDiagnosisDescription": "X", "InterpretationIDIssuer": "X",
    "InterpretationRecorder": "X", "InterpretationText": "X", "InterpretationTranscriber": "X",
    "IrradiationEventUID": "U", "IssuerOfAdmissionID": "X", "IssuerOfPatientID": "X",
    "IssuerOfServiceEpisodeID": "X", "LargePaletteColorLookupTableUID": "U", "MAC": "X",
    "MediaStorageSOPInstanceUID": "U", "MedicalAlerts": "X", "MedicalRecordLocator": "X",
    "MilitaryRank": "X", "ModifiedAttributesSequence": "X", "ModifiedImageDescription": "X",
    "ModifyingDeviceID": "X", "ModifyingDeviceManufacturer": "X",
    "NameOfPhysiciansReadingStudy": "X", "NamesOfIntendedRecipientsOfResults": "X",
    "Occupation": "X", "OperatorIdentificationSequence": "X", "OperatorsName": "X/Z/D",
    "OriginalAttributesSequence": "X", "OrderCallbackPhoneNumber": "X", "OrderEnteredBy": "X",
    "OrderEntererLocation": "X", "OtherPatientIDs": "X", "OtherPatientIDsSequence": "X",
    "OtherPatientNames": "X", "ParticipantSequence": "X", "PatientAddress": "X", "PatientAge": "X",
    "PatientBirthDate": "Z", "PatientBirthName": "X", "PatientBirthTime": "X",
    "PatientComments": "X", "PatientID": "Z", "PatientInsurancePlanCodeSequence": "X",
    "PatientMotherBirthName": "X", "PatientName": "Z", "PatientPrimaryLanguageCodeSequence": "X",
    "PatientReligiousPreference": "X", "PatientSex": "Z", "PatientSexNeutered": "X/Z",
    "PatientSize": "X", "PatientState": "X", "PatientTelephoneNumbers": "X",
    "PatientTelecomInformation": "X", "PatientTransportArrangements": "X", "PatientWeight": "X",
    "PerformedLocation": "X", "PerformedProcedureStepDescription": "X",
    "PerformedProcedureStepEndDate": "X", "PerformedProcedureStepID": "X",
    "PerformedProcedureStepStartDate": "X", "PerformedProcedureStepStartTime": "X",
    "PerformedStationAETitle": "X", "PerformedStationGeographicLocationCodeSequence": "X",
    "PerformedStationName": "X", "PerformingPhysicianIdentificationSequence": "X",
    "PerformingPhysicianName": "X", "PersonAddress": "X", "PersonIdentificationCodeSequence": "D",
    "PersonName": "D", "PersonTelephoneNumbers": "X", "PhysicianApprovingInterpretation": "X",
    "PhysiciansOfRecord": "X", "PhysiciansOfRecordIdentificationSequence": "X",
    "PhysiciansReadingStudyIdentificationSequence": "X",
    "PlacerOrderNumberImagingServiceRequest": "Z", "PlateID": "X", "PreMedication": "X",
    "PregnancyStatus": "X", "ProtocolName": "X/D", "ReasonForTheImagingServiceRequest": "X",
    "ReasonForStudy": "X", "ReferencedDigitalSignatureSequence": "X",
    "ReferencedFrameOfReferenceUID": "U",
    "ReferencedGeneralPurposeScheduledProcedureStepTransactionUID": "U",
    "ReferencedImageSequence": "X/Z/U*", "ReferencedPatientAliasSequence": "X",
    "ReferencedPatientSequence": "X", "ReferencedPerformedProcedureStepSequence": "X/Z/D",
    "ReferencedSOPInstanceMACSequence": "X", "ReferencedSOPInstanceUID": "U",
    "ReferencedSOPInstanceUIDInFile": "U", "ReferencedStudySequence": "X/Z",
    "ReferringPhysicianAddress": "X", "ReferringPhysicianIdentificationSequence": "X",
    "ReferringPhysicianName": "Z", "ReferringPhysicianTelephoneNumbers": "X",
    "RegionOfResidence": "X", "RelatedFrameOfReferenceUID": "U", "RequestAttributesSequence": "X",
    "RequestedContrastAgent": "X", "RequestedProcedureComments": "X",
    "RequestedProcedureDescription": "X/Z", "RequestedProcedureID": "X",
    "RequestedProcedureLocation": "X", "RequestedSOPInstanceUID": "U", "RequestingPhysician": "X",
    "RequestingService": "X", "ResponsibleOrganization": "X", "ResponsiblePerson": "X",
    "ResultsComments": "X", "ResultsDistributionListSequence": "X", "ResultsIDIssuer": "X",
    "ReviewerName": "X/Z", "ScheduledHumanPerformersSequence": "X",
    "ScheduledPatientInstitutionResidence": "X",
    "ScheduledPerformingPhysicianIdentificationSequence": "X",
    "ScheduledPerformingPhysicianName": "X", "ScheduledProcedureStepDescription": "X",
    "ScheduledProcedureStepEndDate": "X", "ScheduledProcedureStepLocation": "X",
    "ScheduledProcedureStepStartDate": "X", "ScheduledStationAETitle": "X",
    "ScheduledStationGeographicLocationCodeSequence": "X", "ScheduledStationName": "X",
    "ScheduledStationNameCodeSequence": "X", "SeriesDate": "X", "SeriesDescription": "X",
    "SeriesInstanceUID": "U", "SeriesTime": "X", "ServiceEpisodeDescription": "X",
    "ServiceEpisodeID": "X", "SmokingStatus": "X", "SOPInstanceUID": "U",
    "SourceImageSequence": "X/Z/U*", "SpecialNeeds": "X", "StationName": "X/Z/D",
    "StorageMediaFileSetUID": "U", "StudyComments": "X", "StudyDate": "Z", "StudyDescription": "X",
    "StudyID": "Z", "StudyIDIssuer": "X", "StudyInstanceUID": "U", "StudyTime": "Z",
    "SynchronizationFrameOfReferenceUID": "U", "TemplateExtensionCreatorUID": "U",
    "TemplateExtensionOrganizationUID": "U", "TextComments": "X", "TextString": "X",
    "TimezoneOffsetFromUTC": "X", "TopicAuthor": "X", "TopicKeywords": "X", "TopicSubject": "X",
    "TopicTitle": "X", "TransactionUID": "U", "UID": "U",
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
    "SourceApplicationEntityTitle": ("X", "file meta: the sending station's AE title names the "
                                          "device"),
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
        "AcquisitionDeviceProcessingDescription", "DerivationDescription",
        "PerformedProcedureStepDescription", "RequestedProcedureDescription",
        "ContrastBolusAgent")},
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
                  overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The resolved keyword -> action table: Basic Profile, our additions, options, then
    overrides."""
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
        return "K" if all(is_standard_uid(v) for v in element_values(elem) if v) else "U"
    return VR_FALLBACK.get(elem.VR, "K")
