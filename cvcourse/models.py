"""Models: a small CNN trained here, and a real ImageNet classifier loaded offline.

``SmallCNN`` is the workhorse of the interpretation and attack chapters (it trains in
seconds on two CPU cores). ``imagenet_classifier`` is torchvision's MobileNetV2 with its
``IMAGENET1K_V1`` weights, which :mod:`cvcourse.assets` placed in torch hub's cache.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SmallCNN",
    "conv_block",
    "imagenet_classifier",
    "imagenet_preprocess",
    "top_classes",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution (padding 1) -> batch norm -> ReLU; keeps H and W."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=False),
    )


class SmallCNN(nn.Module):
    """A three-block CNN with global average pooling.

    ``features``: conv_block(in, w) -> MaxPool(2) -> conv_block(w, 2w) -> MaxPool(2) ->
    conv_block(2w, 4w). Its last element (``features[-1]``) outputs (N, 4w, H/4, W/4), a good
    target layer for CAM and Grad-CAM. ``pool``: global average pooling to (N, 4w, 1, 1);
    ``classifier``: ``nn.Linear(4w, num_classes)``. Input (N, in_channels, H, W) with H, W >= 4.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_block(in_channels, width),
            nn.MaxPool2d(2),
            conv_block(width, 2 * width),
            nn.MaxPool2d(2),
            conv_block(2 * width, 4 * width),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * width, num_classes)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features (N, 4w): the input of the classifier."""
        return self.pool(self.features(images)).flatten(1)  # (N, 4w)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` (N, C, H, W) -> ``logits`` (N, num_classes)."""
        return self.classifier(self.embed(images))


def imagenet_classifier(device: torch.device | str | None = None) -> nn.Module:
    """torchvision's MobileNetV2 with ImageNet weights (``IMAGENET1K_V1``), in eval mode.

    Loaded offline from torch hub's cache; raises ``FileNotFoundError`` naming the fix
    (``make setup``) if the weights were never placed there. Expects inputs from
    :func:`imagenet_preprocess`; outputs logits (N, 1000) in the order of
    :func:`cvcourse.data.imagenet_categories`.
    """
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    from cvcourse.assets import ensure_weights
    from cvcourse.train import default_device

    ensure_weights(allow_download=False)
    model = mobilenet_v2(weights=MobileNet_V2_Weights.IMAGENET1K_V1, progress=False)
    return model.eval().to(device if device is not None else default_device())


def imagenet_preprocess(images: torch.Tensor, size: int = 224) -> torch.Tensor:
    """Images in [0, 1] -> the normalized input of ImageNet models.

    ``images`` (N, 3, H, W) or (3, H, W); if H, W differ from ``size``, resize the short side to
    ``size`` (bilinear, antialiased) and center-crop. Returns (N, 3, size, size), each channel
    standardized with ImageNet's mean and std. Differentiable (usable inside attacks).
    """
    from cvcourse.data import resize_center_crop

    if images.dim() == 3:
        images = images.unsqueeze(0)  # (1, 3, H, W)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (N, 3, H, W), got shape {tuple(images.shape)}")
    if tuple(images.shape[-2:]) != (size, size):
        images = resize_center_crop(images, size)  # (N, 3, size, size)
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def top_classes(
    logits: torch.Tensor,
    k: int = 5,
    categories: list[str] | None = None,
) -> list[list[tuple[str, float]]]:
    """The ``k`` most probable classes of each row of ``logits`` (N, K) or (K,).

    Returns, per image, a list of ``(name, softmax probability)`` from most to least likely.
    ``categories`` defaults to the 1000 ImageNet names.
    """
    if categories is None:
        from cvcourse.data import imagenet_categories

        categories = imagenet_categories()
    if logits.dim() == 1:
        logits = logits.unsqueeze(0)  # (1, K)
    if logits.shape[1] != len(categories):
        raise ValueError(f"logits have {logits.shape[1]} classes but there are {len(categories)} names")
    probs = torch.softmax(logits.detach().float().cpu(), dim=1)  # (N, K)
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    return [
        [(categories[i], float(p)) for p, i in zip(row_p.tolist(), row_i.tolist())]
        for row_p, row_i in zip(values, indices)
    ]
