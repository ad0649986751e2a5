"""Write environment.yml from pyproject.toml (one source of truth for dependencies).

`python scripts/sync_environment.py` rewrites environment.yml; `--check` exits 1 when the
committed file differs from what pyproject.toml implies (tests/test_environment.py runs it).
The environment is what students need to run the chapters and assignments (the package's
dependencies and the `book` extra); conda, mamba and repo2docker (Binder, JupyterHub images)
all read it, and repo2docker then runs `postBuild`.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = """\
# GENERATED from pyproject.toml by scripts/sync_environment.py: do not edit by hand
# (`make environment` rewrites it; tests/test_environment.py checks it is in sync).
# conda env create -f environment.yml && conda activate cvcourse && pip install --no-deps -e .
# repo2docker (Binder, JupyterHub images) reads this file, then runs postBuild.
"""


def render(pyproject: Path = ROOT / "pyproject.toml") -> str:
    project = tomllib.loads(pyproject.read_text())["project"]
    python = project["requires-python"].removeprefix(">=")
    pip_deps = list(project["dependencies"]) + list(project["optional-dependencies"]["book"])
    lines = [HEADER, "name: cvcourse", "channels:", "  - conda-forge", "dependencies:",
             f"  - python={python}", "  - pip", "  - pip:"]
    lines += [f'      - "{dep}"' for dep in pip_deps]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    target = ROOT / "environment.yml"
    text = render()
    if "--check" in argv:
        if not target.exists() or target.read_text() != text:
            print("environment.yml is out of sync with pyproject.toml: run `make environment`", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
