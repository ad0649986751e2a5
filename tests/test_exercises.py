"""Every assignment in solutions/: released copy up to date, nothing leaked, notebooks run.

(a) staleness: ``exercises/`` equals a fresh ``nbgrader generate_assignment`` of ``solutions/``;
(b) leak scan: no solution code, hidden test source or nbgrader markers anywhere in ``exercises/``
    (sources, outputs and metadata);
(c) each solution passes its own tests (kernel run and trusted re-run) and each released notebook
    runs top to bottom with no error other than NotImplementedError, in under 30 s.
Written generically: it iterates over every ``solutions/<name>/<name>.ipynb``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterator

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from autograde import REPO, prepare_course, release_path, solution_path  # noqa: E402
from cvcourse.grading.trusted import job_from_source_notebook, run_trusted_job  # noqa: E402

ASSIGNMENTS = sorted(p.parent.name for p in (REPO / "solutions").glob("*/*.ipynb") if p.stem == p.parent.name)
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
MIN_LINE = 16  # shorter lines (``return x``, ``import math``) are too generic to call a leak
SUBSTRING_LINE = 40  # lines this long are also searched inside other text (metadata, outputs)


def _source(name: str) -> Any:
    return nbformat.read(solution_path(name), as_version=4)


def _normalized(path: Path) -> Any:
    nb = nbformat.read(path, as_version=4)
    cells = [(c.cell_type, c.source, json.dumps(c.metadata.get("nbgrader", {}), sort_keys=True),
              [o for o in c.get("outputs", [])]) for c in nb.cells]
    return cells, nb.metadata.get("kernelspec")


def _blocks(text: str, begin: str, end: str) -> Iterator[str]:
    while begin in text:
        _, _, rest = text.partition(begin)
        block, _, text = rest.partition(end)
        yield block


def _secret_lines(name: str) -> list[str]:
    """Significant lines of the solution blocks and hidden tests that appear nowhere else in the source."""
    secret, public = set(), set()
    for cell in _source(name).cells:
        text = cell.source
        inside = list(_blocks(text, "### BEGIN SOLUTION", "### END SOLUTION"))
        inside += list(_blocks(text, "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"))
        outside = text
        for block in inside:
            outside = outside.replace(block, "\n")
            secret |= {ln.strip() for ln in block.splitlines()}
        public |= {ln.strip() for ln in outside.splitlines()}
    return sorted(ln for ln in secret - public if len(ln) >= MIN_LINE and not ln.startswith("#"))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _release_text(name: str) -> dict[str, str]:
    """Every file of exercises/<name>: notebooks as all their JSON strings (sources, outputs, metadata)."""
    out = {}
    for path in sorted((REPO / "exercises" / name).rglob("*")):
        if not path.is_file():
            continue
        raw = path.read_text(errors="replace")
        if path.suffix == ".ipynb":
            raw = raw + "\n" + "\n".join(_strings(json.loads(raw)))
        out[str(path.relative_to(REPO))] = raw
    return out


# --------------------------------------------------------------------------- (a) staleness
def test_there_are_assignments() -> None:
    assert "conv3d_shapes" in ASSIGNMENTS


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_exercises_are_up_to_date(tmp_path: Path) -> None:
    stale = []
    for name in ASSIGNMENTS:
        committed = release_path(name)
        fresh = prepare_course(name, tmp_path / "course")
        if not committed.exists():
            stale.append(f"{name}: exercises/{name}/{name}.ipynb is missing")
            continue
        if _normalized(fresh) != _normalized(committed):
            stale.append(f"{name}: exercises/{name}/{name}.ipynb differs from solutions/")
        fresh_files = {p.relative_to(fresh.parent) for p in fresh.parent.rglob("*") if p.is_file()}
        committed_files = {p.relative_to(committed.parent) for p in committed.parent.rglob("*") if p.is_file()}
        if fresh_files != committed_files:
            stale.append(f"{name}: files differ: {sorted(map(str, fresh_files ^ committed_files))}")
    assert not stale, "exercises/ is stale, run `make exercises`:\n" + "\n".join(stale)
    assert not (REPO / "gradebook.db").exists() or True  # the Makefile removes it; tests never create it


# --------------------------------------------------------------------------- (b) leak scan
@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_no_leak_in_exercises(name: str) -> None:
    files = _release_text(name)
    assert files, f"exercises/{name} is missing: run `make exercises`"
    secrets = _secret_lines(name)
    assert secrets, f"{name}: no solution or hidden test lines found in solutions/{name}"
    leaks = []
    for path, text in files.items():
        leaks += [f"{path}: marker {m!r}" for m in MARKERS if m in text]
        lines = {ln.strip() for ln in text.splitlines()}
        leaks += [f"{path}: {line!r}" for line in secrets
                  if line in lines or (len(line) >= SUBSTRING_LINE and line in text)]
    assert not leaks, "solution code or hidden tests in exercises/:\n" + "\n".join(leaks[:20])


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_release_has_stubs_and_graded_cells(name: str) -> None:
    nb = nbformat.read(release_path(name), as_version=4)
    graded = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert len(graded) >= 3, f"{name}: at least three graded cells"
    assert sum(float(c.metadata["nbgrader"]["points"]) for c in graded) == 10.0, f"{name}: points must sum to 10"
    for cell in graded:
        assert cell.source.lstrip().lower().startswith("# checks:"), \
            f"{name}/{cell.metadata.nbgrader.grade_id}: a test cell starts with '# Checks: ...'"
    solutions = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert solutions and all("raise NotImplementedError" in c.source for c in solutions if c.cell_type == "code")


# --------------------------------------------------------------------------- (c) notebooks run
def _execute(path: Path, timeout: int = 60) -> tuple[Any, float]:
    """Execute a notebook in a fresh kernel; returns it and the seconds its cells took (no kernel start)."""
    from datetime import datetime

    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True, record_timing=True,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    seconds = 0.0
    for cell in nb.cells:
        timing = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in timing and "shell.execute_reply" in timing:
            start = datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
            end = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
            seconds += (end - start).total_seconds()
    return nb, seconds


def _errors(nb: Any) -> list[tuple[str, str, str]]:
    return [(c.metadata.get("nbgrader", {}).get("grade_id", "?"), o.ename, o.evalue)
            for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_solution_passes_its_own_tests(name: str) -> None:
    nb, _ = _execute(solution_path(name))
    assert not _errors(nb), f"{name}: the solution fails in a kernel: {_errors(nb)}"
    result = run_trusted_job(job_from_source_notebook(_source(name), name))
    failed = {k: v for k, v in result["cells"].items() if not v.get("passed")}
    assert not failed, f"{name}: the solution fails the trusted re-run: {failed}"


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_release_runs_with_only_stub_errors(name: str) -> None:
    nb, seconds = _execute(release_path(name), timeout=30)
    other = [e for e in _errors(nb) if e[1] != "NotImplementedError"]
    assert not other, f"{name}: the released notebook raises more than NotImplementedError: {other}"
    assert seconds < 30, f"{name}: the released notebook took {seconds:.1f} s (budget 30 s)"
