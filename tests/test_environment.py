"""The project's setup files agree with each other (one source of truth)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_is_generated_from_pyproject():
    result = subprocess.run([sys.executable, "scripts/sync_environment.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_environment_yml_names_the_same_packages_as_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(dep for dep in env["dependencies"] if isinstance(dep, dict))["pip"]
    project = _pyproject()["project"]
    want = project["dependencies"] + project["optional-dependencies"]["book"]
    assert pip_section == want
    assert "python=3.11" in env["dependencies"]


def test_pins_are_ranges_that_work_elsewhere():
    deps = _pyproject()["project"]["dependencies"]
    for name in ("torch", "torchvision"):
        (spec,) = [d for d in deps if d.split(">")[0].split("<")[0].split("=")[0].strip() == name]
        assert "==" not in spec, f"{spec!r}: do not hard-pin {name}; pin a range"
    book = _pyproject()["project"]["optional-dependencies"]["book"]
    assert any(d.startswith("jupyter-book") and "<2" in d for d in book), "Jupyter Book must stay on 1.x"


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make book" in readme and "make test" in readme
    assert readme.index("make book") < readme.index("make test")
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.startswith("#")]
    assert commands[-1] in ("make test", "exec make test"), commands


def test_solutions_are_excluded_from_the_site():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["only_build_toc_files"] is True
    for folder in ("solutions/*", "exercises/*", ".venv/*", "_build/*"):
        assert folder in config["exclude_patterns"]
    assert config["execute"]["allow_errors"] is False
    assert config["sphinx"]["config"]["nb_execution_raise_on_error"] is True
