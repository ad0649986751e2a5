"""The instructor's `cvcourse` command: bad submissions, nothing lost, parallel = serial, PostgreSQL.

One temporary course with the `conv3d_shapes` assignment and a class of submissions, each a
scenario: a correct one, the unmodified release, a typical mistake, a kernel that dies, a cell
that never ends, a corrupt notebook, a missing notebook, a renamed notebook, an extra file.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import postgres  # noqa: E402

from cvcourse import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "submissions" / "conv3d_shapes"
A = "conv3d_shapes"

pytestmark = pytest.mark.slow

# student -> (file placed in submitted/<student>/conv3d_shapes/, where it comes from)
CLASS = {
    "ada": (f"{A}.ipynb", "solution"),
    "ben": (f"{A}.ipynb", "release"),
    "cy": (f"{A}.ipynb", FIXTURES / "wrong-no-dilation.ipynb"),
    "dee": (f"{A}.ipynb", FIXTURES / "cheat-os-exit.ipynb"),
    "eli": (f"{A}.ipynb", FIXTURES / "cheat-loop-toplevel.ipynb"),  # loops, but two tasks are honest
    "fay": (f"{A}.ipynb", "corrupt"),
    "gus": (None, None),
    "hal": ("my_conv3d_work.ipynb", "solution"),
    "ivy": (f"{A}.ipynb", "solution+extra"),
}
EXPECTED_STATUS = {"ada": "graded", "ben": "graded", "cy": "graded", "dee": "graded", "eli": "graded",
                   "fay": "skipped", "gus": "skipped", "hal": "skipped", "ivy": "graded"}


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    course = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", course / "nbgrader_config.py")
    with (course / "nbgrader_config.py").open("a") as handle:  # short limits for the hanging scenarios
        handle.write("\nc.SafeExecute.timeout = 8\nc.TrustedRerun.call_timeout = 6\nc.TrustedRerun.cell_timeout = 8\n")
    shutil.copytree(ROOT / "solutions" / A, course / "solutions" / A)
    assert cli.main(["--course-dir", str(course), "release", A, "--no-exchange"]) == 0
    sources = {"solution": course / "solutions" / A / f"{A}.ipynb", "release": course / "exercises" / A / f"{A}.ipynb"}
    for student, (name, origin) in CLASS.items():
        folder = course / "submitted" / student / A
        folder.mkdir(parents=True)
        (folder / "timestamp.txt").write_text("2026-12-01 10:00:00.000000 UTC")
        if name is None:
            continue
        if origin == "corrupt":
            (folder / name).write_text('{"cells": [ this is not json')
        elif origin == "solution+extra":
            shutil.copy(sources["solution"], folder / name)
            (folder / "scratch.py").write_text("print('notes')\n")
        else:
            shutil.copy(sources.get(origin, origin), folder / name)
    return course


@pytest.fixture(scope="module")
def serial(course: Path) -> dict[str, cli.GradeResult]:
    before = _tree_digest(course / "submitted")
    results = {r.student: r for r in cli.autograde(course, A, workers=1, timeout=600)}
    assert _tree_digest(course / "submitted") == before, "autograde modified a submission"
    return results


def test_every_student_gets_a_clear_report_line(course: Path, serial):
    assert set(serial) == set(CLASS)
    for student, status in EXPECTED_STATUS.items():
        assert serial[student].status == status, (student, serial[student])
    assert "corrupt notebook" in serial["fay"].reason and f"{A}.ipynb" in serial["fay"].reason
    assert "missing notebook" in serial["gus"].reason
    assert "renamed" in serial["hal"].reason and "my_conv3d_work.ipynb" in serial["hal"].reason
    assert any("scratch.py" in note for note in serial["ivy"].notes)
    assert any("stopped early" in note and "Kernel died" in note for note in serial["dee"].notes), serial["dee"].notes
    assert any("Timeout" in note for note in serial["eli"].notes), serial["eli"].notes
    rows = list(csv.DictReader((course / "reports" / A / "autograde-report.csv").open()))
    assert {row["student"] for row in rows} == set(CLASS)
    for row in rows:
        assert row["status"] and row["file"], row


def test_bad_submissions_never_cost_another_student(serial):
    assert serial["ada"].score == 10 and serial["ivy"].score == 10
    assert serial["ben"].score == 0
    assert 0 < serial["cy"].score < 10
    assert serial["dee"].score == 0
    assert 0 < serial["eli"].score < 10  # the loop costs the task it blocks, not the honest ones


def test_parallel_regrade_gives_exactly_the_serial_grades(course: Path, serial):
    before = _tree_digest(course / "submitted")
    parallel = {r.student: r for r in cli.autograde(course, A, workers=2, timeout=600)}
    assert _tree_digest(course / "submitted") == before, "autograde modified a submission"
    assert {s: r.score for s, r in parallel.items()} == {s: r.score for s, r in serial.items()}
    assert {s: r.status for s, r in parallel.items()} == {s: r.status for s, r in serial.items()}


def test_export_csv_has_the_grades(course: Path, serial, tmp_path: Path):
    out = tmp_path / "grades.csv"
    assert cli.main(["--course-dir", str(course), "export", str(out)]) == 0
    rows = [row for row in csv.DictReader(out.open()) if row["assignment"] == A]
    scores = {row["student_id"]: float(row["score"]) for row in rows}
    for student in ("ada", "ben", "cy", "ivy"):
        assert scores[student] == serial[student].score


def test_feedback_is_generated_for_graded_students(course: Path, serial):
    assert cli.main(["--course-dir", str(course), "feedback", A, "--no-exchange"]) == 0
    for student in ("ada", "ben", "cy"):
        html = course / "feedback" / student / A / f"{A}.html"
        assert html.is_file(), f"no feedback for {student}"
        assert "BEGIN HIDDEN TESTS" not in html.read_text()


def test_command_line_reports_a_missing_course_clearly(tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "cvcourse.cli", "--course-dir", str(tmp_path), "autograde", A],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "nbgrader_config.py" in result.stderr and str(tmp_path) in result.stderr


@pytest.mark.skipif(not postgres.available(), reason="needs PostgreSQL: make system-deps")
def test_postgresql_gradebook_parallel_equals_serial_sqlite(course: Path, serial, tmp_path: Path):
    students = ["ada", "ben", "cy", "ivy"]
    with postgres.postgres_server() as url:
        # the assignment must exist in the new gradebook before grading
        assert cli.main(["--course-dir", str(course), "--db-url", url, "release", A, "--no-exchange"]) == 0
        results = cli.autograde(course, A, workers=4, students=students, db_url=url, timeout=600)
        assert {r.student: r.score for r in results} == {s: serial[s].score for s in students}
        from nbgrader.api import Gradebook

        with Gradebook(url) as gb:
            stored = {s.student_id: s.score for s in gb.assignment_submissions(A)}
        assert stored == {s: serial[s].score for s in students}
