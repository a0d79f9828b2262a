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
* :func:`deidentify_file` never touches its input and refuses to overwrite;
  :func:`deidentify_folder` keeps a study tree's structure, pseudonymises folder names that are
  patient IDs, rewrites DICOMDIR indexes with valid offsets, and reports per-file failures while
  finishing the rest.

The modules, one concern each:

========== ====================================================================================
profile    the table as data, options, the action of one element
keys       keyed pseudonyms, UIDs, date offsets
actions    applying a profile to a dataset: :func:`deidentify`
pixels     burned-in text: detection, masking, display
files      reading (clear errors) and writing (never half-written, never overwritten) one file
dicomdir   DICOMDIR records and their byte offsets
folders    a study tree
scan       the de-identifier's own check of its output (the independent one is
           :mod:`pets_lite.leakcheck`)
measures   what remains: study linkage, date intervals, k-anonymity
syntax     transfer syntaxes: big endian to little, re-encoding masked pixels
table      Table E.1-1 itself, as data
cli        the command ``pets-lite-deid`` (``python -m pets_lite.deid``)
========== ====================================================================================
"""

from .actions import DUMMY, Context, Report, deidentify
from .dicomdir import DICOMDIR_SOP_CLASS, deidentify_dicomdir
from .files import deidentify_file, read_dicom
from .folders import FolderResult, arrange_study, deidentify_folder, dicom_files, looks_dicom
from .keys import (
    DeidError,
    date_offset,
    keyed_uid,
    new_key_file,
    pseudonym,
    read_key_file,
    shift_date,
)
from .measures import (
    QUASI_IDENTIFIERS,
    k_anonymity,
    k_anonymity_table,
    quasi_identifier_rows,
    quasi_identifiers,
    study_linkage,
)
from .pixels import (
    Box,
    box_mask,
    decoded_pixels,
    detect_text,
    display_image,
    display_planes,
    find_burned_in_text,
    find_overlay_text,
    frame_stack,
    mask_boxes,
    masking_summary,
    merge_boxes,
)
from .profile import (
    ACTIONS,
    ALLOWLIST_FALLBACK,
    BASIC_PROFILE,
    COMPOUND,
    METHOD_CODES,
    OPTIONS,
    PROFILES,
    PROJECT_ADDITIONS,
    REPEATING_GROUPS,
    SAFE_ATTRIBUTES,
    VR_FALLBACK,
    action_for,
    build_profile,
    element_values,
    is_standard_uid,
    resolve,
)
from .scan import (
    IDENTIFYING_KEYWORDS,
    NON_IDENTIFYING_KEPT,
    identifying_values,
    is_uid_like,
    leaked_values,
    retained_public_values,
    searchable_text,
)
from .syntax import RE_ENCODE, re_encode, syntax_name, to_little_endian, transfer_syntax

__all__ = [
    "ACTIONS", "ALLOWLIST_FALLBACK", "BASIC_PROFILE", "Box", "COMPOUND", "Context",
    "DICOMDIR_SOP_CLASS", "DUMMY", "DeidError", "FolderResult", "IDENTIFYING_KEYWORDS",
    "METHOD_CODES", "NON_IDENTIFYING_KEPT", "OPTIONS", "PROFILES", "PROJECT_ADDITIONS",
    "QUASI_IDENTIFIERS", "REPEATING_GROUPS", "RE_ENCODE", "Report", "SAFE_ATTRIBUTES",
    "VR_FALLBACK", "action_for", "arrange_study", "box_mask", "build_profile", "date_offset",
    "decoded_pixels", "deidentify", "deidentify_dicomdir", "deidentify_file", "deidentify_folder",
    "detect_text", "dicom_files", "display_image", "display_planes", "element_values",
    "find_burned_in_text", "find_overlay_text", "frame_stack", "identifying_values",
    "is_standard_uid", "is_uid_like", "k_anonymity", "k_anonymity_table", "keyed_uid",
    "leaked_values", "looks_dicom", "mask_boxes", "masking_summary", "merge_boxes", "new_key_file",
    "pseudonym", "quasi_identifier_rows", "quasi_identifiers", "re_encode", "read_dicom",
    "read_key_file", "resolve", "retained_public_values", "searchable_text", "shift_date",
    "study_linkage", "syntax_name", "to_little_endian", "transfer_syntax",
]
