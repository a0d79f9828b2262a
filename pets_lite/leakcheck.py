"""An independent leak checker for de-identified DICOM files (chapter 01).

It shares no code and no vocabulary with :mod:`pets_lite.deid`: it never imports it, it names
attributes by tag, never by keyword, and it reads the output as bytes, not as a dataset. Its
question is simple. For every value of the *input* file whose value representation can carry an
identity (:data:`IDENTITY_VRS`, and every private element of any VR), unless the profile in use
is allowed to retain that attribute: does the value occur anywhere in the *output* file's bytes?

What a profile may retain is written down here, separately from the de-identifier, from DICOM
PS3.15 Table E.1-1 (2025 edition, as parsed by innolitics/dicom-standard, commit 7f4749d):

* :data:`TABLE_E1_1`: every attribute the table lists, grouped by the retain options under which
  its value may stay (``p`` patient characteristics, ``d`` device identity, ``i`` institution
  identity, ``u`` UIDs, ``f`` full dates, ``m`` modified dates -- only times may stay, dates
  change --, ``c`` clean descriptors, ``s`` clean structured content, ``g`` clean graphics). A
  listed attribute whose options are not in use must not survive.
* Attributes the table does not list: in ``basic`` mode (what Annex E itself allows) they may be
  kept, except names, dates, date-times and UIDs (``PN``, ``DA``, ``DT``, ``UI``), which identify by
  their type; in ``strict`` mode (the allow-list practice of curated archives) only the attributes
  of :data:`DESCRIPTIVE` may keep an identity-carrying value.
* UIDs under the DICOM root ``1.2.840.10008`` are defined by the standard (SOP classes, transfer
  syntaxes, coding schemes) and identify no one; private elements survive only where the caller
  names them as kept (creator, element).

A value shorter than ``min_length`` bytes cannot be searched for meaningfully (``"M"`` occurs in
any file) and is counted as too short, not as checked. A value that also stands inside a value
the profile retains (MR_small's institution is ``TOSHIBA``, so is its manufacturer) cannot be
told apart from it and is reported as shadowed, never silently passed. Pixel data is left out
of the byte search (the burned-in text check looks at pixels); every other byte of the output,
file meta and nested sequences included, is searched, after inflating a deflated file.

The checker's mistakes are false alarms, not silent passes: an attribute it does not know to be
retainable and that survives is reported.
"""

from __future__ import annotations

import io
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset

#: Value representations whose values can carry an identity: the issue's list, plus UC (the
#: unlimited form of LO) and AE (application entity titles name stations and archives).
IDENTITY_VRS = frozenset({"PN", "DA", "DT", "TM", "UI", "LO", "SH", "LT", "ST", "UT", "UC", "AE"})
#: Of those, the ones that identify by their type (a person, a day, an instance).
TYPED_IDENTITY_VRS = frozenset({"PN", "DA", "DT", "UI"})
#: Other value representations whose values are text (a kept one can explain an occurrence).
TEXT_VRS = frozenset({"AS", "CS", "DS", "IS", "UR"})
#: Binary numbers (identify no one; never searched).
NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "AT", "SV", "UV"})
#: Deflated Explicit VR Little Endian: the dataset after the file meta is zlib-compressed.
DEFLATED = "1.2.840.10008.1.2.1.99"
#: The root of the UIDs the DICOM standard defines (PS3.5 section 9).
DICOM_ROOT = "1.2.840.10008."

#: The retain options of PS3.15 Annex E, by the letters :data:`TABLE_E1_1` uses.
OPTIONS = {"p": "patient characteristics", "d": "device identity", "i": "institution identity",
           "u": "UIDs", "f": "full dates", "m": "modified dates", "c": "clean descriptors",
           "s": "clean structured content", "g": "clean graphics"}

#: PS3.15 Table E.1-1 (2025): retain-option letters -> the tags listed with them.
TABLE_E1_1: dict[str, tuple[int, ...]] = {
    "": (
        0x00080050, 0x00080090, 0x00080092, 0x00080094, 0x00080096, 0x0008009C, 0x0008009D,
        0x00081048, 0x00081049, 0x00081050, 0x00081052, 0x00081060, 0x00081062, 0x00081070,
        0x00081072, 0x00100010, 0x00100020, 0x00100021, 0x00100030, 0x00100032, 0x00100050,
        0x00100101, 0x00100102, 0x00101000, 0x00101001, 0x00101002, 0x00101005, 0x00101040,
        0x00101050, 0x00101060, 0x00101080, 0x00101081, 0x00101090, 0x00101100, 0x00102150,
        0x00102152, 0x00102154, 0x00102155, 0x001021F0, 0x00102297, 0x00102299, 0x00120010,
        0x00120020, 0x00120021, 0x00120022, 0x00120023, 0x00120032, 0x00120040, 0x00120041,
        0x00120042, 0x00120043, 0x00120050, 0x00120055, 0x00120071, 0x00120073, 0x00120082,
        0x0016004D, 0x00160070, 0x00160071, 0x00160072, 0x00160073, 0x00160074, 0x00160075,
        0x00160076, 0x00160077, 0x00160078, 0x00160079, 0x0016007A, 0x0016007B, 0x0016007C,
        0x0016007D, 0x0016007E, 0x0016007F, 0x00160080, 0x00160081, 0x00160082, 0x00160083,
        0x00160084, 0x00160085, 0x00160086, 0x00160087, 0x00160088, 0x00160089, 0x0016008A,
        0x0016008B, 0x0016008C, 0x0016008E, 0x00200010, 0x00203406, 0x00284000, 0x00320012,
        0x00321032, 0x00321033, 0x00340001, 0x00340002, 0x00340005, 0x00380004, 0x00380010,
        0x00380011, 0x00380014, 0x0038001E, 0x00380060, 0x00380061, 0x00380064, 0x00380300,
        0x00380400, 0x00400006, 0x00400009, 0x0040000B, 0x00400243, 0x00400253, 0x0040050A,
        0x00400512, 0x00400513, 0x00400551, 0x00400562, 0x004006FA, 0x00401001, 0x00401004,
        0x00401005, 0x00401010, 0x00401011, 0x00401101, 0x00401102, 0x00401103, 0x00401104,
        0x00402008, 0x00402009, 0x00402010, 0x00402011, 0x00402016, 0x00402017, 0x00403001,
        0x00404034, 0x00404035, 0x00404036, 0x00404037, 0x0040A027, 0x0040A073, 0x0040A075,
        0x0040A078, 0x0040A07A, 0x0040A07C, 0x0040A088, 0x0040A123, 0x0040A124, 0x0040A307,
        0x0040A352, 0x0040A353, 0x0040A354, 0x0040A358, 0x00420011, 0x0050001B, 0x00700084,
        0x00700086, 0x00720065, 0x0072006A, 0x0072006D, 0x00720071, 0x00880200, 0x00880904,
        0x00880906, 0x00880910, 0x00880912, 0x04000100, 0x04000115, 0x04000402, 0x04000403,
        0x04000404, 0x04000550, 0x04000551, 0x04000552, 0x04000561, 0x04000600, 0x20300020,
        0x22000005, 0x3006004D, 0x3006004E, 0x300600A6, 0x300A0611, 0x300A0615, 0x300E0008,
        0x3010001B, 0x40000010, 0x40004000, 0x40080040, 0x40080042, 0x40080102, 0x4008010A,
        0x4008010C, 0x40080111, 0x40080114, 0x40080118, 0x40080119, 0x4008011A, 0x40080200,
        0x40080202, 0xFFFAFFFA, 0xFFFCFFFC,
    ),
    "c": (
        0x00081030, 0x0008103E, 0x00081080, 0x00081084, 0x00081088, 0x00082111, 0x00084000,
        0x00102000, 0x00102180, 0x001021B0, 0x00104000, 0x00120051, 0x00120072, 0x0016002B,
        0x0016004B, 0x00180010, 0x00181030, 0x001811BB, 0x00181400, 0x00184000, 0x00189185,
        0x0018937B, 0x0018937F, 0x00189424, 0x00189937, 0x0018A003, 0x00200027, 0x00204000,
        0x00209158, 0x00321030, 0x00321060, 0x00321066, 0x00321067, 0x00321070, 0x00324000,
        0x00380040, 0x00380062, 0x00384000, 0x003A0329, 0x003A032B, 0x00400007, 0x00400254,
        0x00400275, 0x00400280, 0x00400310, 0x0040051A, 0x00400600, 0x00400602, 0x00401002,
        0x0040100A, 0x00401400, 0x00402001, 0x00402400, 0x00500021, 0x006A0005, 0x006A0006,
        0x00720066, 0x00720068, 0x0072006C, 0x0072006E, 0x00720070, 0x04000565, 0x22000002,
        0x30020121, 0x30020123, 0x30060002, 0x30060004, 0x30060006, 0x30060026, 0x30060028,
        0x30060038, 0x30060085, 0x30060088, 0x300A0002, 0x300A0003, 0x300A0004, 0x300A000B,
        0x300A000E, 0x300A0016, 0x300A0072, 0x300A00C3, 0x300A00DD, 0x300A0196, 0x300A01A6,
        0x300A01B2, 0x300A02EB, 0x300A0608, 0x300A0619, 0x300A0623, 0x300A062A, 0x300A0676,
        0x300A067C, 0x300A067D, 0x300A0734, 0x300A0742, 0x300A0783, 0x300A078E, 0x300A0792,
        0x300A0794, 0x300A079A, 0x300C0113, 0x3010000F, 0x30100017, 0x30100033, 0x30100034,
        0x30100035, 0x30100036, 0x30100037, 0x30100038, 0x30100054, 0x30100056, 0x3010005A,
        0x3010005C, 0x30100061, 0x30100077, 0x3010007A, 0x3010007B, 0x3010007F, 0x30100081,
        0x4008010B, 0x40080115, 0x40080300, 0x40084000,
    ),
    "d": (
        0x00080054, 0x00080055, 0x00081000, 0x00081010, 0x0016004E, 0x0016004F, 0x00160050,
        0x00160051, 0x00181000, 0x00181004, 0x00181005, 0x00181007, 0x00181008, 0x00181009,
        0x0018100A, 0x00185011, 0x0018700A, 0x00189367, 0x00189371, 0x00189373, 0x00203401,
        0x00321020, 0x00321021, 0x00400001, 0x00400010, 0x00400011, 0x00400241, 0x00400242,
        0x00404025, 0x00404027, 0x00404028, 0x00404030, 0x00500020, 0x0072005E, 0x00741234,
        0x00741236, 0x04000563, 0x21000070, 0x21000140, 0x30080105, 0x300A00B2, 0x300A0216,
        0x3010002D, 0x30100043,
    ),
    "g": (
        0x00700001,
    ),
    "i": (
        0x00080080, 0x00080081, 0x00080082, 0x00081040, 0x00081041, 0x00120030, 0x00120031,
        0x00120060, 0x00120081, 0x04000564,
    ),
    "p": (
        0x00100040, 0x00101010, 0x00101020, 0x00101030, 0x00102160, 0x001021A0, 0x001021C0,
        0x00102203, 0x00380050, 0x00400012, 0x0072005F,
    ),
    "s": (
        0x00400555, 0x00400610, 0x0040A730,
    ),
    "u": (
        0x00001000, 0x00001001, 0x00020003, 0x00041511, 0x00080014, 0x00080017, 0x00080018,
        0x00080019, 0x00080058, 0x00081110, 0x00081111, 0x00081120, 0x00081140, 0x00081155,
        0x00081195, 0x00082112, 0x00083010, 0x00182042, 0x0020000D, 0x0020000E, 0x00200052,
        0x00200200, 0x00209161, 0x00209164, 0x00281199, 0x00281214, 0x003A0310, 0x00400554,
        0x00404023, 0x0040A171, 0x0040A172, 0x0040A402, 0x0040DB0C, 0x0040DB0D, 0x00620021,
        0x00640003, 0x006A0003, 0x0070031A, 0x00701101, 0x00701102, 0x00880140, 0x30060024,
        0x300600C2, 0x300A0013, 0x300A0083, 0x300A0609, 0x300A0650, 0x300A0700, 0x300A0785,
        0x30100006, 0x3010000B, 0x30100013, 0x30100015, 0x30100031, 0x3010003B, 0x3010006E,
        0x3010006F,
    ),
    "du": (
        0x00181002, 0x0018100B,
    ),
    "fm": (
        0x00080012, 0x00080013, 0x00080015, 0x00080020, 0x00080021, 0x00080022, 0x00080023,
        0x00080024, 0x00080025, 0x0008002A, 0x00080030, 0x00080031, 0x00080032, 0x00080033,
        0x00080034, 0x00080035, 0x00080106, 0x00080107, 0x00080201, 0x001021D0, 0x00120086,
        0x00120087, 0x0016008D, 0x00180027, 0x00180035, 0x00181012, 0x00181014, 0x00181042,
        0x00181043, 0x00181072, 0x00181073, 0x00181078, 0x00181079, 0x00189074, 0x00189151,
        0x00189369, 0x0018936A, 0x00189516, 0x00189517, 0x00189623, 0x00189701, 0x00189804,
        0x00189919, 0x0018A002, 0x00203403, 0x00203405, 0x00320032, 0x00320033, 0x00320034,
        0x00320035, 0x00321000, 0x00321001, 0x00321010, 0x00321011, 0x00321040, 0x00321041,
        0x00321050, 0x00321051, 0x00340007, 0x0038001A, 0x0038001B, 0x0038001C, 0x0038001D,
        0x00380020, 0x00380021, 0x00380030, 0x00380032, 0x003A0314, 0x00400002, 0x00400003,
        0x00400004, 0x00400005, 0x00400244, 0x00400245, 0x00400250, 0x00400251, 0x00402004,
        0x00402005, 0x00404005, 0x00404008, 0x00404010, 0x00404011, 0x00404050, 0x00404051,
        0x00404052, 0x0040A023, 0x0040A024, 0x0040A030, 0x0040A032, 0x0040A033, 0x0040A082,
        0x0040A110, 0x0040A112, 0x0040A120, 0x0040A121, 0x0040A122, 0x0040A13A, 0x0040A192,
        0x0040A193, 0x0040DB06, 0x0040DB07, 0x0040E004, 0x00440004, 0x0044000B, 0x00440010,
        0x00440104, 0x00440105, 0x00686226, 0x00686270, 0x00700082, 0x00700083, 0x0072000A,
        0x00720061, 0x00720063, 0x0072006B, 0x01000420, 0x04000105, 0x04000310, 0x04000562,
        0x21000040, 0x21000050, 0x30060008, 0x30060009, 0x3006002D, 0x3006002E, 0x30080024,
        0x30080025, 0x30080054, 0x30080056, 0x30080162, 0x30080164, 0x30080166, 0x30080168,
        0x30080250, 0x30080251, 0x300A0006, 0x300A0007, 0x300A022C, 0x300A022E, 0x300A0736,
        0x300A073A, 0x300A0741, 0x300A0760, 0x300E0004, 0x300E0005, 0x3010004C, 0x3010004D,
        0x30100085, 0x40080100, 0x40080101, 0x40080108, 0x40080109, 0x40080112, 0x40080113,
    ),
    "pc": (
        0x00102110, 0x00380500,
    ),
    "dfm": (
        0x0014407C, 0x0014407E, 0x00181200, 0x00181201, 0x00181202, 0x00181203, 0x00181204,
        0x00181205, 0x0018700C, 0x0018700E, 0x300C0127,
    ),
}

#: Repeating groups of Table E.1-1: (group mask, group, element or None for any) -> letters.
#: Curve data (50xx,xxxx), overlay data (60xx,3000) and overlay comments (60xx,4000).
REPEATING: dict[tuple[int, int, int | None], str] = {
    (0xFF00, 0x5000, None): "g", (0xFF00, 0x6000, 0x3000): "g", (0xFF00, 0x6000, 0x4000): "g",
}

#: Attributes Table E.1-1 does not list whose identity-carrying values describe a coded concept,
#: a product, the acquisition technique or the display, not a person, a place or an instance: a
#: strict profile may keep them (and in both modes the UIDs among them are not instance data).
DESCRIPTIVE = frozenset({
    # coded concepts (PS3.3 section 8)
    0x00080100, 0x00080102, 0x00080103, 0x00080104, 0x00080115, 0x00080116, 0x00080119,
    0x00080120, 0x00080122,
    # the writing software, the product
    0x00020012, 0x00020013, 0x00080070, 0x00081090, 0x00181020,
    # acquisition technique
    0x00180024, 0x00181160, 0x00181210, 0x00181250, 0x00181251, 0x00181260, 0x00181401,
    0x00185010, 0x00185020,
    # display and frame of reference
    0x00201040, 0x00281054, 0x00281055, 0x00283003,
    # waveform channels, dimensions, segmentation algorithm
    0x003A0020, 0x003A0203, 0x00209421, 0x00620009,
})


def _listed() -> dict[int, str]:
    out = {}
    for letters, tags in TABLE_E1_1.items():
        for tag in tags:
            out[tag] = letters
    return out


LISTED: dict[int, str] = _listed()


@dataclass(frozen=True)
class Retention:
    """What a profile may retain: the Annex E retain options in use (letters of
    :data:`OPTIONS`), the mode for unlisted attributes (``basic`` or ``strict``), and the private
    elements kept on purpose, as (private creator, element low byte)."""

    options: frozenset[str] = frozenset()
    mode: str = "basic"
    keep_private: frozenset[tuple[str, int]] = frozenset()

    def __post_init__(self):
        unknown = set(self.options) - set(OPTIONS)
        if unknown:
            raise ValueError(f"unknown retain options {sorted(unknown)}; use letters of "
                             f"{OPTIONS}")
        if self.mode not in ("basic", "strict"):
            raise ValueError(f"mode must be 'basic' or 'strict', got {self.mode!r}")

    def letters(self, tag: int) -> str | None:
        """The retain-option letters of a tag Table E.1-1 lists, or None if it is not listed."""
        if tag in LISTED:
            return LISTED[tag]
        group, element = tag >> 16, tag & 0xFFFF
        for (mask, g, e), letters in REPEATING.items():
            if group & mask == g and (e is None or element == e):
                return letters
        return None

    def retains(self, tag: int, vr: str, value: bytes = b"", creator: str | None = None) -> bool:
        """May the value of this element stay in the output? (``creator``: the private creator
        of a private element.)"""
        group = tag >> 16
        if group % 2:                        # private
            if tag & 0xFFFF < 0x100:         # a private creator: kept with its block
                return any(c == value.decode("latin-1").strip() for c, _ in self.keep_private)
            return (creator, tag & 0xFF) in self.keep_private
        if vr not in IDENTITY_VRS:
            return True
        if vr == "UI" and value.rstrip(b"\x00 ").startswith(DICOM_ROOT.encode()):
            return True
        letters = self.letters(tag)
        if letters is not None:
            kept = set(letters) & self.options
            return bool(kept - {"m"}) or ("m" in kept and vr == "TM")
        if tag in DESCRIPTIVE:
            return True
        return self.mode == "basic" and vr not in TYPED_IDENTITY_VRS


@dataclass
class Finding:
    """One value of the input and where it stood: ``where`` is a tag path such as
    ``(0040,0275)[0](0040,0009)``."""

    where: str
    vr: str
    value: str
    offset: int | None = None      # where it occurs in the output's bytes (None: it does not)
    tag: int = 0                   # the element's own tag (the last of ``where``)


@dataclass
class LeakReport:
    """The outcome for one input/output pair."""

    source: str
    output: str
    checked: int = 0               # values searched for
    retained: int = 0              # values the profile may keep (not searched)
    too_short: int = 0             # values shorter than min_length (not searched)
    leaks: list[Finding] = field(default_factory=list)
    shadowed: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no value that had to go occurs in the output."""
        return not self.leaks


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _raw_elements(ds: Dataset, prefix: str = "") -> Iterator[tuple[str, int, str, bytes, str]]:
    """(where, tag, VR, raw value bytes, private creator) of every element of ``ds``, sequence
    items included; values are never decoded."""
    creators: dict[tuple[int, int], str] = {}
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        tag = int(tag)
        vr = raw.VR
        if (not vr or vr == "UN") and not (tag >> 16) % 2:
            vr = _dictionary_vr(tag) or vr
        vr = vr or "UN"
        where = prefix + _tag_text(tag)
        value = raw.value
        if vr == "SQ" or isinstance(value, pydicom.sequence.Sequence):
            try:
                items = ds[tag].value or []
            except Exception:  # noqa: BLE001 - an unparseable sequence is searched as bytes
                items = None
            if items is not None:
                for i, item in enumerate(items):
                    yield from _raw_elements(item, f"{where}[{i}]")
                continue
            vr = "UN"
        if not isinstance(value, (bytes, bytearray)):
            value = _encoded(ds, tag)
        group, element = tag >> 16, tag & 0xFFFF
        if group % 2 and 0x10 <= element < 0x100:
            creators[(group, element)] = bytes(value).decode("latin-1").strip(" \x00")
        creator = creators.get((group, element >> 8)) if group % 2 and element >= 0x100 else None
        yield where, tag, vr, bytes(value), creator


def _dictionary_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _encoded(ds: Dataset, tag: int) -> bytes:
    """The value of an element pydicom already converted, encoded again as in a file."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_data_element(fp, ds[tag])
    return fp.getvalue()[8:]


def needles(vr: str, value: bytes, min_length: int = 4) -> tuple[list[bytes], int]:
    """The byte strings to search for in the output, and how many values were too short.

    Text values split at backslashes (multiplicity) and, for names, at ``^`` and ``=`` (name
    components); a date-time also stands for its date; padding is stripped. A binary value
    (a private OB or UN, say) stands for the readable runs in it that hold a letter or six digits;
    binary numbers identify no one and are not searched.

    >>> needles("PN", b"Doe^Jane ")
    ([b'Doe^Jane', b'Jane'], 1)
    >>> needles("DT", b"20040119120000")
    ([b'20040119120000', b'20040119'], 0)
    """
    if vr in NUMBER_VRS:
        return [], 0
    if vr not in IDENTITY_VRS and vr not in TEXT_VRS:     # binary: the readable runs in it
        parts = [m.group() for m in re.finditer(rb"[\x20-\x7e]{%d,}" % min_length, value)
                 if re.search(rb"[A-Za-z]", m.group()) or re.search(rb"\d{6,}", m.group())]
        return [p for p in dict.fromkeys(parts)], 0
    parts = value.split(b"\\")
    found, short = [], 0
    for part in parts:
        part = part.strip(b" \x00")
        pieces = [part]
        if vr == "PN":
            pieces += [p.strip(b" ") for p in re.split(rb"[\^=]", part)]
        if vr == "DT" and len(part) > 8:
            pieces.append(part[:8])
        for piece in pieces:
            piece = piece.strip(b" ")
            if not piece or piece in found:
                continue
            if len(piece) < min_length or not piece.strip(b"0 .:-"):
                short += 1       # too short to search for, or zeros and separators only
                continue
            found.append(piece)
    return found, short


def _read(file: str | Path | bytes) -> tuple[bytes, Dataset]:
    data = bytes(file) if isinstance(file, (bytes, bytearray)) else Path(file).read_bytes()
    return data, pydicom.dcmread(io.BytesIO(data), force=True)


def output_bytes(file: str | Path | bytes) -> bytes:
    """The bytes of a DICOM file (a path, or its bytes) as they are searched: a deflated dataset
    inflated, the value of the top-level Pixel Data element (and its float forms) blanked out."""
    data, ds = _read(file)
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get(0x00020010) if meta is not None else None       # transfer syntax
    if syntax is not None and str(syntax.value) == DEFLATED:
        start = _meta_end(data)
        data = data[:start] + zlib.decompress(data[start:], -zlib.MAX_WBITS)
        return data                           # offsets of the inflated stream are not tracked
    out = bytearray(data)
    for tag in (0x7FE00010, 0x7FE00008, 0x7FE00009):
        if tag in ds:
            raw = ds.get_item(tag)
            start, value = getattr(raw, "value_tell", None), raw.value
            if start is not None and isinstance(value, (bytes, bytearray)):
                out[start:start + len(value)] = bytes(len(value))
    return bytes(out)


def _meta_end(data: bytes) -> int:
    """Where the file meta group (0002,xxxx) ends in a file with a preamble."""
    if data[128:132] != b"DICM":
        return 0
    length = int.from_bytes(data[140:144], "little")      # (0002,0000) group length, UL
    return 144 + length


def _occurs(needle: bytes, haystack: bytes, vr: str) -> int | None:
    """Offset of ``needle`` in ``haystack``; a UID only as a whole value (not as a root)."""
    if vr != "UI":
        i = haystack.find(needle)
        return None if i < 0 else i
    uid_chars = b"0123456789."
    for m in re.finditer(re.escape(needle), haystack):
        before = haystack[m.start() - 1] if m.start() else None
        after = haystack[m.end()] if m.end() < len(haystack) else None
        if (before is None or before not in uid_chars) and (after is None
                                                             or after not in uid_chars):
            return m.start()
    return None


def check_file(source: str | Path | bytes, output: str | Path | bytes,
               retention: Retention = Retention(), min_length: int = 4) -> LeakReport:
    """Search the output's bytes for every value of the input that had to go (``source`` and
    ``output``: paths, or the files' bytes)."""
    original = _read(source)[1]
    elements = list(_raw_elements(original.file_meta, "meta")) if getattr(
        original, "file_meta", None) is not None else []
    elements += list(_raw_elements(original))
    haystack = output_bytes(output)
    report = LeakReport(_name(source), _name(output))
    kept_values: list[bytes] = []
    must_go: list[tuple[str, int, str, bytes]] = []
    for where, tag, vr, value, creator in elements:
        if tag in (0x7FE00010, 0x7FE00008, 0x7FE00009) or tag & 0xFFFF == 0:
            continue                  # pixels (checked as pixels) and group lengths
        if retention.retains(tag, vr, value, creator):
            if vr in IDENTITY_VRS:
                report.retained += 1
            if vr in IDENTITY_VRS or vr in TEXT_VRS:
                kept_values.append(value)
            continue
        found, short = needles(vr, value, min_length)
        report.too_short += short
        must_go.extend((where, tag, vr, n) for n in found)
    for where, tag, vr, needle in must_go:
        report.checked += 1
        offset = _occurs(needle, haystack, vr)
        if offset is None:
            continue
        finding = Finding(where, vr, needle.decode("latin-1")[:64], offset, tag)
        if any(needle in kept for kept in kept_values):
            report.shadowed.append(finding)
        else:
            report.leaks.append(finding)
    return report


def _name(file) -> str:
    return "<bytes>" if isinstance(file, (bytes, bytearray)) else str(file)


def file_bytes(ds: Dataset) -> bytes:
    """``ds`` written as a file would be (to check a dataset that was never saved)."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def check_datasets(original: Dataset, output: Dataset, retention: Retention = Retention(),
                   min_length: int = 4) -> LeakReport:
    """:func:`check_file` on two datasets, each written to bytes first."""
    return check_file(file_bytes(original), file_bytes(output), retention, min_length)


def check_pairs(pairs: Iterable[tuple[str | Path, str | Path]],
                retention: Retention = Retention(), min_length: int = 4) -> list[LeakReport]:
    """:func:`check_file` over (input, output) pairs."""
    return [check_file(s, o, retention, min_length) for s, o in pairs]


def summary(reports: Iterable[LeakReport]) -> dict:
    """Totals over many reports: files, values searched, leaks, files with a leak, shadowed,
    retained and too-short values."""
    reports = list(reports)
    return {"files": len(reports), "values checked": sum(r.checked for r in reports),
            "leaks": sum(len(r.leaks) for r in reports),
            "files with a leak": sum(not r.ok for r in reports),
            "shadowed": sum(len(r.shadowed) for r in reports),
            "retained": sum(r.retained for r in reports),
            "too short": sum(r.too_short for r in reports)}
