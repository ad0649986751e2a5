"""After setup, nothing touches the network: run the real assets and a chapter with no network at all.

`unshare -n` gives the process a network namespace of its own with only a loopback interface
(brought up so the Jupyter kernel can talk to its client): any attempt to reach a host fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _offline(code: str, timeout: float = 600) -> subprocess.CompletedProcess:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to cut the network")
    # sh brings loopback up, then runs python with the code as a real argument (no shell quoting)
    cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable, "-c", code]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_the_namespace_really_has_no_network():
    result = _offline("import socket; socket.create_connection(('pypi.org', 443), timeout=5)")
    assert result.returncode != 0, "a connection to pypi.org succeeded inside the offline namespace"


def test_assets_model_and_clip_load_offline():
    result = _offline(
        "import cvcourse as cv, torch\n"
        "paths = cv.assets.ensure_assets()\n"
        "model = cv.models.imagenet_classifier()\n"
        "photo = cv.models.imagenet_preprocess(cv.data.load_photo('chelsea')[None])\n"
        "print(cv.models.top_classes(model(photo), k=1)[0][0][0])\n"
        "clip, fps = cv.data.load_clip(num_frames=4)\n"
        "print(tuple(clip.shape), fps)\n"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cat" in result.stdout, result.stdout
    assert "(4, 3, 112, 112) 25.0" in result.stdout, result.stdout


def test_the_video_chapter_executes_offline():
    code = (
        "import os, nbclient\n"
        "from myst_nb.core.read import read_myst_markdown_notebook\n"
        "os.environ['CVCOURSE_BUILD'] = '1'\n"
        "nb = read_myst_markdown_notebook(open('book/video.md').read())\n"
        "nbclient.NotebookClient(nb, timeout=120, kernel_name='python3',"
        " resources={'metadata': {'path': 'book'}}).execute()\n"
        "print('executed', sum(c.cell_type == 'code' for c in nb.cells), 'cells')\n"
    )
    result = _offline(code)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "executed" in result.stdout
