"""cvcourse: the helper package of the week-3 computer-vision course.

Chapters use it as ``import cvcourse as cv`` and then ``cv.data.load_digits()``.
Submodules are imported lazily on first attribute access, so ``import cvcourse``
is cheap and has no side effects (no seeding, no plotting settings, no downloads).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = (
    "assets",
    "attacks",
    "cli",
    "data",
    "fpn",
    "grading",
    "interpret",
    "models",
    "plots",
    "resnext",
    "synthetic",
    "train",
    "transformers",
    "video",
)

__all__ = list(_SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'cvcourse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))
