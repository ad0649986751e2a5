"""The book builds strictly, shows its figures, stays in budget and fails loudly when broken."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ["video", "interpretation", "adversarial", "imagenet", "transformers", "fpn"]
BUDGET_SECONDS = 60.0
MYST_HEADER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""

pytestmark = pytest.mark.slow


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [entry["file"] for entry in part["chapters"]]
    return files


def test_every_chapter_is_in_the_toc():
    files = _toc_files()
    for chapter in CHAPTERS:
        assert f"book/{chapter}" in files


def test_site_has_every_page_and_the_chapters_figures(built_site: Path):
    assert (built_site / "index.html").is_file()
    for page in _toc_files():
        assert (built_site / f"{page}.html").is_file(), f"{page}.html missing from the site"
    for chapter in CHAPTERS:
        html = (built_site / "book" / f"{chapter}.html").read_text()
        images = re.findall(r'<img[^>]+src="([^"]+)"', html)
        figures = [src for src in images if "_images/" in src or src.startswith("data:image")]
        plotly = html.count("Plotly.newPlot")
        assert figures or plotly, f"{chapter}: no executed figure in the page"
        for src in figures:
            if not src.startswith("data:"):
                assert (built_site / "book" / src).resolve().is_file(), f"{chapter}: {src} is not in the site"
        assert "Traceback (most recent call last)" not in html, f"{chapter}: a traceback reached the site"


def test_every_chapter_runs_within_budget(built_site: Path):
    from jupyter_cache import get_cache

    cache = get_cache(str(ROOT / "_build" / ".jupyter_cache"))
    times = {Path(r.uri).stem: r.data.get("execution_seconds") for r in cache.list_cache_records()}
    for chapter in CHAPTERS:
        assert chapter in times, f"{chapter} has no execution record in the cache"
        assert times[chapter] <= BUDGET_SECONDS, f"{chapter} took {times[chapter]:.1f} s (> {BUDGET_SECONDS} s)"


def test_solutions_never_reach_the_site(built_site: Path):
    for path in built_site.rglob("*"):
        assert "solutions" not in path.relative_to(built_site).parts, f"{path} is published"
    hits = [p for p in built_site.rglob("*.html") if "### BEGIN SOLUTION" in p.read_text(errors="ignore")]
    assert not hits


def _minimal_book(tmp_path: Path, cell: str) -> Path:
    (tmp_path / "book").mkdir()
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/broken\n")
    (tmp_path / "book" / "intro.md").write_text("# Intro\n\nA minimal book.\n")
    (tmp_path / "book" / "broken.md").write_text(
        f"{MYST_HEADER}# Broken chapter\n\n```{{code-cell}} ipython3\nok = 1\n```\n\n"
        f"```{{code-cell}} ipython3\n{cell}\n```\n"
    )
    return tmp_path


def test_a_cell_that_raises_fails_the_build_and_names_chapter_and_cell(tmp_path: Path):
    book = _minimal_book(tmp_path, "marker_value = 41\nraise RuntimeError('chapter-bug-' + str(marker_value + 1))")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_book.py"), "--root", str(book)],
                            capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "book/broken.md" in output, "the error must name the chapter"
    assert "raise RuntimeError('chapter-bug-'" in output, "the error must show the failing cell"
    assert "chapter-bug-42" in output
    assert not (book / "_build" / "html").exists(), "a failed build must not leave a site to publish"


def test_a_sphinx_warning_fails_the_build(tmp_path: Path):
    book = _minimal_book(tmp_path, "ok = 2")
    chapter = book / "book" / "broken.md"
    chapter.write_text(chapter.read_text() + "\nSee {ref}`a-label-that-does-not-exist`.\n")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_book.py"), "--root", str(book)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "a-label-that-does-not-exist" in result.stdout + result.stderr
