"""Unit tests of the trusted re-run engine (cvcourse.grading), without nbgrader.

The trusted runs start real processes (trusted + worker): each ``run_trusted_job`` costs a few
seconds, so each test packs several checks into one job.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from cvcourse.grading import codec
from cvcourse.grading.policy import scan_source
from cvcourse.grading.preprocessors import scrub_test_source
from cvcourse.grading.trusted import checks_line, hidden_line_range, run_trusted_job


def _job(worker: list[str], tests: dict[str, str], instructor: str = "import torch\nfrom torch import nn",
         call_timeout: float = 20, cell_timeout: float = 30) -> dict:
    cells = [("setup", instructor)] + [(f"student{i}", textwrap.dedent(s)) for i, s in enumerate(worker)]
    trusted = [("instructor", "setup", instructor)] + [("test", k, textwrap.dedent(v)) for k, v in tests.items()]
    return {"worker_cells": cells, "trusted_cells": trusted, "blocked": ["cvcourse"],
            "call_timeout": call_timeout, "cell_timeout": cell_timeout}


# --------------------------------------------------------------------------- static scan
@pytest.mark.parametrize("source, what", [
    ("x = eval('1')", "`eval`"),
    ("exec('x = 1')", "`exec`"),
    ("m = __import__('os')", "`__import__`"),
    ("c = compile('1', 'f', 'eval')", "`compile`"),
    ("import importlib\nimportlib.import_module('os')", "importlib"),
    ("import sys\nsys.modules['torch'].equal = None", "sys.modules"),
    ("import sys as s\ns.meta_path.clear()", "sys.meta_path"),
    ("from sys import path", "sys.path"),
    ("import cvcourse", "`cvcourse`"),
    ("from cvcourse.video import early_fusion", "cvcourse.video"),
    ("import builtins\nbuiltins.eval('1')", "`eval`"),
])
def test_scan_rejects(source: str, what: str) -> None:
    found = scan_source(source, cell="c1", assignment="conv3d_shapes")
    assert found, f"{source!r} should be rejected"
    assert what in str(found[0]) and "line" in str(found[0]) and "c1" in str(found[0])


def test_scan_accepts_ordinary_code() -> None:
    source = "import re, torch, math, sys\nmodel = torch.nn.Linear(2, 2)\nmodel.eval()\nre.compile('a')\n" \
             "f = torch.compile\nprint(sys.version)\nx = math.prod([1, 2])"
    assert scan_source(source, assignment="conv3d_shapes") == []
    assert scan_source("from sklearn.decomposition import PCA", assignment="pca")
    assert not scan_source("from sklearn.decomposition import PCA", assignment="conv3d_shapes")


# --------------------------------------------------------------------------- codec
def test_codec_round_trip_keeps_exact_types() -> None:
    remotes: list = []

    def remember(obj):
        remotes.append(obj)
        return len(remotes)

    class IntSub(int):
        pass

    value = ((1, 2), [3, 4.5], {"a": None, "b": True}, np.arange(3, dtype=np.int32), np.int64(7),
             torch.Size([2, 3]), torch.float64, IntSub(3), torch.ones(2, requires_grad=True) * 2)
    enc = codec.encode(value, remember)
    back = codec.decode(codec.load_safe(codec.dump_safe(enc)), lambda rid, cls, c, mro: ("remote", rid, cls))
    assert type(back) is tuple and type(back[0]) is tuple and type(back[1]) is list
    assert back[2] == {"a": None, "b": True}
    assert back[3].dtype == np.int32 and back[3].tolist() == [0, 1, 2]
    assert type(back[4]) is np.int64 and back[4] == 7
    assert back[5] == torch.Size([2, 3]) and back[6] is torch.float64
    assert back[7][0] == "remote", "an int subclass must not come back as a plain int"
    assert back[8].requires_grad and back[8].grad_fn is not None and torch.equal(back[8].detach(), torch.full((2,), 2.0))


def test_codec_rebuilds_torch_modules() -> None:
    conv = nn.Conv3d(2, 4, (3, 1, 1), padding=(1, 0, 0), bias=False)
    seq = nn.Sequential(conv, nn.ReLU(), nn.Flatten())
    seq.eval()
    enc = codec.encode(seq, lambda obj: 0)
    back = codec.decode(codec.load_safe(codec.dump_safe(enc)), lambda *a: None)
    assert type(back) is nn.Sequential and type(back[0]) is nn.Conv3d and not back.training
    assert back[0].bias is None and back[0].padding == (1, 0, 0)
    x = torch.rand(1, 2, 3, 4, 4)
    assert torch.equal(back(x), seq(x))


# --------------------------------------------------------------------------- trusted runs
@pytest.mark.slow
def test_trusted_run_defeats_tampering_and_keeps_semantics() -> None:
    worker = ['''
        import builtins, torch, sys
        torch.equal = lambda *a, **k: True          # tampering only affects the worker
        builtins.isinstance = lambda *a: True

        class Anything(tuple):
            def __eq__(self, other):
                return True

        def shape(x):
            if x < 0:
                raise ValueError(f"negative: {x}")
            return (x, x)

        def lying(x):
            return Anything((0,))

        def peek(x):
            return sys._getframe(1).f_locals["want"]

        def zeros(t):
            return torch.zeros_like(t)

        def train_and_hook(model, images):
            model.train()
            model[0].register_forward_hook(lambda *a: None)
            model(images).sum().backward()
            images.add_(1)
            return None

        class Box(torch.nn.Module):
            def __init__(self, n):
                super().__init__()
                self.n = n
                self.lin = torch.nn.Linear(n, 1)

            def forward(self, x):
                return self.lin(x)
    ''']
    tests = {
        "pass": "# Checks: a plain call\nassert shape(2) == (2, 2) and type(shape(2)) is tuple",
        "errors": "# Checks: errors\ntry:\n    shape(-1)\nexcept ValueError as e:\n    assert 'negative' in str(e)\n"
                  "else:\n    raise AssertionError('no ValueError')",
        "lying": "# Checks: lying\nr = lying(1)\nassert type(r) is tuple, 'not a tuple'\nassert r == (5,)",
        "peek": "# Checks: frames\nwant = (9, 9)\nassert peek(3) == want, 'frame read'",
        "tamper": "# Checks: tampering\nt = torch.ones(3)\n### BEGIN HIDDEN TESTS\nassert torch.equal(zeros(t), t), "
                  "'zeros is not ones'\n### END HIDDEN TESTS",
        "state": "# Checks: state\nm = nn.Sequential(nn.Linear(3, 2), nn.ReLU())\nm.eval()\nx = torch.zeros(4, 3)\n"
                 "train_and_hook(m, x)\nassert m.training and len(m[0]._forward_hooks) == 1\n"
                 "assert m[0].weight.grad is not None and m[0].weight.grad.shape == (2, 3)\n"
                 "assert torch.equal(x, torch.ones(4, 3))",
        "remote": "# Checks: class\nb = Box(3)\nassert isinstance(b, Box) and isinstance(b, nn.Module)\n"
                  "assert b.n == 3 and type(b.lin) is nn.Linear\nassert b(torch.zeros(2, 3)).shape == (2, 1)",
    }
    result = run_trusted_job(_job(worker, tests))
    cells = result["cells"]
    assert cells["pass"] == {"passed": True}
    assert cells["errors"] == {"passed": True}
    assert cells["state"] == {"passed": True}, cells["state"]
    assert cells["remote"] == {"passed": True}, cells["remote"]
    assert not cells["lying"]["passed"] and cells["lying"]["evalue"] == "not a tuple"
    assert not cells["peek"]["passed"] and cells["peek"]["ename"] == "KeyError"
    tamper = cells["tamper"]
    assert not tamper["passed"] and tamper["evalue"] == "zeros is not ones"
    assert any("hidden check" in w for w in tamper["words"])
    assert not any("torch.equal" in w for w in tamper["words"]), "the hidden source must not be quoted"


@pytest.mark.slow
def test_trusted_run_survives_exit_crash_and_loops() -> None:
    worker = ['''
        import os, sys
        sys.exit(3)                                  # top-level exit: the cell stops, the worker goes on
    ''', '''
        def ok():
            return 1

        def leave():
            sys.exit(0)

        def crash():
            os._exit(1)

        def spin():
            while True:
                pass
    ''', '''
        while True:                                  # top-level loop: cell killed, skipped on restart
            pass
    ''', '''
        def after():
            return 2
    ''']
    tests = {
        "leave": "# Checks: exit\nleave()",
        "ok1": "# Checks: alive\nassert ok() == 1",
        "crash": "# Checks: crash\ntry:\n    crash()\nexcept Exception:\n    pass",
        "ok2": "# Checks: restarted\nassert ok() == 1 and after() == 2",
        "spin": "# Checks: loop\nspin()",
        "ok3": "# Checks: restarted again\nassert ok() == 1",
    }
    result = run_trusted_job(_job(worker, tests, call_timeout=3, cell_timeout=4))
    cells = result["cells"]
    assert not cells["leave"]["passed"] and "sys.exit" in cells["leave"]["evalue"]
    assert cells["ok1"]["passed"] and cells["ok2"]["passed"] and cells["ok3"]["passed"], cells
    assert not cells["crash"]["passed"] and cells["crash"]["ename"] == "GradingError"
    assert not cells["spin"]["passed"] and "within 3 s" in cells["spin"]["evalue"]
    assert any("skipped" in e for e in result["worker_cell_errors"].values())


def test_worker_blocks_delegation_at_run_time() -> None:
    worker = ["def f():\n    import cvcourse.video\n    return 1",
              # a library import (unpickling crafted bytes) must not reach cvcourse either
              "import pickletools, io, torch\n"
              "def g():\n"
              "    payload = b'\\x80\\x04\\x8c\\x08cvcourse\\x94\\x8c\\x07grading\\x94\\x93\\x94.'\n"
              "    return torch.load(io.BytesIO(payload), weights_only=False)\n"
              "def h():\n    import json, importlib\n    return json.dumps([1])"]
    tests = {"t": "# Checks: import\nassert f() == 1", "u": "# Checks: library import\ng()",
             "v": "# Checks: importlib refused to student code\nassert h() == '[1]'"}
    job = _job(worker, tests)
    job["blocked"] = ["cvcourse", "importlib"]
    result = run_trusted_job(job)
    t, u = result["cells"]["t"], result["cells"]["u"]
    assert not t["passed"] and t["ename"] == "ImportError" and "cvcourse" in t["evalue"]
    assert not u["passed"] and "cvcourse" in u["evalue"], u
    assert not result["cells"]["v"]["passed"] and "importlib" in result["cells"]["v"]["evalue"]


@pytest.mark.slow
def test_grads_and_buffers_reach_the_worker_and_sync_back_exactly() -> None:
    """Regression: pickling drops ``.grad``; the sync then set every trusted grad to None."""
    worker = ['''
        import torch

        def untouched(model, x):
            return None

        def read_grads(model, x):
            return [None if p.grad is None else p.grad.clone() for p in model.parameters()], x.grad

        def backward_then_zero(model, x):          # a Grad-CAM that cleans up the wrong way
            model(x).sum().backward()
            model.zero_grad()
            return None

        def zero_in_place(model, x):
            model.zero_grad(set_to_none=False)
            return None

        def accumulate(model, x):
            model(x).sum().backward()
            return None

        def bn_step(model, x):
            model.train()
            model(x)
            return model[1].running_mean.clone()

        class Scale(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.w = torch.nn.Parameter(torch.full((3,), 2.0))

            def forward(self, x):
                return x * self.w

        def apply(module, x):
            return module(x)
    ''']
    setup = ("m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))\n"
             "x = torch.rand(5, 3, requires_grad=True)\n"
             "m[0].weight.grad = torch.full((4, 3), 2.0)\n"           # bias.grad stays None
             "m[1].weight.grad = torch.arange(4.0)\n"
             "x.grad = torch.ones(5, 3)\n"
             "before = [None if p.grad is None else p.grad.clone() for p in m.parameters()]\n")
    same = ("assert all((a is None and b.grad is None) or (a is not None and b.grad is not None and "
            "torch.equal(a, b.grad)) for a, b in zip(before, m.parameters())), "
            "[None if p.grad is None else p.grad.tolist() for p in m.parameters()]\n")
    tests = {
        "seen": "# Checks: grads reach the worker\n" + setup +
                "grads, xg = read_grads(m, x)\n"
                "assert grads[1] is None and grads[3] is None, grads\n"
                "assert torch.equal(grads[0], before[0]) and torch.equal(grads[2], before[2]), grads\n"
                "assert xg is not None and torch.equal(xg, torch.ones(5, 3)), xg\n",
        "kept": "# Checks: an untouched model keeps its grads (values, None stays None, same tensors)\n" + setup +
                "g0 = m[0].weight.grad\nuntouched(m, x)\n" + same +
                "assert m[0].weight.grad is g0 and torch.equal(x.grad, torch.ones(5, 3))\n",
        "zeroed": "# Checks: backward then zero_grad() is seen\n" + setup + "backward_then_zero(m, x)\n"
                  "assert all(p.grad is None for p in m.parameters())\n",
        "zeros": "# Checks: zero_grad(set_to_none=False)\n" + setup + "zero_in_place(m, x)\n"
                 "assert torch.equal(m[0].weight.grad, torch.zeros(4, 3)) and m[0].bias.grad is None\n",
        "accum": "# Checks: backward accumulates into the existing grads\n" + setup + "accumulate(m, x)\n"
                 "m2 = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))\nm2.load_state_dict(m.state_dict())\n"
                 "m2(x.detach()).sum().backward()\n"
                 "assert torch.allclose(m[0].weight.grad, before[0] + m2[0].weight.grad)\n"
                 "assert torch.allclose(m[0].bias.grad, m2[0].bias.grad)\n",
        "buffers": "# Checks: buffers travel and sync back\n" + setup +
                   "m.eval()\nm[1].running_mean.fill_(5.0)\nrm = bn_step(m, x.detach())\n"
                   "assert torch.allclose(rm, 0.9 * 5.0 + 0.1 * m[0](x.detach()).mean(0).detach(), atol=1e-6), rm\n"
                   "assert torch.equal(m[1].running_mean, rm) and int(m[1].num_batches_tracked) == 1\n",
        "remote": "# Checks: a student module (remote) as an argument\ns = Scale()\n"
                  "assert torch.equal(apply(s, torch.ones(3)), torch.full((3,), 2.0))\n",
    }
    cells = run_trusted_job(_job(worker, tests))["cells"]
    for name in tests:
        assert cells[name] == {"passed": True}, (name, cells[name])


@pytest.mark.slow
def test_leaked_hooks_do_not_break_later_calls() -> None:
    """Regression: placeholder hooks synced onto a trusted model made it unpicklable to the worker."""
    worker = ['''
        import torch

        def leak(model, x):
            model[0].register_forward_hook(lambda *a: None)
            model[0].register_forward_pre_hook(lambda *a: None)
            model.register_full_backward_hook(lambda *a: None)
            return model(x)

        def hooks(model):
            return [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
                    for m in model.modules()]

        def double(model, x):
            return 2 * model(x)

        def clean(model):
            for m in model.modules():
                m._forward_hooks.clear()
                m._forward_pre_hooks.clear()
                m._backward_hooks.clear()
    ''']
    setup = "m = nn.Sequential(nn.Linear(3, 2), nn.ReLU())\nx = torch.rand(4, 3)\nleak(m, x)\n"
    tests = {
        "counted": "# Checks: leaked hooks are seen\n" + setup +
                   "assert len(m[0]._forward_hooks) == 1 and len(m[0]._forward_pre_hooks) == 1\n"
                   "assert len(m._backward_hooks) == 1\n",
        "later": "# Checks: later calls on the same model still work\n" + setup +
                 "assert torch.allclose(double(m, x), 2 * m(x))\n"
                 "assert hooks(m) == [(0, 0, 1), (1, 1, 0), (0, 0, 0)], hooks(m)\n"
                 "leak(m, x)\n"
                 "assert hooks(m) == [(0, 0, 2), (2, 2, 0), (0, 0, 0)], hooks(m)\n"
                 "assert len(m[0]._forward_hooks) == 2\n"
                 "clean(m)\n"
                 "assert sum(len(k._forward_hooks) + len(k._backward_hooks) for k in m.modules()) == 0\n",
        "pickle": "# Checks: the trusted model still pickles locally\n" + setup +
                  "import copy\nm2 = copy.deepcopy(m)\nassert torch.allclose(m2(x), m(x))\n",
    }
    result = run_trusted_job(_job(worker, tests))
    cells = result["cells"]
    for name in tests:
        assert cells[name] == {"passed": True}, (name, cells[name])
    assert result["restarts"] == 0, result


# --------------------------------------------------------------------------- helpers
def test_scrub_and_checks_line() -> None:
    src = "# Checks: the sum of two numbers\nassert 1 + 1 == 2\n### BEGIN HIDDEN TESTS\nassert secret() == 42\n" \
          "### END HIDDEN TESTS\nprint('after')"
    assert checks_line(src) == "the sum of two numbers"
    assert hidden_line_range(src) == (3, 5)
    scrubbed = scrub_test_source(src)
    assert "secret" not in scrubbed and "HIDDEN TESTS" not in scrubbed
    assert "assert 1 + 1 == 2" in scrubbed and "print('after')" in scrubbed and "not shown" in scrubbed
