"""Typed rows of the book-wide table: malformed or missing rows fail with the chapter named."""

from __future__ import annotations

import math

import pytest

from pets_lite.results import BookRow, BookRowError, book_table, chapter_rows

OWN = dict(technique="DP-SGD", family="statistical perturbation", stage="training",
           trusted="the trainer sees every image")


def glued(*rows, peak=None):
    values = {"book_rows": [r.to_record() for r in rows]}
    if peak is not None:
        values["peak_memory_mib"] = peak
    return values


def test_rows_merge_by_key_and_carry_the_owners_peak_memory():
    chapters = {"02_dp": glued(BookRow("dp-8", epsilon=7.99, test_auc=0.93, **OWN), peak=900.0),
                "07_attacks": glued(BookRow("dp-8", membership_tpr=0.001), peak=2000.0)}
    (row,) = book_table(chapters)
    assert (row.epsilon, row.membership_tpr, row.test_auc) == (7.99, 0.001, 0.93)
    assert row.peak_mib == 900.0


def test_infinite_epsilon_survives_the_glue_round_trip():
    row = BookRow("base", epsilon=math.inf, **OWN)
    assert BookRow.from_record(row.to_record()) == row


@pytest.mark.parametrize("bad, message", [
    (dict(test_auc=1.2), "test_auc = 1.2 is outside"),
    (dict(stage="somewhere"), "stage 'somewhere' is not one of"),
    (dict(seconds=3.0), "needs its unit of work"),
    (dict(membership_tpr=float("nan")), "must be a number"),
    (dict(megabytes=math.inf, per="round"), "outside"),
])
def test_malformed_rows_are_refused(bad, message):
    with pytest.raises(BookRowError, match=message):
        BookRow("x", **{**OWN, **bad})


def test_a_chapter_without_rows_or_with_a_bad_row_is_named():
    with pytest.raises(BookRowError, match="chapter 03 recorded no book rows"):
        book_table({"03_fl": {"test_auc": 0.9}})
    with pytest.raises(BookRowError, match="chapter 05: .*unknown fields \\['auc'\\]"):
        chapter_rows({"book_rows": [{"key": "he", "auc": 0.9}]}, "05")
    with pytest.raises(BookRowError, match="chapter 05: book row 'he': test_auc"):
        chapter_rows({"book_rows": [{"key": "he", "test_auc": 2.0}]}, "05")


def test_conflicts_and_ownerless_rows_fail():
    with pytest.raises(BookRowError, match="test_auc is 0.9 in chapter 00 but 0.8 in chapter 07"):
        book_table({"00_b": glued(BookRow("b", test_auc=0.9, **OWN)),
                    "07_a": glued(BookRow("b", test_auc=0.8))})
    with pytest.raises(BookRowError, match="row 'ghost' .*chapter.*07.*lacks"):
        book_table({"07_a": glued(BookRow("ghost", membership_tpr=0.01))})
