"""Class activation maps (CAM) and Grad-CAM.

Both methods read the activations ``A`` (N, K, h, w) of one convolutional layer and weigh its
K channels: CAM with the weights of a linear classifier that sits on global average pooling
(Zhou et al., 2016), Grad-CAM with the spatial mean of the class score's gradient
(Selvaraju et al., 2017, arXiv:1610.02391). The hooks that read the layer live in
:class:`capture_activations`, a context manager that always removes them again.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Captured",
    "capture_activations",
    "resolve_classes",
    "normalize_maps",
    "upsample_maps",
    "grad_cam",
    "class_activation_map",
]


class Captured:
    """What :func:`capture_activations` records: ``activations`` is the layer's last output."""

    def __init__(self) -> None:
        self.activations: torch.Tensor | None = None


@contextmanager
def capture_activations(
    layer: nn.Module, *, track_grad: bool = False, graph_starts_here: bool = False
) -> Iterator[Captured]:
    """Record ``layer``'s output during the forward passes run inside the ``with`` block.

    With ``track_grad=True`` the recorded output is part of the autograd graph even when
    neither the input nor the parameters require gradients (frozen models), so that
    ``torch.autograd.grad(score, captured.activations)`` works. With ``graph_starts_here=True``
    as well, run the block under ``torch.no_grad()``: the hook switches gradient recording on
    when ``layer`` runs, so the graph holds only what comes after the layer (the layers before
    it record nothing: less memory and time); the enclosing ``no_grad`` restores the mode on
    exit. The hook is removed when the block ends, also when it ends with an exception;
    exceptions are never swallowed.
    """
    if not isinstance(layer, nn.Module):
        raise TypeError(f"layer must be an nn.Module (a submodule of the model), got {type(layer).__name__}")
    captured = Captured()

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"{type(module).__name__} returned {type(output).__name__}; pick a layer that returns one tensor")
        if track_grad and graph_starts_here:
            torch.set_grad_enabled(True)  # from here on, record (the enclosing no_grad restores the mode)
        if track_grad and not output.requires_grad:
            output = output.detach().requires_grad_(True)  # same values, now a leaf we can differentiate to
            captured.activations = output
            return output
        captured.activations = output
        return None

    handle = layer.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def resolve_classes(logits: torch.Tensor, class_idx: int | torch.Tensor | None) -> torch.Tensor:
    """Turn ``class_idx`` (None: top class; int: same for all; (N,) tensor) into a (N,) long tensor."""
    n = logits.shape[0]
    if class_idx is None:
        return logits.argmax(dim=1)
    if isinstance(class_idx, int):
        return torch.full((n,), class_idx, dtype=torch.long, device=logits.device)
    classes = torch.as_tensor(class_idx, device=logits.device).long().reshape(-1)
    if classes.shape[0] != n:
        raise ValueError(f"class_idx has {classes.shape[0]} entries for {n} images; pass one per image, an int or None")
    return classes


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Divide each map (N, H, W) by its own maximum; an all-zero map stays zero."""
    peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12)  # (N,)
    return maps / peak[:, None, None]


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize maps (N, h, w) to (N, H, W) (``align_corners=False``)."""
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def grad_cam(
    model: nn.Module,
    target_layer: nn.Module,
    images: torch.Tensor,
    class_idx: int | torch.Tensor | None = None,
    *,
    upsample: bool = True,
    normalize: bool = True,
) -> torch.Tensor:
    """Grad-CAM maps (N, H, W) in [0, 1] for ``images`` (N, C, H, W).

    ``alpha_k`` is the spatial mean of d(logit of the class)/d(A_k) for the activations A
    (N, K, h, w) of ``target_layer``; the map is ReLU(sum_k alpha_k A_k), bilinearly upsampled to
    (H, W) and divided by its maximum. ``class_idx``: None (each image's top class), an int,
    or a (N,) tensor. Gradients are taken with ``torch.autograd.grad`` with respect to the
    activations only, so parameters' ``.grad`` and the model's mode are left untouched; the
    layers before ``target_layer`` run without recording a graph (nothing flows back to them).
    ``upsample=False`` returns the (N, h, w) layer-resolution map, ``normalize=False`` the raw one.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    with torch.no_grad(), capture_activations(target_layer, track_grad=True, graph_starts_here=True) as cap:
        logits = model(images)
    if cap.activations is not None and not logits.requires_grad:
        # the model set the grad mode itself after the layer ran: run again, recording everything
        with torch.enable_grad(), capture_activations(target_layer, track_grad=True) as cap:
            logits = model(images)
    if cap.activations is None:
        raise ValueError("target_layer was not called in model(images); pass a submodule the forward pass uses")
    activations = cap.activations  # (N, K, h, w)
    if activations.ndim != 4:
        raise ValueError(f"target_layer output must be (N, K, h, w), got {tuple(activations.shape)}")
    classes = resolve_classes(logits.detach(), class_idx)
    with torch.enable_grad():
        score = logits.gather(1, classes[:, None]).sum()  # images are independent: one backward for all
    (grads,) = torch.autograd.grad(score, activations)  # (N, K, h, w)
    alpha = grads.mean(dim=(2, 3), keepdim=True)  # (N, K, 1, 1)
    maps = F.relu((alpha * activations).sum(dim=1)).detach()  # (N, h, w)
    if upsample:
        maps = upsample_maps(maps, images.shape[-2:])
    return normalize_maps(maps) if normalize else maps


def class_activation_map(
    model: nn.Module,
    target_layer: nn.Module,
    weight: torch.Tensor,
    images: torch.Tensor,
    class_idx: int | torch.Tensor | None = None,
    *,
    upsample: bool = True,
    normalize: bool = True,
) -> torch.Tensor:
    """CAM (N, H, W) for a model that ends in global average pooling then a linear layer.

    ``weight`` (num_classes, K) is that linear layer's weight and ``target_layer`` the layer
    whose output (N, K, h, w) is pooled. The map for class c is sum_k weight[c, k] A_k
    (before ReLU it is exactly the class logit spread over space: its mean plus the bias
    gives the logit). Like the paper, negative evidence is clipped (ReLU) before scaling.
    """
    with torch.no_grad(), capture_activations(target_layer) as cap:
        logits = model(images)
    activations = cap.activations  # (N, K, h, w)
    if activations is None or activations.ndim != 4:
        raise ValueError("target_layer must be called in model(images) and return (N, K, h, w)")
    if weight.ndim != 2 or weight.shape[1] != activations.shape[1]:
        raise ValueError(f"weight must be (num_classes, {activations.shape[1]}), got {tuple(weight.shape)}")
    classes = resolve_classes(logits, class_idx)
    w = weight.detach().to(activations.device)[classes]  # (N, K)
    maps = F.relu(torch.einsum("nk,nkhw->nhw", w, activations))  # (N, h, w)
    if upsample:
        maps = upsample_maps(maps, images.shape[-2:])
    return normalize_maps(maps) if normalize else maps
