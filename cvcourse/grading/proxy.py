"""Proxies living in the trusted process that forward calls to the worker.

A proxy only forwards *calls* and *attribute reads*. Comparisons, truth value, hashing and
``repr`` stay local (identity semantics), so an object whose ``==`` always answers ``True`` in
the worker cannot fool a test.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

__all__ = ["GradingError", "WorkerDied", "CallTimeout", "RemoteObject", "make_function_proxy", "make_class_proxy",
           "apply_state", "collect_grads", "PLACEHOLDER_HOOK_ID", "is_placeholder_hook"]


class GradingError(BaseException):
    """Raised in a test cell when the grader could not get an answer (BaseException: tests can't catch it)."""


class WorkerDied(GradingError):
    """The worker process exited (os._exit, crash, out of memory)."""


class CallTimeout(GradingError):
    """A call into student code took longer than the time limit."""


def _shadow_class(name: str, mro: list[str]) -> type:
    """A local stand-in class named like the remote one, subclassing the torch classes in its MRO."""
    bases: list[type] = []
    for qual in mro[1:]:
        mod, _, attr = qual.rpartition(".")
        if not (mod == "torch" or mod.startswith("torch.")):
            continue
        try:
            cls = getattr(importlib.import_module(mod), attr)
        except Exception:  # noqa: BLE001
            continue
        if isinstance(cls, type) and not any(issubclass(b, cls) for b in bases):
            bases.append(cls)
            break  # the most derived torch class is enough
    return type(name, tuple(bases) or (object,), {"__module__": "submission"})


class RemoteObject:
    """A reference to an object living in the worker."""

    __slots__ = ("_client", "_rid", "_clsname", "_shadow")

    def __init__(self, client: Any, rid: int, clsname: str, mro: list[str]) -> None:
        object.__setattr__(self, "_client", client)
        object.__setattr__(self, "_rid", rid)
        object.__setattr__(self, "_clsname", clsname)
        object.__setattr__(self, "_shadow", _shadow_class(clsname.rpartition(".")[2], mro))

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(obj, nn.Module) is answered by the shadow class
        return object.__getattribute__(self, "_shadow")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._client.call(("getattr", self._rid, name), (), {})

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("remote objects are read-only in tests")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._client.call(("remote", self._rid), args, kwargs)

    def __len__(self) -> int:
        n = self._client.call(("len", self._rid), (), {})
        if type(n) is not int:
            raise TypeError("len() of a remote object did not return an int")
        return n

    def __getitem__(self, key: Any) -> Any:
        return self._client.call(("getitem", self._rid, key), (), {})

    def __repr__(self) -> str:
        return f"<submission object of class {self._clsname}>"


def make_function_proxy(client: Any, name: str) -> Any:
    """A plain function that forwards to the student's ``name`` in the worker."""

    def proxy(*args: Any, **kwargs: Any) -> Any:
        return client.call(("name", name), args, kwargs)

    proxy.__name__ = proxy.__qualname__ = name
    proxy.__doc__ = f"Forwards to the submission's {name} (run in the grading worker)."
    return proxy


def make_class_proxy(client: Any, name: str, mro: list[str]) -> type:
    """A local class: calling it builds the instance in the worker and returns a RemoteObject."""

    shadow = _shadow_class(name, mro)

    class _Meta(type):
        def __call__(cls, *args: Any, **kwargs: Any) -> Any:
            return client.call(("name", name), args, kwargs)

        def __instancecheck__(cls, obj: Any) -> bool:
            return isinstance(obj, RemoteObject) and object.__getattribute__(obj, "_clsname").endswith(
                "." + name)

    return _Meta(name, (shadow,), {"__module__": "submission"})


# --------------------------------------------------------------------------- state sync
def _noop_hook(*args: Any, **kwargs: Any) -> None:
    """Placeholder for a hook the submission left on a module (only its count is known here).

    It lives in cvcourse, which the worker cannot import: the trusted pickler sends it as the
    persistent id :data:`PLACEHOLDER_HOOK_ID` and the worker puts its own no-op in its place.
    """
    return None


#: Persistent id of :func:`_noop_hook` in the pickles sent to the worker.
PLACEHOLDER_HOOK_ID = ("placeholder-hook",)


def is_placeholder_hook(obj: Any) -> bool:
    """True for the placeholder that :func:`apply_state` puts on modules for leaked hooks."""
    return obj is _noop_hook


def _sync_hooks(hooks: dict, count: int) -> None:
    while len(hooks) > count:
        hooks.pop(next(iter(hooks)))
    key = -1
    while len(hooks) < count:
        while key in hooks:
            key -= 1
        hooks[key] = _noop_hook


def _set_tensor(dst: torch.Tensor, src: torch.Tensor) -> None:
    if dst.shape != src.shape or dst.dtype != src.dtype:
        return  # cannot change shapes in place; the test will see the original
    if not torch.equal(dst.detach().cpu(), src):
        with torch.no_grad():
            dst.copy_(src.to(dst.device))


def _set_grad(dst: torch.Tensor, src: torch.Tensor | None) -> None:
    """Make ``dst.grad`` what the worker reported: None stays None; values are compared and copied in
    place when shape and dtype allow (like ``.backward()`` accumulating into an existing grad)."""
    if not dst.is_leaf:
        return
    if src is None:
        if dst.grad is not None:
            dst.grad = None
        return
    src = src.detach()
    current = dst.grad
    if current is not None and current.shape == src.shape and current.dtype == src.dtype:
        _set_tensor(current, src)
    else:
        try:
            dst.grad = src.clone().to(dst.device)
        except (RuntimeError, TypeError):
            pass  # a grad of another shape or dtype cannot be attached; the test sees the original


def apply_state(value: Any, state: Any, decode: Any) -> None:
    """Apply the worker's post-call ``state`` of an argument to the trusted ``value`` (in place)."""
    if type(state) is not tuple or not state or type(value) is RemoteObject:
        return  # a remote object lives in the worker: nothing to copy back
    tag = state[0]
    if tag == "t" and isinstance(value, torch.Tensor):
        new = decode(state[1])
        if isinstance(new, torch.Tensor):
            _set_tensor(value, new.detach())
        if value.is_leaf and bool(state[2]) != value.requires_grad:
            value.requires_grad_(bool(state[2]))
        if len(state) > 3:
            grad = None if state[3] is None else decode(state[3])
            _set_grad(value, grad if isinstance(grad, torch.Tensor) else None)
    elif tag == "m" and isinstance(value, nn.Module):
        _, mods, params, buffers = state
        local_mods = [m for _, m in value.named_modules()]
        if len(local_mods) == len(mods):
            for m, (training, nf, nfp, nb, nbp) in zip(local_mods, mods):
                m.training = bool(training)
                _sync_hooks(m._forward_hooks, int(nf))
                _sync_hooks(m._forward_pre_hooks, int(nfp))
                _sync_hooks(m._backward_hooks, int(nb))
                if hasattr(m, "_backward_pre_hooks"):
                    _sync_hooks(m._backward_pre_hooks, int(nbp))
        local_params = [p for _, p in value.named_parameters()]
        if len(local_params) == len(params):
            for p, (data, grad) in zip(local_params, params):
                _set_tensor(p, decode(data).detach())
                new_grad = None if grad is None else decode(grad)
                _set_grad(p, new_grad if isinstance(new_grad, torch.Tensor) else None)
        local_buffers = [b for _, b in value.named_buffers()]
        if len(local_buffers) == len(buffers):
            for b, data in zip(local_buffers, buffers):
                _set_tensor(b, decode(data).detach())
    elif tag == "s" and isinstance(value, (list, tuple, dict)):
        items = list(value.values()) if isinstance(value, dict) else list(value)
        if len(items) == len(state[1]):
            for v, s in zip(items, state[1]):
                apply_state(v, s, decode)


def collect_grads(value: Any, out: list | None = None, depth: int = 0) -> list:
    """``[(tensor, tensor.grad)]`` for every leaf tensor in ``value`` with a ``.grad``.

    Covers tensor arguments and the parameters and buffers of module arguments (through lists,
    tuples and dicts). Pickling a tensor drops its ``.grad``, so the call message carries these
    pairs explicitly; within one pickle the tensors keep their identity and the worker re-attaches
    each grad.
    """
    out = [] if out is None else out
    if depth > 20 or type(value) is RemoteObject:  # a remote object already lives in the worker
        return out
    if isinstance(value, torch.Tensor):
        if value.is_leaf and value.grad is not None:
            out.append((value, value.grad))
    elif isinstance(value, nn.Module):
        for _, t in value.named_parameters():
            collect_grads(t, out, depth + 1)
        for _, t in value.named_buffers():
            collect_grads(t, out, depth + 1)
    elif type(value) in (list, tuple):
        for v in value:
            collect_grads(v, out, depth + 1)
    elif type(value) is dict:
        for v in value.values():
            collect_grads(v, out, depth + 1)
    return out
