"""nbgrader configuration of the cvcourse week-3 assignments.

Layout: instructor sources in ``solutions/<name>/<name>.ipynb``, released notebooks in
``exercises/<name>/<name>.ipynb`` (``nbgrader generate_assignment --force <name>`` from here).
Scores come from the trusted re-run in :mod:`cvcourse.grading` (see cvcourse/grading/README.md).
"""

import os
import sys

from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    GetGrades,
    IgnorePattern,
    LimitOutput,
    SaveAutoGrades,
)

c = get_config()  # noqa: F821  (provided by traitlets when it loads this file)

# nbgrader runs the `alembic` command of its own environment for the gradebook: find it even
# when the virtual environment is not activated (`.venv/bin/nbgrader ...` from make).
_bin = os.path.dirname(sys.executable)
if _bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")

c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "cvcourse-week3"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"

# The kernel run (outputs students see): 30 s per cell, a dead or hung kernel does not stop grading.
c.Execute.timeout = 30
c.SafeExecute.timeout = 30
c.SafeExecute.interrupt_on_timeout = True

# Locked cells (instructor code, tests) are restored from the gradebook; deleted graded cells are
# put back with this marker, and TrustedRerun scores them zero.
c.OverwriteCells.add_missing_cells = True
c.OverwriteCells.missing_cell_notification = (
    "CVCOURSE-MISSING-CELL {cell_id}: deleted from the submission, restored by the grader.\n"
)

# Scores come from the trusted re-run, placed after Execute and before SaveAutoGrades.
c.TrustedRerun.cell_timeout = 30.0
c.TrustedRerun.call_timeout = 20.0
c.Autograde.autograde_preprocessors = [
    "cvcourse.grading.preprocessors.SafeExecute",
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    "cvcourse.grading.preprocessors.TrustedRerun",
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]

# Feedback never shows hidden test source or its tracebacks.
c.GenerateFeedback.preprocessors = [
    GetGrades,
    CSSHTMLHeaderPreprocessor,
    "cvcourse.grading.feedback.ScrubFeedback",
]
