"""Feedback scrubbing for ``nbgrader generate_feedback``: no hidden test source, no tracebacks.

A test cell in the feedback shows its visible part, one line in words in place of the hidden
block (``# (hidden tests, not shown: they check <the # Checks: line>)``), and, when it failed,
only the verdict written by the trusted re-run (exception type, assertion message, words).
"""

from __future__ import annotations

from typing import Any

from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor

from cvcourse.grading.trusted import checks_line, hidden_line_range

__all__ = ["ScrubFeedback", "error_output", "scrub_test_source"]


def error_output(ename: str, evalue: str, words: list[str]) -> NotebookNode:
    """An nbformat error output whose traceback is plain words."""
    return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=list(words))


def scrub_test_source(source: str) -> str:
    """The visible part of a test cell, the hidden block replaced by one line in words."""
    hidden = hidden_line_range(source)
    if hidden is None:
        return source
    lines = source.splitlines()
    first, last = hidden
    indent = lines[first - 1][: len(lines[first - 1]) - len(lines[first - 1].lstrip())]
    note = f"{indent}# (hidden tests, not shown: they check {checks_line(source)})"
    return "\n".join(lines[: first - 1] + [note] + lines[last:])


class ScrubFeedback(NbGraderPreprocessor):
    """Hide hidden tests and their tracebacks in feedback: the source block becomes one line, errors are words."""

    def preprocess(self, nb: NotebookNode, resources: dict[str, Any]) -> tuple[NotebookNode, dict[str, Any]]:
        nb.metadata.pop("cvcourse_grading", None)
        for cell in nb.cells:
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type != "code":
                continue
            is_test = meta.get("grade") and not meta.get("solution")
            if is_test or hidden_line_range(cell.source):
                cell.source = scrub_test_source(cell.source)
                new_outputs = []
                for out in cell.get("outputs", []):
                    if out.get("output_type") == "error":
                        words = [w for w in out.get("traceback", []) if "\x1b" not in w and "File " not in w]
                        if not words:
                            words = [f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"]
                        new_outputs.append(error_output(out.get("ename", "Error"), out.get("evalue", ""), words))
                cell.outputs = new_outputs  # a test cell shows nothing but the verdict
        return nb, resources
