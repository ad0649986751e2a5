"""Trusted autograding for the course's nbgrader assignments (see cvcourse/grading/README.md).

Nothing is imported eagerly: the worker imports only :mod:`cvcourse.grading.codec` and
:mod:`cvcourse.grading.worker`, and nbgrader loads :mod:`cvcourse.grading.preprocessors` by name.
"""

from __future__ import annotations

__all__ = ["codec", "feedback", "policy", "preprocessors", "proxy", "trusted", "worker"]
