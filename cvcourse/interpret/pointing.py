"""Scoring saliency maps against known object positions.

The pointing game (Zhang et al., 2016, arXiv:1608.00507) counts a hit when the map's maximum
falls inside the object's box. :func:`mass_in_box` measures the share of a map's total mass
inside a box, e.g. the spurious marker of :func:`cvcourse.synthetic.shapes_with_boxes`.
Boxes are ``[x0, y0, x1, y1]`` in pixels, x1 and y1 exclusive.
"""

from __future__ import annotations

import torch

__all__ = ["peak_locations", "pointing_hits", "pointing_accuracy", "box_masks", "mass_in_box"]


def peak_locations(maps: torch.Tensor) -> torch.Tensor:
    """(N, 2) long tensor of (x, y) of each map's maximum (first one in row-major order on ties)."""
    if maps.ndim != 3:
        raise ValueError(f"maps must be (N, H, W), got shape {tuple(maps.shape)}")
    width = maps.shape[2]
    flat = maps.flatten(1).argmax(dim=1)  # (N,)
    return torch.stack([flat % width, flat // width], dim=1)


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Boolean masks (N, H, W), True inside each box ``[x0, y0, x1, y1]`` (x1, y1 exclusive)."""
    boxes = torch.as_tensor(boxes).reshape(-1, 4)
    ys = torch.arange(height)[None, :, None]  # (1, H, 1)
    xs = torch.arange(width)[None, None, :]  # (1, 1, W)
    x0, y0, x1, y1 = (boxes[:, i, None, None].cpu() for i in range(4))  # each (N, 1, 1)
    return (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)


def pointing_hits(maps: torch.Tensor, boxes: torch.Tensor, tolerance: int = 0) -> torch.Tensor:
    """(N,) bool: does each map's peak fall inside its box (grown by ``tolerance`` pixels)?"""
    boxes = torch.as_tensor(boxes).reshape(-1, 4).to(torch.long).cpu()
    if boxes.shape[0] != maps.shape[0]:
        raise ValueError(f"{maps.shape[0]} maps but {boxes.shape[0]} boxes; pass one box per map")
    peaks = peak_locations(maps.detach().cpu())
    x, y = peaks[:, 0], peaks[:, 1]
    t = tolerance
    return (x >= boxes[:, 0] - t) & (x < boxes[:, 2] + t) & (y >= boxes[:, 1] - t) & (y < boxes[:, 3] + t)


def pointing_accuracy(maps: torch.Tensor, boxes: torch.Tensor, tolerance: int = 0) -> float:
    """Fraction of maps (N, H, W) whose peak lies inside its box."""
    return float(pointing_hits(maps, boxes, tolerance).float().mean())


def mass_in_box(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(N,) share of each non-negative map's total mass inside its box (one box for all, or (N, 4)).

    An all-zero map counts as 0.
    """
    maps = maps.detach().cpu().clamp_min(0)
    n, height, width = maps.shape
    boxes = torch.as_tensor(boxes).reshape(-1, 4).expand(n, 4)
    inside = (maps * box_masks(boxes, height, width)).flatten(1).sum(1)  # (N,)
    total = maps.flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-12), torch.zeros_like(total))
