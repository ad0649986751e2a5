"""The interpretation chapter's experiments, as functions (so that tests assert what the book prints).

Each function is deterministic given its ``seed`` and small enough to run in seconds on two CPU
cores. Trained models are cached per process (:func:`functools.lru_cache`), so the chapter and
the tests that share a process train each model once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from .cam import grad_cam
from .features import one_thread
from .occlusion import occlusion_attribution
from .pointing import mass_in_box, pointing_accuracy

__all__ = [
    "MARKER_REGION",
    "MARKER_TOLERANCE",
    "centre_pointing",
    "ShapesSetup",
    "train_shapes_model",
    "shapes_test_set",
    "gradcam_pointing",
    "occlusion_pointing",
    "marker_mass",
    "marker_pointing",
    "DigitsFeatures",
    "digits_features",
]


#: Tolerance (px) for "the peak lies on the marker": the marker straddles two 4-px cells of the
#: 8 x 8 Grad-CAM grid, so a peak can sit a cell's half-width away from it.
MARKER_TOLERANCE = 2
#: The marker's corner as Grad-CAM at ``SmallCNN.features[-1]`` can resolve it: that layer's map is
#: an 8 x 8 grid of 4-px cells, and the 5 x 5 marker straddles the first two cells; we take the
#: 3 x 3 corner cells, ``[x0, y0, x1, y1]`` = 12 x 12 px (14 % of the image).
MARKER_REGION = (0, 0, 12, 12)


@dataclass
class ShapesSetup:
    """A SmallCNN trained on ``shapes_with_boxes`` and its training accuracy per epoch."""

    model: nn.Module
    spurious: float
    train_accuracy: list[float]


@lru_cache(maxsize=8)
def train_shapes_model(
    spurious: float = 0.0,
    n: int = 1200,
    epochs: int = 4,
    seed: int = 0,
    width: int = 16,
    weight_decay: float = 0.0,
) -> ShapesSetup:
    """Train ``SmallCNN(3, 3, width)`` on ``shapes_with_boxes(n, spurious=spurious, seed=seed)``.

    ``spurious=1.0`` makes the corner marker a perfect shortcut (a biased model);
    ``spurious=0.0`` makes it noise, so only the object's form tells the class.
    The model is returned on the CPU in eval mode (cached: do not train it further).
    """
    from cvcourse.models import SmallCNN
    from cvcourse.synthetic import shapes_with_boxes
    from cvcourse.train import fit

    images, labels, _ = shapes_with_boxes(n, seed=seed, spurious=spurious)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SmallCNN(in_channels=3, num_classes=3, width=width)
    with one_thread():
        history = fit(model, images, labels, epochs=epochs, lr=3e-3, batch_size=64, seed=seed, weight_decay=weight_decay)
    return ShapesSetup(model=model.cpu().eval(), spurious=spurious, train_accuracy=history.accuracy)


def shapes_test_set(n: int = 200, spurious: float = 0.0, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Held-out ``shapes_with_boxes`` images (n, 3, 32, 32), labels (n,) and boxes (n, 4) (another seed)."""
    from cvcourse.synthetic import shapes_with_boxes

    return shapes_with_boxes(n, seed=seed, spurious=spurious)


def gradcam_pointing(
    model: nn.Module,
    images: torch.Tensor,
    boxes: torch.Tensor,
    labels: torch.Tensor | None = None,
    tolerance: int = 0,
) -> float:
    """Pointing-game accuracy of Grad-CAM at ``model.features[-1]`` (class: ``labels``, or the top class)."""
    maps = grad_cam(model, model.features[-1], images, labels)  # (N, H, W)
    return pointing_accuracy(maps, boxes, tolerance)


def occlusion_pointing(
    model: nn.Module,
    images: torch.Tensor,
    boxes: torch.Tensor,
    labels: torch.Tensor | None = None,
    window: int = 4,
    stride: int = 2,
    baseline: float = 0.35,
    tolerance: int = 0,
) -> float:
    """Pointing-game accuracy of per-pixel occlusion maps (grey ``baseline`` square, ``window`` px, ``stride`` px)."""
    with one_thread():
        maps = occlusion_attribution(model, images, labels, window, stride, baseline)  # (N, H, W)
    return pointing_accuracy(maps, boxes, tolerance)


def centre_pointing(boxes: torch.Tensor, size: int = 32, tolerance: int = 0) -> float:
    """The pointing game of a map that ignores the image and always peaks at the centre pixel."""
    maps = torch.zeros(len(boxes), size, size)
    maps[:, size // 2, size // 2] = 1.0
    return pointing_accuracy(maps, boxes, tolerance)


def marker_mass(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    region: tuple[int, int, int, int] | None = MARKER_REGION,
) -> float:
    """Mean share of Grad-CAM mass (at ``model.features[-1]``) in ``region`` (None: the marker box itself)."""
    from cvcourse.synthetic import MARKER_BOX

    maps = grad_cam(model, model.features[-1], images, labels)  # (N, H, W)
    return float(mass_in_box(maps, MARKER_BOX if region is None else region).mean())


def marker_pointing(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    tolerance: int = MARKER_TOLERANCE,
) -> float:
    """Fraction of images whose Grad-CAM peak lies on the marker box (within ``tolerance`` px)."""
    from cvcourse.synthetic import MARKER_BOX

    maps = grad_cam(model, model.features[-1], images, labels)  # (N, H, W)
    return pointing_accuracy(maps, torch.tensor(MARKER_BOX).expand(len(images), 4), tolerance)


@dataclass
class DigitsFeatures:
    """Learned features of held-out digits: ``features`` (N, D), ``images`` (N, 1, s, s), ``labels`` (N,)."""

    model: nn.Module
    features: torch.Tensor
    images: torch.Tensor
    labels: torch.Tensor
    test_accuracy: float


@lru_cache(maxsize=2)
def digits_features(n: int = 450, size: int = 16, epochs: int = 6, seed: int = 0) -> DigitsFeatures:
    """Train ``SmallCNN(1, 10)`` on the digits' training split and return the features of ``n`` test digits.

    Digits are upsampled to ``size`` pixels; the features are the pooled activations that enter
    the classifier (``model.embed``), 64 numbers per image.
    """
    from cvcourse.data import load_digits, split
    from cvcourse.models import SmallCNN
    from cvcourse.train import accuracy, fit

    from .features import extract_features

    images, labels = load_digits(size=size)
    train_x, train_y, test_x, test_y = split(images, labels, test_fraction=0.25, seed=seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SmallCNN(in_channels=1, num_classes=10, width=16)
    with one_thread():
        fit(model, train_x, train_y, epochs=epochs, lr=3e-3, batch_size=64, seed=seed)
    model = model.cpu().eval()
    test_x, test_y = test_x[:n], test_y[:n]
    feats = extract_features(model, test_x, device="cpu")  # (n, 64)
    return DigitsFeatures(model, feats, test_x, test_y, accuracy(model, test_x, test_y, device="cpu"))
