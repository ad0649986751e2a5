"""The benchmark scripts run, and the peers they compare against give cvcourse's results.

Benchmarks are not timed tests: nothing here asserts a time or a ratio. What is asserted is what
bench/README.md's tables rely on: each script runs to the end, and every comparison has a peer
whose result equals cvcourse's (max abs difference printed by the script).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^  (\S.*?)\s+(\d+\.\d+)\s+(\d\.\d\de[+-]\d\d)\s+(\d+\.\d\d)$")


def _sections(output: str) -> dict[str, dict[str, float]]:
    """title -> {implementation: max abs difference from cvcourse}."""
    sections: dict[str, dict[str, float]] = {}
    title = None
    for line in output.splitlines():
        if line and not line.startswith(" "):
            title = line
            sections[title] = {}
        elif title and (match := ROW.match(line)):
            sections[title][match.group(1)] = float(match.group(3))
    return sections


@pytest.mark.slow
def test_methods_benchmark_runs_and_peers_agree_with_cvcourse():
    proc = subprocess.run([sys.executable, "bench/methods.py", "--repeat", "1", "--skip-torchattacks"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sections = _sections(proc.stdout)

    def diffs(prefix: str) -> dict[str, float]:
        found = [rows for title, rows in sections.items() if title.startswith(prefix)]
        assert len(found) == 1, f"one section starting {prefix!r} expected in:\n{proc.stdout}"
        return found[0]

    gradcam = diffs("Grad-CAM")
    assert gradcam["captum LayerGradCam (+upsample, max)"] < 1e-5
    assert diffs("FGSM, SmallCNN")["straightforward reference"] == 0
    for size in ("1797 x 64", "4000 x 512"):
        pca = diffs(f"PCA to 2 components, {size}")
        assert pca["scikit-learn PCA full"] < 1e-9 and pca["scikit-learn PCA covariance_eigh"] < 1e-9
    patches = diffs("Patch embedding")
    assert max(patches.values()) < 1e-4, patches
    assert proc.stdout.count("cvcourse / fastest equal peer") == 5


@pytest.mark.slow
def test_autograde_benchmark_runs_and_parallel_grades_equal_serial():
    proc = subprocess.run([sys.executable, "bench/autograde.py", "--students", "2", "--assignments", "conv3d_shapes"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "grades: serial and parallel agree" in proc.stdout
    assert re.search(r"speed-up with 2 workers: \d+\.\d\dx", proc.stdout)
