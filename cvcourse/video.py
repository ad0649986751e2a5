"""Deep learning on video: fusion in time, 3D convolution, inflation, optical flow, ConvLSTM.

Conventions (see the chapter ``book/video.md``):

- ``clip`` is ``(N, T, C, H, W)`` (a batch of T frames each) unless a name says otherwise;
  PyTorch's ``nn.Conv3d`` wants ``(N, C, T, H, W)``: :func:`to_conv3d_layout` converts.
- Every model here takes a clip ``(N, T, C, H, W)`` in [0, 1] and returns ``logits (N, K)``,
  so one training loop (:func:`cvcourse.train.fit`) serves them all.
- Experiments take a ``seed`` and build everything from it (data, initial weights, shuffling).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AppearanceResult",
    "C3DNet",
    "CNNLSTM",
    "ConvLSTMCell",
    "ConvLSTMForecaster",
    "EarlyFusionNet",
    "FUSION_MODELS",
    "ForecastResult",
    "FrameAverageNet",
    "FrameCNN",
    "LateFusionNet",
    "SingleFrameNet",
    "SlowFusionNet",
    "Stacked2D3DNet",
    "TwoStreamNet",
    "average_frame_probabilities",
    "classify_frames",
    "clip_flow",
    "conv3d_num_params",
    "conv3d_output_shape",
    "conv_output_size",
    "early_fusion",
    "flow_figure",
    "flow_to_rgb",
    "horn_schunck",
    "inflate_batchnorm",
    "inflate_conv",
    "inflate_network",
    "inflation_max_error",
    "layer_costs",
    "make_fusion_model",
    "run_appearance_experiment",
    "run_forecast_experiment",
    "run_fusion_experiment",
    "static_clip",
    "to_conv3d_layout",
]


# ---------------------------------------------------------------------------------------------
# Clips as tensors
# ---------------------------------------------------------------------------------------------


def _check_clip(clip: torch.Tensor, name: str = "clip") -> None:
    if not isinstance(clip, torch.Tensor) or clip.dim() != 5:
        shape = tuple(clip.shape) if isinstance(clip, torch.Tensor) else type(clip).__name__
        raise ValueError(
            f"{name} must be a tensor (N, T, C, H, W), got {shape}; "
            "add a batch dimension with clip.unsqueeze(0) for a single clip (T, C, H, W)"
        )


def to_conv3d_layout(clip: torch.Tensor) -> torch.Tensor:
    """``(N, T, C, H, W)`` -> ``(N, C, T, H, W)``, the layout ``nn.Conv3d`` expects."""
    _check_clip(clip)
    return clip.permute(0, 2, 1, 3, 4)  # (N, C, T, H, W)


def early_fusion(clip: torch.Tensor) -> torch.Tensor:
    """Stack the frames along channels: ``(N, T, C, H, W)`` -> ``(N, T*C, H, W)``.

    The channels of frame 0 come first, then those of frame 1, and so on.
    """
    _check_clip(clip)
    n, t, c, h, w = clip.shape
    return clip.reshape(n, t * c, h, w)  # (N, T*C, H, W)


def static_clip(image: torch.Tensor, num_frames: int) -> torch.Tensor:
    """A clip in which nothing moves: ``image (C, H, W)`` repeated -> ``(1, T, C, H, W)``."""
    if image.dim() != 3:
        raise ValueError(f"image must be (C, H, W), got shape {tuple(image.shape)}")
    return image.unsqueeze(0).unsqueeze(0).expand(1, num_frames, *image.shape).contiguous()


# ---------------------------------------------------------------------------------------------
# 3D convolution arithmetic and cost
# ---------------------------------------------------------------------------------------------


def _triple(value: int | Sequence[int], name: str) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value, value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 3:
        raise ValueError(f"{name} must be an int or a 3-tuple (t, h, w), got {value!r}")
    return value  # type: ignore[return-value]


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length of a convolution along one axis:

    ``floor((size + 2*padding - dilation*(kernel - 1) - 1) / stride) + 1``.
    """
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv3d_output_shape(
    input_shape: Sequence[int],
    out_channels: int,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
) -> tuple[int, int, int, int, int]:
    """The output shape ``(N, C_out, T', H', W')`` of ``nn.Conv3d`` on ``input_shape (N, C, T, H, W)``.

    Raises ``ValueError`` when an output size would be below 1 (input too small for the kernel).
    """
    if len(input_shape) != 5:
        raise ValueError(f"input_shape must be (N, C, T, H, W), got {tuple(input_shape)!r}")
    n, _, *sizes = (int(s) for s in input_shape)
    k, s, p, d = (_triple(v, nm) for v, nm in ((kernel_size, "kernel_size"), (stride, "stride"),
                                                (padding, "padding"), (dilation, "dilation")))
    out = tuple(conv_output_size(sizes[i], k[i], s[i], p[i], d[i]) for i in range(3))
    if min(out) < 1:
        raise ValueError(
            f"input (T, H, W) = {tuple(sizes)} is too small for kernel {k} with padding {p} and "
            f"dilation {d}: output would be {out}; use a longer/larger input or more padding"
        )
    return (n, int(out_channels), *out)  # type: ignore[return-value]


def conv3d_num_params(
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int],
    bias: bool = True,
    groups: int = 1,
) -> int:
    """Number of parameters of ``nn.Conv3d(in_channels, out_channels, kernel_size, bias=bias, groups=groups)``:

    ``out_channels * (in_channels / groups) * kt * kh * kw`` weights, plus ``out_channels`` biases.
    """
    kt, kh, kw = _triple(kernel_size, "kernel_size")
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
    return out_channels * (in_channels // groups) * kt * kh * kw + (out_channels if bias else 0)


def layer_costs(
    in_channels: int = 3,
    out_channels: int = 64,
    num_frames: int = 16,
    size: int = 112,
    kernel: int = 3,
    seed: int = 0,
) -> list[dict]:
    """Measure parameters, output (activation) memory and time of 2D and 3D layers on one clip.

    The clip is ``(1, T, C, H, W)`` with ``T = num_frames``, ``C = in_channels``, ``H = W = size``.
    Rows: a 2D conv on one frame; the same 2D conv on every frame; an early-fusion 2D conv
    (all frames as channels); a 3D conv with a ``kernel x kernel x kernel`` kernel. Each row is a
    dict with ``layer``, ``weight_shape``, ``params``, ``output_shape``, ``activation_mb`` (output
    float32 size in MiB), ``mult_adds`` (multiply-adds, millions) and ``ms`` (one forward, CPU or GPU).
    Parameters, shapes and bytes are read off the real modules and tensors.
    """
    gen = torch.Generator().manual_seed(seed)
    clip = torch.rand(1, num_frames, in_channels, size, size, generator=gen)  # (1, T, C, H, W)
    pad = kernel // 2
    rows = []
    cases = [
        ("2D conv, one frame", nn.Conv2d(in_channels, out_channels, kernel, padding=pad), clip[:, 0]),
        ("2D conv, every frame", nn.Conv2d(in_channels, out_channels, kernel, padding=pad),
         clip[0]),  # frames as a batch (T, C, H, W)
        ("2D conv, early fusion", nn.Conv2d(num_frames * in_channels, out_channels, kernel, padding=pad),
         early_fusion(clip)),  # (1, T*C, H, W)
        ("3D conv", nn.Conv3d(in_channels, out_channels, kernel, padding=pad),
         to_conv3d_layout(clip).contiguous()),  # (1, C, T, H, W)
    ]
    for name, layer, x in cases:
        with torch.no_grad():
            start = time.perf_counter()
            y = layer(x)
            ms = 1000 * (time.perf_counter() - start)
        weight = layer.weight
        macs = y.numel() * weight[0].numel()  # every output value costs one kernel's worth
        rows.append(
            {
                "layer": name,
                "weight_shape": tuple(weight.shape),
                "params": sum(p.numel() for p in layer.parameters()),
                "output_shape": tuple(y.shape),
                "activation_mb": y.numel() * y.element_size() / 2**20,
                "mult_adds": macs / 1e6,
                "ms": ms,
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# Models. Every model maps a clip (N, T, C, H, W) to logits (N, K).
# ---------------------------------------------------------------------------------------------


def _block2d(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))


def _block3d(cin: int, cout: int, pool: tuple[int, int, int]) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.ReLU(), nn.MaxPool3d(pool))


def _frame_features(in_channels: int, width: int) -> nn.Sequential:
    """Three 2D blocks: ``(N, C, H, W)`` -> ``(N, 2*width, H/8, W/8)``."""
    return nn.Sequential(_block2d(in_channels, width), _block2d(width, 2 * width), _block2d(2 * width, 2 * width))


class FrameCNN(nn.Module):
    """A small 2D image classifier: ``images (N, C, H, W)`` -> ``logits (N, K)``.

    ``features`` (three conv-BN-ReLU-maxpool blocks), ``pool`` (global average), ``classifier``.
    Built only from layers that :func:`inflate_network` knows, so it can be inflated to 3D.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 4, width: int = 16) -> None:
        super().__init__()
        self.features = _frame_features(in_channels, width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(2 * width, num_classes)
        self.num_features = 2 * width

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Features ``(N, F)`` before the classifier."""
        return self.flatten(self.pool(self.features(images)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(images))


class SingleFrameNet(nn.Module):
    """Classify a clip from one of its frames (``frame``, default the middle one)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 4, width: int = 16, frame: int | None = None) -> None:
        super().__init__()
        self.frame = frame
        self.cnn = FrameCNN(in_channels, num_classes, width)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        _check_clip(clip)
        t = clip.shape[1] // 2 if self.frame is None else self.frame
        return self.cnn(clip[:, t])  # (N, C, H, W) -> (N, K)


class FrameAverageNet(nn.Module):
    """The same 2D classifier on every frame; the frames' class probabilities are averaged.

    ``forward`` returns the log of the averaged probabilities (usable as logits: softmax gives
    the averaged probabilities back, and cross-entropy trains the average directly).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 4, width: int = 16) -> None:
        super().__init__()
        self.cnn = FrameCNN(in_channels, num_classes, width)

    def frame_logits(self, clip: torch.Tensor) -> torch.Tensor:
        """Per-frame logits ``(N, T, K)``."""
        _check_clip(clip)
        n, t = clip.shape[:2]
        logits = self.cnn(clip.flatten(0, 1))  # (N*T, C, H, W) -> (N*T, K)
        return logits.view(n, t, -1)  # (N, T, K)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        probs = self.frame_logits(clip).softmax(dim=-1).mean(dim=1)  # (N, K)
        return probs.clamp_min(1e-12).log()


class EarlyFusionNet(nn.Module):
    """Early fusion: all frames stacked along channels, ``(N, T*C, H, W)``, into one 2D CNN."""

    def __init__(self, in_channels: int = 1, num_classes: int = 4, width: int = 16, num_frames: int = 8) -> None:
        super().__init__()
        self.num_frames = num_frames
        self.cnn = FrameCNN(in_channels * num_frames, num_classes, width)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        _check_clip(clip)
        if clip.shape[1] != self.num_frames:
            raise ValueError(f"built for {self.num_frames} frames, got a clip of {clip.shape[1]}")
        return self.cnn(early_fusion(clip))  # (N, T*C, H, W) -> (N, K)


class LateFusionNet(nn.Module):
    """Late fusion: a shared 2D CNN sees the first and the last frame; their feature maps
    (kept spatial, so "where" survives) are concatenated and only the final linear layer
    compares them."""

    def __init__(self, in_channels: int = 1, num_classes: int = 4, width: int = 16, size: int = 16) -> None:
        super().__init__()
        self.features = _frame_features(in_channels, width)  # shared by both frames
        cells = (size // 8) ** 2  # three 2x2 poolings
        self.classifier = nn.Linear(2 * 2 * width * cells, num_classes)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        _check_clip(clip)
        first = self.features(clip[:, 0]).flatten(1)  # (N, C', h, w) -> (N, C'*h*w)
        last = self.features(clip[:, -1]).flatten(1)
        return self.classifier(torch.cat([first, last], dim=1))  # (N, 2*C'*h*w) -> (N, K)


class SlowFusionNet(nn.Module):
    """Slow fusion: each stage merges neighbouring time steps (kernel 2, stride 2 in time), so
    time is fused gradually: 8 frames -> 4 -> 2 -> 1 over three stages."""

    def __init__(self, in_channels: int = 1, num_classes: int = 4, width: int = 16) -> None:
        super().__init__()

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv3d(cin, cout, (2, 3, 3), stride=(2, 1, 1), padding=(0, 1, 1)),
                nn.BatchNorm3d(cout), nn.ReLU(), nn.MaxPool3d((1, 2, 2)),
            )

        self.features = nn.Sequential(stage(in_channels, width), stage(width, 2 * width), stage(2 * width, 2 * width))
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        x = self.features(to_conv3d_layout(clip))  # (N, C', T', h, w)
        return self.classifier(x.mean(dim=(2, 3, 4)))  # global average -> (N, C') -> (N, K)


class C3DNet(nn.Module):
    """A small C3D-style network: 3x3x3 convolutions throughout; the first pooling is spatial
    only (1x2x2), later ones pool time too (2x2x2); global average pooling, one linear layer."""

    def __init__(self, in_channels: int = 1, num_classes: int = 4, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _block3d(in_channels, width, (1, 2, 2)),
            _block3d(width, 2 * width, (2, 2, 2)),
            _block3d(2 * width, 2 * width, (2, 2, 2)),
        )
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        x = self.features(to_conv3d_layout(clip))  # (N, C', T', h, w)
        return self.classifier(x.mean(dim=(2, 3, 4)))  # (N, K)


class Stacked2D3DNet(nn.Module):
    """2D features per frame, stacked over time, then 3D convolution: cheap 2D layers early
    (where maps are large), 3D layers only on the small late feature maps."""

    def __init__(self, in_channels: int = 1, num_classes: int = 4, width: int = 16) -> None:
        super().__init__()
        self.frame_features = nn.Sequential(_block2d(in_channels, width), _block2d(width, 2 * width))
        self.temporal = nn.Sequential(
            nn.Conv3d(2 * width, 2 * width, 3, padding=1), nn.BatchNorm3d(2 * width), nn.ReLU()
        )
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        _check_clip(clip)
        n, t = clip.shape[:2]
        f = self.frame_features(clip.flatten(0, 1))  # (N*T, C, H, W) -> (N*T, C', h, w)
        f = f.view(n, t, *f.shape[1:])  # (N, T, C', h, w)
        x = self.temporal(to_conv3d_layout(f))  # (N, C', T, h, w)
        return self.classifier(x.amax(dim=(2, 3, 4)))  # global max over time and space -> (N, K)


class TwoStreamNet(nn.Module):
    """Two streams: appearance (a 2D CNN on the middle frame) and motion (a 2D CNN on the
    optical flow of all frame pairs, stacked along channels); their class probabilities are averaged.

    The flow is computed inside ``forward`` by :func:`clip_flow` (no gradient flows through it).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 4, width: int = 16, num_frames: int = 8,
                 flow_scale: float = 1.0, flow_iterations: int = 20) -> None:
        super().__init__()
        self.flow_scale = flow_scale
        self.flow_iterations = flow_iterations
        self.spatial = FrameCNN(in_channels, num_classes, width)
        self.temporal = FrameCNN(2 * (num_frames - 1), num_classes, width)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        _check_clip(clip)
        with torch.no_grad():
            flow = clip_flow(clip, iterations=self.flow_iterations) * self.flow_scale  # (N, T-1, 2, H, W), pixels per frame, scaled
        appearance = self.spatial(clip[:, clip.shape[1] // 2]).softmax(-1)  # (N, K)
        motion = self.temporal(flow.flatten(1, 2)).softmax(-1)  # (N, 2(T-1), H, W) -> (N, K)
        return ((appearance + motion) / 2).clamp_min(1e-12).log()


class CNNLSTM(nn.Module):
    """A shared 2D CNN turns each frame into a feature vector (its flattened feature map, so
    position survives); an LSTM reads them in order and its last hidden state is classified."""

    def __init__(self, in_channels: int = 1, num_classes: int = 4, width: int = 16, hidden: int = 32,
                 size: int = 16) -> None:
        super().__init__()
        self.features = _frame_features(in_channels, width)
        self.lstm = nn.LSTM(2 * width * (size // 8) ** 2, hidden, batch_first=True)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        _check_clip(clip)
        n, t = clip.shape[:2]
        f = self.features(clip.flatten(0, 1))  # (N*T, C, H, W) -> (N*T, C', h, w)
        out, _ = self.lstm(f.view(n, t, -1))  # (N, T, C'*h*w) -> (N, T, hidden)
        return self.classifier(out[:, -1])  # (N, K)


#: Names accepted by :func:`make_fusion_model`, in the order the chapter discusses them.
FUSION_MODELS: tuple[str, ...] = (
    "single_frame", "frame_average", "late_fusion", "early_fusion", "slow_fusion",
    "c3d", "stacked_2d_3d", "two_stream", "cnn_lstm",
)


def make_fusion_model(name: str, in_channels: int = 1, num_classes: int = 4, num_frames: int = 8,
                      size: int = 16, width: int = 16, seed: int = 0) -> nn.Module:
    """Build one of :data:`FUSION_MODELS` for clips ``(N, num_frames, in_channels, size, size)``,
    with initial weights drawn from ``seed``."""
    builders = {
        "single_frame": lambda: SingleFrameNet(in_channels, num_classes, width),
        "frame_average": lambda: FrameAverageNet(in_channels, num_classes, width),
        "late_fusion": lambda: LateFusionNet(in_channels, num_classes, width, size),
        "early_fusion": lambda: EarlyFusionNet(in_channels, num_classes, width, num_frames),
        "slow_fusion": lambda: SlowFusionNet(in_channels, num_classes, width),
        "c3d": lambda: C3DNet(in_channels, num_classes, width),
        "stacked_2d_3d": lambda: Stacked2D3DNet(in_channels, num_classes, width),
        "two_stream": lambda: TwoStreamNet(in_channels, num_classes, width, num_frames),
        "cnn_lstm": lambda: CNNLSTM(in_channels, num_classes, width, size=size),
    }
    if name not in builders:
        raise ValueError(f"unknown model {name!r}; choose one of {FUSION_MODELS}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builders[name]()


# ---------------------------------------------------------------------------------------------
# Inflation: 2D -> 3D (I3D)
# ---------------------------------------------------------------------------------------------


def inflate_conv(conv2d: nn.Conv2d, time_kernel: int) -> nn.Conv3d:
    """Inflate a 2D convolution into a 3D one with kernel ``(time_kernel, kh, kw)``.

    The 2D weight is repeated ``time_kernel`` times along time and divided by ``time_kernel``;
    the bias is copied. Stride, padding and dilation are 1, 0 and 1 in time. On a clip in which
    one frame repeats, every output frame equals ``conv2d(frame)``. ``conv2d`` is not modified.
    """
    if not isinstance(conv2d, nn.Conv2d):
        raise TypeError(f"inflate_conv needs an nn.Conv2d, got {type(conv2d).__name__}")
    if not isinstance(time_kernel, int) or time_kernel < 1:
        raise ValueError(f"time_kernel must be a positive int, got {time_kernel!r}")
    if isinstance(conv2d.padding, str):
        raise ValueError(f"padding={conv2d.padding!r} is not supported; give the 2D layer numeric padding")
    if conv2d.padding_mode != "zeros":
        raise ValueError(f"padding_mode={conv2d.padding_mode!r} is not supported; use 'zeros'")
    conv3d = nn.Conv3d(
        conv2d.in_channels, conv2d.out_channels, (time_kernel, *conv2d.kernel_size),
        stride=(1, *conv2d.stride), padding=(0, *conv2d.padding), dilation=(1, *conv2d.dilation),
        groups=conv2d.groups, bias=conv2d.bias is not None,
        device=conv2d.weight.device, dtype=conv2d.weight.dtype,
    )
    with torch.no_grad():
        weight = conv2d.weight.unsqueeze(2).repeat(1, 1, time_kernel, 1, 1) / time_kernel  # (O, I, kt, kh, kw)
        conv3d.weight.copy_(weight)
        if conv2d.bias is not None:
            conv3d.bias.copy_(conv2d.bias)
    return conv3d


def inflate_batchnorm(bn2d: nn.BatchNorm2d) -> nn.BatchNorm3d:
    """A ``BatchNorm3d`` with the same affine parameters, running statistics and mode."""
    bn3d = nn.BatchNorm3d(bn2d.num_features, bn2d.eps, bn2d.momentum, bn2d.affine, bn2d.track_running_stats,
                          device=bn2d.weight.device if bn2d.affine else None)
    bn3d.load_state_dict(bn2d.state_dict())
    bn3d.train(bn2d.training)
    return bn3d


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


def _inflate_module(module: nn.Module, time_kernel: int) -> nn.Module:
    if isinstance(module, nn.Conv2d):
        return inflate_conv(module, time_kernel)
    if isinstance(module, nn.BatchNorm2d):
        return inflate_batchnorm(module)
    if isinstance(module, nn.MaxPool2d):
        if module.return_indices:
            raise ValueError("MaxPool2d(return_indices=True) cannot be inflated")
        return nn.MaxPool3d((1, *_pair(module.kernel_size)), (1, *_pair(module.stride)),
                            (0, *_pair(module.padding)), (1, *_pair(module.dilation)), ceil_mode=module.ceil_mode)
    if isinstance(module, nn.AvgPool2d):
        return nn.AvgPool3d((1, *_pair(module.kernel_size)), (1, *_pair(module.stride)),
                            (0, *_pair(module.padding)), module.ceil_mode, module.count_include_pad)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        size = _pair(module.output_size)
        if size != (1, 1):
            raise ValueError(f"only global AdaptiveAvgPool2d(1) can be inflated, got output_size={module.output_size}")
        return nn.AdaptiveAvgPool3d(1)  # average over time too
    return module


_SAFE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout,
         nn.Flatten, nn.Linear, nn.Sequential, nn.ModuleList)


def inflate_network(model: nn.Module, time_kernel: int = 3) -> nn.Module:
    """Inflate a 2D network into a 3D one (I3D): a deep copy in which every ``Conv2d`` becomes
    :func:`inflate_conv` (kernel ``time_kernel`` in time, no time padding), every ``BatchNorm2d``
    a ``BatchNorm3d`` with the same statistics, ``MaxPool2d``/``AvgPool2d`` pool ``1 x k x k``, and
    ``AdaptiveAvgPool2d(1)`` averages over time and space.

    The inflated network takes ``(N, C, T, H, W)`` where the parent took ``(N, C, H, W)``; each
    conv shortens time by ``time_kernel - 1``, so ``T`` must exceed their sum. Works for models
    whose ``forward`` only chains such layers (like :class:`FrameCNN`); anything else raises.
    """
    inflated = copy.deepcopy(model)
    for name, child in list(inflated.named_modules()):
        if child is inflated or isinstance(child, _SAFE) or type(child) is nn.Module:
            continue
        if isinstance(child, (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            continue
        if type(child).__module__.startswith("torch.nn"):
            raise TypeError(f"cannot inflate layer {name!r} of type {type(child).__name__}; "
                            "replace it by a supported layer or inflate it by hand")
    if isinstance(inflated, (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        return _inflate_module(inflated, time_kernel)

    def swap(parent: nn.Module) -> None:
        for child_name, child in parent.named_children():
            new = _inflate_module(child, time_kernel)
            if new is not child:
                setattr(parent, child_name, new)
            else:
                swap(child)

    swap(inflated)
    return inflated


def inflation_max_error(model2d: nn.Module, image: torch.Tensor, num_frames: int = 8, time_kernel: int = 3) -> float:
    """Largest absolute difference between ``model2d(image)`` and its inflated copy's output on a
    static clip of ``num_frames`` copies of ``image (C, H, W)``. Both run in eval mode on the CPU."""
    parent = copy.deepcopy(model2d).cpu().eval()
    inflated = inflate_network(parent, time_kernel).eval()
    image = image.detach().cpu()
    with torch.no_grad():
        expected = parent(image.unsqueeze(0))  # (1, K)
        got = inflated(to_conv3d_layout(static_clip(image, num_frames)))  # (1, C, T, H, W) -> (1, K)
    return float((expected - got).abs().max())


# ---------------------------------------------------------------------------------------------
# Optical flow (Horn-Schunck in torch) and its colour picture
# ---------------------------------------------------------------------------------------------


def _gray(images: torch.Tensor) -> torch.Tensor:
    return images.mean(dim=1, keepdim=True) if images.shape[1] != 1 else images  # (N, 1, H, W)


def horn_schunck(frame0: torch.Tensor, frame1: torch.Tensor, alpha: float = 0.1, iterations: int = 100,
                 levels: int = 3) -> torch.Tensor:
    """Dense optical flow from ``frame0`` to ``frame1`` by Horn and Schunck's method, coarse to fine.

    ``frame0``, ``frame1``: ``(N, C, H, W)`` in [0, 1] (colour is averaged to gray). Returns
    ``flow (N, 2, H, W)``: channel 0 is the horizontal motion ``u`` (pixels per frame, positive to
    the right), channel 1 the vertical ``v`` (positive downwards). ``alpha`` weighs smoothness
    against brightness constancy; ``levels`` is the number of pyramid levels (motion larger than
    about a pixel needs more than one).
    """
    if frame0.shape != frame1.shape or frame0.dim() != 4:
        raise ValueError(f"frames must both be (N, C, H, W), got {tuple(frame0.shape)} and {tuple(frame1.shape)}")
    i0, i1 = _gray(frame0.float()), _gray(frame1.float())
    pyramid = [(i0, i1)]
    for _ in range(levels - 1):
        a, b = pyramid[-1]
        if min(a.shape[-2:]) < 16:
            break
        pyramid.append((F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)))
    flow = torch.zeros(i0.shape[0], 2, *pyramid[-1][0].shape[-2:], device=i0.device)
    for level, (a, b) in enumerate(reversed(pyramid)):
        if level > 0:
            flow = 2 * F.interpolate(flow, size=a.shape[-2:], mode="bilinear", align_corners=False)
        b_warped = _warp(b, flow)  # bring frame1 back towards frame0 by the current estimate
        flow = flow + _horn_schunck_step(a, b_warped, alpha, iterations)
    return flow


def _warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``image (N, 1, H, W)`` at ``x + flow``: undoes a motion by ``flow``."""
    n, _, h, w = image.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=image.device), torch.arange(w, device=image.device), indexing="ij")
    x = xs.float() + flow[:, 0]  # (N, H, W)
    y = ys.float() + flow[:, 1]
    grid = torch.stack([2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1], dim=-1)  # (N, H, W, 2)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _horn_schunck_step(i0: torch.Tensor, i1: torch.Tensor, alpha: float, iterations: int) -> torch.Tensor:
    # Derivatives averaged over a 2x2x2 cube of the two frames (Horn & Schunck 1981).
    kx = torch.tensor([[-1.0, 1.0], [-1.0, 1.0]], device=i0.device) / 4
    ky = torch.tensor([[-1.0, -1.0], [1.0, 1.0]], device=i0.device) / 4
    kt = torch.ones(2, 2, device=i0.device) / 4
    pad = (0, 1, 0, 1)  # right and bottom, so derivatives stay aligned with pixels
    a, b = F.pad(i0, pad, mode="replicate"), F.pad(i1, pad, mode="replicate")
    ix = F.conv2d(a, kx[None, None]) + F.conv2d(b, kx[None, None])  # (N, 1, H, W)
    iy = F.conv2d(a, ky[None, None]) + F.conv2d(b, ky[None, None])
    it = F.conv2d(b, kt[None, None]) - F.conv2d(a, kt[None, None])
    avg = torch.tensor([[1, 2, 1], [2, 0, 2], [1, 2, 1]], dtype=torch.float32, device=i0.device) / 12
    u = torch.zeros_like(i0)
    v = torch.zeros_like(i0)
    denom = alpha**2 + ix**2 + iy**2
    for _ in range(iterations):
        u_bar = F.conv2d(F.pad(u, (1, 1, 1, 1), mode="replicate"), avg[None, None])
        v_bar = F.conv2d(F.pad(v, (1, 1, 1, 1), mode="replicate"), avg[None, None])
        common = (ix * u_bar + iy * v_bar + it) / denom
        u = u_bar - ix * common
        v = v_bar - iy * common
    return torch.cat([u, v], dim=1)  # (N, 2, H, W)


def clip_flow(clip: torch.Tensor, **kwargs) -> torch.Tensor:
    """Optical flow between consecutive frames: ``(N, T, C, H, W)`` -> ``(N, T-1, 2, H, W)``."""
    _check_clip(clip)
    n, t = clip.shape[:2]
    if t < 2:
        raise ValueError(f"a clip needs at least 2 frames for optical flow, got {t}")
    first = clip[:, :-1].flatten(0, 1)  # (N*(T-1), C, H, W)
    second = clip[:, 1:].flatten(0, 1)
    flow = horn_schunck(first, second, **kwargs)  # (N*(T-1), 2, H, W)
    return flow.view(n, t - 1, 2, *flow.shape[-2:])


def flow_to_rgb(flow: torch.Tensor, max_magnitude: float | None = None) -> torch.Tensor:
    """Colour picture of a flow field ``(2, H, W)`` -> ``(3, H, W)`` in [0, 1]: the hue gives the
    direction (red: right, yellow-green: down, cyan-blue: left, purple: up), the brightness the
    speed relative to ``max_magnitude`` (default: the 99th percentile of the field's speeds)."""
    import numpy as np
    from matplotlib.colors import hsv_to_rgb

    if flow.dim() != 3 or flow.shape[0] != 2:
        raise ValueError(f"flow must be (2, H, W), got {tuple(flow.shape)}")
    u, v = flow[0].detach().cpu().numpy(), flow[1].detach().cpu().numpy()
    magnitude = np.hypot(u, v)
    top = max_magnitude if max_magnitude is not None else float(np.percentile(magnitude, 99))
    hue = (np.arctan2(v, u) % (2 * np.pi)) / (2 * np.pi)
    hsv = np.stack([hue, np.ones_like(hue), np.clip(magnitude / max(top, 1e-8), 0, 1)], axis=-1)
    return torch.from_numpy(hsv_to_rgb(hsv)).permute(2, 0, 1).float()  # (3, H, W)


def flow_figure(frame: torch.Tensor, flow: torch.Tensor, step: int = 8, title: str | None = None,
                max_magnitude: float | None = None):
    """Three panels: ``frame (C, H, W)``, the flow ``(2, H, W)`` as colour (:func:`flow_to_rgb`),
    and arrows every ``step`` pixels drawn over the frame. Returns a matplotlib Figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    from cvcourse.plots import to_numpy_image

    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    image = to_numpy_image(frame)
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("frame t")
    axes[1].imshow(to_numpy_image(flow_to_rgb(flow, max_magnitude)))
    axes[1].set_title("flow as colour")
    axes[2].imshow(image, cmap="gray", vmin=0, vmax=1)
    h, w = flow.shape[-2:]
    ys, xs = np.mgrid[step // 2:h:step, step // 2:w:step]
    u = flow[0].detach().cpu().numpy()[ys, xs]
    v = flow[1].detach().cpu().numpy()[ys, xs]
    axes[2].quiver(xs, ys, u, v, color="yellow", angles="xy", scale_units="xy", scale=0.25, width=0.006)
    axes[2].set_title("flow as arrows (x4)")
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# ConvLSTM
# ---------------------------------------------------------------------------------------------


class ConvLSTMCell(nn.Module):
    """An LSTM cell whose input, hidden and cell states are feature maps and whose matrix
    products are convolutions (Shi et al., 2015).

    ``forward(x (N, C_in, H, W), state=None)`` -> ``(h, (h, c))`` with ``h``, ``c`` ``(N, C_hidden, H, W)``.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.gates = nn.Conv2d(in_channels + hidden_channels, 4 * hidden_channels, kernel_size,
                               padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_channels, *x.shape[-2:])
            state = (zeros, zeros)
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)  # 4 x (N, C_hidden, H, W)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class ConvLSTMForecaster(nn.Module):
    """Predict the next frame: a ConvLSTM cell reads the frames one by one and a 1x1 conv
    turns its hidden state into the next frame's pixels.

    ``forward(clip (N, T, C, H, W))`` -> ``(N, T, C, H, W)``, where output ``t`` predicts frame ``t+1``.
    """

    def __init__(self, in_channels: int = 1, hidden_channels: int = 12, kernel_size: int = 3) -> None:
        super().__init__()
        self.cell = ConvLSTMCell(in_channels, hidden_channels, kernel_size)
        self.head = nn.Conv2d(hidden_channels, in_channels, 1)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        _check_clip(clip)
        state, outputs = None, []
        for t in range(clip.shape[1]):
            h, state = self.cell(clip[:, t], state)
            outputs.append(torch.sigmoid(self.head(h)))
        return torch.stack(outputs, dim=1)  # (N, T, C, H, W)

    @torch.no_grad()
    def rollout(self, context: torch.Tensor, steps: int) -> torch.Tensor:
        """Read ``context (N, T0, C, H, W)``, then predict ``steps`` frames, each fed back as the
        next input. Returns ``(N, steps, C, H, W)``."""
        _check_clip(context, "context")
        state, frame = None, None
        for t in range(context.shape[1]):
            h, state = self.cell(context[:, t], state)
            frame = torch.sigmoid(self.head(h))
        frames = [frame]
        for _ in range(steps - 1):
            h, state = self.cell(frames[-1], state)
            frames.append(torch.sigmoid(self.head(h)))
        return torch.stack(frames, dim=1)


# ---------------------------------------------------------------------------------------------
# Experiments (the chapter and the tests call these)
# ---------------------------------------------------------------------------------------------


def _moving_shapes(n: int, task: str, num_frames: int, size: int, seed: int, noise: float = 0.05):
    from cvcourse import synthetic

    return synthetic.moving_shapes(n, task=task, num_frames=num_frames, size=size, seed=seed, noise=noise)


def run_fusion_experiment(
    seed: int = 0,
    models: Sequence[str] = ("single_frame", "early_fusion", "c3d"),
    n_train: int = 512,
    n_test: int = 256,
    epochs: int = 6,
    num_frames: int = 8,
    size: int = 16,
    width: int = 16,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Train each of ``models`` (names from :data:`FUSION_MODELS`) on the motion-direction task
    (:func:`cvcourse.synthetic.moving_shapes` with ``task="direction"``, 4 classes) and return
    their test accuracies (fractions), plus ``"chance"`` (0.25). Everything is seeded by ``seed``."""
    from cvcourse import train

    clips, labels = _moving_shapes(n_train + n_test, "direction", num_frames, size, seed)
    train_clips, train_labels = clips[:n_train], labels[:n_train]
    test_clips, test_labels = clips[n_train:], labels[n_train:]
    num_classes = int(labels.max()) + 1
    result = {"chance": 1.0 / num_classes}
    for name in models:
        model = make_fusion_model(name, clips.shape[2], num_classes, num_frames, size, width, seed)
        train.fit(model, train_clips, train_labels, epochs=epochs, lr=3e-3, batch_size=32, seed=seed, device=device)
        result[name] = float(train.accuracy(model, test_clips, test_labels, device=device))
    return result


@dataclass
class AppearanceResult:
    """What :func:`run_appearance_experiment` returns."""

    accuracy: float
    model: FrameAverageNet
    test_clips: torch.Tensor
    test_labels: torch.Tensor
    frame_accuracy: float = field(default=0.0)


def run_appearance_experiment(
    seed: int = 0,
    n_train: int = 384,
    n_test: int = 192,
    epochs: int = 4,
    num_frames: int = 8,
    size: int = 16,
    width: int = 16,
    device: torch.device | str | None = None,
) -> AppearanceResult:
    """Train a :class:`FrameAverageNet` (one 2D CNN per frame, probabilities averaged over time)
    on the appearance task (``task="shape"``, 3 classes). Returns its test accuracy, the accuracy
    of single frames classified alone, the trained model and the test clips."""
    from cvcourse import train

    clips, labels = _moving_shapes(n_train + n_test, "shape", num_frames, size, seed)
    num_classes = int(labels.max()) + 1
    model = make_fusion_model("frame_average", clips.shape[2], num_classes, num_frames, size, width, seed)
    train.fit(model, clips[:n_train], labels[:n_train], epochs=epochs, lr=3e-3, batch_size=32, seed=seed, device=device)
    test_clips, test_labels = clips[n_train:], labels[n_train:]
    accuracy = float(train.accuracy(model, test_clips, test_labels, device=device))
    model = model.cpu().eval()
    with torch.no_grad():
        frame_pred = model.frame_logits(test_clips).argmax(-1)  # (N, T)
    frame_accuracy = float((frame_pred == test_labels[:, None]).float().mean())
    return AppearanceResult(accuracy, model, test_clips, test_labels, frame_accuracy)


@dataclass
class ForecastResult:
    """What :func:`run_forecast_experiment` returns (mean squared errors per pixel)."""

    model: ConvLSTMForecaster
    mse: float
    copy_last_mse: float
    losses: list[float]
    test_clips: torch.Tensor


def run_forecast_experiment(
    seed: int = 0,
    n_train: int = 256,
    n_test: int = 64,
    steps: int = 200,
    batch_size: int = 16,
    num_frames: int = 8,
    size: int = 16,
    hidden_channels: int = 12,
    burn_in: int = 2,
    device: torch.device | str | None = None,
) -> ForecastResult:
    """Train a :class:`ConvLSTMForecaster` to predict the next frame of drifting shapes
    (``moving_shapes(task="shape", noise=0)``: one pixel per frame in a random direction) with
    ``steps`` Adam steps (learning rate 0.01) on random batches, minimizing the mean squared error.

    The test error is the mean squared error per pixel of the predictions of frames
    ``burn_in+1 .. T-1`` (after the model has seen ``burn_in + 1`` frames, enough to tell the
    direction), next to the error of the naive forecast "the next frame equals the last one"."""
    from cvcourse.train import default_device

    device = torch.device(device) if device is not None else default_device()
    clips, _ = _moving_shapes(n_train + n_test, "shape", num_frames, size, seed, noise=0.0)
    train_clips, test_clips = clips[:n_train], clips[n_train:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ConvLSTMForecaster(clips.shape[2], hidden_channels, kernel_size=3).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, n_train, (batch_size,), generator=gen)
        batch = train_clips[idx].to(device)  # (B, T, C, H, W)
        pred = model(batch[:, :-1])  # (B, T-1, C, H, W): predictions of frames 1..T-1
        loss = F.mse_loss(pred[:, burn_in:], batch[:, 1 + burn_in:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model = model.cpu().eval()
    with torch.no_grad():
        pred = model(test_clips[:, :-1])
        mse = float(F.mse_loss(pred[:, burn_in:], test_clips[:, 1 + burn_in:]))
        copy_last = float(F.mse_loss(test_clips[:, burn_in:-1], test_clips[:, 1 + burn_in:]))
    return ForecastResult(model, mse, copy_last, losses, test_clips)


# ---------------------------------------------------------------------------------------------
# Per-frame classification of a real clip with an ImageNet model
# ---------------------------------------------------------------------------------------------


def classify_frames(model: nn.Module, clip: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Run an ImageNet classifier on every frame of ``clip (T, 3, H, W)`` in [0, 1].

    Frames are preprocessed by :func:`cvcourse.models.imagenet_preprocess`. Returns logits ``(T, 1000)`` on the CPU.
    """
    from cvcourse.models import imagenet_preprocess

    if clip.dim() != 4:
        raise ValueError(f"clip must be one clip (T, 3, H, W), got shape {tuple(clip.shape)}")
    device = next(model.parameters()).device
    outs = []
    with torch.no_grad():
        for start in range(0, clip.shape[0], batch_size):
            x = imagenet_preprocess(clip[start:start + batch_size]).to(device)  # (B, 3, 224, 224)
            outs.append(model(x).cpu())
    return torch.cat(outs)  # (T, 1000)


def average_frame_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax each frame's ``logits (T, K)`` and average over time -> probabilities ``(K,)``."""
    return logits.softmax(dim=-1).mean(dim=0)
