"""Benchmark: autograding a class, serial vs parallel, against the floor.

    .venv/bin/python bench/autograde.py [--students 20] [--workers 2] [--assignments conv3d_shapes pca ...]

Builds a temporary course with every assignment in `solutions/` and a class of synthetic
submissions (each student submits, for each assignment, either the solution, the unmodified
release or one of the fixture submissions under tests/fixtures/, in turn). Then, in one run:

- autogrades every notebook serially (`cvcourse autograde -j 1`),
- autogrades them again with `--workers` processes,
- autogrades a trivial notebook that only imports torch, for every student: the floor that
  nbgrader, the kernel start and the trusted re-run cost whatever the notebook holds,

and prints seconds per notebook for each and their ratios. Grades of the serial and the parallel
run must agree; the script fails if they do not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from cvcourse import cli  # noqa: E402

FLOOR = "floor"


def _trivial_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("import torch\nprint(torch.__version__)")
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": "only", "locked": True, "points": 1,
                                 "schema_version": 3, "solution": False, "task": False}
    nb.cells.append(cell)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def build_course(course: Path, assignments: list[str], students: int) -> int:
    shutil.copy(ROOT / "nbgrader_config.py", course / "nbgrader_config.py")
    for name in assignments:
        shutil.copytree(ROOT / "solutions" / name, course / "solutions" / name)
    _trivial_notebook(course / "solutions" / FLOOR / f"{FLOOR}.ipynb")
    assert cli.main(["--course-dir", str(course), "release", *assignments, FLOOR, "--no-exchange"]) == 0
    count = 0
    for name in assignments:
        pool = [course / "solutions" / name / f"{name}.ipynb", course / "exercises" / name / f"{name}.ipynb"]
        pool += sorted((ROOT / "tests" / "fixtures" / "submissions" / name).glob("wrong-*.ipynb"))
        pool += sorted((ROOT / "tests" / "fixtures" / "submissions" / name).glob("correct-*.ipynb"))
        for k in range(students):
            folder = course / "submitted" / f"s{k:03d}" / name
            folder.mkdir(parents=True)
            shutil.copy(pool[k % len(pool)], folder / f"{name}.ipynb")
            (folder / "timestamp.txt").write_text("2026-12-01 10:00:00.000000 UTC")
            count += 1
    for k in range(students):
        folder = course / "submitted" / f"s{k:03d}" / FLOOR
        folder.mkdir(parents=True)
        shutil.copy(course / "exercises" / FLOOR / f"{FLOOR}.ipynb", folder / f"{FLOOR}.ipynb")
        (folder / "timestamp.txt").write_text("2026-12-01 10:00:00.000000 UTC")
    return count


def grade_all(course: Path, assignments: list[str], workers: int) -> tuple[float, dict]:
    start = time.perf_counter()
    grades = {}
    for name in assignments:
        for r in cli.autograde(course, name, workers=workers):
            grades[(name, r.student)] = (r.status, r.score)
    return time.perf_counter() - start, grades


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--assignments", nargs="*", default=sorted(p.name for p in (ROOT / "solutions").iterdir()))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cvcourse-bench-") as tmp:
        course = Path(tmp)
        n = build_course(course, args.assignments, args.students)
        serial_s, serial = grade_all(course, args.assignments, 1)
        parallel_s, parallel = grade_all(course, args.assignments, args.workers)
        floor_s, _ = grade_all(course, [FLOOR], 1)
    if serial != parallel:
        diff = {k: (serial[k], parallel.get(k)) for k in serial if serial[k] != parallel.get(k)}
        print("serial and parallel grades differ:", json.dumps({str(k): v for k, v in diff.items()}))
        return 1
    per = {"serial": serial_s / n, f"{args.workers} workers": parallel_s / n, "floor": floor_s / args.students}
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"class: {args.students} students x {len(args.assignments)} assignments = {n} notebooks")
    for label, seconds in per.items():
        print(f"{label:<12} {seconds:7.2f} s per notebook")
    print(f"speed-up with {args.workers} workers: {serial_s / parallel_s:.2f}x")
    print(f"serial / floor: {per['serial'] / per['floor']:.2f}")
    print(f"parallel / floor: {per[f'{args.workers} workers'] / per['floor']:.2f}")
    print("grades: serial and parallel agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
