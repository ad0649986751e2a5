"""Occlusion (perturbation) maps: cover part of the image and watch the class probability.

Zeiler and Fergus (2014, arXiv:1311.2901) slid a grey square over the image and recorded how
the classifier's probability for the true class changed. A big drop means the covered patch
mattered for the decision.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["window_positions", "occlusion_map", "occlusion_attribution"]


def window_positions(size: int, window: int, stride: int) -> list[int]:
    """Start offsets 0, stride, ... of every window that fits in ``size`` pixels."""
    if not 1 <= window <= size:
        raise ValueError(f"window={window} must be between 1 and the image size {size}")
    if stride < 1:
        raise ValueError(f"stride={stride} must be >= 1")
    return list(range(0, size - window + 1, stride))


def _probabilities(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, batch_size: int) -> torch.Tensor:
    """p(target | image) for images (M, C, H, W) and targets (M,), in batches, without grad."""
    out = []
    with torch.no_grad():
        for i in range(0, images.shape[0], batch_size):
            probs = model(images[i : i + batch_size]).softmax(dim=1)  # (b, K)
            out.append(probs.gather(1, targets[i : i + batch_size, None])[:, 0])
    return torch.cat(out)


def occlusion_map(
    model: nn.Module,
    image: torch.Tensor,
    target: int,
    window: int,
    stride: int,
    baseline: float = 0.0,
    *,
    batch_size: int = 128,
) -> torch.Tensor:
    """Probability drop (H', W') when a window x window square of ``image`` (C, H, W) is covered.

    Entry [i, j] is p(target | image) - p(target | image with rows i*stride .. i*stride+window-1
    and columns j*stride .. j*stride+window-1 set to ``baseline`` in every channel);
    H' = (H - window) // stride + 1, likewise W'. Positive: the patch supported ``target``.
    """
    if image.ndim != 3:
        raise ValueError(f"image must be one (C, H, W) image, got shape {tuple(image.shape)}; index a batch with images[i]")
    _, height, width = image.shape
    rows, cols = window_positions(height, window, stride), window_positions(width, window, stride)
    occluded = image.unsqueeze(0).repeat(len(rows) * len(cols), 1, 1, 1)  # (H'*W', C, H, W)
    for k, (y, x) in enumerate((y, x) for y in rows for x in cols):
        occluded[k, :, y : y + window, x : x + window] = baseline
    batch = torch.cat([image.unsqueeze(0), occluded])  # (1 + H'*W', C, H, W): the clean image first
    targets = torch.full((batch.shape[0],), int(target), dtype=torch.long, device=image.device)
    probs = _probabilities(model, batch, targets, batch_size)
    return (probs[0] - probs[1:]).reshape(len(rows), len(cols))  # (H', W')


def occlusion_attribution(
    model: nn.Module,
    images: torch.Tensor,
    targets: int | torch.Tensor | None,
    window: int,
    stride: int,
    baseline: float = 0.0,
    *,
    batch_size: int = 128,
) -> torch.Tensor:
    """Per-pixel occlusion maps (N, H, W) for ``images`` (N, C, H, W).

    Each pixel gets the mean probability drop over all windows that cover it (0 where no
    window does), the convention of captum's ``Occlusion`` on a softmax output.
    ``targets``: None (each image's top class), an int, or a (N,) tensor.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    n, _, height, width = images.shape
    if targets is None:
        with torch.no_grad():
            targets = torch.cat([model(images[i : i + batch_size]).argmax(1) for i in range(0, n, batch_size)])
    targets = torch.as_tensor(targets, device=images.device).long().expand(n) if not isinstance(targets, torch.Tensor) or targets.ndim == 0 else targets.long()
    rows, cols = window_positions(height, window, stride), window_positions(width, window, stride)
    cover = torch.zeros(height, width, device=images.device)  # how many windows cover each pixel
    for y in rows:
        for x in cols:
            cover[y : y + window, x : x + window] += 1
    maps = torch.zeros(n, height, width, device=images.device)
    for i in range(n):
        drops = occlusion_map(model, images[i], int(targets[i]), window, stride, baseline, batch_size=batch_size)
        for a, y in enumerate(rows):
            for b, x in enumerate(cols):
                maps[i, y : y + window, x : x + window] += drops[a, b]
    return maps / cover.clamp_min(1)
