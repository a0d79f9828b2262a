"""pets_lite.deid on the real DICOM files that ship inside pydicom (no download, ever)."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import DATA_ROOT

from pets_lite import deid, leakcheck

FILES = Path(DATA_ROOT) / "test_files"
TREE = FILES / "dicomdirtests"
KEY = b"unit-test-key-0123456789abcdef!!"
OTHER = b"another-key-fedcba9876543210????"
UID_RE = re.compile(r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))+$")

# Files that must fail closed, each for a reason a person can act on: exactly these.
EXPECTED_FAILURES = {
    "no_meta.dcm": "not a DICOM file",            # no preamble and no recognisable dataset
    "MR_truncated.dcm": "truncated",
    "rtplan_truncated.dcm": "truncated",
    "badVR.dcm": "cannot decode pixel data",
    "meta_missing_tsyntax.dcm": "cannot decode pixel data",
    "nested_priv_SQ.dcm": "cannot decode pixel data",
    # neither pylibjpeg nor GDCM 3.2.6 decodes these two
    "JPEG-lossy.dcm": "cannot decode pixel data (transfer syntax JPEG Extended",
    "JPEG2000-embedded-sequence-delimiter.dcm":
        "cannot decode pixel data (transfer syntax JPEG 2000",
}


@pytest.fixture(scope="session")
def shipped(tmp_path_factory):
    """Every file under pydicom's test_files, de-identified once (dates shifted, pixels masked)."""
    out = tmp_path_factory.mktemp("deid") / "all"
    result = deid.deidentify_folder(FILES, out, KEY, shift_dates=True)
    return result


def _read(path):
    return pydicom.dcmread(path, force=True)


def test_every_shipped_file_is_handled(shipped):
    assert len(shipped.reports) >= 150, "most shipped DICOM files must de-identify"
    assert "README.txt" in " ".join(shipped.skipped)
    assert sorted(Path(src).name for src in shipped.failures) == sorted(EXPECTED_FAILURES)
    for src, msg in shipped.failures.items():
        name = Path(src).name
        assert src in msg, f"error must name the file: {msg}"
        assert EXPECTED_FAILURES[name] in msg, f"{name}: unexpected failure {msg}"
    for name in ("examples_palette.dcm", "examples_rgb_color.dcm", "examples_overlay.dcm",
                 "CT_small.dcm", "rtstruct.dcm", "waveform_ecg.dcm", "DICOMDIR", "priv_SQ.dcm",
                 "UN_sequence.dcm"):
        assert any(Path(r.source).name == name for r in shipped.reports), name


def test_no_identifying_value_survives_anywhere(shipped):
    """The heart of it: names, IDs, dates, places, devices, UIDs, in sequences and private tags."""
    checked = 0
    for r in shipped.reports:
        original, out = _read(r.source), pydicom.dcmread(r.output)     # outputs open in pydicom
        values = deid.identifying_values(original)
        checked += len(values)
        assert deid.leaked_values(original, out) == {}, r.source
        assert out.PatientIdentityRemoved == "YES"
        assert not any(e.tag.is_private for e in out.iterall()), r.source
    assert checked > 1000


def test_the_independent_checker_finds_no_leak_in_any_shipped_output(shipped):
    """pets_lite.leakcheck (which shares nothing with deid) over every output, dates shifted."""
    reports = leakcheck.check_pairs([(r.source, r.output) for r in shipped.reports],
                                    leakcheck.Retention(frozenset("m")))
    totals = leakcheck.summary(reports)
    assert totals["leaks"] == 0, [(r.source, r.leaks) for r in reports if r.leaks]
    assert totals["values checked"] > 2500 and totals["files"] >= 140


def test_scanner_catches_a_value_when_one_attribute_is_not_deidentified():
    ds = _read(FILES / "CT_small.dcm")
    out, _ = deid.deidentify(ds, KEY, overrides={"InstitutionName": "K"})
    assert deid.leaked_values(ds, out) == {"JFK IMAGING CENTER": "InstitutionName"}
    out, _ = deid.deidentify(ds, KEY, overrides={"PatientID": "K"})
    assert str(ds.PatientID) in deid.leaked_values(ds, out)
    # a private tag kept on purpose is found as well
    priv = _read(FILES / "priv_SQ.dcm")
    creators = {(str(e.value), 0x01) for e in priv.iterall() if e.tag.is_private_creator}
    out, _ = deid.deidentify(priv, KEY, keep_private=creators, burned_in="skip")
    assert any(e.tag.is_private for e in out.iterall())


def test_uids_are_valid_consistent_and_keyed(shipped):
    ds = _read(FILES / "CT_small.dcm")
    a, _ = deid.deidentify(ds, KEY)
    b, _ = deid.deidentify(ds, KEY)
    c, _ = deid.deidentify(ds, OTHER)
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        assert a[kw].value == b[kw].value != c[kw].value
        value = a[kw].value
        assert value.startswith("2.25.") and len(value) <= 64 and UID_RE.match(value)
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID
    assert a.PatientID == b.PatientID != c.PatientID
    assert a.PatientID == deid.pseudonym(ds.PatientID, KEY)      # re-linkable by the key holder


def test_same_key_same_outputs_other_key_none_in_common(tmp_path):
    runs = {}
    for name, key in (("a1", KEY), ("a2", KEY), ("b", OTHER)):
        res = deid.deidentify_folder(TREE / "98892003", tmp_path / name, key, burned_in="skip")
        assert not res.failures
        values = set()
        for r in res.reports:
            d = pydicom.dcmread(r.output)
            values |= {str(e.value) for e in d.iterall()
                       if e.VR == "UI" and str(e.value).startswith("2.25.")}
            values.add(str(d.PatientID))
        runs[name] = values
    assert runs["a1"] == runs["a2"] and len(runs["a1"]) > 20
    assert runs["a1"].isdisjoint(runs["b"])


def test_study_structure_and_date_intervals_survive(shipped):
    by_src = {Path(r.source): r for r in shipped.reports}
    pairs = [(_read(src), pydicom.dcmread(r.output)) for src, r in by_src.items()
             if TREE in src.parents and "TINY" not in str(src) and src.parent != TREE]
    assert len(pairs) == 31
    # the grouping by patient / study / series is the same before and after
    for kw in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID"):
        before = {}
        for o, d in pairs:
            before.setdefault(str(o[kw].value), set()).add(str(d[kw].value))
        assert all(len(v) == 1 for v in before.values()), kw
        assert len({next(iter(v)) for v in before.values()}) == len(before), kw
    # every date of a patient moves by the same offset; intervals are kept
    for o, d in pairs:
        if o.get("StudyDate") and o.get("ContentDate"):
            shift = deid.date_offset(str(o.PatientID), KEY)
            assert d.StudyDate == deid.shift_date(o.StudyDate, shift)
            assert d.ContentDate == deid.shift_date(o.ContentDate, shift)
            assert d.LongitudinalTemporalInformationModified == "MODIFIED"
    # folders named after a patient ID carry the pseudonym instead
    first = shipped.reports[0]
    out_root = Path(first.output).parents[len(Path(first.source).relative_to(FILES).parts) - 1]
    names = {p.name for p in (out_root / "dicomdirtests").iterdir()}
    assert "77654033" not in names and deid.pseudonym("77654033", KEY) in names


def test_dicomdir_offsets_stay_valid(shipped):
    from pydicom.fileset import FileSet

    r = next(r for r in shipped.reports if Path(r.source) == TREE / "DICOMDIR")
    fs_in, fs_out = FileSet(_read(r.source)), FileSet(pydicom.dcmread(r.output))
    assert len(fs_out) == len(fs_in) > 0
    assert {i.PatientID for i in fs_out} == {deid.pseudonym(i.PatientID, KEY) for i in fs_in}
    out_files = {Path(i.path).name for i in fs_out}
    assert out_files == {Path(i.path).name for i in fs_in}
    assert all(Path(i.path).exists() for i in fs_out)      # records point at de-identified files


def test_burned_in_text_is_found_masked_and_nothing_else_changes(shipped):
    by_name = {Path(r.source).name: r for r in shipped.reports}
    for name, at_least in (("examples_palette.dcm", 10), ("examples_rgb_color.dcm", 5)):
        r = by_name[name]
        assert len(r.boxes) >= at_least, name
        before = _read(r.source).pixel_array
        after = pydicom.dcmread(r.output).pixel_array
        inside = np.zeros(before.shape[:2], bool)
        for b in r.boxes:
            inside[b.top:b.bottom, b.left:b.right] = True
        assert np.array_equal(before[~inside], after[~inside]), name
        assert not np.array_equal(before[inside], after[inside]), name
        codes = pydicom.dcmread(r.output).DeidentificationMethodCodeSequence
        assert any(c.CodeValue == "113101" for c in codes)
    # the header band of the palette ultrasound (ID and date): its bright text pixels are covered
    ds = _read(FILES / "examples_palette.dcm")
    lum, _ = deid.display_planes(ds, ds.pixel_array)
    covered = np.zeros(lum.shape, bool)
    for b in by_name["examples_palette.dcm"].boxes:
        covered[b.top:b.bottom, b.left:b.right] = True
    text = lum[:56] > 0.6
    assert covered[:56][text].mean() > 0.9
    # the overlay's graphics text is reported, and the overlay data is removed (Table E.1-1)
    ov = by_name["examples_overlay.dcm"]
    assert ov.overlay_boxes and not ov.boxes
    assert (0x6000, 0x3000) not in pydicom.dcmread(ov.output)
    # no false alarm on plain CT / MR
    for name in ("CT_small.dcm", "MR_small.dcm", "rtdose.dcm"):
        assert by_name[name].boxes == [], name


def test_input_is_never_modified_and_never_overwritten(tmp_path):
    src = tmp_path / "in.dcm"
    shutil.copy(FILES / "CT_small.dcm", src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    dst = tmp_path / "out.dcm"
    deid.deidentify_file(src, dst, KEY)
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest
    first = dst.read_bytes()
    with pytest.raises(deid.DeidError, match="refusing to overwrite"):
        deid.deidentify_file(src, dst, KEY)
    assert dst.read_bytes() == first
    with pytest.raises(deid.DeidError, match="already exists|equals input"):
        deid.deidentify_file(src, src, KEY)
    assert not list(tmp_path.glob(".deid-*")), "no temporary file left behind"


def test_bad_inputs_give_clear_errors(tmp_path):
    text = tmp_path / "notes.dcm"
    text.write_text("this is not a DICOM file\n" * 20)
    with pytest.raises(deid.DeidError, match=r"notes\.dcm: not a DICOM file"):
        deid.deidentify_file(text, tmp_path / "o1.dcm", KEY)
    with pytest.raises(deid.DeidError, match=r"MR_truncated\.dcm: truncated"):
        deid.deidentify_file(FILES / "MR_truncated.dcm", tmp_path / "o2.dcm", KEY)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes((FILES / "CT_small.dcm").read_bytes()[:700])
    with pytest.raises(deid.DeidError, match=r"cut\.dcm: .*truncated"):
        deid.deidentify_file(cut, tmp_path / "o3.dcm", KEY)
    with pytest.raises(deid.DeidError, match=r"rtplan\.dcm: has no Pixel Data"):
        deid.find_burned_in_text(_read(FILES / "rtplan.dcm"), source=str(FILES / "rtplan.dcm"))
    with pytest.raises(deid.DeidError, match=r"JPEG-lossy\.dcm: cannot decode.*JPEG Extended"):
        deid.deidentify_file(FILES / "JPEG-lossy.dcm", tmp_path / "o4.dcm", KEY)
    assert not (tmp_path / "o4.dcm").exists(), "a refused file is never half-written"
    # skipping the pixel check is an explicit choice, then the header is still de-identified
    r = deid.deidentify_file(FILES / "JPEG-lossy.dcm", tmp_path / "o5.dcm", KEY,
                             burned_in="skip")
    assert r.boxes == [] and Path(r.output).exists()
    with pytest.raises(ValueError, match="at least 16 bytes"):
        deid.deidentify(_read(FILES / "CT_small.dcm"), b"short")
    with pytest.raises(ValueError, match="not a DICOM keyword"):
        deid.build_profile(overrides={"InstitutionNam": "K"})
    with pytest.raises(ValueError, match="unknown action code"):
        deid.build_profile(overrides={"InstitutionName": "Q"})
    with pytest.raises(ValueError, match="burned_in"):
        deid.deidentify(_read(FILES / "CT_small.dcm"), KEY, burned_in="blur")
    with pytest.raises(deid.DeidError, match="no such file"):
        deid.read_dicom(tmp_path / "missing.dcm")


def test_folder_reports_failures_and_finishes_the_rest(tmp_path):
    src = tmp_path / "study"
    src.mkdir()
    shutil.copy(FILES / "CT_small.dcm", src / "a.dcm")
    shutil.copy(FILES / "MR_truncated.dcm", src / "b.dcm")
    (src / "c.dcm").write_text("garbage " * 50)
    shutil.copy(FILES / "MR_small.dcm", src / "d.dcm")
    res = deid.deidentify_folder(src, tmp_path / "out", KEY)
    assert sorted(Path(r.output).name for r in res.reports) == ["a.dcm", "d.dcm"]
    assert sorted(Path(p).name for p in res.failures) == ["b.dcm", "c.dcm"]
    assert all(p in m for p, m in res.failures.items())
    with pytest.raises(deid.DeidError, match="already exists"):
        deid.deidentify_folder(src, tmp_path / "out", KEY)
    with pytest.raises(deid.DeidError, match="inside the input folder"):
        deid.deidentify_folder(src, src / "x", KEY)
    with pytest.raises(deid.DeidError, match="not a folder"):
        deid.deidentify_folder(src / "a.dcm", tmp_path / "o", KEY)


def test_profile_is_a_table_and_options_change_it():
    assert len(deid.BASIC_PROFILE) > 200
    assert all(deid.resolve(code) in deid.ACTIONS for code in deid.BASIC_PROFILE.values())
    base = deid.build_profile()
    kept = deid.build_profile(retain_patient_characteristics=True, retain_device_identity=True)
    assert base["PatientAge"] == "X" and kept["PatientAge"] == "K"
    assert base["StationName"] == "Z" and kept["StationName"] == "K"
    assert deid.build_profile(clean_descriptors=True)["StudyDescription"] == "C"
    assert deid.shift_date("20000301", -1) == "20000229"
    assert deid.date_offset("x", KEY) == deid.date_offset("x", KEY) <= -365


def test_pseudonymised_descriptor_cleaning_and_characteristics():
    ds = _read(FILES / "CT_small.dcm")
    out, rep = deid.deidentify(ds, KEY, retain_patient_characteristics=True, clean_descriptors=True,
                               shift_dates=True)
    assert out.PatientSex == ds.PatientSex
    codes = {c.CodeValue for c in out.DeidentificationMethodCodeSequence}
    assert {"113100", "113107", "113108", "113105"} <= codes
    assert rep.phi_values_changed >= 10 and rep.date_offset_days <= -365
    assert deid.leaked_values(ds, out) == {}
