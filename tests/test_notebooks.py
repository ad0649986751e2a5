"""The chapters' launchable .ipynb copies (scripts/sync_notebooks.py): in sync, faithful, and a
Colab setup cell that does its work on Colab and nothing anywhere else."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p for p in (ROOT / "book").glob("*.md") if "\nkernelspec:" in p.read_text().split("\n---", 1)[0])


def _sync(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/sync_notebooks.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_committed_copies_are_in_sync():
    result = _sync("--check")
    assert result.returncode == 0, result.stderr


def test_every_chapter_has_a_copy_and_nothing_else_does():
    assert len(CHAPTERS) == 6, CHAPTERS
    assert sorted(p.with_suffix(".md") for p in (ROOT / "book").glob("*.ipynb")) == CHAPTERS


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_copy_holds_the_chapters_code_in_order_without_outputs(md: Path):
    # independent oracle: the code-cell fences of the Markdown, cut with a regular expression
    fences = re.findall(r"^```\{code-cell\}[^\n]*\n(.*?)^```\s*$", md.read_text(), flags=re.M | re.S)
    expected = []
    for body in fences:
        if body.startswith("---\n"):  # a YAML option block (tags) opens the cell
            body = body.split("\n---\n", 1)[1]
        while re.match(r":\w[\w-]*:", body):  # or short options, one per line (":tags: [hide-input]")
            body = body.split("\n", 1)[1]
        expected.append(body.rstrip("\n"))
    nb = nbformat.read(md.with_suffix(".ipynb"), as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert "google.colab" in code[0].source  # the generated setup cell comes first
    assert [cell.source.rstrip("\n") for cell in code[1:]] == expected
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert nb.metadata["kernelspec"]["name"] == "python3" and "jupytext" not in nb.metadata


def _setup_cell(md: Path) -> str:
    nb = nbformat.read(md.with_suffix(".ipynb"), as_version=4)
    return next(cell.source for cell in nb.cells if cell.cell_type == "code")


def test_colab_setup_cell_does_nothing_off_colab(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(_setup_cell(CHAPTERS[0]), {})
    assert calls == []


def test_colab_setup_cell_installs_the_course_from_the_configured_repository(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda args, **k: calls.append(args))
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    exec(_setup_cell(CHAPTERS[0]), {})
    repository = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    assert calls[0][1:4] == ["-m", "pip", "install"]
    assert calls[0][-1] == f"cvcourse @ git+{repository['url']}@{repository['branch']}"
    assert calls[1][1:] == ["-m", "cvcourse.assets"]


def test_check_names_a_stale_copy_and_an_orphan(tmp_path: Path):
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    shutil.copytree(ROOT / "book", tmp_path / "book")
    fpn = tmp_path / "book" / "fpn.md"
    fpn.write_text(fpn.read_text() + "\n```{code-cell} ipython3\nprint('new cell')\n```\n")
    (tmp_path / "book" / "old-chapter.ipynb").write_text("{}")
    result = _sync("--check", "--root", str(tmp_path))
    assert result.returncode == 1
    assert "book/fpn.ipynb is out of date with fpn.md: run `make notebooks`" in result.stderr
    assert "book/old-chapter.ipynb has no chapter" in result.stderr
    assert _sync("--root", str(tmp_path)).returncode == 0  # regenerating mends both
    assert _sync("--check", "--root", str(tmp_path)).returncode == 0
    assert "print('new cell')" in (tmp_path / "book" / "fpn.ipynb").read_text()
    assert not (tmp_path / "book" / "old-chapter.ipynb").exists()


@pytest.mark.slow
def test_a_copy_runs_top_to_bottom(tmp_path: Path):
    # the shortest chapter, executed from its copy as a student on the hub or Binder would
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "book" / "imagenet.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "book")}}).execute()
    assert any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")
