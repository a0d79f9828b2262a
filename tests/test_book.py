"""The book builds (warnings are errors) from the notebooks the suite executed, without executing
them again, and every chapter page carries its outputs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_book_builds_from_executed_notebooks(built_book):
    html, work, stems = built_book["html"], built_book["work"], built_book["stems"]
    assert (html / "index.html").exists()
    cache = work / "_build" / ".jupyter_cache"
    executed_again = "Executing" in built_book["log"] or cache.exists()
    assert not executed_again, "the book must not execute notebooks a second time"
    for stem in stems:
        page = (html / "notebooks" / f"{stem}.html").read_text()
        assert "<img" in page, f"{stem}: no figure on the page"
        assert "Traceback" not in page, f"{stem}: an error output reached the book"
    assert (html / "references.html").exists()
    assert (html / "taxonomy.html").exists() and (html / "guide.html").exists()
    intro = (html / "intro.html").read_text()
    missing = [stem for stem in stems if f"notebooks/{stem}.html" not in intro]
    assert not missing, f"chapters missing from the toc: {missing}"
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists(), "MathJax must be local"
    assert "cdn.jsdelivr.net/npm/mathjax" not in intro


def test_strict_build_fails_on_a_broken_reference(tmp_path, book_builder):
    builder = book_builder
    work = builder.stage(tmp_path / "book")
    (work / "intro.md").write_text((work / "intro.md").read_text() + "\nSee {cite}`no_such_key`.\n")
    try:
        builder.build_html(work, strict=True, capture=True)
    except subprocess.CalledProcessError as err:
        assert re.search(r"no_such_key|not found", err.stdout + (err.stderr or ""))
    else:
        raise AssertionError("a book with an undefined citation built without error under -W")


def test_bibliography_keys_are_unique_across_files():
    """Every chapter has its own bib file; a key defined twice fails the strict book build."""
    keys: dict[str, list[str]] = {}
    for path in [ROOT / "book" / "references.bib", *sorted((ROOT / "book" / "bib").glob("*.bib"))]:
        for key in re.findall(r"^@\w+\{([^,\s]+),", path.read_text(), re.M):
            keys.setdefault(key, []).append(path.name)
    duplicated = {k: v for k, v in keys.items() if len(v) > 1}
    assert not duplicated, ("keys defined in several bib files (move them to references.bib): "
                            f"{duplicated}")
