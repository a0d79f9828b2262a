"""Notebook 01: de-identification of the DICOM files shipped in pydicom, results in ranges."""


def test_deidentification_notebook(executed):
    r = executed("01_deidentification", timeout=300)
    assert r["n_files"] >= 40 and r["phi_checked"] > 500
    assert r["n_leaks"] == 0, "an identifying value survived de-identification"
    assert r["scanner_catches"] == 4, "the leak scanner must catch every attribute left in place"
    assert r["palette_boxes"] >= 10 and r["rgb_boxes"] >= 5 and r["overlay_text_rows"] >= 1
    assert r["pixels_unchanged_outside"] is True
    assert r["linkage_kept"] is True and r["intervals_kept"] is True and r["interval_pairs"] >= 1
    assert r["same_key_identical"] is True and r["other_key_common"] == 0
    assert r["k_retained_all"] <= r["k_basic_all"]
    assert r["unique_retained"] >= r["unique_basic"] >= 1
    assert 0 < r["folder_seconds"] < 60
