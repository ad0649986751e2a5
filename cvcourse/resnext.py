"""ResNet bottleneck vs ResNeXt block: cardinality, grouped convolutions, parameter and MAC budgets.

Blocks take feature maps (N, C, H, W) and return (N, C_out, H, W) (stride 1 throughout).
Costs are counted in multiply-accumulates (MACs), the unit that the ResNet and ResNeXt papers
call "FLOPs"; one MAC is two floating-point operations.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "ResNetBottleneck",
    "ResNeXtBlock",
    "split_transform_merge",
    "count_params",
    "conv_weight_params",
    "count_macs",
    "BlockCost",
    "block_cost",
    "compare_blocks",
    "torchvision_param_counts",
    "torchvision_costs",
    "CARDINALITY_SETTINGS",
    "cardinality_sweep",
    "ILSVRC_TOP5",
    "HUMAN_TOP5",
    "RESNEXT50_TOP1",
]


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]


class ResNetBottleneck(nn.Module):
    """ResNet's bottleneck (He et al., 2016): 1x1 reduce to ``width``, 3x3, 1x1 expand; plus the input.

    (N, channels, H, W) -> (N, channels, H, W).
    """

    def __init__(self, channels: int = 256, width: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(channels, width, 1), nn.ReLU(inplace=True),
            *_conv_bn(width, width, 3), nn.ReLU(inplace=True),
            *_conv_bn(width, channels, 1),
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.body(x))


class ResNeXtBlock(nn.Module):
    """ResNeXt block (Xie et al., 2017), grouped form: ``cardinality`` parallel paths of
    ``group_width`` channels each, run as one grouped 3x3 convolution.

    (N, channels, H, W) -> (N, channels, H, W); inner width = cardinality * group_width.
    """

    def __init__(self, channels: int = 256, cardinality: int = 32, group_width: int = 4) -> None:
        super().__init__()
        inner = cardinality * group_width
        self.cardinality = cardinality
        self.body = nn.Sequential(
            *_conv_bn(channels, inner, 1), nn.ReLU(inplace=True),
            *_conv_bn(inner, inner, 3, groups=cardinality), nn.ReLU(inplace=True),
            *_conv_bn(inner, channels, 1),
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.body(x))


def split_transform_merge(block: ResNeXtBlock, x: torch.Tensor) -> torch.Tensor:
    """The same block written as ``cardinality`` explicit paths (the paper's form (a)).

    Each path i reduces x to ``group_width`` channels with its own 1x1 conv, applies its own 3x3
    conv, expands back with its own 1x1 conv; the paths' outputs are summed, added to x, ReLU.
    Weights are sliced from ``block``, so the result equals ``block(x)`` (in eval mode, where
    BatchNorm is a fixed per-channel affine map). (N, C, H, W) -> (N, C, H, W).
    """
    if block.training:
        raise ValueError("split_transform_merge needs block.eval(): BatchNorm must use running statistics")
    conv1, bn1, _, conv2, bn2, _, conv3, bn3 = block.body
    g = block.cardinality
    d = conv2.out_channels // g
    total = torch.zeros(x.shape[0], conv3.out_channels, *x.shape[2:], dtype=x.dtype, device=x.device)

    def bn(layer: nn.BatchNorm2d, t: torch.Tensor, sl: slice) -> torch.Tensor:
        scale = layer.weight[sl] / torch.sqrt(layer.running_var[sl] + layer.eps)
        shift = layer.bias[sl] - layer.running_mean[sl] * scale
        return t * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)

    for i in range(g):
        sl = slice(i * d, (i + 1) * d)
        h = torch.relu(bn(bn1, nn.functional.conv2d(x, conv1.weight[sl]), sl))  # (N, d, H, W)
        h = torch.relu(bn(bn2, nn.functional.conv2d(h, conv2.weight[sl], padding=1), sl))  # (N, d, H, W)
        total = total + nn.functional.conv2d(h, conv3.weight[:, sl])  # (N, C, H, W), this path's share
    out = bn(bn3, total, slice(None))
    return torch.relu(x + out)


def count_params(module: nn.Module) -> int:
    """Number of trainable parameters (BatchNorm's scale and shift included)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def conv_weight_params(module: nn.Module) -> int:
    """Parameters of the convolution weights only (the papers' block counts)."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Conv2d))


@contextlib.contextmanager
def _hooks(module: nn.Module, hook) -> Iterator[None]:
    kinds = (nn.Conv2d, nn.Linear, nn.MultiheadAttention)
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, kinds)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def count_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of every Conv2d, Linear and self-attention layer in one forward pass
    of a single input.

    ``input_shape`` is (C, H, W) (a batch of one is made). A Conv2d costs
    out_channels * H_out * W_out * (in_channels / groups) * kh * kw; a Linear in * out per row;
    an ``nn.MultiheadAttention`` over L tokens of width E costs 4 L E^2 (query, key, value and
    output projections) + 2 L^2 E (query-key products and the weighted sum of values).
    Element-wise layers (BatchNorm, ReLU, softmax, additions) are not counted, as in the papers.
    Works on the ``meta`` device (shapes only, no arithmetic).
    Forward hooks are removed afterwards, even on error; the module's mode is restored.
    """
    total = 0

    def hook(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Conv2d):
            kh, kw = layer.kernel_size
            total += output.numel() * (layer.in_channels // layer.groups) * kh * kw
        elif isinstance(layer, nn.MultiheadAttention):
            query = inputs[0]  # (L, N, E), or (N, L, E) when batch_first; N = 1 here
            length = query.shape[1] if layer.batch_first else query.shape[0]
            dim = layer.embed_dim
            total += 4 * length * dim * dim + 2 * length * length * dim
        else:  # nn.Linear: output (..., out_features)
            total += output.numel() * layer.in_features

    was_training = module.training
    module.eval()
    try:
        with _hooks(module, hook):
            module(torch.zeros(1, *input_shape, device=next(module.parameters()).device))
    finally:
        module.train(was_training)
    return int(total)


@dataclass
class BlockCost:
    """Budget of one block on a feature map of ``input_shape`` (C, H, W)."""

    name: str
    conv_params: int
    params: int
    macs: int


def block_cost(name: str, block: nn.Module, input_shape: tuple[int, int, int] = (256, 56, 56)) -> BlockCost:
    """Parameters (conv weights; all) and MACs of ``block`` on ``input_shape`` (C, H, W)."""
    return BlockCost(name, conv_weight_params(block), count_params(block), count_macs(block, input_shape))


def compare_blocks(
    channels: int = 256, width: int = 64, cardinality: int = 32, group_width: int = 4, size: int = 56
) -> list[BlockCost]:
    """The paper's comparison: a ResNet bottleneck of ``width`` vs a ResNeXt block of
    ``cardinality`` x ``group_width``, both on (channels, size, size) maps."""
    shape = (channels, size, size)
    with torch.device("meta"):  # shapes only: counting needs no arithmetic
        blocks = [ResNetBottleneck(channels, width), ResNeXtBlock(channels, cardinality, group_width)]
    return [
        block_cost(f"ResNet bottleneck (1 x {width}d)", blocks[0], shape),
        block_cost(f"ResNeXt block ({cardinality} x {group_width}d)", blocks[1], shape),
    ]


#: The paper's ResNeXt-50 settings of about equal budget: (cardinality, group width).
CARDINALITY_SETTINGS: tuple[tuple[int, int], ...] = ((1, 64), (2, 40), (4, 24), (8, 14), (32, 4))


def cardinality_sweep(
    settings: tuple[tuple[int, int], ...] = CARDINALITY_SETTINGS, channels: int = 256, size: int = 56
) -> list[BlockCost]:
    """Budget of a ResNeXt block for each (cardinality, group width) setting on
    (channels, size, size) maps; (1, 64) is exactly the ResNet bottleneck."""
    with torch.device("meta"):  # shapes only: counting needs no arithmetic
        blocks = [ResNeXtBlock(channels, c, d) for c, d in settings]
    return [block_cost(f"{c} x {d}d", b, (channels, size, size)) for (c, d), b in zip(settings, blocks)]


def torchvision_param_counts() -> dict[str, int]:
    """Parameters of torchvision's ResNet-50 and ResNeXt-50 (32x4d), randomly initialised
    (no weights are downloaded)."""
    from torchvision import models

    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        return {
            "ResNet-50": count_params(models.resnet50(weights=None)),
            "ResNeXt-50 (32x4d)": count_params(models.resnext50_32x4d(weights=None)),
        }


def torchvision_costs(names: tuple[str, ...] = ("resnet50", "resnext50_32x4d", "vit_b_16")) -> dict[str, BlockCost]:
    """Parameters and MACs (:func:`count_macs`, one 3 x 224 x 224 image) of torchvision models
    built with ``weights=None`` on the ``meta`` device: shapes only, so it takes well under a second."""
    from torchvision import models

    out = {}
    for name in names:
        with torch.device("meta"):
            model = getattr(models, name)(weights=None)
        out[name] = BlockCost(name, conv_weight_params(model), count_params(model), count_macs(model, (3, 224, 224)))
    return out


# Published numbers, cited (not measured here).
ILSVRC_TOP5: tuple[tuple[int, str, float, str], ...] = (
    # (year, winning entry, top-5 classification error in %, source)
    (2010, "NEC-UIUC", 28.2, "Russakovsky et al., IJCV 2015"),
    (2011, "XRCE", 25.8, "Russakovsky et al., IJCV 2015"),
    (2012, "SuperVision (AlexNet)", 15.3, "Krizhevsky et al., NeurIPS 2012"),
    (2013, "Clarifai", 11.7, "Russakovsky et al., IJCV 2015"),
    (2014, "GoogLeNet", 6.7, "Szegedy et al., CVPR 2015"),
    (2015, "MSRA (ResNet)", 3.57, "He et al., CVPR 2016"),
    (2016, "Trimps-Soushen", 2.99, "ILSVRC 2016 results"),
    (2017, "SENet", 2.25, "Hu et al., CVPR 2018"),
)
HUMAN_TOP5 = 5.1  # % top-5 error of one trained human annotator, Russakovsky et al., IJCV 2015

RESNEXT50_TOP1: tuple[tuple[str, float], ...] = (
    # (setting cardinality x width, ImageNet-1k top-1 error in %), Xie et al., CVPR 2017, Table 3
    ("1 x 64d (ResNet-50)", 23.9),
    ("2 x 40d", 23.0),
    ("4 x 24d", 22.6),
    ("8 x 14d", 22.3),
    ("32 x 4d", 22.2),
)
