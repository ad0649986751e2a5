"""The gradcam, occlusion and fgsm assignments: structure, fixtures, and autograde round trips.

For each assignment ONE ``nbgrader autograde`` batch (through ``tests/autograde.py``, with the
trusted re-run of ``cvcourse.grading``) grades the instructor solution (10/10), the unmodified
release (0/10) and every fixture in ``tests/fixtures/submissions/<assignment>/``: ``correct-*``
10/10, ``wrong-*`` below 10 and at least the listed test cells at zero, ``cheat-*`` 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from autograde import autograde, cell_scores
from fixtures.make_submissions import SNIPPETS, SUBMISSIONS, build_all

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = ("gradcam", "occlusion", "fgsm")

#: The graded cells each assignment must have (grade_id -> points).
POINTS = {
    "gradcam": {"test_shape_range": 2, "test_values": 4, "test_scaling": 2, "test_left_as_found": 2},
    "occlusion": {"test_shape": 3, "test_values": 4, "test_left_as_found": 3},
    "fgsm": {"test_untargeted": 3, "test_targeted": 2, "test_left_as_found": 2, "test_accuracy": 3},
}

#: For each wrong-* fixture, the graded cells that must score 0 (others may too: the mistake can
#: show in several cells, e.g. a wrong map also fails the value check of the "left as found" cell).
MUST_LOSE = {
    "gradcam": {
        "wrong-no-relu": {"test_shape_range", "test_values"},
        "wrong-softmax-gradients": {"test_values"},
        "wrong-nearest-upsampling": {"test_values"},
        "wrong-minmax-scaling": {"test_scaling"},  # the map positive everywhere
        "wrong-leaves-hooks": {"test_left_as_found"},
        "wrong-leaves-eval-mode": {"test_left_as_found"},
        "wrong-leaves-grads": {"test_left_as_found"},
    },
    "occlusion": {
        "wrong-logits-instead-of-probabilities": {"test_values"},
        "wrong-off-by-one-grid": {"test_shape"},
        "wrong-occluded-minus-clean": {"test_values"},
        "wrong-baseline-ignored": {"test_values"},
        "wrong-occludes-image-in-place": {"test_left_as_found"},
        "wrong-leaves-eval-mode": {"test_left_as_found"},
    },
    "fgsm": {
        "wrong-sign-flipped": {"test_untargeted", "test_targeted"},
        "wrong-no-sign": {"test_untargeted"},
        "wrong-no-clamp": {"test_untargeted"},
        "wrong-modifies-input-in-place": {"test_left_as_found"},
        "wrong-targeted-same-direction": {"test_targeted"},
        "wrong-nll-on-logits": {"test_untargeted", "test_targeted"},
        "wrong-leaves-grads": {"test_left_as_found"},
        "wrong-accuracy-returns-tensor": {"test_accuracy"},
        "wrong-accuracy-counts-unchanged": {"test_accuracy"},
    },
}

#: For some wrong-* fixtures, cells that must keep full marks (the mistake is local to one task).
MUST_KEEP = {
    "gradcam": {
        "wrong-leaves-eval-mode": {"test_shape_range", "test_values", "test_scaling"},
        "wrong-leaves-grads": {"test_shape_range", "test_values", "test_scaling"},
        "wrong-leaves-hooks": {"test_shape_range", "test_values", "test_scaling"},
    },
    "occlusion": {"wrong-leaves-eval-mode": {"test_shape", "test_values"}},
    "fgsm": {
        "wrong-targeted-same-direction": {"test_untargeted", "test_accuracy"},
        "wrong-accuracy-returns-tensor": {"test_untargeted", "test_targeted", "test_left_as_found"},
        "wrong-accuracy-counts-unchanged": {"test_untargeted", "test_targeted", "test_left_as_found"},
    },
}

#: Scenarios each assignment must at least have.
REQUIRED = {
    "gradcam": {"wrong-no-relu", "wrong-softmax-gradients", "wrong-nearest-upsampling", "wrong-minmax-scaling",
                "wrong-leaves-hooks", "wrong-leaves-eval-mode", "wrong-leaves-grads", "cheat-delegates-captum"},
    "occlusion": {"wrong-logits-instead-of-probabilities", "wrong-off-by-one-grid", "wrong-occluded-minus-clean",
                  "wrong-baseline-ignored", "cheat-delegates-captum"},
    "fgsm": {"wrong-sign-flipped", "wrong-no-sign", "wrong-no-clamp", "wrong-modifies-input-in-place",
             "wrong-targeted-same-direction", "wrong-accuracy-returns-tensor"},
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
            # oracles are imported inside the hidden block only (never in what students see)
            for oracle in ("captum", "pytorch_grad_cam"):
                assert f"import {oracle}" not in head and f"from {oracle}" not in head, (
                    f"{meta['grade_id']}: {oracle} is imported inside the hidden block only")
    assert nb.cells[0].cell_type == "markdown" and "book/" in nb.cells[0].source, "intro must point to the chapter"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_fixtures_are_in_sync_with_snippets(assignment: str) -> None:
    released = ROOT / "exercises" / assignment / f"{assignment}.ipynb"
    if not released.exists():
        pytest.skip(f"{released} not generated yet (make exercises)")
    scenarios = _scenarios(assignment)
    assert REQUIRED[assignment] <= set(scenarios), f"missing scenarios: {REQUIRED[assignment] - set(scenarios)}"
    assert any(s.startswith("correct-") for s in scenarios), "at least one correct-* fixture"
    assert set(MUST_LOSE[assignment]) == {s for s in scenarios if s.startswith("wrong-")}, "MUST_LOSE lists every wrong-*"
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
            must_lose = MUST_LOSE[assignment][student]
            assert must_lose <= lost, f"{student} should lose at least {sorted(must_lose)}, lost {sorted(lost)}:\n{report}"
            must_keep = MUST_KEEP[assignment].get(student, set())
            assert not (must_keep & lost), f"{student} should keep {sorted(must_keep)}, lost {sorted(lost)}:\n{report}"
