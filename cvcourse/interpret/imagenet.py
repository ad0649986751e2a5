"""The ImageNet model as the interpretation methods want it: images in [0, 1] in, logits out."""

from __future__ import annotations

import torch
from torch import nn

from .featvis import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["ImageNetInput", "imagenet_for_images"]


class ImageNetInput(nn.Module):
    """Wrap an ImageNet classifier so it takes images (N, 3, H, W) in [0, 1] (normalized inside, no resize).

    Occlusion baselines, Grad-CAM inputs and feature visualization then all live in plain
    pixel space. ``self.model`` is the wrapped network (its layers are the Grad-CAM targets).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std)  # (N, 1000) logits


def imagenet_for_images(device: torch.device | str | None = None) -> ImageNetInput:
    """``cv.models.imagenet_classifier()`` wrapped by :class:`ImageNetInput`, in eval mode."""
    from cvcourse.models import imagenet_classifier

    model = imagenet_classifier(device=device)
    params = next(model.parameters())
    return ImageNetInput(model).to(params.device).eval()
