"""Figures of the interpretation chapter: heatmap overlays and interactive 2D embeddings."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["overlay_figure", "embedding_figure", "image_to_data_uri"]


def _hwc(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W, 3) array for imshow."""
    arr = image.detach().cpu().float().clamp(0, 1).numpy()
    arr = np.repeat(arr, 3, axis=0) if arr.shape[0] == 1 else arr
    return np.moveaxis(arr, 0, -1)


def overlay_figure(
    images: torch.Tensor,
    maps: Sequence[torch.Tensor] | torch.Tensor,
    titles: Sequence[str] | None = None,
    row_names: Sequence[str] | None = None,
    boxes: torch.Tensor | None = None,
    alpha: float = 0.5,
    scale: float = 2.0,
) -> plt.Figure:
    """Images (N, C, H, W) in a first row, each map set (N, H, W) overlaid on them in the rows below.

    ``maps`` is one (N, H, W) tensor or a list of them (one row each); maps are shown with the
    'jet' colour map, scaled per image to their own maximum; ``boxes`` (N, 4) draws boxes.
    """
    map_rows = [maps] if isinstance(maps, torch.Tensor) else list(maps)
    n = images.shape[0]
    fig, axes = plt.subplots(1 + len(map_rows), n, figsize=(scale * n, scale * (1 + len(map_rows)) + 0.2), squeeze=False)
    for j in range(n):
        base = _hwc(images[j])
        axes[0, j].imshow(base)
        if titles is not None:
            axes[0, j].set_title(titles[j], fontsize=8)
        for r, m in enumerate(map_rows, start=1):
            heat = m[j].detach().cpu().float().numpy()
            peak = max(float(np.abs(heat).max()), 1e-12)
            axes[r, j].imshow(base)
            axes[r, j].imshow(heat / peak, cmap="jet", alpha=alpha, vmin=0, vmax=1)
        for r in range(1 + len(map_rows)):
            axes[r, j].axis("off")
            if boxes is not None:
                x0, y0, x1, y1 = (float(v) for v in boxes[j])
                axes[r, j].add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="white", lw=1))
    if row_names is not None:
        for r, name in enumerate(row_names):
            axes[r, 0].text(-0.08, 0.5, name, transform=axes[r, 0].transAxes, rotation=90, va="center", ha="right", fontsize=9)
    fig.tight_layout()
    return fig


def image_to_data_uri(image: torch.Tensor, scale: int = 1) -> str:
    """A PNG data URI of one image (C, H, W) in [0, 1] (nearest-neighbour enlarged ``scale`` times)."""
    from PIL import Image

    arr = (_hwc(image) * 255).round().astype(np.uint8)
    if scale > 1:
        arr = arr.repeat(scale, axis=0).repeat(scale, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def embedding_figure(
    coords: np.ndarray,
    labels: torch.Tensor | np.ndarray,
    images: torch.Tensor | None = None,
    title: str = "",
    class_names: Sequence[str] | None = None,
    num_thumbnails: int = 60,
    thumbnail_size: float = 0.06,
    seed: int = 0,
) -> Any:
    """An interactive plotly scatter of 2D ``coords`` (N, 2), one colour (and legend entry) per class.

    Hovering shows the class and the sample's index. With ``images`` (N, C, H, W), a random
    sample of ``num_thumbnails`` points also shows its image at its position (zoom in to see
    them), so clusters can be checked by eye without a live kernel.
    """
    import plotly.graph_objects as go

    coords = np.asarray(coords, dtype=float)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    names = [str(c) if class_names is None else class_names[int(c)] for c in classes]
    fig = go.Figure()
    for c, name in zip(classes, names):
        idx = np.flatnonzero(labels == c)
        fig.add_trace(
            go.Scatter(  # SVG: hover works without WebGL
                x=coords[idx, 0], y=coords[idx, 1], mode="markers", name=name,
                marker={"size": 6, "opacity": 0.8},
                customdata=idx,
                hovertemplate=f"class {name}<br>sample %{{customdata}}<extra></extra>",
            )
        )
    if images is not None and num_thumbnails > 0:
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(coords), size=min(num_thumbnails, len(coords)), replace=False)
        span = coords.max(0) - coords.min(0)
        w, h = thumbnail_size * span
        for i in pick:
            fig.add_layout_image(
                source=image_to_data_uri(images[i]), xref="x", yref="y",
                x=coords[i, 0] - w / 2, y=coords[i, 1] + h / 2, sizex=w, sizey=h,
                sizing="stretch", layer="above", opacity=0.9,
            )
    fig.update_layout(
        title=title, width=640, height=520, legend_title_text="class",
        margin={"l": 40, "r": 20, "t": 50, "b": 40}, template="plotly_white",
    )
    return fig
