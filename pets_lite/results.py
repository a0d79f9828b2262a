"""Record a notebook's measured results so that tests and the book can read them, and the book-wide
table's typed rows.

``record("test_auc", 0.95)`` glues the value into the executed notebook with myst-nb's ``glue``
(no visible output). The test-suite reads glued values back from the executed notebook
(:func:`pets_lite.nbrun.glued`), and the chapters' prose quotes them inline with
``{glue:text}`\\`test_auc:.3f\\```, so a number in the prose is always the number the code above it
measured.

The book-wide privacy-utility-cost table of chapter 10 is built from typed rows. Each chapter
records its configurations as :class:`BookRow` (:func:`record_rows`); a chapter that measures
something about another chapter's configuration (chapter 07 attacks the models of 00 and 02)
records it under that row's ``key``. :func:`book_table` merges what a build recorded and refuses a
malformed or incomplete row, naming the chapter, instead of showing an empty cell.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

#: Where in the Deep Radiomics pipeline a configuration protects the data.
STAGES = ("collection", "training", "inference", "release", "all stages")
#: The survey's families of privacy-enhancing technologies (and the two non-PET kinds of row).
FAMILIES = ("none", "data-stage protection", "statistical perturbation", "learning paradigms",
            "cryptography", "hardware", "hybrid")
#: The units of work a row's cost columns can be per.
COST_UNITS = ("training run", "round", "epoch", "image", "test set", "file")


class BookRowError(ValueError):
    """A chapter recorded a book-table row that is malformed or incomplete."""


def _plain(value):
    """Numbers, strings, bools and flat lists/dicts of them, as plain Python values."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return value
    if value is None:
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    raise TypeError(f"record() takes numbers, strings, bools, lists and dicts, got {type(value)}")


def record(name: str, value) -> None:
    """Glue ``value`` under ``name`` into the executing notebook (silently)."""
    from myst_nb import glue

    glue(name, _plain(value), display=False)


# ---------------------------------------------------------------------------------------------
# The book-wide table
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BookRow:
    """One configuration of the book-wide table. One unit per column.

    ``key`` identifies the configuration across chapters. The describing fields (``technique``,
    ``family``, ``stage``, ``trusted``) come from the chapter that owns the configuration; the
    measured fields may come from any chapter that measured them (``None``: not measured).
    """

    key: str
    technique: str | None = None
    family: str | None = None
    stage: str | None = None
    #: Who must be trusted, and with what.
    trusted: str | None = None
    #: The DP guarantee of what is released: epsilon at delta = :data:`pets_lite.dp.DELTA`
    #: (``inf``: a model trained without DP; ``None``: no DP claim made).
    epsilon: float | None = None
    #: LiRA's true-positive rate at 0.1 % false-positive rate against this configuration (fraction).
    membership_tpr: float | None = None
    #: SSIM of the best reconstruction of a training image from what the server sees.
    reconstruction_ssim: float | None = None
    #: Test ROC AUC of the model this configuration produces or serves.
    test_auc: float | None = None
    #: Seconds of computation per unit of work (``per``).
    seconds: float | None = None
    #: Megabytes (10^6 bytes) on the wire per unit of work (``per``).
    megabytes: float | None = None
    #: The unit of work ``seconds`` and ``megabytes`` are per (one of :data:`COST_UNITS`).
    per: str | None = None
    #: The chapter's peak memory (MiB), measured by :func:`pets_lite.nbrun.execute`.
    peak_mib: float | None = None

    DESCRIBING = ("technique", "family", "stage", "trusted")

    def __post_init__(self):
        problems = self.problems()
        if problems:
            raise BookRowError(f"book row {self.key!r}: " + "; ".join(problems))

    def problems(self) -> list[str]:
        out = []
        if not isinstance(self.key, str) or not self.key:
            out.append("key must be a non-empty string")
        for name in self.DESCRIBING + ("per",):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                out.append(f"{name} must be a non-empty string or None, got {value!r}")
        for name, allowed in (("family", FAMILIES), ("stage", STAGES), ("per", COST_UNITS)):
            value = getattr(self, name)
            if value is not None and value not in allowed:
                out.append(f"{name} {value!r} is not one of {allowed}")
        for name, lo, hi in (("epsilon", 0.0, math.inf), ("membership_tpr", 0.0, 1.0),
                             ("reconstruction_ssim", -1.0, 1.0), ("test_auc", 0.0, 1.0),
                             ("seconds", 0.0, math.inf), ("megabytes", 0.0, math.inf),
                             ("peak_mib", 0.0, math.inf)):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                out.append(f"{name} must be a number, got {value!r}")
            elif not lo <= value <= hi or (math.isinf(value) and name != "epsilon"):
                out.append(f"{name} = {value} is outside [{lo}, {hi}]")
        if (self.seconds is not None or self.megabytes is not None) and self.per is None:
            out.append("a cost (seconds or megabytes) needs its unit of work: per=...")
        return out

    def measured(self) -> dict:
        """The fields this row sets, apart from its key."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "key" and getattr(self, f.name) is not None}

    def to_record(self) -> dict:
        """JSON-able form (``inf`` as a string, as :func:`record` glues it)."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_record(cls, blob: dict, chapter: str = "?") -> BookRow:
        """Back from :meth:`to_record`; a clear error naming ``chapter`` if it is malformed."""
        if not isinstance(blob, dict):
            raise BookRowError(f"chapter {chapter}: a book row must be a dict, got {blob!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(blob) - names)
        if unknown or "key" not in blob:
            raise BookRowError(f"chapter {chapter}: book row {blob.get('key')!r} has unknown "
                               f"fields {unknown} or no key; the fields are {sorted(names)}")
        values = {k: (float(v) if isinstance(v, str) and v in ("inf", "-inf", "nan") else v)
                  for k, v in blob.items()}
        try:
            return cls(**values)
        except BookRowError as exc:
            raise BookRowError(f"chapter {chapter}: {exc}") from None


#: The glue name under which a chapter's rows are recorded.
ROWS_NAME = "book_rows"


def record_rows(rows: list[BookRow]) -> None:
    """Record this chapter's rows of the book-wide table (validated when made)."""
    if not rows or not all(isinstance(r, BookRow) for r in rows):
        raise BookRowError("record_rows takes a non-empty list of BookRow")
    record(ROWS_NAME, [r.to_record() for r in rows])


def chapter_rows(values: dict, chapter: str) -> list[BookRow]:
    """The rows a chapter recorded (from its glued values); an error naming the chapter when it
    recorded none or a malformed one."""
    blobs = values.get(ROWS_NAME)
    if not blobs:
        raise BookRowError(f"chapter {chapter} recorded no book rows "
                           "(pets_lite.results.record_rows)")
    return [BookRow.from_record(b, chapter) for b in blobs]


def book_table(chapters: dict[str, dict], extra: list[BookRow] = ()) -> list[BookRow]:
    """Merge the rows every chapter of a build recorded (``{notebook stem: glued values}``) with
    ``extra`` rows, by key, in the order the keys first appear.

    Each chapter's peak memory becomes the ``peak_mib`` of the rows whose describing fields it
    owns. Two chapters giving one field of a row different values, or a row that ends up without
    its describing fields, raise :class:`BookRowError` naming the chapters.
    """
    merged: dict[str, dict] = {}
    owners: dict[str, dict[str, str]] = {}
    sources = [(stem[:2], chapter_rows(values, stem[:2]), values.get("peak_memory_mib"))
               for stem, values in sorted(chapters.items())]
    sources.append(("this chapter", list(extra), None))
    for chapter, rows, peak in sources:
        for row in rows:
            fields = row.measured()
            if peak is not None and row.technique is not None:
                fields.setdefault("peak_mib", float(peak))
            slot, who = merged.setdefault(row.key, {}), owners.setdefault(row.key, {})
            for name, value in fields.items():
                if name in slot and slot[name] != value:
                    raise BookRowError(f"book row {row.key!r}: {name} is {slot[name]!r} in chapter "
                                       f"{who[name]} but {value!r} in chapter {chapter}")
                slot[name], who[name] = value, chapter
    table = []
    for key, fields in merged.items():
        missing = [n for n in BookRow.DESCRIBING if n not in fields]
        if missing:
            named = sorted(set(owners[key].values()))
            raise BookRowError(f"book row {key!r} (measured in chapter(s) {named}) lacks "
                               f"{missing}: the chapter that owns it did not record it")
        table.append(BookRow(key=key, **fields))
    return table
