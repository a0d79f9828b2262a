"""Notebook 01: de-identification of the DICOM files shipped in pydicom, results in ranges.

Every measured claim of the chapter's prose is asserted here, each with the glued name it quotes.
"""

from pets_lite import results


def test_deidentification_notebook(executed):
    r = executed("01_deidentification", timeout=300)
    # the table is the 2025 edition's, whole
    assert r["table_rows"] >= 600
    # the independent checker: many values searched, none survived, none blamed on a kept value
    assert r["n_files"] >= 40 and r["phi_checked"] > 500
    assert r["n_leaks"] == 0, "an identifying value survived de-identification"
    assert 0 <= r["n_shadowed"] < 0.05 * r["phi_checked"]
    assert 0 <= r["n_too_short"] < r["phi_checked"]
    # it catches every forgotten attribute; the de-identifier's own scanner misses free text
    assert r["n_forgotten"] == 8 and r["checker_catches"] == r["n_forgotten"]
    assert r["scanner_catches"] < r["checker_catches"]
    # burned-in text: found, masked, nothing else changed, and no file declared it
    assert r["palette_boxes"] >= 10 and r["rgb_boxes"] >= 5 and r["overlay_text_rows"] >= 1
    assert r["pixels_unchanged_outside"] is True and r["pixels_changed_inside"] is True
    assert r["text_images"] == 2 and r["text_images_declared"] == 0
    # linkage and intervals survive; another key shares nothing
    assert r["linkage_kept"] is True and r["intervals_kept"] is True and r["interval_pairs"] >= 1
    assert r["same_key_identical"] is True and r["other_key_common"] == 0
    # k-anonymity: modality alone already singles out; the retain options make it worse
    assert r["k_modality"] == 1 and r["k_target"] == 2
    assert r["k_retained_all"] <= r["k_basic_all"]
    assert r["k_patients"] >= r["unique_retained"] > r["unique_basic"] >= 1
    small = r["small_groups_retained"]
    assert small == sorted(small) and small[-1] > small[0] and small[-1] == r["unique_retained"]
    # profiles: the strict check flags what Basic keeps unnamed, and nothing of the allow-list
    assert r["strict_flags_basic"] >= 4 and r["strict_flags_allowlist"] == 0
    assert {"ContentDescription", "UnformattedTextValue", "CompletionFlagDescription",
            "BeamName"} <= set(r["strict_flagged_names"])
    assert r["clean_descriptor_passes"] is True and r["clean_descriptor_kept"] is True
    # the command on a study folder: one non-DICOM file refused, so exit status 1
    assert r["cli_status"] == 1 and r["cli_failed"] == 1 and r["cli_ok"] == 11
    assert r["cli_reencoded"] == 2 and r["cli_key_private"] is True
    # cost, per file, and the book-table row
    assert 0 < r["folder_seconds"] < 60
    assert 0 < r["seconds_per_file"] < 2
    (row,) = results.chapter_rows(r, "01")
    assert row.key == "deid" and row.family == "data-stage protection" and row.per == "file"
    assert abs(row.seconds - r["seconds_per_file"]) < 1e-9
