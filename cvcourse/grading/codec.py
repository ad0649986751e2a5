"""Safe value transport between the untrusted worker and the trusted process.

The worker *encodes* values into a tagged structure made only of primitives, lists, tuples
and plain tensors, serialised with :func:`torch.save`; the trusted side reads it with
``torch.load(weights_only=True)`` and *decodes* it, accepting only known tags. Anything the
worker cannot encode faithfully (an ``int`` subclass, an object with a custom ``__eq__``, an
instance of a student class) travels as a reference to a remote object.

Frames on the pipes: an 8-byte big-endian length, then the payload.
"""

from __future__ import annotations

import importlib
import io
import os
import struct
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

__all__ = ["encode", "decode", "dump_safe", "load_safe", "send_frame", "recv_frame", "ProtocolError"]

_PRIMITIVES = (type(None), bool, int, float, str, complex)
_MODULE_SKIP = {
    "_parameters", "_buffers", "_modules", "training", "_non_persistent_buffers_set",
    "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
    "_state_dict_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks",
    "_state_dict_pre_hooks", "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_always_called", "_is_full_backward_hook", "_compiled_call_impl",
}


class ProtocolError(Exception):
    """A malformed frame or value came back from the worker."""


# --------------------------------------------------------------------------- framing
def send_frame(fd: int, payload: bytes) -> None:
    """Write one length-prefixed frame to file descriptor ``fd``."""
    data = struct.pack(">Q", len(payload)) + payload
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError("pipe closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_frame(fd: int, max_bytes: int = 1 << 30) -> bytes:
    """Read one length-prefixed frame from ``fd`` (EOFError if the other side is gone)."""
    (n,) = struct.unpack(">Q", _read_exact(fd, 8))
    if n > max_bytes:
        raise ProtocolError(f"frame of {n} bytes is larger than {max_bytes}")
    return _read_exact(fd, n)


def dump_safe(value: Any) -> bytes:
    """Serialise an *encoded* value with torch.save."""
    buf = io.BytesIO()
    torch.save(value, buf)
    return buf.getvalue()


def load_safe(payload: bytes) -> Any:
    """Read a payload written by :func:`dump_safe` with ``weights_only=True`` (no code runs)."""
    return torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")


# --------------------------------------------------------------------------- encoding (worker)
def _is_torch_nn_class(cls: type) -> bool:
    return isinstance(cls, type) and issubclass(cls, nn.Module) and cls.__module__.startswith("torch.nn.")


def _module_encodable(module: nn.Module) -> bool:
    return all(_is_torch_nn_class(type(m)) for m in module.modules())


def encode(value: Any, remember: Callable[[Any], int], depth: int = 0) -> Any:
    """Encode ``value`` (worker side). ``remember(obj) -> id`` registers a remote object."""
    if depth > 50:
        raise ProtocolError("value nested too deeply")
    t = type(value)
    if t in _PRIMITIVES:
        return ("v", value)
    if t is tuple or t is list:
        return ("tuple" if t is tuple else "list", [encode(v, remember, depth + 1) for v in value])
    if t is dict:
        return ("dict", [(encode(k, remember, depth + 1), encode(v, remember, depth + 1)) for k, v in value.items()])
    if t is torch.Size:
        return ("size", [int(v) for v in value])
    if t is torch.Tensor or t is nn.Parameter:
        data = value.detach().cpu().clone().contiguous()
        return ("tensor", data, bool(value.requires_grad), value.grad_fn is not None, t is nn.Parameter,
                str(value.device))
    if t is np.ndarray and value.dtype != object:
        return ("ndarray", torch.from_numpy(np.ascontiguousarray(value).copy()), str(value.dtype),
                list(value.shape))
    if isinstance(value, np.generic) and t in (np.bool_, np.float16, np.float32, np.float64, np.int8, np.int16,
                                               np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64):
        return ("npscalar", str(value.dtype), value.item())
    if t is torch.dtype:
        return ("dtype", str(value).replace("torch.", ""))
    if t is torch.device:
        return ("device", str(value))
    if isinstance(value, nn.Module) and _module_encodable(value):
        return _encode_module(value, remember, depth)
    return ("remote", remember(value), f"{t.__module__}.{t.__qualname__}", callable(value), _mro(t))


def _mro(cls: type) -> list[str]:
    return [f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__]


def _encode_module(module: nn.Module, remember: Callable[[Any], int], depth: int) -> Any:
    cls = type(module)
    attrs = []
    for name, val in vars(module).items():
        if name in _MODULE_SKIP:
            continue
        if callable(val) and getattr(val, "__module__", "") and str(val.__module__).startswith("torch"):
            attrs.append((name, ("func", val.__module__, getattr(val, "__qualname__", ""))))
            continue
        enc = encode(val, remember, depth + 1)
        if enc[0] != "remote":
            attrs.append((name, enc))
    params = [(n, None if p is None else encode(p, remember, depth + 1)) for n, p in module._parameters.items()]
    buffers = [(n, None if b is None else encode(b, remember, depth + 1)) for n, b in module._buffers.items()]
    children = [(n, None if m is None else _encode_module(m, remember, depth + 1)) for n, m in module._modules.items()]
    return ("module", cls.__module__, cls.__qualname__, bool(module.training), attrs, params, buffers, children)


# --------------------------------------------------------------------------- decoding (trusted)
def _check(cond: bool, what: str) -> None:
    if not cond:
        raise ProtocolError(what)


def decode(enc: Any, make_remote: Callable[..., Any]) -> Any:
    """Decode a value encoded by :func:`encode` (trusted side), validating every tag."""
    _check(type(enc) is tuple and len(enc) >= 1 and type(enc[0]) is str, "bad value")
    tag = enc[0]
    if tag == "v":
        _check(len(enc) == 2 and type(enc[1]) in _PRIMITIVES, "bad primitive")
        return enc[1]
    if tag in ("tuple", "list"):
        _check(type(enc[1]) is list, "bad sequence")
        items = [decode(v, make_remote) for v in enc[1]]
        return tuple(items) if tag == "tuple" else items
    if tag == "dict":
        _check(type(enc[1]) is list, "bad dict")
        return {decode(k, make_remote): decode(v, make_remote) for k, v in enc[1]}
    if tag == "size":
        _check(all(type(v) is int for v in enc[1]), "bad size")
        return torch.Size(enc[1])
    if tag == "tensor":
        _, data, requires_grad, has_grad_fn, is_param, _device = enc
        _check(type(data) is torch.Tensor, "bad tensor")
        if is_param:
            return nn.Parameter(data, requires_grad=bool(requires_grad))
        if requires_grad:
            leaf = data.requires_grad_(True)
            return leaf * 1 if has_grad_fn else leaf
        return data
    if tag == "ndarray":
        _, data, dtype, shape = enc
        _check(type(data) is torch.Tensor, "bad array")
        return data.numpy().astype(np.dtype(dtype), copy=True).reshape(shape)
    if tag == "npscalar":
        _, dtype, item = enc
        _check(type(item) in (bool, int, float), "bad numpy scalar")
        return np.dtype(dtype).type(item)
    if tag == "dtype":
        val = getattr(torch, enc[1], None)
        _check(type(val) is torch.dtype, "bad dtype")
        return val
    if tag == "device":
        return torch.device(enc[1])
    if tag == "module":
        return _decode_module(enc, make_remote)
    if tag == "remote":
        _, rid, clsname, is_callable, mro = enc
        _check(type(rid) is int and type(clsname) is str, "bad remote")
        return make_remote(rid, clsname, bool(is_callable), [str(m) for m in mro])
    raise ProtocolError(f"unknown tag {tag!r}")


def _torch_attr(module_name: str, qualname: str) -> Any:
    _check(module_name == "torch" or module_name.startswith("torch."), f"not a torch object: {module_name}")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _decode_module(enc: Any, make_remote: Callable[..., Any]) -> nn.Module:
    _, modname, qualname, training, attrs, params, buffers, children = enc
    _check(str(modname).startswith("torch.nn."), f"module class {modname} is not from torch.nn")
    cls = _torch_attr(modname, qualname)
    _check(_is_torch_nn_class(cls), f"{qualname} is not a torch.nn module class")
    module = cls.__new__(cls)
    nn.Module.__init__(module)
    for name, val in attrs:
        if type(val) is tuple and val and val[0] == "func":
            object.__setattr__(module, name, _torch_attr(val[1], val[2]))
        else:
            object.__setattr__(module, name, decode(val, make_remote))
    for name, p in params:
        value = None if p is None else decode(p, make_remote)
        if value is not None and type(value) is not nn.Parameter:
            value = nn.Parameter(value.detach(), requires_grad=value.requires_grad)
        module.register_parameter(name, value)
    for name, b in buffers:
        module.register_buffer(name, None if b is None else decode(b, make_remote))
    for name, child in children:
        module.add_module(name, None if child is None else _decode_module(child, make_remote))
    module.training = bool(training)
    return module
