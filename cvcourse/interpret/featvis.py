"""Feature visualization: optimize an image from noise until one channel fires strongly.

Following Olah, Mordvintsev and Schubert (Distill, 2017), the image is not optimized pixel by
pixel (that gives high-frequency noise that fools the network) but through three tricks:
a Fourier parameterization whose frequencies are scaled by 1/f (so all frequencies learn at a
similar rate), a colour decorrelation (the optimizer moves in a whitened colour space that is
mapped back with the square root of the colour covariance of real photos), and random jitter
and scaling at every step (the pattern must survive small shifts and zooms).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from cvcourse.models import IMAGENET_MEAN, IMAGENET_STD

from .cam import capture_activations

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "color_correlation_sqrt",
    "FourierImage",
    "PixelImage",
    "random_jitter_scale",
    "FeatureVisResult",
    "visualize_channel",
]



def color_correlation_sqrt(images: torch.Tensor) -> torch.Tensor:
    """A (3, 3) square root ``M`` of the RGB covariance of ``images`` (N, 3, H, W): ``M @ M.T == cov``.

    Built as U diag(sqrt(s)) from the SVD of the covariance, so white noise z maps to colours
    M z with the photos' colour correlations.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be RGB (N, 3, H, W), got {tuple(images.shape)}")
    pixels = images.permute(1, 0, 2, 3).reshape(3, -1).double()  # (3, N*H*W)
    cov = torch.cov(pixels)  # (3, 3)
    u, s, _ = torch.linalg.svd(cov)
    return (u * s.sqrt()).float()


def _frequencies(height: int, width: int) -> torch.Tensor:
    """|f| (H, W//2+1) in cycles per pixel, the grid of ``torch.fft.rfft2``."""
    fy = torch.fft.fftfreq(height)[:, None]  # (H, 1)
    fx = torch.fft.rfftfreq(width)[None, :]  # (1, W//2+1)
    return (fy**2 + fx**2).sqrt()


class FourierImage(nn.Module):
    """RGB images (B, 3, H, W) in [0, 1] (B = ``batch``) parameterized by a scaled spectrum in a decorrelated colour space.

    pixels = sigmoid(M_n @ irfft2(spectrum * scale, norm="ortho")), with
    scale = 1 / max(|f|, 1/max(H, W)) ** decay (|f| in cycles per pixel, so a unit of the
    spectrum moves the mean brightness by about one unit) and M_n the colour matrix divided
    by its largest column norm. ``decay=0`` and an identity colour matrix give a plain
    Fourier basis.
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        color_matrix: torch.Tensor | None = None,
        *,
        decay: float = 1.0,
        init_std: float = 0.01,
        seed: int = 0,
        batch: int = 1,
    ) -> None:
        super().__init__()
        height, width = (size, size) if isinstance(size, int) else size
        self.height, self.width = height, width
        generator = torch.Generator().manual_seed(seed)
        spectrum = torch.randn(batch, 3, height, width // 2 + 1, 2, generator=generator) * init_std  # (B, 3, H, W/2+1, re/im)
        self.spectrum = nn.Parameter(spectrum)
        freqs = _frequencies(height, width).clamp_min(1.0 / max(height, width))
        self.register_buffer("scale", freqs**-decay)  # (H, W/2+1): max(H, W)**decay at f = 0
        m = torch.eye(3) if color_matrix is None else torch.as_tensor(color_matrix, dtype=torch.float32)
        self.register_buffer("color", m / m.norm(dim=0).max())

    def decorrelated(self) -> torch.Tensor:
        """The images (B, 3, H, W) in the whitened colour space, before colour mixing and sigmoid."""
        spec = torch.view_as_complex(self.spectrum) * self.scale  # (B, 3, H, W/2+1)
        return torch.fft.irfft2(spec, s=(self.height, self.width), norm="ortho")

    def forward(self) -> torch.Tensor:
        x = self.decorrelated()  # (B, 3, H, W)
        x = torch.einsum("ij,bjhw->bihw", self.color, x)  # mix colours back: (B, 3, H, W)
        return torch.sigmoid(x)  # (B, 3, H, W)


class PixelImage(nn.Module):
    """The naive parameterization for comparison: one free value per pixel, squashed by sigmoid."""

    def __init__(self, size: int, *, init_std: float = 0.01, seed: int = 0, batch: int = 1) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.pixels = nn.Parameter(torch.randn(batch, 3, size, size, generator=generator) * init_std)

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.pixels)  # (B, 3, H, W)


def random_jitter_scale(
    image: torch.Tensor,
    generator: torch.Generator,
    jitter: int = 8,
    scales: tuple[float, ...] = (0.9, 0.95, 1.0, 1.05, 1.1),
) -> torch.Tensor:
    """Randomly shift ``image`` (B, 3, H, W) by up to ``jitter`` pixels (circularly) and rescale it."""
    if jitter > 0:
        dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
        image = torch.roll(image, shifts=(dy, dx), dims=(2, 3))
    s = scales[int(torch.randint(len(scales), (1,), generator=generator))]
    if s != 1.0:
        image = F.interpolate(image, scale_factor=s, mode="bilinear", align_corners=False)
    return image


@dataclass
class FeatureVisResult:
    """``image`` (3, H, W) in [0, 1] (or (B, 3, H, W) for several channels); ``objective`` the
    mean activation of the channel (averaged over channels) per step."""

    image: torch.Tensor
    objective: list[float] = field(default_factory=list)


def visualize_channel(
    model: nn.Module,
    layer: nn.Module,
    channel: int | list[int],
    *,
    size: int = 128,
    steps: int = 64,
    lr: float = 0.05,
    seed: int = 0,
    parameterization: str = "fourier",
    color_matrix: torch.Tensor | None = None,
    jitter: int = 8,
    scales: tuple[float, ...] = (0.9, 0.95, 1.0, 1.05, 1.1),
    mean: tuple[float, ...] | None = IMAGENET_MEAN,
    std: tuple[float, ...] | None = IMAGENET_STD,
    device: torch.device | str | None = None,
) -> FeatureVisResult:
    """Optimize an image so that ``channel`` of ``layer``'s output (N, C, h, w) is large on average.

    A list of channels optimizes one image per channel in one batch and returns (B, 3, H, W).
    ``parameterization``: "fourier" (:class:`FourierImage` with ``color_matrix``) or "pixel".
    Each step applies random jitter and scaling, normalizes with ``mean``/``std`` (None: no
    normalization), and takes an Adam step on -mean(activation of the channel). The model's
    parameters are not changed (their ``.grad`` is left as found) nor its mode.
    """
    if device is None:
        from cvcourse.train import default_device

        device = default_device()
    device = torch.device(device)
    channels = [channel] if isinstance(channel, int) else list(channel)
    if parameterization == "fourier":
        param: nn.Module = FourierImage(size, color_matrix, seed=seed, batch=len(channels))
    elif parameterization == "pixel":
        param = PixelImage(size, seed=seed, batch=len(channels))
    else:
        raise ValueError(f"parameterization={parameterization!r}; use 'fourier' or 'pixel'")
    params = next(model.parameters(), None)
    original = params.device if params is not None else torch.device("cpu")
    model.to(device)
    param.to(device)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(param.parameters(), lr=lr)
    mean_t = None if mean is None else torch.tensor(mean, device=device)[None, :, None, None]
    std_t = None if std is None else torch.tensor(std, device=device)[None, :, None, None]
    history: list[float] = []
    try:
        with torch.enable_grad(), capture_activations(layer) as cap:
            for _ in range(steps):
                optimizer.zero_grad()
                x = random_jitter_scale(param(), generator, jitter, scales)
                if mean_t is not None:
                    x = (x - mean_t) / std_t
                model(x)
                act = cap.activations
                if act is None or act.ndim != 4:
                    raise ValueError("layer must be used by model(x) and return (N, C, h, w)")
                if not all(0 <= c < act.shape[1] for c in channels):
                    raise ValueError(f"channel={channel} out of range for a layer with {act.shape[1]} channels")
                objective = torch.stack([act[b, c].mean() for b, c in enumerate(channels)]).mean()
                (grad,) = torch.autograd.grad(-objective, list(param.parameters()))  # model grads untouched
                next(param.parameters()).grad = grad
                optimizer.step()
                history.append(float(objective.detach()))
    finally:
        model.to(original)
    with torch.no_grad():
        image = param().detach().cpu()  # (B, 3, H, W)
    if isinstance(channel, int):
        image = image[0]  # (3, H, W)
    return FeatureVisResult(image=image, objective=history)
