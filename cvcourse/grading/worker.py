"""The untrusted worker: runs a submission's code cells, then serves calls from the trusted side.

Started as ``python -I -m cvcourse.grading.worker READ_FD WRITE_FD`` by
:class:`cvcourse.grading.trusted.WorkerClient`. Protocol (frames, see :mod:`cvcourse.grading.codec`):

1. trusted -> worker (pickle): ``{"cells": [(cell_id, source)], "skip": [index], "blocked": [module]}``.
2. worker -> trusted (safe): ``("cell", index)`` before each cell, ``("cell_done", index, error_or_None)``
   after it, then ``("ready", {name: (kind, mro)})`` with the public callables defined.
3. trusted -> worker (pickle): ``("call", target, args, kwargs, grads)`` where target is ``("name", str)``,
   ``("remote", id)``, ``("getattr", id, attr)``, ``("len", id)`` or ``("getitem", id, key)``, and
   ``grads``, the ``[(tensor, grad)]`` pairs of the arguments (pickling drops ``.grad``). Persistent
   ids: ``("remote", id)`` for a remote object, ``("placeholder-hook",)`` for a leaked hook's stand-in.
   worker -> trusted (safe): ``("ok", value, state)`` or ``("error", exc_type, message, state)``.

Nothing here is trusted: student code shares this process and may tamper with anything in it.
"""

from __future__ import annotations

import builtins
import io
import os
import pickle
import sys
import traceback
import types
from typing import Any

__all__ = ["main", "strip_magics"]


def strip_magics(source: str) -> str:
    """Comment out IPython magics and shell escapes (``%``, ``%%``, ``!``) line by line."""
    lines = source.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):
        return ""  # cell magic: the whole cell is not Python
    out = []
    for line in lines:
        stripped = line.lstrip()
        if stripped.startswith(("%", "!")):
            out.append(line[: len(line) - len(stripped)] + "pass  # " + stripped)
        else:
            out.append(line)
    return "\n".join(out)


def _builtin_base(exc: BaseException) -> str:
    for cls in type(exc).__mro__:
        if cls.__module__ == "builtins" and issubclass(cls, BaseException):
            return cls.__name__
    return "RuntimeError"


def _state_of(value: Any, encode_fn: Any, torch: Any, depth: int = 0) -> Any:
    """Mutable state of an argument after a call (mirrors trusted.apply_state)."""
    nn = torch.nn
    if depth > 20:
        return ("x",)
    t = type(value)
    if t is torch.Tensor or t is nn.Parameter:
        grad = value.grad if value.is_leaf else None
        return ("t", encode_fn(value), bool(value.requires_grad), None if grad is None else encode_fn(grad))
    if isinstance(value, nn.Module):
        mods = []
        for _, m in value.named_modules():
            mods.append((bool(m.training), len(m._forward_hooks), len(m._forward_pre_hooks),
                         len(m._backward_hooks), len(getattr(m, "_backward_pre_hooks", {}))))
        params = [(encode_fn(p), None if p.grad is None else encode_fn(p.grad)) for _, p in value.named_parameters()]
        buffers = [encode_fn(b) for _, b in value.named_buffers()]
        return ("m", mods, params, buffers)
    if t in (list, tuple):
        return ("s", [_state_of(v, encode_fn, torch, depth + 1) for v in value])
    if t is dict:
        return ("s", [_state_of(v, encode_fn, torch, depth + 1) for v in value.values()])
    return ("x",)


def main(argv: list[str]) -> None:
    rfd, wfd = int(argv[0]), int(argv[1])
    # Keep the protocol off stdout/stdin: student prints go to /dev/null.
    devnull = open(os.devnull, "w")
    sys.stdout = devnull
    sys.stdin = io.StringIO("")

    from cvcourse.grading import codec  # noqa: PLC0415
    import torch  # noqa: PLC0415  (imported before student code: they share it)
    import numpy  # noqa: F401,PLC0415

    send_frame, recv_frame, dump_safe, encode = codec.send_frame, codec.recv_frame, codec.dump_safe, codec.encode
    remotes: dict[int, Any] = {}

    def remember(obj: Any) -> int:
        rid = len(remotes) + 1
        remotes[rid] = obj
        return rid

    def enc(value: Any) -> Any:
        return encode(value, remember)

    def send(msg: Any) -> None:
        send_frame(wfd, dump_safe(msg))

    def placeholder_hook(*args: Any, **kwargs: Any) -> None:
        """Stands for a hook a previous call left on a module (the trusted side keeps only counts)."""
        return None

    def persistent_load(pid: Any) -> Any:
        if pid == ("placeholder-hook",):  # proxy.PLACEHOLDER_HOOK_ID
            return placeholder_hook
        return remotes[pid[1]]

    job = pickle.loads(recv_frame(rfd))
    blocked = tuple(job["blocked"])
    hard_blocked = tuple(job.get("hard_blocked", ("cvcourse",)))
    skip = set(job["skip"])

    real_import = builtins.__import__

    ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002
        # Only imports written in the submission are checked (their globals are `ns`); the
        # libraries' own lazy imports (importlib, pickle, subprocess, ...) must keep working.
        if level == 0:
            refused = blocked if globals is ns else hard_blocked
            names = [name] + [f"{name}.{f}" for f in (fromlist or ()) if isinstance(f, str)]
            for n in names:
                if any(n == b or n.startswith(b + ".") for b in refused):
                    raise ImportError(f"importing {n!r} is not allowed in graded code (delegation)")
        return real_import(name, globals, locals, fromlist, level)

    # Hide the grader's own modules from the student namespace and block delegation.
    for key in list(sys.modules):
        if key == "cvcourse" or key.startswith("cvcourse."):
            del sys.modules[key]
    builtins.__import__ = guarded_import
    pristine = dict(builtins.__dict__)

    def restore_builtins() -> None:
        """Undo student changes to builtins (they would break this worker's own machinery)."""
        current = builtins.__dict__
        for key in [k for k in current if k not in pristine]:
            del current[key]
        for key, val in pristine.items():
            if current.get(key, pristine) is not val:
                current[key] = val

    for index, (cell_id, source) in enumerate(job["cells"]):
        send(("cell", index))
        if index in skip:
            send(("cell_done", index, "skipped (it timed out or killed the worker before)"))
            continue
        error = None
        try:
            code = builtins.compile(strip_magics(source), f"<cell {cell_id}>", "exec")
            builtins.exec(code, ns)
        except BaseException as exc:  # noqa: BLE001  (sys.exit, KeyboardInterrupt, anything)
            error = f"{_builtin_base(exc)}: {exc}"
        restore_builtins()
        send(("cell_done", index, error))

    names = {}
    for name, val in list(ns.items()):
        if name.startswith("_") or isinstance(val, types.ModuleType) or not callable(val):
            continue
        if isinstance(val, type):
            names[name] = ("class", [f"{c.__module__}.{c.__qualname__}" for c in val.__mro__])
        else:
            names[name] = ("function", [])
    send(("ready", names))

    while True:
        try:
            unpickler = pickle.Unpickler(io.BytesIO(recv_frame(rfd)))
            unpickler.persistent_load = persistent_load  # type: ignore[method-assign]
            msg = unpickler.load()
        except EOFError:
            return
        except Exception as exc:  # noqa: BLE001  (an argument the worker cannot rebuild: fail this call only)
            send(("error", "TypeError", f"the grading worker could not receive the arguments: {exc}", ("x",)))
            continue
        _, target, args, kwargs, grads = msg
        state_args = (args, kwargs)
        try:
            for tensor, grad in grads:  # pickling drops .grad: re-attach what the trusted side had
                tensor.grad = grad
            kind = target[0]
            if kind == "name":
                result = ns[target[1]](*args, **kwargs)
            elif kind == "remote":
                result = remotes[target[1]](*args, **kwargs)
            elif kind == "getattr":
                result = getattr(remotes[target[1]], target[2])
            elif kind == "len":
                result = len(remotes[target[1]])
            elif kind == "getitem":
                result = remotes[target[1]][target[2]]
            else:
                raise RuntimeError(f"unknown call target {kind!r}")
            restore_builtins()
            if isinstance(result, types.GeneratorType):
                result = list(result)
            try:
                payload = ("ok", enc(result), _state_of(state_args, enc, torch))
            except Exception as exc:  # noqa: BLE001
                payload = ("error", "RuntimeError", f"result could not be sent back: {exc}", ("x",))
        except BaseException as exc:  # noqa: BLE001
            restore_builtins()
            if isinstance(exc, SystemExit):
                etype, message = "RuntimeError", f"the code called sys.exit({exc.code!r})"
            else:
                etype, message = _builtin_base(exc), str(exc)
            try:
                st = _state_of(state_args, enc, torch)
            except Exception:  # noqa: BLE001
                st = ("x",)
            payload = ("error", etype, message, st)
        try:
            send(payload)
        except Exception as exc:  # noqa: BLE001
            send(("error", "RuntimeError", f"result could not be sent back: {exc}", ("x",)))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except Exception:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        sys.exit(3)
