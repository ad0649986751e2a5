"""Shared fixtures: the repository root and the built site."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def built_site() -> Path:
    """Build the book strictly (cached chapters are not re-executed) and return `_build/html`.

    Set CVCOURSE_SKIP_BUILD=1 to reuse an existing `_build/html` while iterating locally.
    """
    html = ROOT / "_build" / "html"
    if os.environ.get("CVCOURSE_SKIP_BUILD") != "1" or not (html / "index.html").exists():
        result = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "build_book.py")],
            cwd=ROOT, capture_output=True, text=True, timeout=1800,
        )
        assert result.returncode == 0, (
            f"the book build failed (exit {result.returncode}):\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
        )
    return html
