"""Autograde harness: grade a batch of submissions of one assignment in a temporary nbgrader course.

    scores = autograde("conv3d_shapes", {"alice": Path("alice.ipynb"), ...}, course_dir=tmp_path)

builds ``course_dir`` from ``solutions/<assignment>`` and the repository's ``nbgrader_config.py``,
runs ``nbgrader generate_assignment``, places each notebook as
``submitted/<student>/<assignment>/<assignment>.ipynb`` and runs ``nbgrader autograde`` ONCE for
all of them. Nothing is written inside the repository (the gradebook lives in ``course_dir``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["REPO", "NBGRADER", "FAST_TIMEOUTS", "autograde", "cell_scores", "feedback_html", "prepare_course", "run_nbgrader"]

REPO = Path(__file__).resolve().parents[1]
NBGRADER = Path(sys.executable).with_name("nbgrader")

#: Shorter limits for the test suite (hanging fixtures would otherwise cost 30 s per cell).
FAST_TIMEOUTS = ("--SafeExecute.timeout=8", "--TrustedRerun.call_timeout=6", "--TrustedRerun.cell_timeout=8")


def run_nbgrader(course_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in ``course_dir`` (its copied nbgrader_config.py applies)."""
    env = dict(os.environ)
    env["PATH"] = str(NBGRADER.parent) + os.pathsep + env.get("PATH", "")
    proc = subprocess.run([str(NBGRADER), *args, f"--CourseDirectory.root={course_dir}"], cwd=course_dir,
                          capture_output=True, text=True, env=env, timeout=3600)
    if check and proc.returncode != 0:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-6000:]}")
    return proc


def prepare_course(assignment: str, course_dir: Path) -> Path:
    """Create the course in ``course_dir`` and release ``assignment``; returns the released notebook."""
    course_dir = Path(course_dir)
    course_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "nbgrader_config.py", course_dir / "nbgrader_config.py")
    src = course_dir / "solutions" / assignment
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(REPO / "solutions" / assignment, src)
    run_nbgrader(course_dir, "generate_assignment", assignment, "--force", "--log-level=WARN")
    return course_dir / "exercises" / assignment / f"{assignment}.ipynb"


#: Students graded at once (the instructor's `cvcourse autograde -j N`); 1 = one nbgrader run for all.
WORKERS = int(os.environ.get("CVCOURSE_TEST_WORKERS", "2"))


def autograde(assignment: str, submissions: dict[str, Path], course_dir: Path,
              extra_args: tuple[str, ...] = FAST_TIMEOUTS, workers: int = WORKERS) -> dict[str, float]:
    """Grade every submission; returns student -> total score.

    With ``workers == 1``: one ``nbgrader autograde`` run for all. Otherwise the instructor's
    parallel command (:func:`cvcourse.cli.autograde`), ``workers`` students at a time, with
    ``extra_args`` written into the course's config. A submission that nbgrader cannot read
    (invalid JSON) scores 0 and does not stop the others.
    """
    from nbgrader.api import Gradebook, MissingEntry

    course_dir = Path(course_dir)
    prepare_course(assignment, course_dir)
    for student, path in submissions.items():
        dest = course_dir / "submitted" / student / assignment / f"{assignment}.ipynb"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest)
    if workers > 1:
        from cvcourse import cli

        with (course_dir / "nbgrader_config.py").open("a") as handle:
            for arg in extra_args:  # "--Class.trait=value" -> "c.Class.trait = value"
                name, value = arg.removeprefix("--").split("=", 1)
                handle.write(f"\nc.{name} = {value}\n")
        results = cli.autograde(course_dir, assignment, workers=workers)
        (course_dir / "autograde.log").write_text("\n".join(f"{r.student}: {r.status} {r.reason}" for r in results))
    else:
        proc = run_nbgrader(course_dir, "autograde", assignment, "--force", *extra_args, check=False)
        (course_dir / "autograde.log").write_text(proc.stdout + "\n" + proc.stderr)
    scores: dict[str, float] = {}
    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gb:
        for student in submissions:
            try:
                scores[student] = float(gb.find_submission(assignment, student).score)
            except MissingEntry:
                scores[student] = 0.0
    return scores


def cell_scores(assignment: str, student: str, course_dir: Path) -> dict[str, float]:
    """Score of each graded cell of one student's notebook after :func:`autograde`."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{Path(course_dir) / 'gradebook.db'}") as gb:
        try:
            nb = gb.find_submission_notebook(assignment, assignment, student)
        except MissingEntry:  # never graded (an unreadable notebook): zero in every graded cell
            return {cell.name: 0.0 for cell in gb.find_notebook(assignment, assignment).grade_cells}
        return {g.name: float(g.score) for g in nb.grades}


def feedback_html(assignment: str, student: str, course_dir: Path) -> str:
    """Run ``nbgrader generate_feedback`` for one student and return the HTML."""
    run_nbgrader(Path(course_dir), "generate_feedback", assignment, f"--student={student}", "--force",
                 "--log-level=WARN")
    path = Path(course_dir) / "feedback" / student / assignment / f"{assignment}.html"
    return path.read_text()
