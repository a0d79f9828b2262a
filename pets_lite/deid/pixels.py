"""Burned-in text: find text-like glyph rows in the pixels (and overlay planes), mask them.

The header is not the only place a name hides: ultrasound and secondary captures carry the
patient ID, the date and the hospital rendered into the image. :func:`detect_text` finds rows of
rendered glyphs in a luminance image, :func:`find_burned_in_text` runs it over a file's frames,
:func:`mask_boxes` fills each box with the median of its border. Pixels that cannot be decoded
raise :class:`~pets_lite.deid.keys.DeidError`: a file nobody could inspect is never released.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from .keys import DeidError


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
    strokes are flat, anatomy ridges are graded) are glyphs; (3) glyphs joined by a horizontal
    closing of about one glyph height form a text row (dots and colons join a row but do not
    count as glyphs); a row needs ``min_glyphs`` glyphs whose vertical extents share one line (a
    diagonal vessel breaks into staggered pieces, characters stand side by side) and a flat
    surround (median absolute deviation of the non-stroke pixels in its box at most
    ``max_background_mad``), which speckle and anatomy fail.
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
        t, left = max(sl[0].start - pad, 0), max(sl[1].start - pad, 0)
        b, r = min(sl[0].stop + pad, lum.shape[0]), min(sl[1].stop + pad, lum.shape[1])
        stroke = ndi.binary_dilation(cand[t:b, left:r], iterations=2)
        bg = lum[t:b, left:r][~stroke]
        if bg.size and np.median(np.abs(bg - np.median(bg))) > max_background_mad:
            continue            # textured surround (speckle, anatomy): not an annotation
        boxes.append(Box(int(t), int(left), int(b), int(r), int(len(ids))))
    return merge_boxes(boxes)


def merge_boxes(boxes: list[Box]) -> list[Box]:
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


def frame_stack(ds: Dataset, arr: np.ndarray) -> np.ndarray:
    """Decoded pixels as (frames, rows, cols[, samples])."""
    n = int(ds.get("NumberOfFrames", 1) or 1)
    return arr if n > 1 else arr[None]


def decoded_pixels(ds: Dataset, source: str = "<dataset>") -> np.ndarray:
    """The decoded pixel array, or a :class:`DeidError` naming the file and the transfer syntax."""
    if "PixelData" not in ds:
        raise DeidError(f"{source}: has no Pixel Data (7FE0,0010), so there is nothing to "
                        "inspect or mask for burned-in text; de-identify it with burned_in='skip'")
    try:
        return ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for undecodable data
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(ts, "name", ts)
        raise DeidError(f"{source}: cannot decode pixel data (transfer syntax {name}) to check it "
                        f"for burned-in text ({type(exc).__name__}: {str(exc)[:120]}); install a "
                        "decoder plug-in (pylibjpeg, pyjpegls) or pass burned_in='skip' if the "
                        "pixels are known to be clean") from exc


def find_burned_in_text(ds: Dataset, source: str = "<dataset>", max_frames: int = 8,
                        **detector) -> list[Box]:
    """Text boxes in the pixels of ``ds`` (union over up to ``max_frames`` evenly spaced frames)."""
    frames = frame_stack(ds, decoded_pixels(ds, source))
    picks = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).astype(int))
    boxes: list[Box] = []
    for i in picks:
        lum, sat = display_planes(ds, frames[i])
        boxes.extend(detect_text(lum, sat, **detector))
    return merge_boxes(boxes)


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
    """Fill every box in every frame with the median of its border; returns the new pixel array.

    The pixels are written back uncompressed (pydicom's ``set_pixel_data``); re-encoding a
    formerly compressed file is :func:`pets_lite.deid.syntax.re_encode`'s job."""
    arr = np.array(decoded_pixels(ds, source), copy=True)
    frames = frame_stack(ds, arr)
    for b in boxes:
        for f in frames:
            region = f[b.top:b.bottom, b.left:b.right]
            border = np.concatenate([region[0], region[-1], region[:, 0], region[:, -1]])
            f[b.top:b.bottom, b.left:b.right] = np.median(border, axis=0).astype(f.dtype)
    pi = str(ds.PhotometricInterpretation)
    if arr.ndim >= 3 and arr.shape[-1] == 3 and pi.startswith("YBR"):
        pi = "RGB"       # pydicom decodes YBR to RGB by default
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID", ExplicitVRLittleEndian) if meta is not None else None
    if ts is not None and not ts.is_little_endian:
        raise DeidError(f"{source}: convert a big-endian dataset to little endian before masking "
                        "(pets_lite.deid.syntax.to_little_endian)")
    try:
        ds.set_pixel_data(arr, pi, int(ds.BitsStored), generate_instance_uid=False)
    except Exception as exc:  # noqa: BLE001
        raise DeidError(f"{source}: could not write the masked pixels back ({exc})") from exc
    return arr



def display_image(ds: Dataset, frame: int = 0) -> np.ndarray:
    """One frame of ``ds`` as a viewer shows it, for plotting: RGB in [0, 1] for colour images
    (palette colour through its lookup table), luminance in [0, 1] for greyscale."""
    arr = frame_stack(ds, decoded_pixels(ds))[frame]
    if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut
        rgb = apply_color_lut(arr, ds).astype(np.float64)
        return rgb / max(float(rgb.max()), 1.0)
    if arr.ndim == 3:
        return arr.astype(np.float64) / max(float(2 ** int(ds.get("BitsStored", 8)) - 1), 1.0)
    return display_planes(ds, arr)[0]


def box_mask(shape: tuple[int, int], boxes: list[Box]) -> np.ndarray:
    """A boolean (rows, cols) mask that is True inside any of ``boxes``."""
    inside = np.zeros(shape, bool)
    for b in boxes:
        inside[b.top:b.bottom, b.left:b.right] = True
    return inside


def masking_summary(ds: Dataset, before: np.ndarray, after: np.ndarray,
                    boxes: list[Box]) -> dict:
    """What masking did to the pixels of ``ds``: the number of boxes, the fraction of the image
    they cover, whether every pixel outside them is unchanged (in every frame) and whether the
    pixels inside them changed."""
    if before.shape != after.shape:
        raise ValueError(f"before {before.shape} and after {after.shape} differ in shape")
    b, a = frame_stack(ds, before), frame_stack(ds, after)
    inside = box_mask(b.shape[1:3], boxes)
    return {"boxes": len(boxes), "masked fraction": float(inside.mean()),
            "unchanged outside boxes": bool(np.array_equal(b[:, ~inside], a[:, ~inside])),
            "changed inside boxes": bool(boxes) and not np.array_equal(b[:, inside],
                                                                       a[:, inside])}
