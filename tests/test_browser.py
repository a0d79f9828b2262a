"""The book as a reader sees it: every page opened in headless Chromium renders, its figures load,
its formulas are typeset by the local MathJax, and no internal link is broken. Screenshots go to
the build folder (``_build/screenshots``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

CHROMIUM = (shutil.which("chromium") or shutil.which("chromium-browser")
            or shutil.which("google-chrome"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=8000"]


@pytest.fixture(scope="module")
def chromium():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: .ci/run installs Debian's chromium package")
        pytest.skip("Chromium not found: install it (Debian/Ubuntu: apt-get install chromium) "
                    "to run the browser test")
    return CHROMIUM


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.srcs = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href"):
            self.hrefs.append(attrs["href"])
        if tag in ("img", "script") and attrs.get("src"):
            self.srcs.append(attrs["src"])
        if tag == "link" and attrs.get("href") and attrs.get("rel") in ("stylesheet",):
            self.srcs.append(attrs["href"])


def pages(html: Path) -> list[Path]:
    """Every page a reader reaches from the table of contents (not Sphinx's search/index pages)."""
    top = [p for p in sorted(html.glob("*.html")) if p.name not in ("genindex.html", "search.html")]
    return top + sorted((html / "notebooks").glob("*.html"))


def broken_internal_links(page: Path, root: Path) -> list[str]:
    """Relative links and resources of ``page`` whose target file does not exist under ``root``."""
    parser = Links()
    parser.feed(page.read_text())
    broken = []
    for ref in parser.hrefs + parser.srcs:
        parts = urlsplit(ref)
        if parts.scheme or ref.startswith(("#", "mailto:", "//")) or not parts.path:
            continue
        target = (page.parent / unquote(parts.path)).resolve()
        if not target.exists() or root.resolve() not in target.parents and target != root.resolve():
            broken.append(ref)
    return broken


def render(chromium: str, page: Path, profile: Path, screenshot: Path) -> str:
    common = [chromium, *FLAGS, f"--user-data-dir={profile}"]
    subprocess.run([*common, f"--screenshot={screenshot}", "--window-size=1280,1800",
                    page.as_uri()], check=True, capture_output=True, timeout=120)
    done = subprocess.run([*common, "--dump-dom", page.as_uri()], check=True, capture_output=True,
                          text=True, timeout=120)
    return done.stdout


def test_link_checker_finds_a_broken_link(tmp_path):
    (tmp_path / "a.html").write_text('<a href="b.html">b</a><a href="missing.html#x">m</a>'
                                     '<img src="img/none.png"><a href="https://example.org">e</a>')
    (tmp_path / "b.html").write_text("ok")
    broken = broken_internal_links(tmp_path / "a.html", tmp_path)
    assert broken == ["missing.html#x", "img/none.png"]


def test_every_page_renders_in_chromium(built_book, chromium, tmp_path):
    html = built_book["html"]
    shots = built_book["work"] / "_build" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    problems = []
    for page in pages(html):
        rel = page.relative_to(html)
        broken = broken_internal_links(page, html)
        if broken:
            problems.append(f"{rel}: broken links {broken[:5]}")
        shot = shots / (str(rel).replace("/", "__").removesuffix(".html") + ".png")
        dom = render(chromium, page, tmp_path / "profile", shot)
        if page.name == "index.html":
            continue  # a redirect to intro.html
        if not re.search(r'<main[^>]*id="main-content"', dom) or "<article" not in dom:
            problems.append(f"{rel}: the page body did not render")
        if not shot.exists() or shot.stat().st_size < 10_000:
            problems.append(f"{rel}: no screenshot (or a blank one)")
        if page.parent.name == "notebooks":
            if "<img" not in dom:
                problems.append(f"{rel}: no figure")
            source = page.read_text()
            if "math notranslate" in source and (
                    "mjx-container" not in dom
                    or re.search(r'class="math notranslate nohighlight">\\[(\[]', dom)):
                problems.append(f"{rel}: formulas were not typeset by MathJax")
    assert not problems, "\n".join(problems)
    print(f"screenshots: {shots}")
