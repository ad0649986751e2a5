"""The pca, patch_embedding and inflate assignments: structure, fixtures, and autograde round trips.

For each assignment ONE ``nbgrader autograde`` batch (through ``tests/autograde.py``, with the
trusted re-run of ``cvcourse.grading``) grades the instructor solution (10/10), the unmodified
release (0/10) and every fixture in ``tests/fixtures/submissions/<assignment>/``: ``correct-*``
10/10, ``wrong-*`` below 10 with exactly the listed test cells losing their points, ``cheat-*`` 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from autograde import autograde, cell_scores
from fixtures.make_submissions import SNIPPETS, SUBMISSIONS, build_all

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = ("pca", "patch_embedding", "inflate")

#: The graded cells each assignment must have (grade_id -> points).
POINTS = {
    "pca": {"test_pca_fit_components": 4, "test_pca_fit_ratio": 2, "test_pca_fit_sign": 1,
            "test_pca_fit_edges": 1, "test_pca_transform": 2},
    "patch_embedding": {"test_patchify_values": 4, "test_patchify_errors": 1,
                        "test_patch_embedding_attributes": 2, "test_patch_embedding_forward": 3},
    "inflate": {"test_inflate_structure": 2, "test_inflate_static_clip": 3, "test_inflate_moving_clip": 3,
                "test_inflate_leaves_2d": 2},
}

#: For each wrong-* fixture, the graded cells that must score 0 (all the others full marks).
LOST = {
    "pca": {
        "wrong-no-centring": {"test_pca_fit_components", "test_pca_fit_ratio", "test_pca_fit_edges"},
        "wrong-unsorted-components": {"test_pca_fit_components", "test_pca_fit_ratio", "test_pca_fit_edges"},
        "wrong-ratio-of-kept-total": {"test_pca_fit_ratio"},
        "wrong-no-sign-rule": {"test_pca_fit_sign"},
    },
    "patch_embedding": {
        "wrong-column-major-order": {"test_patchify_values", "test_patch_embedding_forward"},
        "wrong-channels-last-flattening": {"test_patchify_values", "test_patch_embedding_forward"},
        "wrong-pos-embed-missing-cls": {"test_patch_embedding_attributes", "test_patch_embedding_forward"},
        "wrong-no-cls-token": {"test_patch_embedding_forward"},
        "wrong-pos-embed-not-added": {"test_patch_embedding_forward"},
    },
    "inflate": {
        "wrong-no-divide-by-time-kernel": {"test_inflate_static_clip", "test_inflate_moving_clip"},
        "wrong-time-stride-copied": {"test_inflate_structure", "test_inflate_static_clip", "test_inflate_moving_clip"},
        "wrong-modifies-2d-weight": {"test_inflate_leaves_2d"},
        "wrong-bias-dropped": {"test_inflate_structure", "test_inflate_static_clip", "test_inflate_moving_clip"},
    },
}

#: Scenarios each assignment must at least have.
REQUIRED = {
    "pca": {"wrong-no-centring", "wrong-unsorted-components", "wrong-ratio-of-kept-total", "wrong-no-sign-rule",
            "cheat-delegates-sklearn"},
    "patch_embedding": {"wrong-column-major-order", "wrong-channels-last-flattening", "wrong-pos-embed-missing-cls",
                        "cheat-delegates-timm"},
    "inflate": {"wrong-no-divide-by-time-kernel", "wrong-time-stride-copied", "wrong-modifies-2d-weight",
                "wrong-bias-dropped"},
}


def _solution(assignment: str) -> Path:
    return ROOT / "solutions" / assignment / f"{assignment}.ipynb"


def _scenarios(assignment: str) -> list[str]:
    return sorted(p.stem for p in (SNIPPETS / assignment).glob("*.py"))


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solution_notebook_follows_the_rules(assignment: str) -> None:
    nb = nbformat.read(_solution(assignment), as_version=4)
    metas = [c.metadata.get("nbgrader") for c in nb.cells]
    assert all(m and m.get("schema_version") == 3 for m in metas), "every cell needs nbgrader metadata (schema 3)"
    ids = [m["grade_id"] for m in metas]
    assert len(ids) == len(set(ids)), f"grade_id values must be unique: {ids}"
    graded = {m["grade_id"]: m["points"] for m in metas if m.get("grade")}
    assert graded == POINTS[assignment], f"graded cells and points: {graded}"
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
    assert nb.cells[0].cell_type == "markdown" and "book/" in nb.cells[0].source, "intro must point to the chapter"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_fixtures_are_in_sync_with_snippets(assignment: str) -> None:
    released = ROOT / "exercises" / assignment / f"{assignment}.ipynb"
    if not released.exists():
        pytest.skip(f"{released} not generated yet (make exercises)")
    scenarios = _scenarios(assignment)
    assert REQUIRED[assignment] <= set(scenarios), f"missing scenarios: {REQUIRED[assignment] - set(scenarios)}"
    assert any(s.startswith("correct-") for s in scenarios), "at least one correct-* fixture"
    assert set(LOST[assignment]) == {s for s in scenarios if s.startswith("wrong-")}, "LOST must list every wrong-*"
    committed = {p.stem for p in (SUBMISSIONS / assignment).glob("*.ipynb")}
    assert committed == set(scenarios), f"fixture notebooks without snippet or vice versa: {committed ^ set(scenarios)}"
    for scenario, text in build_all(assignment).items():
        path = SUBMISSIONS / assignment / f"{scenario}.ipynb"
        assert path.read_text() == text, f"{path} is stale: run tests/fixtures/make_submissions.py {assignment}"


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_autograde_scores(assignment: str, tmp_path: Path) -> None:
    released = ROOT / "exercises" / assignment / f"{assignment}.ipynb"
    if not released.exists():
        pytest.skip(f"{released} not generated yet (make exercises)")
    submissions = {"solution": _solution(assignment), "release": released}
    for scenario in _scenarios(assignment):
        submissions[scenario] = SUBMISSIONS / assignment / f"{scenario}.ipynb"
    scores = autograde(assignment, submissions, tmp_path)
    cells = {student: cell_scores(assignment, student, tmp_path) for student in submissions}
    report = json.dumps({s: [scores[s], sorted(k for k, v in cells[s].items() if v == 0)] for s in scores}, indent=1)

    # The committed release is what nbgrader generates from the current solution.
    fresh = nbformat.read(tmp_path / "exercises" / assignment / f"{assignment}.ipynb", as_version=4)
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
            lost = {name for name, value in cells[student].items() if value == 0}
            assert lost == LOST[assignment][student], (
                f"{student} should lose exactly {sorted(LOST[assignment][student])}, lost {sorted(lost)}:\n{report}")
