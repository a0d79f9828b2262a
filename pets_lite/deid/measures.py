"""What de-identification keeps and what risk remains: study linkage, date intervals, and
k-anonymity over the quasi-identifiers a de-identified file still carries."""

from __future__ import annotations

import datetime as _dt
import itertools
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from pydicom.dataset import Dataset

from .actions import deidentify
from .files import read_dicom
from .keys import DeidError

#: The quasi-identifiers chapter 01 measures, and the attribute each is read from.
QUASI_IDENTIFIERS = {"age": "PatientAge", "sex": "PatientSex", "modality": "Modality",
                     "manufacturer": "Manufacturer", "model": "ManufacturerModelName",
                     "station": "StationName"}


def quasi_identifiers(ds: Dataset) -> dict[str, str]:
    """The quasi-identifier values of one (de-identified) dataset; '-' for an empty one."""
    return {name: str(ds.get(kw, "") or "").strip() or "-"
            for name, kw in QUASI_IDENTIFIERS.items()}


def quasi_identifier_rows(paths: Iterable[str | Path], key: bytes | str,
                          **options) -> dict[str, dict[str, str]]:
    """De-identify each file's header with ``options`` and return one row of quasi-identifiers
    per patient pseudonym (files that cannot be read, or have no PatientID, are left out)."""
    rows: dict[str, dict[str, str]] = {}
    for path in paths:
        try:
            ds = read_dicom(path, stop_before_pixels=True)
            out, _ = deidentify(ds, key, burned_in="skip", **options)
        except DeidError:
            continue
        if out.get("PatientID"):
            rows[str(out.PatientID)] = quasi_identifiers(out)
    return rows


def k_anonymity(rows: Iterable[dict[str, str]], columns: list[str], k_target: int = 2) -> dict:
    """k of the records over ``columns`` (the size of the smallest group sharing one combination)
    and how many records sit in groups smaller than ``k_target``.

    >>> r = [{"sex": "F"}, {"sex": "F"}, {"sex": "M"}]
    >>> k_anonymity(r, ["sex"], 2)
    {'records': 3, 'k': 1, 'in_small_groups': 1, 'groups': 2}
    """
    sizes = Counter(tuple(r[c] for c in columns) for r in rows)
    if not sizes:
        raise ValueError("k-anonymity of an empty table is undefined")
    return {"records": sum(sizes.values()), "k": min(sizes.values()),
            "in_small_groups": sum(n for n in sizes.values() if n < k_target),
            "groups": len(sizes)}


def k_anonymity_table(paths: Iterable[str | Path], key: bytes | str,
                      profiles: dict[str, dict], column_sets: list[list[str]],
                      k_target: int = 2) -> list[dict]:
    """For each profile (label -> de-identification options) and each set of quasi-identifier
    columns: the number of patients, k and the patients in groups smaller than ``k_target``."""
    paths = list(paths)
    out = []
    for label, options in profiles.items():
        rows = list(quasi_identifier_rows(paths, key, **options).values())
        for cols in column_sets:
            k = k_anonymity(rows, cols, k_target)
            out.append({"profile": label, "quasi-identifiers": "+".join(cols),
                        "patients": k["records"], "k": k["k"],
                        f"patients in groups < {k_target}": k["in_small_groups"]})
    return out


def _day(value: str) -> _dt.date | None:
    value = str(value).strip()
    try:
        return _dt.date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except (ValueError, IndexError):
        return None


def study_linkage(pairs: Iterable[tuple[Dataset, Dataset]]) -> tuple[list[dict], dict]:
    """Does a de-identified tree keep its structure? ``pairs`` are (original, de-identified)
    datasets. Returns one row per original study (its pseudonym, the studies it maps to, dates
    before and after) and a summary: whether the grouping into patients, studies and series is
    the same (one-to-one, both ways), and whether every within-patient interval between two
    dated studies is the same before and after."""
    pairs = list(pairs)
    grouping = True
    for kw in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID"):
        forward: dict[str, set] = {}
        backward: dict[str, set] = {}
        for o, d in pairs:
            forward.setdefault(str(o.get(kw, "")), set()).add(str(d.get(kw, "")))
            backward.setdefault(str(d.get(kw, "")), set()).add(str(o.get(kw, "")))
        grouping &= all(len(v) == 1 for v in forward.values())
        grouping &= all(len(v) == 1 for v in backward.values())
    studies: dict[tuple[str, str], dict] = {}
    for o, d in pairs:
        study = str(o.get("StudyInstanceUID", ""))
        row = studies.setdefault((str(o.get("PatientID", "")), study), {
            "patient": str(o.get("PatientID", "")), "pseudonym": str(d.get("PatientID", "")),
            "study (before)": study[-12:],
            "study (after)": str(d.get("StudyInstanceUID", ""))[-12:],
            "modality": str(o.get("Modality", "")),
            "files": 0, "date before": str(o.get("StudyDate", "")),
            "date after": str(d.get("StudyDate", ""))})
        row["files"] += 1
    rows = list(studies.values())
    intervals = []
    for a, b in itertools.combinations(rows, 2):
        if a["patient"] != b["patient"]:
            continue
        days = [_day(a["date before"]), _day(b["date before"]), _day(a["date after"]),
                _day(b["date after"])]
        if None in days[:2]:
            continue
        kept = None not in days and (days[0] - days[1]) == (days[2] - days[3])
        intervals.append(kept)
    return rows, {"grouping_preserved": bool(grouping), "interval_pairs": len(intervals),
                  "intervals_kept": bool(intervals) and all(intervals)}
