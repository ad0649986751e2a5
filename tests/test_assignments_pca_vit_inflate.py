"""The pca, patch_embedding and inflate assignments: structure, fixtures, and autograde round trips.

For each assignment ONE ``nbgrader autograde`` batch (through ``tests/autograde.py``, with the
trusted re-run of ``cvcourse.grading``) grades the instructor solution (10/10), the unmodified
release (0/10) and every fixture in ``tests/fixtures/submissions/<assignment>/``: ``correct-*``
10/10, ``wrong-*`` below 10 with exactly the listed test cells losing their points, ``cheat-*`` 0.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from autograde import check_fixtures_in_sync, check_solution_rules, grade_fixture_class

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


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solution_notebook_follows_the_rules(assignment: str) -> None:
    check_solution_rules(assignment, POINTS[assignment], hidden_imports=("sklearn", "timm"))


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_fixtures_are_in_sync_with_snippets(assignment: str) -> None:
    check_fixtures_in_sync(assignment, REQUIRED[assignment], set(LOST[assignment]))


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_autograde_scores(assignment: str, tmp_path: Path) -> None:
    _, lost, report = grade_fixture_class(assignment, tmp_path)  # solution 10, release 0, correct 10, cheat 0
    for student, expected in LOST[assignment].items():
        assert lost[student] == expected, (
            f"{student} should lose exactly {sorted(expected)}, lost {sorted(lost[student])}:\n{report}")
