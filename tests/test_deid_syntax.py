"""Every common transfer syntax is decoded, checked for burned-in text, and written back right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import DATA_ROOT
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from pets_lite import deid, leakcheck

FILES = Path(DATA_ROOT) / "test_files"
KEY = b"unit-test-key-0123456789abcdef!!"

#: One shipped file per transfer syntax the issue names (pixels untouched: no text in them).
SYNTAXES = {
    "JPEG Baseline (Process 1)": "SC_rgb_dcmtk_+eb+cy+np.dcm",
    "JPEG Extended (Process 2 and 4)": "JPGExtended.dcm",
    "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])":
        "SC_rgb_jpeg_gdcm.dcm",
    "JPEG-LS Lossless Image Compression": "MR_small_jpeg_ls_lossless.dcm",
    "JPEG-LS Lossy (Near-Lossless) Image Compression": "JPEGLSNearLossless_16.dcm",
    "JPEG 2000 Image Compression (Lossless Only)": "MR_small_jp2klossless.dcm",
    "JPEG 2000 Image Compression": "JPEG2000.dcm",
    "RLE Lossless": "MR_small_RLE.dcm",
    "Deflated Explicit VR Little Endian": "image_dfl.dcm",
}


@pytest.mark.parametrize("syntax", sorted(SYNTAXES))
def test_each_transfer_syntax_is_decoded_checked_and_kept(tmp_path, syntax):
    src = FILES / SYNTAXES[syntax]
    original = pydicom.dcmread(src)
    assert original.file_meta.TransferSyntaxUID.name == syntax
    out = tmp_path / "out.dcm"
    report = deid.deidentify_file(src, out, KEY)
    assert report.pixels_checked and report.boxes == []
    written = pydicom.dcmread(out)
    assert written.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert report.transfer_syntax == syntax and report.syntax_note == ""
    assert np.array_equal(written.pixel_array, original.pixel_array)
    assert leakcheck.check_file(src, out).ok


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "rtdose_expb.dcm",
                                  "SC_rgb_small_odd_big_endian.dcm"])
def test_big_endian_is_written_as_explicit_little_endian_with_consistent_meta(tmp_path, name):
    src = FILES / name
    original = pydicom.dcmread(src)
    assert not original.file_meta.TransferSyntaxUID.is_little_endian
    report = deid.deidentify_file(src, tmp_path / "out.dcm", KEY)
    written = pydicom.dcmread(tmp_path / "out.dcm")
    assert written.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert "big-endian" in report.syntax_note and report.pixels_checked
    assert written.file_meta.MediaStorageSOPInstanceUID == written.SOPInstanceUID
    assert written.file_meta.MediaStorageSOPClassUID == written.SOPClassUID
    assert np.array_equal(written.pixel_array, original.pixel_array)
    assert written.Rows == original.Rows and written.BitsAllocated == original.BitsAllocated
    assert leakcheck.check_file(src, tmp_path / "out.dcm").ok


@pytest.mark.parametrize("name", ["examples_ybr_color.dcm", "examples_jpeg2k.dcm"])
def test_masked_compressed_pixels_are_re_encoded_losslessly_and_said_so(tmp_path, name):
    src = FILES / name
    original = pydicom.dcmread(src)
    report = deid.deidentify_file(src, tmp_path / "out.dcm", KEY)
    assert len(report.boxes) >= 3
    written = pydicom.dcmread(tmp_path / "out.dcm")
    assert written.file_meta.TransferSyntaxUID == RLELossless == report.transfer_syntax.replace(
        "RLE Lossless", RLELossless)
    assert "re-encoded as RLE Lossless" in report.syntax_note
    assert original.file_meta.TransferSyntaxUID.name in report.syntax_note
    summary = deid.masking_summary(original, original.pixel_array, written.pixel_array,
                                   report.boxes)
    assert summary["unchanged outside boxes"] and summary["changed inside boxes"]
    assert leakcheck.check_file(src, tmp_path / "out.dcm").ok
