"""The conv3d_shapes assignment: fixtures in sync, and one batched autograde of every scenario.

The autograde round trip (``slow``) grades the solution, the unmodified release and every
fixture in ``tests/fixtures/submissions/conv3d_shapes/`` in ONE ``nbgrader autograde`` run, in a
temporary course (nothing is written inside the repository), then checks the feedback HTML.
"""

from __future__ import annotations

import html
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))

from autograde import REPO, autograde, cell_scores, feedback_html, release_path, solution_path  # noqa: E402
import make_submissions  # noqa: E402

ASSIGNMENT = "conv3d_shapes"
FIXTURES = REPO / "tests" / "fixtures" / "submissions" / ASSIGNMENT
CELLS = {"test_output_shape": 4.0, "test_num_params": 3.0, "test_early_fusion": 3.0}

#: Expected score of each graded cell, per scenario (cells not listed: full points).
EXPECTED: dict[str, dict[str, float]] = {
    "solution": {},
    "release": {c: 0.0 for c in CELLS},
    "correct-loops": {},
    "correct-formula-helpers": {},
    "wrong-no-dilation": {"test_output_shape": 0.0},
    "wrong-returns-list": {"test_output_shape": 0.0},
    "wrong-no-valueerror": {"test_output_shape": 0.0},
    "wrong-no-bias-count": {"test_num_params": 0.0},
    "wrong-frames-interleaved": {"test_early_fusion": 0.0},
    "cheat-patch-torch": {c: 0.0 for c in CELLS},
    "cheat-patch-builtins": {c: 0.0 for c in CELLS},
    "cheat-always-equal": {c: 0.0 for c in CELLS},
    "cheat-frame-inspect": {c: 0.0 for c in CELLS},
    "cheat-edit-tests": {c: 0.0 for c in CELLS},
    "cheat-empty-tests": {c: 0.0 for c in CELLS},
    "cheat-ungrade-tests": {c: 0.0 for c in CELLS},
    "cheat-delete-tests": {c: 0.0 for c in CELLS},
    "cheat-delete-one-test": {"test_output_shape": 0.0},
    "cheat-sys-exit": {c: 0.0 for c in CELLS},
    "cheat-os-exit": {c: 0.0 for c in CELLS},
    "cheat-loop-forever": {"test_output_shape": 0.0, "test_num_params": 0.0},
    "cheat-loop-toplevel": {"test_output_shape": 0.0},
    "cheat-delegate-cvcourse": {c: 0.0 for c in CELLS},
    "cheat-dynamic-import": {c: 0.0 for c in CELLS},
    "broken-invalid-json": {c: 0.0 for c in CELLS},
}


def test_fixtures_in_sync_with_snippets() -> None:
    """The committed fixture notebooks equal what make_submissions.py builds from the snippets."""
    built = make_submissions.build_all(ASSIGNMENT)
    committed = {p.stem for p in FIXTURES.glob("*.ipynb")}
    assert set(built) == committed, "run `.venv/bin/python tests/fixtures/make_submissions.py`"
    for name, text in built.items():
        assert (FIXTURES / f"{name}.ipynb").read_text() == text, \
            f"fixture {name} is stale: run `.venv/bin/python tests/fixtures/make_submissions.py`"
    assert set(EXPECTED) - {"solution", "release"} == committed, "every fixture needs an expectation here"


def test_fixture_scenarios_are_named_by_kind() -> None:
    for name in make_submissions.build_all(ASSIGNMENT):
        assert name.split("-")[0] in ("correct", "wrong", "cheat", "broken"), name


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    course = tmp_path_factory.mktemp("course")
    subs = {p.stem: p for p in sorted(FIXTURES.glob("*.ipynb"))}
    subs["solution"] = solution_path(ASSIGNMENT)
    subs["release"] = release_path(ASSIGNMENT)
    return course, autograde(ASSIGNMENT, subs, course)


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_every_scenario_scores_as_expected(graded: tuple[Path, dict[str, float]]) -> None:
    course, scores = graded
    problems = []
    for student, expected in EXPECTED.items():
        want_cells = {cell: expected.get(cell, pts) for cell, pts in CELLS.items()}
        got_cells = cell_scores(ASSIGNMENT, student, course)
        want_total = sum(want_cells.values())
        if scores[student] != want_total or got_cells != want_cells:
            problems.append(f"{student}: expected {want_cells} (total {want_total}), got {got_cells} "
                            f"(total {scores[student]})")
        if student.startswith("correct") or student == "solution":
            assert scores[student] == 10.0, student
        if student.startswith("wrong"):
            assert scores[student] < 10.0, student
    assert not problems, "\n".join(problems)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_feedback_hides_hidden_tests_but_names_the_failed_check(graded: tuple[Path, dict[str, float]]) -> None:
    course, _ = graded
    page = html.unescape(feedback_html(ASSIGNMENT, "wrong-no-dilation", course))
    source = nbformat.read(solution_path(ASSIGNMENT), as_version=4)
    hidden_lines = []
    for cell in source.cells:
        text = cell.source
        if "### BEGIN HIDDEN TESTS" in text:
            block = text.split("### BEGIN HIDDEN TESTS")[1].split("### END HIDDEN TESTS")[0]
            hidden_lines += [ln.strip() for ln in block.splitlines() if len(ln.strip()) > 12]
    assert hidden_lines
    leaked = [ln for ln in hidden_lines if ln in page]
    assert not leaked, f"hidden test source in the feedback: {leaked[:3]}"
    for marker in ("BEGIN HIDDEN TESTS", "_oracle_shape", "assert got == want", "Traceback (most recent call last)"):
        assert marker not in page, marker
    # ... but it says in words which check failed and why.
    assert "conv3d_output_shape against torch.nn.Conv3d" in page  # the `# Checks:` line
    assert "a hidden check failed" in page.lower() or "A hidden check failed" in page
    assert "dilation=" in page and "should be (" in page  # the assertion message of the failing case
