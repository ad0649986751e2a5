"""A small Sphinx extension for the cvcourse site (listed in ``_config.yml``).

- It copies ``plotly.min.js`` from the installed plotly package into the built site, at the path
  :data:`cvcourse.plots.PLOTLY_JS` points to, so interactive figures work with no CDN and no
  network. The copy happens after the pages are written, so the script is not added to every page.
- It gives every figure a chapter's code makes an alt text. A cell may set its own
  (``mystnb: image: alt: ...`` in the cell's options); otherwise the alt text is the first sentence
  of the paragraph that follows the cell, which by the house style interprets the figure.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

__all__ = ["add_alt_texts", "copy_plotly_js", "dedupe_inline_scripts", "setup"]

_MAX_ALT = 240


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


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    sentence = text if end < 0 else text[: end + 1]
    return sentence if len(sentence) <= _MAX_ALT else sentence[: _MAX_ALT - 1].rstrip() + "…"


def _cell_of(node):  # noqa: ANN001, ANN202 (docutils nodes)
    while node is not None and "cell" not in node.get("classes", []):
        node = node.parent
    return node


def add_alt_texts(doctree, title: str = "") -> int:  # noqa: ANN001 (docutils document)
    """Give every image without alt text the next paragraph's first sentence; return how many."""
    from docutils import nodes

    count = 0
    for image in list(doctree.findall(nodes.image)):
        if image.get("alt", "").strip():
            continue
        cell = _cell_of(image)
        alt = ""
        if cell is not None:
            following = cell.findall(nodes.paragraph, include_self=False, descend=False, siblings=True)
            paragraph = next(iter(following), None)
            if paragraph is not None:
                alt = _first_sentence(paragraph.astext())
        image["alt"] = alt or f"A figure of the page {title}".strip()
        count += 1
    return count


def _on_doctree_resolved(app, doctree, docname) -> None:  # noqa: ANN001 (Sphinx callback)
    title = app.env.titles[docname].astext() if docname in app.env.titles else docname
    add_alt_texts(doctree, title)


def _on_config_inited(app, config) -> None:  # noqa: ANN001 (Sphinx callback)
    # pydata-sphinx-theme logs a console error when the default colour mode is left empty.
    config.html_context = dict(config.html_context or {})
    config.html_context.setdefault("default_mode", "light")


_INLINE_SCRIPT = re.compile(r"<script>[^<]*</script>\n?")


def dedupe_inline_scripts(html: str) -> str:
    """Drop repeated identical inline ``<script>`` blocks, keeping the first of each.

    Jupyter Book registers sphinx-thebe's and sphinx-togglebutton's inline configuration twice;
    a page that declares the same ``const`` twice logs a console error in the browser.
    """
    seen: set[str] = set()

    def keep_first(match: re.Match) -> str:
        text = match.group(0).strip()
        if text in seen:
            return ""
        seen.add(text)
        return match.group(0)

    return _INLINE_SCRIPT.sub(keep_first, html)


def _on_build_finished(app, exception) -> None:  # noqa: ANN001 (Sphinx callback)
    if exception is None and app.builder.format == "html":
        copy_plotly_js(Path(app.outdir))
        for page in Path(app.outdir).rglob("*.html"):
            text = page.read_text(encoding="utf-8")
            fixed = dedupe_inline_scripts(text)
            if fixed != text:
                page.write_text(fixed, encoding="utf-8")


def setup(app):  # noqa: ANN001, ANN201 (Sphinx entry point)
    app.connect("config-inited", _on_config_inited)
    app.connect("doctree-resolved", _on_doctree_resolved)
    app.connect("build-finished", _on_build_finished)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
