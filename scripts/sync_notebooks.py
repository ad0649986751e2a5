"""Write book/<chapter>.ipynb from book/<chapter>.md (the chapters' launchable copies).

`python scripts/sync_notebooks.py` rewrites them; `--check` exits 1, naming the chapter, when a
committed copy differs from what its `.md` implies (tests/test_notebooks.py runs it).

Why: the chapters' one source of truth is MyST Markdown, which Jupyter Book executes and
renders. The launch buttons (Binder, the course's JupyterHub, Colab) open a file from the
repository, and Colab opens only `.ipynb`; Binder and the hub open `.md` as a text file unless
jupytext is installed. When `book/<chapter>.ipynb` exists, sphinx-book-theme points every
launch button at it. The copies hold no outputs, are excluded from the build (`_config.yml`),
and start with two generated cells: a note saying where to edit, and a setup cell that installs
the course package and its assets only when the notebook runs on Colab.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import yaml
from myst_nb.core.read import read_myst_markdown_notebook

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"

NOTE = """\
*This notebook is generated from [`{md}`]({md_name}) by `scripts/sync_notebooks.py`; edit the
Markdown file, not this one. It is the copy that the site's launch buttons (Binder, the course's
JupyterHub, Colab) open.*"""

COLAB_SETUP = """\
# On Google Colab only: install the course package and fetch its assets (model weights, video clip).
# Everywhere else (the course's JupyterHub, Binder, your machine after `make book`) this does nothing.
import sys

if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "{requirement}"], check=True)
    subprocess.run([sys.executable, "-m", "cvcourse.assets"], check=True)"""


def chapters(book: Path = BOOK) -> list[Path]:
    """The executable chapters: Markdown files whose front matter names a kernel."""
    return sorted(path for path in book.glob("*.md") if "\nkernelspec:" in path.read_text().split("\n---", 1)[0])


def requirement(root: Path = ROOT) -> str:
    """pip requirement for the course package at the configured repository and branch."""
    repository = yaml.safe_load((root / "_config.yml").read_text())["repository"]
    return f"cvcourse @ git+{repository['url'].rstrip('/')}@{repository.get('branch', 'main')}"


def render(md: Path, root: Path = ROOT) -> str:
    """The notebook text for chapter ``md``: generated cells, then the chapter's cells, no outputs."""
    nb = read_myst_markdown_notebook(md.read_text())
    nb.metadata.pop("jupytext", None)  # a plain notebook, not paired with the .md
    relative = md.relative_to(root).as_posix()
    header = [
        nbformat.v4.new_markdown_cell(NOTE.format(md=relative, md_name=md.name)),
        nbformat.v4.new_code_cell(COLAB_SETUP.format(requirement=requirement(root))),
    ]
    nb.cells = header + nb.cells
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"{md.stem}-{index}"  # stable ids: the same .md gives the same bytes
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def main(argv: list[str]) -> int:
    """``[--check] [--root PATH]``: PATH is the course folder (default: this repository)."""
    check = "--check" in argv
    root = Path(argv[argv.index("--root") + 1]).resolve() if "--root" in argv else ROOT
    book = root / "book"
    sources = chapters(book)
    problems = []
    for md in sources:
        target = md.with_suffix(".ipynb")
        text = render(md, root)
        if target.exists() and target.read_text() == text:
            continue
        if check:
            problems.append(f"{target.relative_to(root)} is out of date with {md.name}: run `make notebooks` and commit it")
        else:
            target.write_text(text)
            print(f"wrote {target.relative_to(root)}")
    for orphan in sorted(path for path in book.glob("*.ipynb") if path.with_suffix(".md") not in sources):
        if check:
            problems.append(f"{orphan.relative_to(root)} has no chapter {orphan.with_suffix('.md').name}: "
                            "delete it or restore the chapter")
        else:
            orphan.unlink()
            print(f"removed {orphan.relative_to(root)} (no chapter)")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
