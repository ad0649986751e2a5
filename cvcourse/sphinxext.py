"""A small Sphinx extension for the cvcourse site (listed in ``_config.yml``).

It copies ``plotly.min.js`` from the installed plotly package into the built site, at the path
:data:`cvcourse.plots.PLOTLY_JS` points to, so interactive figures work with no CDN and no network.
The copy happens after the pages are written, so the script is not added to every page.
"""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["copy_plotly_js", "setup"]


def copy_plotly_js(outdir: Path) -> Path:
    """Copy plotly.js into ``outdir/_static/cvcourse/`` and return the new file's path."""
    import plotly

    source = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not source.is_file():
        raise FileNotFoundError(f"{source} is missing: reinstall plotly (pip install --force-reinstall plotly)")
    target = Path(outdir) / "_static" / "cvcourse" / "plotly.min.js"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def _on_build_finished(app, exception) -> None:  # noqa: ANN001 (Sphinx callback)
    if exception is None and app.builder.format == "html":
        copy_plotly_js(Path(app.outdir))


def setup(app):  # noqa: ANN001, ANN201 (Sphinx entry point)
    app.connect("build-finished", _on_build_finished)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
