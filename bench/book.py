"""Benchmark: the whole book, cold and after one chapter changes (cached rebuild).

    .venv/bin/python bench/book.py [--chapter video]

Copies the book into a temporary folder, builds it cold with the same strict rules as
`make site`, then edits one code cell of one chapter and builds again. Prints, side by side from
this one run: each chapter's own execution time (from the execution cache), the cold build's
wall time against the sum of the chapters' times, and the rebuild's wall time against the edited
chapter's own time (the goal: a rebuild costs about one chapter, not the book).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build(book: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_book.py"), "--root", str(book)],
                   check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def chapter_times(book: Path) -> dict[str, float]:
    from jupyter_cache import get_cache

    cache = get_cache(str(book / "_build" / ".jupyter_cache"))
    return {Path(r.uri).stem: r.data.get("execution_seconds", 0.0) for r in cache.list_cache_records()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chapter", default="fpn", help="the chapter edited before the rebuild")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cvcourse-bench-") as tmp:
        book = Path(tmp)
        for name in ("_config.yml", "_toc.yml"):
            shutil.copy(ROOT / name, book / name)
        shutil.copytree(ROOT / "book", book / "book")
        cold = build(book)
        times = chapter_times(book)
        chapter = book / "book" / f"{args.chapter}.md"
        text = chapter.read_text()
        marker = "```{code-cell} ipython3\n"
        chapter.write_text(text.replace(marker, marker + "# edited for the rebuild benchmark\n", 1))
        before = dict(times)
        warm = build(book)
        after = chapter_times(book)
        rerun = [name for name in after if after[name] != before.get(name)]
    total = sum(times.values())
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}")
    print(f"{'chapter':<16}{'execution s':>12}")
    for name, seconds in sorted(times.items()):
        print(f"{name:<16}{seconds:>12.1f}")
    print(f"{'sum':<16}{total:>12.1f}")
    print(f"cold build wall time     {cold:8.1f} s   ratio to the sum of chapters: {cold / total:.2f}")
    print(f"rebuild after editing {args.chapter}: {warm:8.1f} s   re-executed: {', '.join(rerun) or 'none'}")
    print(f"  ratio to that chapter's own time ({times[args.chapter]:.1f} s): {warm / times[args.chapter]:.2f}")
    print(f"  ratio to the cold build: {warm / cold:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
