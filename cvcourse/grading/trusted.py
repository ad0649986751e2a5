"""The trusted process: re-runs the instructor's cells and tests against proxies to the worker.

Started as ``python -I -m cvcourse.grading.trusted JOB.json RESULT.json`` by
:func:`run_trusted_job` (called from the nbgrader preprocessor). The job lists the cells the
worker runs (everything but the tests, in notebook order) and the trusted cells (locked
instructor cells and test cells, sources from the gradebook). The result says, for each test
cell, whether it passed, and if not, the exception type and message and a description in words.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import select
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["WorkerClient", "checks_line", "hidden_line_range", "job_from_source_notebook", "main", "run_trusted_cells",
           "run_trusted_job"]

HIDDEN_BEGIN = "### BEGIN HIDDEN TESTS"
HIDDEN_END = "### END HIDDEN TESTS"


def checks_line(source: str) -> str:
    """The ``# Checks: ...`` description of a test cell (or a generic one)."""
    for line in source.splitlines():
        s = line.strip()
        if s.lower().startswith("# checks:"):
            return s[len("# checks:"):].strip()
    return "the tests of this cell"


def hidden_line_range(source: str) -> tuple[int, int] | None:
    """1-based (first, last) line numbers of the hidden block, markers included, or None."""
    begin = end = None
    for i, line in enumerate(source.splitlines(), start=1):
        if HIDDEN_BEGIN in line and begin is None:
            begin = i
        elif HIDDEN_END in line and begin is not None:
            end = i
    if begin is None:
        return None
    return begin, end if end is not None else len(source.splitlines())


# --------------------------------------------------------------------------- worker client
@dataclass
class WorkerClient:
    """Runs and talks to one worker process; restarts it after a timeout or a crash."""

    cells: list[tuple[str, str]]
    blocked: list[str]
    hard_blocked: list[str] = field(default_factory=lambda: ["cvcourse"])
    cell_timeout: float = 30.0
    call_timeout: float = 20.0
    startup_timeout: float = 60.0
    max_restarts: int = 4
    skip: set[int] = field(default_factory=set)
    cell_errors: dict[int, str] = field(default_factory=dict)
    names: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0
    proc: subprocess.Popen | None = None
    broken: str | None = None

    # -- process management -------------------------------------------------
    def _spawn(self) -> None:
        to_w_r, to_w_w = os.pipe()
        from_w_r, from_w_w = os.pipe()
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
        env["OMP_NUM_THREADS"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-m", "cvcourse.grading.worker", str(to_w_r), str(from_w_w)],
            pass_fds=(to_w_r, from_w_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=tempfile.mkdtemp(prefix="worker-"),
            start_new_session=True,
        )
        os.close(to_w_r)
        os.close(from_w_w)
        self._w, self._r = to_w_w, from_w_r
        from cvcourse.grading import codec  # imports torch while the worker starts (in parallel)

        codec.send_frame(self._w, pickle.dumps({"cells": self.cells, "skip": sorted(self.skip),
                                                 "blocked": self.blocked, "hard_blocked": self.hard_blocked}))

    def kill(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, 9)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            self.proc.wait()
            for fd in (self._w, self._r):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.proc = None

    def _recv(self, timeout: float) -> Any:
        from cvcourse.grading import codec

        ready, _, _ = select.select([self._r], [], [], max(timeout, 0.0))
        if not ready:
            raise TimeoutError
        return codec.load_safe(codec.recv_frame(self._r))

    def start(self) -> None:
        """Start the worker and run the cells; skip and remember any cell that hangs or kills it."""
        while True:
            if self.restarts > self.max_restarts:
                self.broken = "the submission's code could not be run (too many restarts)"
                return
            self._spawn()
            current = None
            deadline = time.monotonic() + self.startup_timeout
            try:
                while True:
                    limit = self.cell_timeout if current is not None else deadline - time.monotonic()
                    msg = self._recv(limit)
                    if type(msg) is not tuple or not msg:
                        raise EOFError("bad message")
                    if msg[0] == "cell":
                        current = int(msg[1])
                    elif msg[0] == "cell_done":
                        if msg[2] is not None:
                            self.cell_errors[int(msg[1])] = str(msg[2])
                        current = None
                        deadline = time.monotonic() + self.startup_timeout
                    elif msg[0] == "ready":
                        self.names = dict(msg[1])
                        return
            except TimeoutError:
                why = "took longer than {:.0f} s".format(self.cell_timeout)
            except (EOFError, OSError, Exception) as exc:  # noqa: BLE001
                why = f"stopped the worker ({type(exc).__name__})"
            self.kill()
            self.restarts += 1
            if current is None:
                self.broken = f"the grading worker could not start ({why})"
                return
            self.skip.add(current)
            self.cell_errors[current] = f"cell {self.cells[current][0]!r} {why}; it was skipped"

    def call(self, target: tuple, args: tuple, kwargs: dict) -> Any:
        """Call ``target`` in the worker; returns the decoded result and syncs argument state."""
        from cvcourse.grading import codec
        from cvcourse.grading.proxy import CallTimeout, RemoteObject, WorkerDied, apply_state, collect_grads

        if self.proc is None:
            if self.broken:
                raise WorkerDied(self.broken)
            self.start()
            if self.proc is None:
                raise WorkerDied(self.broken or "the grading worker is not running")
        try:
            buf = io.BytesIO()
            pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
            pickler.persistent_id = _remote_id  # type: ignore[method-assign]
            # Pickling drops .grad: send the (tensor, grad) pairs in the same pickle (identity kept).
            pickler.dump(("call", target, args, kwargs, collect_grads((args, kwargs))))
            payload = buf.getvalue()
        except Exception as exc:  # noqa: BLE001
            raise TypeError(f"the test passed an argument the grader cannot send: {exc}") from None
        try:
            codec.send_frame(self._w, payload)
            reply = self._recv(self.call_timeout)
        except TimeoutError:
            self.kill()
            self.restarts += 1
            raise CallTimeout(f"the call did not finish within {self.call_timeout:.0f} s (worker restarted)") from None
        except (EOFError, OSError, codec.ProtocolError) as exc:
            self.kill()
            self.restarts += 1
            raise WorkerDied(f"the submission's code ended the worker process ({type(exc).__name__})") from None

        def make_remote(rid: int, clsname: str, is_callable: bool, mro: list[str]) -> Any:
            return RemoteObject(self, rid, clsname, mro)

        def dec(enc: Any) -> Any:
            return codec.decode(enc, make_remote)

        if type(reply) is not tuple or not reply or reply[0] not in ("ok", "error"):
            raise WorkerDied("the worker sent a malformed reply")
        state = reply[-1]
        try:
            apply_state((args, kwargs), state, dec)
        except Exception:  # noqa: BLE001  (a bad state report must not crash the grader)
            pass
        if reply[0] == "ok":
            return dec(reply[1])
        _, etype, message, _ = reply
        exc_cls = _SAFE_EXCEPTIONS.get(str(etype), RuntimeError)
        raise exc_cls(str(message))


def _remote_id(obj: Any) -> Any:
    from cvcourse.grading.proxy import PLACEHOLDER_HOOK_ID, RemoteObject, is_placeholder_hook

    if type(obj) is RemoteObject:
        return ("remote", object.__getattribute__(obj, "_rid"))
    if is_placeholder_hook(obj):  # a leaked hook's stand-in: the worker cannot import cvcourse
        return PLACEHOLDER_HOOK_ID
    return None


_SAFE_EXCEPTIONS: dict[str, type[BaseException]] = {
    cls.__name__: cls
    for cls in (ValueError, TypeError, NotImplementedError, RuntimeError, IndexError, KeyError, AttributeError,
                ZeroDivisionError, ArithmeticError, OverflowError, AssertionError, LookupError, NameError,
                ImportError, ModuleNotFoundError, MemoryError, RecursionError, StopIteration, UnboundLocalError,
                OSError, FileNotFoundError, Exception)
}


# --------------------------------------------------------------------------- trusted run
def _describe_failure(exc: BaseException, tb: Any, cell_id: str, source: str) -> dict[str, Any]:
    """ename/evalue/words for a failed test cell, never quoting the hidden source."""
    from cvcourse.grading.proxy import GradingError

    hidden = hidden_line_range(source)
    line = None
    for frame, lineno in traceback.walk_tb(tb):
        if frame.f_code.co_filename == f"<test cell {cell_id}>":
            line = lineno
    where = "a check of this cell"
    if line is not None:
        if hidden and hidden[0] <= line <= hidden[1]:
            where = "a hidden check"
        else:
            where = f"the visible check at line {line}"
    message = str(exc)
    if isinstance(exc, GradingError):
        ename = "GradingError"
    else:
        ename = type(exc).__name__
    words = [f"Test cell {cell_id!r} failed: it checks {checks_line(source)}.",
             f"{where[0].upper() + where[1:]} failed with {ename}" + (f": {message}" if message else " (no message).")]
    return {"passed": False, "ename": ename, "evalue": message or f"{where} failed", "words": words}


def run_trusted_cells(job: dict[str, Any]) -> dict[str, Any]:
    """Run the job in this (trusted) process; see the module docstring for the format."""
    import contextlib

    client = WorkerClient(
        cells=[tuple(c) for c in job["worker_cells"]],
        blocked=list(job["blocked"]),
        hard_blocked=list(job.get("hard_blocked", ["cvcourse"])),
        cell_timeout=float(job.get("cell_timeout", 30)),
        call_timeout=float(job.get("call_timeout", 20)),
    )
    results: dict[str, Any] = {}
    t0 = time.monotonic()
    try:
        client.start()
        from cvcourse.grading.proxy import make_class_proxy, make_function_proxy

        ns: dict[str, Any] = {"__name__": "__main__"}
        for name, (kind, mro) in client.names.items():
            ns[name] = make_class_proxy(client, name, mro) if kind == "class" else make_function_proxy(client, name)
        for kind, cell_id, source in job["trusted_cells"]:
            code = compile(source, f"<test cell {cell_id}>", "exec")
            sink = io.StringIO()
            try:
                with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                    exec(code, ns)  # noqa: S102  (instructor code)
            except BaseException as exc:  # noqa: BLE001
                if kind == "test":
                    results[cell_id] = _describe_failure(exc, exc.__traceback__, cell_id, source)
                else:
                    results[cell_id] = {"passed": False, "ename": type(exc).__name__, "evalue": str(exc),
                                        "words": [f"Instructor cell {cell_id!r} raised {type(exc).__name__}."]}
            else:
                results[cell_id] = {"passed": True}
    finally:
        client.kill()
    return {"cells": results, "worker_cell_errors": {str(k): v for k, v in client.cell_errors.items()},
            "restarts": client.restarts, "seconds": round(time.monotonic() - t0, 2)}


def run_trusted_job(job: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
    """Run ``job`` in a fresh trusted process (``python -I -m cvcourse.grading.trusted``).

    Never raises for anything the submission does: on a crash or timeout every test cell fails
    with a message saying so.
    """
    with tempfile.TemporaryDirectory(prefix="cvcourse-grading-") as tmp:
        job_path, result_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(json.dumps(job))
        env = dict(os.environ)
        env["TMPDIR"] = tmp
        proc = subprocess.Popen([sys.executable, "-I", "-m", "cvcourse.grading.trusted", str(job_path),
                                 str(result_path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=env, cwd=tmp, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=timeout)
            problem = None if proc.returncode == 0 else f"the trusted run exited with {proc.returncode}: " + \
                err.decode(errors="replace")[-500:]
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            problem = f"the trusted run took longer than {timeout:.0f} s"
        if problem is None and result_path.exists():
            return json.loads(result_path.read_text())
    test_ids = [cid for kind, cid, _ in job["trusted_cells"] if kind == "test"]
    return {"cells": {cid: {"passed": False, "ename": "GradingError", "evalue": problem or "no result",
                            "words": [f"The grader could not run the tests: {problem}."]} for cid in test_ids},
            "worker_cell_errors": {}, "restarts": 0, "seconds": None}


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text())
    Path(argv[0]).unlink()  # the worker must not find the hidden tests on disk
    result = run_trusted_cells(job)
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def job_from_source_notebook(nb: Any, assignment: str | None = None) -> dict[str, Any]:
    """A trusted-run job built from an instructor notebook's own metadata (for tests of solutions).

    Graded non-solution code cells are tests (run trusted); locked instructor code cells run in
    both processes; everything else runs in the worker only. Autograding does not use this: it
    takes the cell roles and sources from the gradebook.
    """
    from cvcourse.grading.policy import blocked_modules, hard_blocked_modules

    worker_cells, trusted_cells = [], []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        meta = cell.get("metadata", {}).get("nbgrader", {})
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        cid = meta.get("grade_id", f"cell {index + 1}")
        if meta.get("grade") and not meta.get("solution"):
            trusted_cells.append(("test", cid, source))
            continue
        worker_cells.append((cid, source))
        if meta.get("locked") and not meta.get("solution"):
            trusted_cells.append(("instructor", cid, source))
    return {"worker_cells": worker_cells, "trusted_cells": trusted_cells,
            "blocked": list(blocked_modules(assignment)), "hard_blocked": list(hard_blocked_modules(assignment)),
            "cell_timeout": 30, "call_timeout": 20}
