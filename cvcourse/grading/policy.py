"""Delegation policy and static scan of student code for the trusted re-run.

The worker refuses to import the modules listed here (a reference implementation or an
oracle would let a student delegate the work), and :func:`scan_source` rejects constructs that
could get around that block (dynamic imports, ``eval``/``exec``, touching the import system).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

__all__ = [
    "ALWAYS_BLOCKED",
    "BLOCKED_BY_ASSIGNMENT",
    "FORBIDDEN_CALLS",
    "FORBIDDEN_SYS_ATTRS",
    "Violation",
    "blocked_modules",
    "hard_blocked_modules",
    "is_blocked",
    "scan_source",
]

#: Modules no submission may import (reference implementations, import machinery, escape hatches).
ALWAYS_BLOCKED: tuple[str, ...] = (
    "cvcourse",
    "importlib",
    "ctypes",
    "cffi",
    "captum",
    "pytorch_grad_cam",
    "torchattacks",
    "timm",
    "nbgrader",
    "nbformat",
    "nbclient",
    "jupyter_client",
    "subprocess",
    "multiprocessing",
    "pty",
    "sqlite3",
    "sqlalchemy",
    "pickle",
    "marshal",
    "runpy",
    "code",
    "codeop",
)

#: Extra modules blocked per assignment (oracles or reference code for that assignment).
BLOCKED_BY_ASSIGNMENT: dict[str, tuple[str, ...]] = {
    "conv3d_shapes": (),
    "gradcam": ("torchvision.models",),
    "fgsm": ("torchvision.models", "foolbox", "art", "advertorch"),
    "pca": ("sklearn", "scipy.linalg.interpolative", "umap"),  # umap re-exports sklearn's PCA
    "patch_embedding": ("torchvision", "einops"),  # `import torchvision` reaches torchvision.models.vision_transformer
    "occlusion": ("torchvision.models",),
    "inflate": ("torchvision.models", "pytorchvideo"),
}

#: Builtins that compile or import code dynamically.
FORBIDDEN_CALLS: tuple[str, ...] = ("__import__", "eval", "exec", "compile", "breakpoint")

#: ``sys`` attributes that expose the import system.
FORBIDDEN_SYS_ATTRS: tuple[str, ...] = ("modules", "meta_path", "path", "path_hooks", "path_importer_cache")


def blocked_modules(assignment: str | None = None) -> tuple[str, ...]:
    """Module names (and their submodules) the worker refuses for ``assignment``."""
    return ALWAYS_BLOCKED + BLOCKED_BY_ASSIGNMENT.get(assignment or "", ())


#: Blocked for every importer in the worker, libraries included (nothing legitimate imports them there,
#: and a library import, e.g. unpickling crafted bytes, must not become a back door to them).
HARD_BLOCKED: tuple[str, ...] = ("cvcourse", "captum", "pytorch_grad_cam", "torchattacks", "timm", "nbgrader")


def hard_blocked_modules(assignment: str | None = None) -> tuple[str, ...]:
    """Modules the worker refuses even to library code (the rest is refused to student code only)."""
    extra = tuple(m for m in BLOCKED_BY_ASSIGNMENT.get(assignment or "", ()) if not m.startswith("torchvision"))
    return HARD_BLOCKED + extra


def is_blocked(module: str, blocked: tuple[str, ...]) -> bool:
    """True if ``module`` is one of ``blocked`` or a submodule of one (``"a.b"`` blocks ``"a.b.c"``)."""
    return any(module == b or module.startswith(b + ".") for b in blocked)


@dataclass(frozen=True)
class Violation:
    """One forbidden construct: ``what`` in words, at ``line`` of the cell ``cell``."""

    cell: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.what} (cell {self.cell!r}, line {self.line})"


def scan_source(source: str, cell: str = "?", assignment: str | None = None) -> list[Violation]:
    """Statically scan student ``source`` and return the forbidden constructs found.

    Rejected: the builtins in :data:`FORBIDDEN_CALLS` (called or merely named), ``importlib``,
    ``sys.modules``/``sys.meta_path``/``sys.path``, ``__builtins__``, and imports of the
    modules in :func:`blocked_modules`. A cell that does not parse is reported too.
    """
    blocked = blocked_modules(assignment)
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        return [Violation(cell, err.lineno or 0, f"syntax error: {err.msg}")]
    found: list[Violation] = []
    sys_aliases = {"sys"}
    builtins_aliases = {"builtins"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "sys":
                    sys_aliases.add(alias.asname or "sys")
                if alias.name == "builtins":
                    builtins_aliases.add(alias.asname or "builtins")
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if is_blocked(alias.name, blocked):
                    found.append(Violation(cell, line, f"import of forbidden module `{alias.name}`"))
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 0 and is_blocked(mod, blocked):
                found.append(Violation(cell, line, f"import from forbidden module `{mod}`"))
            elif node.level:
                found.append(Violation(cell, line, "relative import"))
            for alias in node.names:
                full = f"{mod}.{alias.name}" if mod else alias.name
                if node.level == 0 and is_blocked(full, blocked) and not is_blocked(mod, blocked):
                    found.append(Violation(cell, line, f"import of forbidden module `{full}`"))
                if mod == "sys" and alias.name in FORBIDDEN_SYS_ATTRS:
                    found.append(Violation(cell, line, f"access to `sys.{alias.name}`"))
                if mod == "builtins" and alias.name in FORBIDDEN_CALLS:
                    found.append(Violation(cell, line, f"use of `{alias.name}`"))
        elif isinstance(node, ast.Name):
            if node.id in FORBIDDEN_CALLS:
                found.append(Violation(cell, line, f"use of `{node.id}`"))
            elif node.id == "importlib":
                found.append(Violation(cell, line, "use of `importlib`"))
            elif node.id == "__builtins__":
                found.append(Violation(cell, line, "access to `__builtins__`"))
        elif isinstance(node, ast.Attribute):
            if (
                node.attr in FORBIDDEN_CALLS
                and isinstance(node.value, ast.Name)
                and node.value.id in builtins_aliases
            ):
                found.append(Violation(cell, line, f"use of `{node.attr}`"))
            elif (
                node.attr in FORBIDDEN_SYS_ATTRS
                and isinstance(node.value, ast.Name)
                and node.value.id in sys_aliases
            ):
                found.append(Violation(cell, line, f"access to `sys.{node.attr}`"))
            elif node.attr in ("__builtins__", "__subclasses__", "__globals__", "__code__"):
                found.append(Violation(cell, line, f"access to `{node.attr}`"))
    found.sort(key=lambda v: v.line)
    return found
