"""Plotting helpers shared by the chapters.

Two places show a chapter: a live kernel (JupyterLab, Colab, a laptop) and the static site that
Jupyter Book builds. The site build sets ``CVCOURSE_BUILD=1`` in the kernel's environment; these
helpers use it to pick what works in each place:

- :func:`show_plotly` writes a plotly figure as HTML that loads ``plotly.min.js`` from the site
  itself (no CDN), and uses plotly's own renderer in a live kernel.
- :func:`live_control` shows an ipywidgets control in a live kernel; on the static site, where no
  kernel runs, it says so plainly and shows the static figure instead.
- :func:`image_grid` draws a batch of image tensors ``(N, C, H, W)`` with matplotlib.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["PLOTLY_JS", "building_site", "image_grid", "live_control", "show_plotly", "to_numpy_image"]

#: Where the site serves plotly.js, relative to a chapter page (``book/<chapter>.html``).
#: The Sphinx extension :mod:`cvcourse.sphinxext` copies the file there at build time.
PLOTLY_JS = "../_static/cvcourse/plotly.min.js"


def building_site() -> bool:
    """True while Jupyter Book executes the chapter for the static site."""
    return os.environ.get("CVCOURSE_BUILD", "") not in ("", "0")


def show_plotly(fig: Any) -> None:
    """Display a plotly figure, interactive both in a live kernel and on the static site."""
    from IPython.display import HTML, display

    if building_site():
        display(HTML(fig.to_html(full_html=False, include_plotlyjs=PLOTLY_JS)))
    else:
        fig.show()


def live_control(widget: Any, figure: Any = None, note: str | None = None) -> None:
    """Display an ipywidgets control live, or a plain note (and ``figure``) on the static site.

    ``widget`` is any ipywidgets widget (for example from ``ipywidgets.interactive``).
    ``figure`` (a matplotlib or plotly figure) is shown on the static site in the widget's place;
    pass the figure made with the control's default values. ``note`` says what the control does.
    """
    from IPython.display import HTML, display

    if not building_site():
        display(widget)
        return
    if figure is not None:
        if hasattr(figure, "to_html"):
            show_plotly(figure)
        else:
            display(figure)
    what = html.escape(note or "An interactive control belongs here.")
    display(
        HTML(
            '<div class="admonition note cvcourse-live-control">'
            '<p class="admonition-title">Interactive control</p>'
            f"<p>{what} It needs a live Python kernel, which this static page does not have: "
            "open the chapter with the launch button (the rocket at the top of the page) in "
            "JupyterHub, Binder or Colab, or run it on your computer. The figure above shows "
            "the control's default setting.</p></div>"
        )
    )


def to_numpy_image(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """Convert one image ``(C, H, W)`` (or ``(H, W)``) in [0, 1] to an ``(H, W[, C])`` array."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().float().numpy()
    image = np.asarray(image)
    if image.ndim == 3:
        if image.shape[0] == 1:
            image = image[0]
        else:
            image = np.moveaxis(image, 0, -1)  # (C, H, W) -> (H, W, C)
    elif image.ndim != 2:
        raise ValueError(f"expected an image (C, H, W) or (H, W), got shape {image.shape}")
    return np.clip(image, 0.0, 1.0)


def image_grid(
    images: torch.Tensor | Sequence[torch.Tensor],
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    scale: float = 1.6,
    cmap: str = "gray",
    suptitle: str | None = None,
) -> plt.Figure:
    """Draw images ``(N, C, H, W)`` in [0, 1] on a grid and return the figure.

    Single-channel images use ``cmap``; three-channel images are shown as RGB.
    """
    images = list(images)
    if not images:
        raise ValueError("image_grid needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"got {len(titles)} titles for {len(images)} images")
    ncols = max(1, min(ncols, len(images)))
    nrows = (len(images) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, scale * nrows + 0.3), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= len(images):
            continue
        ax.imshow(to_numpy_image(images[k]), cmap=cmap, vmin=0.0, vmax=1.0)
        if titles is not None:
            ax.set_title(titles[k], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig
