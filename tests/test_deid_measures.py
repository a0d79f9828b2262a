"""pets_lite.deid.measures and the display helpers of pets_lite.deid.pixels (chapter 01)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import DATA_ROOT

from pets_lite import deid

FILES = Path(DATA_ROOT) / "test_files"
TREE = FILES / "dicomdirtests"
KEY = b"unit-test-key-0123456789abcdef!!"


def test_k_anonymity_counts_groups_and_only_grows_when_a_column_is_dropped():
    rows = [{"sex": "F", "age": "040Y"}, {"sex": "F", "age": "040Y"}, {"sex": "F", "age": "061Y"},
            {"sex": "M", "age": "040Y"}]
    both = deid.k_anonymity(rows, ["sex", "age"], k_target=2)
    assert both == {"records": 4, "k": 1, "in_small_groups": 2, "groups": 3}
    sex = deid.k_anonymity(rows, ["sex"], k_target=2)
    assert sex["k"] == 1 and sex["in_small_groups"] == 1
    assert deid.k_anonymity(rows, ["age"], k_target=2)["k"] == 1
    assert deid.k_anonymity(rows[:2], ["sex", "age"], k_target=2)["k"] == 2
    with pytest.raises(ValueError, match="empty"):
        deid.k_anonymity([], ["sex"])


def test_retain_options_lower_k_on_the_shipped_files():
    files = sorted(FILES.glob("*.dcm"))
    profiles = {"basic": {}, "retain": {"retain_patient_characteristics": True,
                                        "retain_device_identity": True}}
    cols = [["modality"], list(deid.QUASI_IDENTIFIERS)]
    table = deid.k_anonymity_table(files, KEY, profiles, cols, k_target=2)
    assert [(r["profile"], r["quasi-identifiers"]) for r in table] == [
        ("basic", "modality"), ("basic", "+".join(deid.QUASI_IDENTIFIERS)),
        ("retain", "modality"), ("retain", "+".join(deid.QUASI_IDENTIFIERS))]
    basic_all, retain_all = table[1], table[3]
    assert basic_all["patients"] == retain_all["patients"] >= 15
    assert retain_all["k"] <= basic_all["k"]
    small = "patients in groups < 2"
    assert retain_all[small] > basic_all[small] >= 1
    # under the Basic Profile age is removed and sex blanked: no row carries them
    rows = deid.quasi_identifier_rows(files, KEY)
    assert {r["age"] for r in rows.values()} == {"-"}
    kept = deid.quasi_identifier_rows(files, KEY, retain_patient_characteristics=True)
    assert len({r["age"] for r in kept.values()}) > 3


def _tree_pairs(key):
    pairs = []
    for path in deid.dicom_files(TREE):
        if (deid.looks_dicom(path) and path.name != "DICOMDIR" and "TINY" not in str(path)
                and path.parent != TREE):
            ds = deid.read_dicom(path, stop_before_pixels=True)
            out, _ = deid.deidentify(ds, key, shift_dates=True, burned_in="skip")
            pairs.append((ds, out))
    return pairs


def test_study_linkage_is_kept_and_a_broken_linkage_is_seen():
    pairs = _tree_pairs(KEY)
    rows, summary = deid.study_linkage(pairs)
    assert summary == {"grouping_preserved": True, "interval_pairs": summary["interval_pairs"],
                       "intervals_kept": True}
    assert summary["interval_pairs"] >= 1
    assert len({r["pseudonym"] for r in rows}) == len({r["patient"] for r in rows}) == 2
    # two studies merged into one UID: the grouping is no longer one-to-one
    merged = [(o, copy.deepcopy(d)) for o, d in pairs]
    uids = sorted({str(d.StudyInstanceUID) for _, d in merged})
    for _, d in merged:
        if d.StudyInstanceUID == uids[1]:
            d.StudyInstanceUID = uids[0]
    assert deid.study_linkage(merged)[1]["grouping_preserved"] is False
    # one study shifted by a different offset than the patient's other studies
    moved = [(o, copy.deepcopy(d)) for o, d in pairs]
    first = str(moved[0][0].StudyInstanceUID)
    for o, d in moved:
        if str(o.StudyInstanceUID) == first:
            d.StudyDate = deid.shift_date(d.StudyDate, -1)
    assert deid.study_linkage(moved)[1]["intervals_kept"] is False


def test_masking_summary_and_display_image():
    ds = pydicom.dcmread(FILES / "examples_palette.dcm")
    out, rep = deid.deidentify(ds, KEY)
    summary = deid.masking_summary(ds, ds.pixel_array, out.pixel_array, rep.boxes)
    assert summary["boxes"] == len(rep.boxes) >= 10
    assert summary["unchanged outside boxes"] and summary["changed inside boxes"]
    assert 0 < summary["masked fraction"] < 0.2
    # a pixel changed outside every box is seen
    after = out.pixel_array.copy()
    outside = ~deid.box_mask(after.shape[:2], rep.boxes)
    r, c = np.argwhere(outside)[len(np.argwhere(outside)) // 2]
    after[r, c] = after[r, c] + 1
    assert not deid.masking_summary(ds, ds.pixel_array, after, rep.boxes)["unchanged outside boxes"]
    with pytest.raises(ValueError, match="shape"):
        deid.masking_summary(ds, ds.pixel_array, after[:10], rep.boxes)
    img = deid.display_image(ds)
    assert img.shape == ds.pixel_array.shape + (3,) and 0 <= img.min() and img.max() <= 1
    ct = pydicom.dcmread(FILES / "CT_small.dcm")
    assert deid.display_image(ct).shape == ct.pixel_array.shape
    assert deid.frame_stack(ct, ct.pixel_array).shape == (1,) + ct.pixel_array.shape


def test_arrange_study_sorts_files_into_patient_study_series(tmp_path):
    names = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtdose.dcm", "no_meta.dcm")
    copies = deid.arrange_study([FILES / n for n in names], tmp_path / "tree")
    rel = sorted(str(c.relative_to(tmp_path / "tree")) for c in copies)
    assert "unsorted/no_meta.dcm" in rel and len(rel) == len(names)
    for c in copies:
        if c.parent.name != "unsorted":
            ds = pydicom.dcmread(c, stop_before_pixels=True)
            assert c.parents[2].name == str(ds.PatientID)
            assert c.parent.name.startswith("series-") and c.parent.name.endswith(ds.Modality)
            assert c.read_bytes() == (FILES / c.name).read_bytes()
    with pytest.raises(deid.DeidError, match="already exists"):
        deid.arrange_study([FILES / "CT_small.dcm"], tmp_path / "tree")
