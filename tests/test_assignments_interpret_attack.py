"""The gradcam, occlusion and fgsm assignments: structure, fixtures, and autograde round trips.

For each assignment ONE ``nbgrader autograde`` batch (through ``tests/autograde.py``, with the
trusted re-run of ``cvcourse.grading``) grades the instructor solution (10/10), the unmodified
release (0/10) and every fixture in ``tests/fixtures/submissions/<assignment>/``: ``correct-*``
10/10, ``wrong-*`` below 10 and at least the listed test cells at zero, ``cheat-*`` 0.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from autograde import check_fixtures_in_sync, check_solution_rules, grade_fixture_class

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


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solution_notebook_follows_the_rules(assignment: str) -> None:
    check_solution_rules(assignment, POINTS[assignment], hidden_imports=("captum", "pytorch_grad_cam"))


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_fixtures_are_in_sync_with_snippets(assignment: str) -> None:
    check_fixtures_in_sync(assignment, REQUIRED[assignment], set(MUST_LOSE[assignment]))


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_autograde_scores(assignment: str, tmp_path: Path) -> None:
    _, lost, report = grade_fixture_class(assignment, tmp_path)  # solution 10, release 0, correct 10, cheat 0
    for student, must_lose in MUST_LOSE[assignment].items():
        assert must_lose <= lost[student], (
            f"{student} should lose at least {sorted(must_lose)}, lost {sorted(lost[student])}:\n{report}")
        must_keep = MUST_KEEP[assignment].get(student, set())
        assert not (must_keep & lost[student]), (
            f"{student} should keep {sorted(must_keep)}, lost {sorted(lost[student])}:\n{report}")
