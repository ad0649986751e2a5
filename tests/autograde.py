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

__all__ = ["REPO", "NBGRADER", "FAST_TIMEOUTS", "autograde", "cell_scores", "feedback_html", "prepare_course", "run_nbgrader",
           "solution_path", "release_path", "fixture_scenarios", "check_solution_rules", "check_fixtures_in_sync",
           "grade_fixture_class", "require_release"]

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


# ----------------------------------------------------------------------------- fixture classes
# What every assignment's test file checks the same way: the solution notebook's structure, the
# fixture notebooks' sync with their snippets, and one graded batch of solution, release and
# fixtures with the rules every assignment shares. Only the per-cell rule for wrong-* fixtures
# differs between files, so the graded batch is returned for the caller to check it.


def solution_path(assignment: str) -> Path:
    return REPO / "solutions" / assignment / f"{assignment}.ipynb"


def release_path(assignment: str) -> Path:
    return REPO / "exercises" / assignment / f"{assignment}.ipynb"


def fixture_scenarios(assignment: str) -> list[str]:
    """Names of the fixture submissions of ``assignment`` (one snippet each)."""
    from fixtures.make_submissions import SNIPPETS

    return sorted(p.stem for p in (SNIPPETS / assignment).glob("*.py"))


def check_solution_rules(assignment: str, points: dict[str, int], hidden_imports: tuple[str, ...] = ()) -> None:
    """The instructor notebook follows the course's nbgrader rules and has exactly ``points``.

    ``hidden_imports``: oracle libraries that may be imported only inside hidden blocks.
    """
    import nbformat

    nb = nbformat.read(solution_path(assignment), as_version=4)
    metas = [c.metadata.get("nbgrader") for c in nb.cells]
    assert all(m and m.get("schema_version") == 3 for m in metas), "every cell needs nbgrader metadata (schema 3)"
    ids = [m["grade_id"] for m in metas]
    assert len(ids) == len(set(ids)), f"grade_id values must be unique: {ids}"
    graded = {m["grade_id"]: m["points"] for m in metas if m.get("grade")}
    assert graded == points, f"graded cells and points: {graded}"
    assert sum(graded.values()) == 10
    for cell in nb.cells:
        meta = cell.metadata["nbgrader"]
        assert "cvcourse" not in cell.source, f"{meta['grade_id']}: an assignment must not import cvcourse"
        if cell.cell_type == "markdown" or not (meta["solution"] or meta["grade"]):
            assert meta["locked"] and not meta["solution"] and not meta["grade"], meta
        if meta["solution"]:
            assert not meta["locked"] and not meta["grade"]
            assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source
            assert '"""' in cell.source.split("### BEGIN SOLUTION")[0], "the docstring stays outside the solution"
        if meta["grade"]:
            assert meta["locked"] and not meta["solution"]
            assert cell.source.startswith("# Checks: "), f"{meta['grade_id']}: first line must be '# Checks: ...'"
            head, _, hidden = cell.source.partition("### BEGIN HIDDEN TESTS")
            assert "assert" in head.lower(), f"{meta['grade_id']}: needs visible checks before the hidden block"
            assert "### END HIDDEN TESTS" in hidden, f"{meta['grade_id']}: needs a hidden block"
            for oracle in hidden_imports:  # oracles are imported inside the hidden block only
                assert f"import {oracle}" not in head and f"from {oracle}" not in head, (
                    f"{meta['grade_id']}: {oracle} is imported inside the hidden block only")
    assert nb.cells[0].cell_type == "markdown" and "book/" in nb.cells[0].source, "intro must point to the chapter"


def require_release(assignment: str) -> Path:
    """The committed student version of ``assignment``; skips the calling test when it is missing."""
    import pytest

    released = release_path(assignment)
    if not released.exists():
        pytest.skip(f"{released} not generated yet (make exercises)")
    return released


def check_fixtures_in_sync(assignment: str, required: set[str], wrong_listed: set[str]) -> None:
    """Fixture notebooks match their snippets; ``required`` scenarios exist; every wrong-* is listed."""
    from fixtures.make_submissions import SUBMISSIONS, build_all

    require_release(assignment)

    scenarios = fixture_scenarios(assignment)
    assert required <= set(scenarios), f"missing scenarios: {required - set(scenarios)}"
    assert any(s.startswith("correct-") for s in scenarios), "at least one correct-* fixture"
    wrong = {s for s in scenarios if s.startswith("wrong-")}
    assert wrong_listed == wrong, f"the expectations must list every wrong-* fixture exactly: {wrong_listed ^ wrong}"
    committed = {p.stem for p in (SUBMISSIONS / assignment).glob("*.ipynb")}
    assert committed == set(scenarios), f"fixture notebooks without snippet or vice versa: {committed ^ set(scenarios)}"
    for scenario, text in build_all(assignment).items():
        path = SUBMISSIONS / assignment / f"{scenario}.ipynb"
        assert path.read_text() == text, f"{path} is stale: run tests/fixtures/make_submissions.py {assignment}"


def grade_fixture_class(assignment: str, course_dir: Path) -> tuple[dict[str, float], dict[str, set[str]], str]:
    """Grade the solution, the unmodified release and every fixture of ``assignment`` in one batch.

    Asserts what holds for every assignment: the committed release is what nbgrader generates now;
    the solution and every correct-* score 10, the release and every cheat-* score 0, every
    wrong-* scores below 10. Returns (scores, the graded cells each student lost entirely, a
    report to print in the caller's own assertion messages).
    """
    import json

    import nbformat
    from fixtures.make_submissions import SUBMISSIONS

    released = require_release(assignment)
    submissions = {"solution": solution_path(assignment), "release": released}
    for scenario in fixture_scenarios(assignment):
        submissions[scenario] = SUBMISSIONS / assignment / f"{scenario}.ipynb"
    scores = autograde(assignment, submissions, course_dir)
    lost = {s: {name for name, value in cell_scores(assignment, s, course_dir).items() if value == 0} for s in submissions}
    report = json.dumps({s: [scores[s], sorted(lost[s])] for s in scores}, indent=1)

    fresh = nbformat.read(Path(course_dir) / "exercises" / assignment / f"{assignment}.ipynb", as_version=4)
    committed = nbformat.read(released, as_version=4)
    assert [c.source for c in committed.cells] == [c.source for c in fresh.cells], (
        f"{released} is stale: regenerate it with nbgrader generate_assignment")

    assert scores["solution"] == 10, f"the solution should score 10/10:\n{report}"
    assert scores["release"] == 0, f"the unmodified release should score 0:\n{report}"
    for student, score in scores.items():
        if student.startswith("correct-"):
            assert score == 10, f"{student} should score 10/10:\n{report}"
        elif student.startswith("cheat-"):
            assert score == 0, f"{student} should score 0:\n{report}"
        elif student.startswith("wrong-"):
            assert score < 10, f"{student} should lose points:\n{report}"
    return scores, lost, report
