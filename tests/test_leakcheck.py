"""pets_lite.leakcheck: the independent leak checker, and the de-identifier measured by it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pydicom
import pytest
from pydicom.data import DATA_ROOT
from pydicom.datadict import dictionary_VR, keyword_dict, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement

from pets_lite import deid, leakcheck

FILES = Path(DATA_ROOT) / "test_files"
KEY = b"unit-test-key-0123456789abcdef!!"
SOURCE = Path(leakcheck.__file__)
#: Files with names, dates, UIDs, private tags, sequences, clinical-trial and RT attributes.
EXAMPLES = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtstruct.dcm", "waveform_ecg.dcm",
            "priv_SQ.dcm", "liver_1frame.dcm", "test-SR.dcm", "examples_palette.dcm")
#: A valid value of each VR whose form matters to the profile.
SAMPLE = {"DA": "20000101", "DT": "20000101120000", "TM": "120000", "UI": "1.2.3.4"}
#: The de-identifier's options and the Annex E retain options they correspond to.
LETTERS = {"shift_dates": "m", "retain_patient_characteristics": "p",
           "retain_device_identity": "d", "retain_institution_identity": "i",
           "clean_descriptors": "c"}


def retention(**options) -> leakcheck.Retention:
    return leakcheck.Retention(frozenset(LETTERS[k] for k, on in options.items() if on))


def deidentify_to(tmp_path, name, **options):
    src = FILES / name
    out = tmp_path / f"{len(list(tmp_path.iterdir()))}-{name}"
    deid.deidentify_file(src, out, KEY, **options)
    return leakcheck.check_file(src, out, retention(**{k: v for k, v in options.items()
                                                       if k in LETTERS}))


def test_it_shares_no_code_and_no_vocabulary_with_the_deidentifier():
    tree = ast.parse(SOURCE.read_text())
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any("deid" in m for m in imported), imported
    words = set(re.findall(r"\b[A-Z][A-Za-z]{5,}\b", SOURCE.read_text()))
    keywords = words & set(keyword_dict)
    assert not keywords, f"the checker names attributes by tag, never by keyword: {keywords}"


@pytest.mark.parametrize("options", [{}, {"shift_dates": True},
                                     {"retain_patient_characteristics": True,
                                      "retain_device_identity": True,
                                      "clean_descriptors": True}])
def test_no_value_that_had_to_go_survives_in_the_examples(tmp_path, options):
    checked = 0
    for name in EXAMPLES:
        report = deidentify_to(tmp_path, name, **options)
        assert report.leaks == [], (name, report.leaks)
        checked += report.checked
    assert checked > 250


def _history_ct():
    ds = pydicom.dcmread(FILES / "CT_small.dcm")
    ds.PatientBirthDate = "19610402"
    ds.AdditionalPatientHistory = "Seen by Dr Okonkwo at St Elsewhere after a fall in Harlow"
    ds.PatientComments = "Prefers to be called Jo"
    block = ds.private_block(0x0099, "HOSPITAL RIS", create=True)
    block.add_new(0x01, "LO", "RIS-ORDER-7731-QX")
    return ds


#: Attributes a de-identifier might forget (kept with the K action), each a different kind.
FORGOTTEN = ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "StudyInstanceUID",
             "InstitutionName", "AdditionalPatientHistory", "PatientComments")


def test_it_catches_every_attribute_the_deidentifier_forgets(tmp_path):
    ds = _history_ct()
    src = tmp_path / "ct.dcm"
    ds.save_as(src)
    caught, scanner = {}, {}
    for i, kw in enumerate(FORGOTTEN):
        out, _ = deid.deidentify(ds, KEY, overrides={kw: "K"})
        path = tmp_path / f"out{i}.dcm"
        out.save_as(path)
        report = leakcheck.check_file(src, path)
        tag = f"({tag_for_keyword(kw) >> 16:04X},{tag_for_keyword(kw) & 0xFFFF:04X})"
        caught[kw] = any(f.where.endswith(tag) for f in report.leaks)
        scanner[kw] = bool(deid.leaked_values(ds, out))
    assert all(caught.values()), caught
    # the de-identifier's own scanner shares its vocabulary, and misses free text it was not told
    assert not scanner["AdditionalPatientHistory"] and not scanner["PatientComments"]
    # a private element kept on purpose is caught, and allowed when the checker is told so
    out, _ = deid.deidentify(ds, KEY, keep_private={("HOSPITAL RIS", 0x01)})
    out.save_as(tmp_path / "priv.dcm")
    report = leakcheck.check_file(src, tmp_path / "priv.dcm")
    assert any("(0099,1001)" in f.where and "RIS-ORDER" in f.value for f in report.leaks)
    allowed = leakcheck.Retention(keep_private=frozenset({("HOSPITAL RIS", 0x01)}))
    assert leakcheck.check_file(src, tmp_path / "priv.dcm", allowed).ok


def test_the_deidentifiers_profile_is_not_broader_than_the_standard_allows():
    """Every attribute Table E.1-1 lists (as the checker writes it down), under every option:
    where the checker says its value must go, the de-identifier must not keep or clean it."""
    problems = []
    for options in ({}, {"retain_patient_characteristics": True},
                    {"retain_device_identity": True}, {"retain_institution_identity": True},
                    {"clean_descriptors": True}):
        profile = deid.build_profile(**options)
        policy = retention(**options)
        for tag, letters in leakcheck.LISTED.items():
            kw = keyword_for_tag(tag)
            vr = dictionary_VR(tag)
            if vr not in leakcheck.IDENTITY_VRS:
                continue
            action = deid.action_for(DataElement(tag, vr, SAMPLE.get(vr, "X")), profile)
            if action in ("K", "C") and not policy.retains(tag, vr, b"1.2.3.4"):
                problems.append(f"{kw} ({letters or '-'}) is {action} with {options}")
        # and nothing the de-identifier keeps by name is outside what the checker allows
        for kw, action in profile.items():
            tag = tag_for_keyword(kw)
            vr = dictionary_VR(tag)
            if action == "K" and vr in leakcheck.IDENTITY_VRS and not policy.retains(
                    tag, vr, b"x"):
                problems.append(f"{kw} kept by name with {options}")
    assert not problems, "\n".join(problems)


def test_retention_rules():
    basic = leakcheck.Retention()
    name, date, time_, study_uid = 0x00100010, 0x00080020, 0x00080030, 0x0020000D
    assert not basic.retains(name, "PN") and not basic.retains(date, "DA")
    assert not basic.retains(study_uid, "UI", b"1.2.826.0.1.3680043.2.1125.1")
    assert basic.retains(0x00080016, "UI", b"1.2.840.10008.5.1.4.1.1.2")    # SOP class
    modified = leakcheck.Retention(frozenset("m"))
    assert modified.retains(time_, "TM") and not modified.retains(date, "DA")
    assert leakcheck.Retention(frozenset("f")).retains(date, "DA")
    age = 0x00101010
    assert leakcheck.Retention(frozenset("p")).retains(age, "AS")
    unlisted_text, unlisted_date = 0x00181030 + 0x10000000, 0x00181200    # a made-up, CalDate
    assert basic.retains(unlisted_text, "LO") and not basic.retains(unlisted_date, "DA")
    strict = leakcheck.Retention(mode="strict")
    assert not strict.retains(unlisted_text, "LO") and strict.retains(0x00080070, "LO")
    kept = leakcheck.Retention(keep_private=frozenset({("ACME 1.1", 0x10)}))
    assert kept.retains(0x00091010, "LO", b"x", creator="ACME 1.1")
    assert not kept.retains(0x00091011, "LO", b"x", creator="ACME 1.1")
    assert kept.retains(0x00090010, "LO", b"ACME 1.1 ") and not basic.retains(0x00090010, "LO",
                                                                               b"ACME 1.1")
    with pytest.raises(ValueError, match="retain options"):
        leakcheck.Retention(frozenset("z"))
    with pytest.raises(ValueError, match="mode"):
        leakcheck.Retention(mode="lenient")


def test_needles_and_uid_boundaries():
    assert leakcheck.needles("PN", b"Doe^Jane") == ([b"Doe^Jane", b"Jane"], 1)
    assert leakcheck.needles("LO", b"ABC\\LONGER ") == ([b"LONGER"], 1)
    assert leakcheck.needles("DA", b"00000000") == ([], 1)
    assert leakcheck.needles("FL", b"\x00\x00\x80?") == ([], 0)
    assert leakcheck.needles("OB", b"\x01\x02SMITH^JOHN\x00\x03") == ([b"SMITH^JOHN"], 0)
    assert leakcheck.needles("UI", b"1.2.3.4\x00") == ([b"1.2.3.4"], 0)
    from pets_lite.leakcheck import _occurs  # noqa: PLC2701 - white-box test of its own module
    hay = b"\x00\x001.2.3.45\x00 1.2.3.4\x00"
    assert _occurs(b"1.2.3.4", hay, "UI") == hay.index(b" 1.2.3.4") + 1
    assert _occurs(b"1.2.3.4", b"x1.2.3.45", "UI") is None


def test_pixels_are_not_searched_and_deflated_files_are_inflated(tmp_path):
    ds = pydicom.dcmread(FILES / "CT_small.dcm")
    body = leakcheck.output_bytes(FILES / "CT_small.dcm")
    assert len(body) == (FILES / "CT_small.dcm").stat().st_size
    assert ds.PixelData not in body and body.count(b"\x00" * len(ds.PixelData)) == 1
    deflated = FILES / "image_dfl.dcm"
    plain = leakcheck.output_bytes(deflated)
    name = str(pydicom.dcmread(deflated).PatientName).encode()
    assert name not in deflated.read_bytes() and name in plain


def test_datasets_never_saved_can_be_checked_and_a_kept_birth_date_is_caught():
    """Exercise 1 of chapter 01: the ECG's birth date, kept, is reported."""
    ecg = pydicom.dcmread(FILES / "waveform_ecg.dcm")
    out, _ = deid.deidentify(ecg, KEY, overrides={"PatientBirthDate": "K"})
    report = leakcheck.check_datasets(ecg, out)
    assert [f.value for f in report.leaks] == [str(ecg.PatientBirthDate)]
    assert report.leaks[0].where == "(0010,0030)" and report.source == "<bytes>"
    clean, _ = deid.deidentify(ecg, KEY)
    assert leakcheck.check_datasets(ecg, clean).ok


def test_the_allowlist_profile_passes_the_strict_check_the_basic_profile_does_not(tmp_path):
    strict = leakcheck.Retention(mode="strict")
    flagged = 0
    for name in EXAMPLES:
        src = FILES / name
        allow = tmp_path / f"allow-{name}"
        deid.deidentify_file(src, allow, KEY, profile_name="allowlist")
        assert leakcheck.check_file(src, allow, strict).leaks == [], name
        basic = tmp_path / f"basic-{name}"
        deid.deidentify_file(src, basic, KEY)
        flagged += len(leakcheck.check_file(src, basic, strict).leaks)
        assert leakcheck.check_file(src, basic).ok, name          # Annex E's own reading
    assert flagged >= 3, "the Basic Profile keeps free text the table does not name"
    # and what the allow-list keeps by name, the strict checker allows
    for kw in deid.SAFE_ATTRIBUTES:
        tag = tag_for_keyword(kw)
        assert strict.retains(tag, dictionary_VR(tag), b"x"), kw


def test_clean_descriptors_drops_names_ids_places_and_dates_and_keeps_the_rest(tmp_path):
    ct = pydicom.dcmread(FILES / "CT_small.dcm")
    ct.StudyDescription = (f"CT HEAD {ct.InstitutionName} 19/01/2004 pt CompressedSamples "
                           f"{ct.PatientID} follow-up")
    src = tmp_path / "ct.dcm"
    ct.save_as(src)
    out, _ = deid.deidentify(ct, KEY, clean_descriptors=True)
    text = str(out.StudyDescription)
    assert text.startswith("CT HEAD") and text.endswith("follow-up") and "[date]" in text
    for gone in (str(ct.InstitutionName), "19/01/2004", "CompressedSamples", str(ct.PatientID)):
        assert gone not in text, gone
    assert deid.pseudonym(ct.PatientID, KEY) in text            # the ID, pseudonymised
    assert leakcheck.check_datasets(ct, out, leakcheck.Retention(frozenset("c"))).ok
    plain, _ = deid.deidentify(ct, KEY)
    assert "StudyDescription" not in plain                     # the Basic Profile removes it
