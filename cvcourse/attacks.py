"""Adversarial attacks: FGSM (untargeted and targeted) and an adversarial patch.

Every function works on ``images`` (N, C, H, W) float in [0, 1] and a ``model`` that maps them to
``logits`` (N, K). Models that expect normalised inputs (the ImageNet classifier) are wrapped in
:class:`Normalized` so that the attack happens in pixel space, where ``epsilon`` is a fraction of
the pixel range.

Every attack leaves the model as it found it: the same train/eval mode and every parameter's
``.grad`` unchanged (gradients are taken with respect to the input only).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cvcourse.models import IMAGENET_MEAN, IMAGENET_STD  # re-exported: attacks work in pixel space

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Normalized",
    "eval_mode",
    "gradient_sign",
    "fgsm",
    "iterative_fgsm",
    "accuracy_under_attack",
    "predict_labels",
    "EpsilonCurve",
    "epsilon_curve",
    "smallest_flipping_epsilon",
    "random_positions",
    "apply_patch",
    "PatchResult",
    "train_patch",
    "patch_success_rate",
    "TrainedModel",
    "digits_setup",
    "shapes_setup",
    "attack_figure",
    "DIGITS_EPSILONS",
    "SHAPES_PATCH",
    "PhotoDemo",
    "coffee_demo",
]


class Normalized(nn.Module):
    """``model((images - mean) / std)``: lets an attack work on pixels in [0, 1].

    ``mean`` and ``std`` are per-channel sequences (ImageNet's by default).
    """

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode inside the block; restore every submodule's mode after.

    A model already in eval mode is left alone (no mode is written, which keeps an attack's
    per-call overhead small); otherwise exactly the submodules found training are switched back.
    """
    training = [module for module in model.modules() if module.training]
    if training:
        model.eval()
    try:
        yield model
    finally:
        for module in training:
            module.training = True


def _device_of(model: nn.Module, default: torch.Tensor) -> torch.device:
    for p in model.parameters():
        return p.device
    return default.device


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = getattr(images, "shape", type(images))
        raise ValueError(f"images must be a tensor (N, C, H, W), got {shape}; add a batch axis with images[None]")


def gradient_sign(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor | int
) -> torch.Tensor:
    """sign of d(mean cross-entropy of ``model(images)`` vs ``labels``)/d(images), (N, C, H, W).

    The model is run in eval mode; its mode and its parameters' ``.grad`` are left as found.
    ``labels`` is (N,) int64 or one int for every image. Returned on ``images``' device.
    """
    _check_images(images)
    if isinstance(labels, int):
        labels = torch.full((images.shape[0],), labels, dtype=torch.long)
    device = _device_of(model, images)
    x = images.detach().to(device).requires_grad_(True)  # a new leaf: the caller's tensor is untouched
    y = labels.to(device)
    with eval_mode(model), torch.enable_grad():
        loss = F.cross_entropy(model(x), y)
        (grad,) = torch.autograd.grad(loss, x)  # input only: parameters' .grad untouched
    return grad.sign().to(images.device)


def fgsm(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | int,
    epsilon: float,
    targeted: bool = False,
) -> torch.Tensor:
    """Fast Gradient Sign Method (Goodfellow et al., 2015), (N, C, H, W) in [0, 1], detached.

    Untargeted (``labels`` are the true classes): ``images + epsilon * sign(grad)`` climbs the loss.
    Targeted (``labels`` are the wanted classes): ``images - epsilon * sign(grad)`` descends it.
    ``epsilon`` is in pixel units (1.0 = the whole range). ``images`` is not modified.
    """
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    step = gradient_sign(model, images, labels)  # a fresh tensor of ours: updated in place below
    direction = -1.0 if targeted else 1.0
    return step.mul_(direction * epsilon).add_(images.detach()).clamp_(0.0, 1.0)  # images + eps * step in [0, 1]


def iterative_fgsm(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | int,
    epsilon: float,
    steps: int = 10,
    step_size: float | None = None,
    targeted: bool = False,
) -> torch.Tensor:
    """Iterative FGSM (Kurakin et al., 2017): ``steps`` FGSM steps of ``step_size`` (default
    ``2.5 * epsilon / steps``), each followed by a projection back into the L-infinity ball of
    radius ``epsilon`` around ``images`` and into [0, 1]. (N, C, H, W), detached.

    With ``steps=1`` and ``step_size=epsilon`` it is exactly :func:`fgsm`. A targeted attack
    towards a class far from the truth usually needs these several small steps.
    """
    if epsilon < 0 or steps < 1:
        raise ValueError(f"need epsilon >= 0 and steps >= 1, got {epsilon} and {steps}")
    alpha = 2.5 * epsilon / steps if step_size is None else step_size
    clean = images.detach()
    adversarial = clean.clone()
    for _ in range(steps):
        adversarial = fgsm(model, adversarial, labels, alpha, targeted=targeted)
        adversarial = torch.min(torch.max(adversarial, clean - epsilon), clean + epsilon).clamp(0.0, 1.0)
    return adversarial


@torch.no_grad()
def predict_labels(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Arg-max class of ``model`` on ``images`` in eval mode, (N,) int64 on the CPU."""
    device = _device_of(model, images)
    out = []
    with eval_mode(model):
        for start in range(0, images.shape[0], batch_size):
            out.append(model(images[start : start + batch_size].to(device)).argmax(1).cpu())
    return torch.cat(out)


def accuracy_under_attack(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epsilon: float
) -> float:
    """Fraction of ``images`` still classified as ``labels`` after the untargeted FGSM."""
    adversarial = fgsm(model, images, labels, epsilon)
    return float((predict_labels(model, adversarial) == labels.cpu()).float().mean())


@dataclass
class EpsilonCurve:
    """Accuracy and flip rate of an untargeted FGSM along a grid of ``epsilons``.

    ``accuracy[i]``: fraction classified correctly at ``epsilons[i]``; ``flip_rate[i]``: fraction
    of the images that were correct when clean and are wrong at ``epsilons[i]``.
    """

    epsilons: list[float]
    accuracy: list[float]
    flip_rate: list[float]

    def is_monotone(self) -> bool:
        """True when accuracy never rises as epsilon grows."""
        return all(b <= a for a, b in zip(self.accuracy, self.accuracy[1:]))


def epsilon_curve(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epsilons: Sequence[float],
    batch_size: int = 256,
) -> EpsilonCurve:
    """Run the untargeted FGSM at each epsilon (one gradient, reused: FGSM's direction does not
    depend on epsilon) and measure accuracy and flip rate. ``epsilons`` must be increasing."""
    epsilons = [float(e) for e in epsilons]
    if any(b <= a for a, b in zip(epsilons, epsilons[1:])):
        raise ValueError(f"epsilons must be strictly increasing, got {epsilons}")
    labels = labels.cpu()
    signs = torch.cat(
        [
            gradient_sign(model, images[s : s + batch_size], labels[s : s + batch_size])
            for s in range(0, images.shape[0], batch_size)
        ]
    )
    clean_ok = predict_labels(model, images) == labels
    accuracy, flips = [], []
    for eps in epsilons:
        ok = predict_labels(model, (images + eps * signs).clamp(0, 1)) == labels
        accuracy.append(float(ok.float().mean()))
        flips.append(float((clean_ok & ~ok).float().sum() / clean_ok.float().sum().clamp(min=1)))
    return EpsilonCurve(epsilons, accuracy, flips)


def smallest_flipping_epsilon(curve: EpsilonCurve, fraction: float = 0.5) -> float:
    """The smallest epsilon of ``curve`` at which more than ``fraction`` of the clean-correct
    predictions are flipped. Raises ValueError if no epsilon of the grid reaches it."""
    for eps, rate in zip(curve.epsilons, curve.flip_rate):
        if rate > fraction:
            return eps
    raise ValueError(
        f"no epsilon up to {curve.epsilons[-1]} flips more than {fraction:.0%} "
        f"(largest flip rate {max(curve.flip_rate):.2f}); extend the grid"
    )


# --------------------------------------------------------------------------- adversarial patch


def random_positions(
    n: int, image_size: tuple[int, int], patch_size: int, generator: torch.Generator, margin: int = 0
) -> torch.Tensor:
    """(n, 2) int64 top-left corners (row, col) of a ``patch_size`` square inside ``image_size``,
    uniform over the places that keep it at least ``margin`` pixels from every border."""
    height, width = image_size
    if margin < 0 or patch_size + 2 * margin > min(height, width):
        raise ValueError(
            f"patch_size {patch_size} with margin {margin} does not fit in images of size {image_size}"
        )
    rows = torch.randint(margin, height - patch_size - margin + 1, (n,), generator=generator)
    cols = torch.randint(margin, width - patch_size - margin + 1, (n,), generator=generator)
    return torch.stack([rows, cols], dim=1)


def apply_patch(images: torch.Tensor, patch: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Paste ``patch`` (C, p, p) onto each image at ``positions`` (N, 2) (row, col).

    Differentiable with respect to ``patch``; ``images`` is not modified.
    """
    _check_images(images)
    p = patch.shape[-1]
    n = images.shape[0]
    offsets = torch.arange(p, device=images.device)
    positions = positions.to(images.device)
    batch = torch.arange(n, device=images.device).view(n, 1, 1)
    rows = (positions[:, 0:1] + offsets).view(n, p, 1)  # (N, p, 1)
    cols = (positions[:, 1:2] + offsets).view(n, 1, p)  # (N, 1, p)
    out = images.clone()
    # advanced indices around a slice: the indexed view is (N, p, p, C)
    out[batch, :, rows, cols] = patch.permute(1, 2, 0).expand(n, p, p, patch.shape[0]).to(images.dtype)
    return out


@dataclass
class PatchResult:
    """A trained patch (C, p, p) in [0, 1] and its training loss per step."""

    patch: torch.Tensor
    target: int
    loss: list[float]


def train_patch(
    model: nn.Module,
    images: torch.Tensor,
    target: int,
    patch_size: int,
    steps: int = 200,
    batch_size: int = 64,
    lr: float = 0.05,
    seed: int = 0,
    margin: int = 0,
) -> PatchResult:
    """Optimise one patch that pushes any of ``images`` to class ``target`` (Brown et al., 2017).

    Each step draws a batch of images and a random place for the patch on each (at least
    ``margin`` pixels from the border, see :func:`random_positions`), and takes an Adam
    step on the patch to lower the cross-entropy towards ``target``; pixels are clamped to [0, 1].
    The model is run in eval mode and left as found.
    """
    generator = torch.Generator().manual_seed(seed)
    device = _device_of(model, images)
    channels, height, width = images.shape[1:]
    patch = torch.rand(channels, patch_size, patch_size, generator=generator).to(device)
    patch.requires_grad_(True)
    optimizer = torch.optim.Adam([patch], lr=lr)
    losses = []
    params = list(model.parameters())
    grads_before = [p.grad for p in params]
    requires = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        with eval_mode(model), torch.enable_grad():
            for _ in range(steps):
                idx = torch.randint(0, images.shape[0], (batch_size,), generator=generator)
                where = random_positions(batch_size, (height, width), patch_size, generator, margin)
                batch = apply_patch(images[idx].to(device), patch, where)
                wanted = torch.full((batch_size,), target, dtype=torch.long, device=device)
                loss = F.cross_entropy(model(batch), wanted)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    patch.clamp_(0.0, 1.0)
                losses.append(float(loss.detach()))
    finally:
        for p, g, r in zip(params, grads_before, requires):
            p.requires_grad_(r)
            p.grad = g
    return PatchResult(patch.detach().cpu(), target, losses)


def patch_success_rate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    patch: torch.Tensor,
    target: int,
    seed: int = 1,
    margin: int = 0,
) -> float:
    """Targeted success rate: among ``images`` whose true label is not ``target``, the fraction
    classified as ``target`` once ``patch`` is pasted at a random place (seeded, at least
    ``margin`` pixels from the border) on each."""
    keep = labels.cpu() != target
    images = images[keep]
    generator = torch.Generator().manual_seed(seed)
    where = random_positions(images.shape[0], tuple(images.shape[-2:]), patch.shape[-1], generator, margin)
    with torch.no_grad():
        patched = apply_patch(images, patch.to(images.device), where)
    return float((predict_labels(model, patched) == target).float().mean())


# --------------------------------------------------------------------------- the chapter's setup


@dataclass
class TrainedModel:
    """A small classifier attacked in the chapter, with its training and held-out data."""

    model: nn.Module
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    clean_accuracy: float
    class_names: tuple[str, ...]


def _train_small_cnn(images, labels, in_channels, num_classes, epochs, seed, device, class_names):
    from cvcourse import data, models, train

    tr_x, tr_y, te_x, te_y = data.split(images, labels, seed=seed)
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG untouched
        torch.manual_seed(seed)
        model = models.SmallCNN(in_channels=in_channels, num_classes=num_classes)
    device = device or train.default_device()
    train.fit(model, tr_x, tr_y, epochs=epochs, lr=3e-3, seed=seed, device=device)
    model.eval()
    acc = train.accuracy(model, te_x, te_y, device=device)
    return TrainedModel(model, tr_x, tr_y, te_x, te_y, float(acc), tuple(class_names))


def digits_setup(size: int = 16, epochs: int = 8, seed: int = 0, device: torch.device | None = None) -> TrainedModel:
    """``cv.models.SmallCNN`` trained on scikit-learn's digits at ``size`` x ``size`` (seeded);
    the held-out part is the stratified quarter of :func:`cvcourse.data.split`.

    Used by the adversarial chapter and its tests, so both see the same model.
    """
    from cvcourse import data

    images, labels = data.load_digits(size=size)
    return _train_small_cnn(images, labels, 1, 10, epochs, seed, device, [str(d) for d in range(10)])


def shapes_setup(n: int = 1600, size: int = 32, epochs: int = 8, seed: int = 0, device: torch.device | None = None) -> TrainedModel:
    """``cv.models.SmallCNN`` trained to tell square / disk / triangle in
    :func:`cvcourse.synthetic.shapes_with_boxes` images (one object of random colour and place on
    a textured background; seeded). Used by the chapter's adversarial patch and its tests.
    """
    from cvcourse import synthetic

    images, labels, _ = synthetic.shapes_with_boxes(n, size=size, seed=seed)
    return _train_small_cnn(images, labels, 3, 3, epochs, seed, device, synthetic.OBJECT_SHAPES)


#: The epsilon grid of the chapter's accuracy curve on digits (fractions of the pixel range).
DIGITS_EPSILONS: tuple[float, ...] = (0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15)


#: The chapter's adversarial patch on the shapes model: arguments of :func:`train_patch`.
SHAPES_PATCH: dict = {"target": 0, "patch_size": 6, "steps": 120, "lr": 0.05}


@dataclass
class PhotoDemo:
    """FGSM on one photo against the ImageNet model (see :func:`coffee_demo`)."""

    clean_class: str
    clean_prob: float
    untargeted: list[tuple[float, str, float]]  # (epsilon in grey levels, top-1 name, probability)
    target_class: str
    target_levels: float
    steps: int
    targeted_one_step: tuple[str, float]
    targeted_iterative: tuple[str, float]
    targeted_image: torch.Tensor  # (1, 3, 224, 224)


def coffee_demo(
    model: nn.Module | None = None,
    photo: str = "coffee",
    levels: Sequence[float] = (0.5, 1.0, 2.0, 4.0),
    target: str = "goldfish",
    target_levels: float = 2.0,
    steps: int = 10,
) -> PhotoDemo:
    """Untargeted FGSM at several budgets (in grey levels, epsilon = levels / 255) and a targeted
    attack (one FGSM step vs ``steps`` iterative steps) on ``photo``, against ``model`` (default:
    the ImageNet classifier wrapped in :class:`Normalized`). The label attacked is the model's
    own top-1 answer on the clean photo."""
    from cvcourse import data
    from cvcourse import models as cv_models

    if model is None:
        model = Normalized(cv_models.imagenet_classifier())
    categories = data.imagenet_categories()
    if target not in categories:
        raise ValueError(f"unknown ImageNet class {target!r}; see cv.data.imagenet_categories()")
    target_idx = categories.index(target)
    device = _device_of(model, torch.zeros(0))
    images = data.load_photo(photo)[None].to(device)  # (1, 3, 224, 224)

    def top1(x: torch.Tensor) -> tuple[str, float]:
        with torch.no_grad(), eval_mode(model):
            name, p = cv_models.top_classes(model(x), k=1)[0][0]
        return name, p

    clean_class, clean_prob = top1(images)
    label = torch.tensor([categories.index(clean_class)], device=device)
    sign = gradient_sign(model, images, label)
    untargeted = []
    for level in levels:
        name, p = top1((images + level / 255 * sign).clamp(0, 1))
        untargeted.append((float(level), name, p))
    eps = target_levels / 255
    one_step = top1(fgsm(model, images, target_idx, eps, targeted=True))
    adversarial = iterative_fgsm(model, images, target_idx, eps, steps=steps, targeted=True)
    return PhotoDemo(
        clean_class, clean_prob, untargeted, target, float(target_levels), steps,
        one_step, top1(adversarial), adversarial.cpu(),
    )


# --------------------------------------------------------------------------- figures


def attack_figure(
    clean: torch.Tensor,
    adversarial: torch.Tensor,
    clean_title: str = "clean",
    adversarial_title: str = "adversarial",
    scale: float = 2.6,
):
    """Clean image, perturbation (amplified to fill the grey range) and adversarial image,
    side by side. ``clean``, ``adversarial``: (C, H, W) in [0, 1]. Returns a closed matplotlib
    figure (display it with ``IPython.display.display``), so it is not drawn twice."""
    import matplotlib.pyplot as plt

    from cvcourse.plots import to_numpy_image

    delta = (adversarial - clean).detach().cpu()
    largest = float(delta.abs().max())
    gain = 0.5 / largest if largest > 0 else 1.0
    shown = 0.5 + gain * delta  # grey = unchanged
    fig, axes = plt.subplots(1, 3, figsize=(3 * scale, scale + 0.4))
    panels = [
        (clean, clean_title),
        (shown, f"perturbation (x{gain:.0f}), max {largest * 255:.1f}/255"),
        (adversarial, adversarial_title),
    ]
    for ax, (image, title) in zip(axes, panels):
        ax.imshow(to_numpy_image(image), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    plt.close(fig)
    return fig
