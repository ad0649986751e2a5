"""nbgrader preprocessors: the trusted re-run (autograde) and feedback scrubbing (generate_feedback)."""

from __future__ import annotations

from typing import Any

from nbformat.notebooknode import NotebookNode
from traitlets import Float, Unicode

from nbgrader.api import Gradebook
from nbgrader.preprocessors import Execute, NbGraderPreprocessor

from cvcourse.grading.policy import blocked_modules, hard_blocked_modules, scan_source
from cvcourse.grading.trusted import checks_line, hidden_line_range, run_trusted_job
from cvcourse.grading.feedback import ScrubFeedback, error_output, scrub_test_source
from cvcourse.grading.worker import strip_magics

__all__ = ["MISSING_MARKER", "SafeExecute", "ScrubFeedback", "TrustedRerun", "error_output", "scrub_test_source"]

#: Start of the notification nbgrader's OverwriteCells puts in a re-added (deleted) cell
#: (``c.OverwriteCells.missing_cell_notification`` in nbgrader_config.py).
MISSING_MARKER = "CVCOURSE-MISSING-CELL"


class SafeExecute(Execute):
    """nbgrader's Execute, but a submission that kills or hangs its kernel does not stop grading.

    The kernel run only produces the outputs students see; scores come from :class:`TrustedRerun`.
    """

    def preprocess(self, nb: NotebookNode, resources: dict[str, Any]) -> tuple[NotebookNode, dict[str, Any]]:
        try:
            return super().preprocess(nb, resources)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001  (DeadKernelError, UnresponsiveKernelError, ...)
            self.log.warning("Kernel run of %s stopped early (%s: %s); grading continues with the trusted re-run",
                             resources.get("nbgrader", {}).get("notebook"), type(exc).__name__, exc)
            return nb, resources


class TrustedRerun(NbGraderPreprocessor):
    """Score test cells from a trusted re-run (see cvcourse/grading/README.md), not from the kernel run.

    Runs after ``Execute`` and before ``SaveAutoGrades``: it replaces the outputs of every graded
    test cell by the trusted result (no output: pass; an error in words: fail), restores the
    nbgrader metadata of known cells from the gradebook, and fails test cells that had been
    deleted from the submission.
    """

    cell_timeout = Float(30.0, help="Seconds each code cell may take in the worker.").tag(config=True)
    call_timeout = Float(20.0, help="Seconds each call into student code may take.").tag(config=True)
    total_timeout = Float(900.0, help="Seconds the whole trusted re-run of one notebook may take.").tag(config=True)
    missing_marker = Unicode(MISSING_MARKER, help="Marks cells re-added by OverwriteCells.").tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: dict[str, Any]) -> tuple[NotebookNode, dict[str, Any]]:
        info = resources["nbgrader"]
        assignment, notebook = info["assignment"], info["notebook"]
        with Gradebook(info["db_url"]) as gb:
            source_nb = gb.find_notebook(notebook, assignment)
            sources = {c.name: (c.cell_type, c.source, bool(c.locked)) for c in source_nb.source_cells}
            points = {c.name: float(c.max_score) for c in source_nb.grade_cells}
            solution_ids = {c.name for c in source_nb.solution_cells}
        test_ids = {n for n in points if n not in solution_ids and sources.get(n, ("",))[0] == "code"}

        worker_cells: list[tuple[str, str]] = []
        trusted_cells: list[tuple[str, str, str]] = []
        student_sources: list[tuple[str, str]] = []
        test_cells: dict[str, NotebookNode] = {}
        deleted: set[str] = set()
        for index, cell in enumerate(nb.cells):
            meta = cell.metadata.get("nbgrader", {})
            grade_id = meta.get("grade_id")
            known = grade_id in sources
            if known:
                # Restore what OverwriteCells does not (a student may have flipped grade/solution).
                meta["grade"] = grade_id in points
                meta["solution"] = grade_id in solution_ids
                meta["locked"] = sources[grade_id][2]
                if grade_id in points:
                    meta["points"] = points[grade_id]
            elif meta.get("grade") or meta.get("solution"):
                cell.metadata.pop("nbgrader", None)  # unknown graded cell: not scored
            if cell.cell_type != "code":
                continue
            if known and grade_id in test_ids:
                test_cells[grade_id] = cell
                if cell.source.lstrip("# ").startswith(self.missing_marker):
                    deleted.add(grade_id)
                trusted_cells.append(("test", grade_id, sources[grade_id][1]))
                continue
            label = grade_id if known else f"cell {index + 1}"
            if known and sources[grade_id][2] and grade_id not in solution_ids:
                worker_cells.append((label, sources[grade_id][1]))
                trusted_cells.append(("instructor", grade_id, sources[grade_id][1]))
            else:
                worker_cells.append((label, cell.source))
                student_sources.append((label, cell.source))

        violations = []
        for label, source in student_sources:
            violations += scan_source(strip_magics(source), cell=label, assignment=assignment)

        if violations:
            listing = "; ".join(str(v) for v in violations[:5])
            msg = f"Submission rejected by the static check: {listing}. Remove these constructs."
            results = {cid: {"passed": False, "ename": "RejectedSubmission", "evalue": msg,
                             "words": [msg]} for cid in test_cells}
            summary: dict[str, Any] = {"rejected": [str(v) for v in violations]}
        else:
            job = {"worker_cells": worker_cells, "trusted_cells": trusted_cells,
                   "blocked": list(blocked_modules(assignment)),
                   "hard_blocked": list(hard_blocked_modules(assignment)), "cell_timeout": self.cell_timeout,
                   "call_timeout": self.call_timeout}
            run = run_trusted_job(job, timeout=self.total_timeout)
            results = run["cells"]
            summary = {k: v for k, v in run.items() if k != "cells"}
        self.log.info("Trusted re-run of %s: %s", notebook, summary)

        for grade_id, cell in test_cells.items():
            if grade_id in deleted:
                msg = "This test cell was deleted from the submission, so it scores zero."
                cell.outputs = [error_output("DeletedTestCell", msg, [msg])]
                continue
            res = results.get(grade_id, {"passed": False, "ename": "GradingError", "evalue": "not run",
                                         "words": ["The grader did not run this test cell."]})
            if res.get("passed"):
                cell.outputs = []
            else:
                cell.outputs = [error_output(str(res["ename"]), str(res["evalue"]), [str(w) for w in res["words"]])]
            cell.execution_count = None
        nb.metadata["cvcourse_grading"] = {"summary": {k: v for k, v in summary.items()
                                                       if k in ("restarts", "seconds", "rejected")}}
        return nb, resources
