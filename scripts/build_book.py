"""Build the static site strictly: `python scripts/build_book.py` (called by `make site`).

- Executes every chapter (cached: only changed chapters re-execute) with ``CVCOURSE_BUILD=1`` in
  the kernels' environment (see ``cvcourse.plots``).
- Jupyter Book's cache keys on code cells only, so a change in the ``cvcourse`` package would go
  unnoticed: the cache is wiped whenever the package's own hash changes.
- Sphinx runs with ``-W -n --keep-going``: a cell error, a warning or a broken internal reference
  fails the build with a non-zero exit, and the failing chapter's report is printed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "cvcourse"


def package_hash(package: Path = PACKAGE) -> str:
    """SHA-256 over the helper package's source files (paths and contents)."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def invalidate_cache_if_package_changed(build: Path) -> None:
    """Forget executed outputs and Sphinx's environment when the cvcourse package changed.

    Both must go: with only the execution cache wiped, Sphinx would still consider every
    chapter up to date and neither re-execute nor re-render it.
    """
    stamp = build / "cvcourse-package.sha256"
    current = package_hash()
    if stamp.exists() and stamp.read_text().strip() == current:
        return
    stale = [build / name for name in (".jupyter_cache", ".doctrees", "jupyter_execute", "html")]
    if any(path.exists() for path in stale):
        print("cvcourse/ changed since the last build: every chapter runs again", flush=True)
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    build.mkdir(exist_ok=True)
    stamp.write_text(current + "\n")


def main(argv: list[str]) -> int:
    root = REPO
    if argv[:1] == ["--root"]:  # build another book with the same rules (used by the tests)
        root, argv = Path(argv[1]).resolve(), argv[2:]
    build = root / "_build"
    invalidate_cache_if_package_changed(build)
    env = dict(os.environ, CVCOURSE_BUILD="1", PYDEVD_DISABLE_FILE_VALIDATION="1")
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb), "build", str(root), "-W", "-n", "--keep-going", *argv]
    print("$", " ".join(cmd), flush=True)
    code = subprocess.call(cmd, cwd=root, env=env)
    if code != 0:
        reports = sorted((build / "html" / "reports").glob("**/*.log"))
        for report in reports:
            print(f"\n===== execution report: {report.relative_to(root)} =====")
            print(report.read_text()[-4000:])
        # A failed build must not leave a half-built site (maybe with a traceback) where the
        # published one goes: keep it aside for inspection only.
        failed = build / "html-failed"
        shutil.rmtree(failed, ignore_errors=True)
        if (build / "html").exists():
            (build / "html").rename(failed)
        print(f"\nBOOK BUILD FAILED (exit {code}); see the messages above.", file=sys.stderr)
        return code
    shutil.rmtree(build / "html-failed", ignore_errors=True)
    print(f"\nbook built: {build / 'html' / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
