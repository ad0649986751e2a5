"""The instructor's commands, over nbgrader's own (`cvcourse --help`).

Every command works on a course directory (``--course-dir``, default: the current directory),
the folder that holds ``nbgrader_config.py``, ``solutions/`` and the gradebook:

    cvcourse release conv3d_shapes          # generate exercises/ and release to the exchange
    cvcourse collect conv3d_shapes          # collect submissions from the exchange
    cvcourse autograde conv3d_shapes -j 4   # autograde every submission, 4 students at a time
    cvcourse feedback conv3d_shapes         # per-student feedback HTML, released to students
    cvcourse export grades.csv              # all grades as CSV

``autograde`` checks every submission before nbgrader sees it, grades each student in a process
of its own (so one student's notebook can never stop or slow the others beyond its timeout), and
writes one report line per student: ``reports/<assignment>/autograde-report.csv``. Submissions in
``submitted/`` are only ever read.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["GradeResult", "autograde", "check_submission", "main", "nbgrader"]

#: Files nbgrader itself puts beside a submission; they are never "extra".
_NBGRADER_FILES = {"timestamp.txt"}


@dataclass
class GradeResult:
    """What happened to one student's submission."""

    student: str
    file: str
    status: str  # "graded", "skipped" or "failed"
    reason: str = ""
    score: float | None = None
    max_score: float | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def nbgrader(args: Sequence[str], course_dir: Path, timeout: float | None = None,
             db_url: str | None = None) -> subprocess.CompletedProcess:
    """Run one nbgrader command in ``course_dir`` and capture its output."""
    cmd = [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={course_dir}"]
    if db_url:
        cmd.append(f"--CourseDirectory.db_url={db_url}")
    return subprocess.run(cmd, cwd=course_dir, capture_output=True, text=True, timeout=timeout)


def _default_db_url(course_dir: Path) -> str:
    # SQLite serialises writers: a busy timeout lets parallel graders wait for each other.
    return f"sqlite:///{course_dir / 'gradebook.db'}?timeout=120"


def check_submission(folder: Path, assignment: str) -> tuple[Path | None, list[str], str]:
    """Look at ``submitted/<student>/<assignment>/`` before grading.

    Returns ``(notebook, notes, problem)``: the notebook to grade (or None), remarks that do not
    stop grading (extra files), and a problem that does (missing, renamed or corrupt notebook).
    """
    import nbformat

    expected = folder / f"{assignment}.ipynb"
    notes = [f"extra file {p.name} (ignored)" for p in sorted(folder.iterdir())
             if p.name != expected.name and p.suffix != ".ipynb" and p.name not in _NBGRADER_FILES
             and not p.name.startswith(".")]
    others = sorted(p.name for p in folder.glob("*.ipynb") if p.name != expected.name)
    if not expected.exists():
        if others:
            return None, notes, (f"notebook renamed: found {', '.join(others)} but not {expected.name}; "
                                 f"rename it to {expected.name} in {folder} and grade this student again")
        return None, notes, f"missing notebook: {expected.name} is not in {folder}"
    notes += [f"extra notebook {name} (ignored; only {expected.name} is graded)" for name in others]
    try:
        nb = nbformat.read(expected, as_version=nbformat.NO_CONVERT)
        nbformat.validate(nb)
        if nb.nbformat != 4:
            raise ValueError(f"nbformat {nb.nbformat}, expected 4")
    except Exception as exc:  # noqa: BLE001 (any parse error is the same verdict)
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return None, notes, (f"corrupt notebook: {expected.name} cannot be read ({reason}); "
                             f"ask the student to resubmit a notebook saved by Jupyter")
    return expected, notes, ""


def _diagnose(output: str) -> str:
    """Turn nbgrader's log into one plain reason."""
    text = output.lower()
    if "deadkernelerror" in text or "kernel died" in text or "kernel has died" in text:
        return "the kernel died while running the notebook (for example os._exit or a crash)"
    if "celltimeouterror" in text or "timed out" in text or "timeout waiting" in text:
        return "a cell did not finish within the time limit"
    for line in reversed(output.splitlines()):
        if "error" in line.lower():
            return line.strip()[:300]
    return "nbgrader failed; see the log"


def _warnings(output: str) -> list[str]:
    """nbgrader's own warnings about one submission (a kernel that died or hung, a missing cell)."""
    notes = []
    for line in output.splitlines():
        if line.startswith("[AutogradeApp | WARNING]") or line.startswith("[AutogradeApp | ERROR]"):
            notes.append(line.split("]", 1)[1].strip()[:300])
    return notes


def _scores(course_dir: Path, assignment: str, db_url: str) -> dict[str, tuple[float, float]]:
    from nbgrader.api import Gradebook

    with Gradebook(db_url) as gb:
        out = {}
        for sub in gb.assignment_submissions(assignment):
            out[sub.student_id] = (float(sub.score), float(sub.max_score))
        return out


def autograde(course_dir: Path, assignment: str, workers: int = 1, students: Sequence[str] | None = None,
              timeout: float = 900.0, db_url: str | None = None) -> list[GradeResult]:
    """Autograde every submission of ``assignment`` (or only ``students``), ``workers`` at a time.

    Each student is graded by its own ``nbgrader autograde --student`` process with a wall-clock
    ``timeout``; a failure is reported, never raised, so every other student is still graded.
    """
    course_dir = Path(course_dir).resolve()
    db_url = db_url or _default_db_url(course_dir)
    submitted = course_dir / "submitted"
    if not submitted.is_dir():
        raise FileNotFoundError(f"{submitted} does not exist: collect submissions first (cvcourse collect {assignment})")
    folders = sorted(p for p in submitted.glob(f"*/{assignment}") if p.is_dir())
    if students:
        wanted = set(students)
        folders = [p for p in folders if p.parent.name in wanted]
    log_dir = course_dir / "reports" / assignment
    log_dir.mkdir(parents=True, exist_ok=True)

    def grade(folder: Path) -> GradeResult:
        student = folder.parent.name
        notebook, notes, problem = check_submission(folder, assignment)
        shown = str(notebook.relative_to(course_dir)) if notebook else str(folder.relative_to(course_dir))
        if problem:
            return GradeResult(student, shown, "skipped", problem, notes=notes)
        start = time.monotonic()
        try:
            proc = nbgrader(["autograde", assignment, f"--student={student}", "--force"],
                            course_dir, timeout=timeout, db_url=db_url)
            output, code = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            output = "".join(part.decode(errors="replace") if isinstance(part, bytes) else part
                             for part in (exc.stdout or "", exc.stderr or ""))
            code = None
        (log_dir / f"{student}.log").write_text(output)
        seconds = time.monotonic() - start
        if code is None:
            return GradeResult(student, shown, "failed", f"grading took longer than {timeout:.0f} s and was stopped",
                               notes=notes, seconds=seconds)
        if code != 0 or "There was an error" in output:
            return GradeResult(student, shown, "failed", _diagnose(output), notes=notes, seconds=seconds)
        return GradeResult(student, shown, "graded", notes=notes + _warnings(output), seconds=seconds)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(grade, folders))
    scores = _scores(course_dir, assignment, db_url)
    for result in results:
        if result.status == "graded" and result.student in scores:
            result.score, result.max_score = scores[result.student]
    _write_report(log_dir / "autograde-report.csv", results)
    return results


def _write_report(path: Path, results: Sequence[GradeResult]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", "file", "status", "score", "max_score", "reason", "notes", "seconds"])
        for r in results:
            writer.writerow([r.student, r.file, r.status, "" if r.score is None else r.score,
                             "" if r.max_score is None else r.max_score, r.reason, "; ".join(r.notes),
                             f"{r.seconds:.1f}"])


def _print_results(results: Sequence[GradeResult]) -> None:
    for r in results:
        score = f"{r.score:g}/{r.max_score:g}" if r.score is not None else "-"
        line = f"{r.student:<20} {r.status:<8} {score:<8} {r.file}"
        if r.reason:
            line += f"  reason: {r.reason}"
        if r.notes:
            line += f"  notes: {'; '.join(r.notes)}"
        print(line)


def _run(args: Sequence[str], course_dir: Path, db_url: str | None = None) -> int:
    proc = nbgrader(args, course_dir, db_url=db_url)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    return proc.returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cvcourse", description=__doc__.split("\n\n")[0])
    parser.add_argument("--course-dir", type=Path, default=Path.cwd(),
                        help="the course folder with nbgrader_config.py (default: current directory)")
    parser.add_argument("--db-url", default=None,
                        help="gradebook URL, e.g. postgresql://user@host/db (default: SQLite gradebook.db)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("release", help="generate the student versions and release them to the exchange")
    p.add_argument("assignments", nargs="+")
    p.add_argument("--no-exchange", action="store_true", help="only generate exercises/, do not release")
    p = sub.add_parser("collect", help="collect submissions from the exchange into submitted/")
    p.add_argument("assignment")
    p = sub.add_parser("autograde", help="autograde submissions, in parallel, with a report per student")
    p.add_argument("assignment")
    p.add_argument("-j", "--workers", type=int, default=1, help="students graded at once (default 1)")
    p.add_argument("--student", action="append", help="grade only this student (repeatable)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per student (default 900)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p = sub.add_parser("feedback", help="generate feedback HTML and release it to students")
    p.add_argument("assignment")
    p.add_argument("--no-exchange", action="store_true", help="only generate feedback/, do not release")
    p = sub.add_parser("export", help="export all grades as CSV")
    p.add_argument("path", type=Path, nargs="?", default=Path("grades.csv"))
    args = parser.parse_args(argv)
    course_dir = args.course_dir.resolve()
    if not (course_dir / "nbgrader_config.py").is_file():
        parser.error(f"{course_dir} has no nbgrader_config.py: pass --course-dir with the course folder")
    db = args.db_url

    if args.command == "release":
        for name in args.assignments:
            if not (course_dir / "solutions" / name).is_dir():
                parser.error(f"no assignment {name!r}: {course_dir / 'solutions' / name} does not exist")
            code = _run(["generate_assignment", name, "--force"], course_dir, db)
            if code == 0 and not args.no_exchange:
                code = _run(["release_assignment", name, "--force"], course_dir, db)
            if code:
                return code
        return 0
    if args.command == "collect":
        return _run(["collect", args.assignment, "--update"], course_dir, db)
    if args.command == "autograde":
        results = autograde(course_dir, args.assignment, workers=args.workers, students=args.student,
                            timeout=args.timeout, db_url=db)
        if args.json:
            print(json.dumps([asdict(r) for r in results], indent=1))
        else:
            _print_results(results)
            print(f"report: {course_dir / 'reports' / args.assignment / 'autograde-report.csv'}")
        return 0
    if args.command == "feedback":
        code = _run(["generate_feedback", args.assignment, "--force"], course_dir, db)
        if code == 0 and not args.no_exchange:
            code = _run(["release_feedback", args.assignment], course_dir, db)
        return code
    if args.command == "export":
        path = args.path if args.path.is_absolute() else Path(os.getcwd()) / args.path
        return _run(["export", f"--to={path}"], course_dir, db)
    return 2  # unreachable: argparse requires a command


if __name__ == "__main__":
    sys.exit(main())
