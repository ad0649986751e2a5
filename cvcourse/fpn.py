"""Feature pyramids: image pyramids, a backbone's stages, the Feature Pyramid Network, level assignment.

- :func:`image_pyramid`: the same image at halving resolutions.
- :func:`backbone_stages`: a torchvision ResNet's stages C2..C5 as a feature extractor (OrderedDict).
- :class:`SimpleFPN`: the top-down pathway with lateral connections, written out (same layout and
  results as ``torchvision.ops.FeaturePyramidNetwork``; see :meth:`SimpleFPN.from_torchvision`).
- :func:`fpn_level`, :func:`level_for_size`: which pyramid level a box of a given size is pooled from
  (FPN paper, Eq. 1: k = floor(k0 + log2(sqrt(w h) / 224)), clamped to [k_min, k_max]).
- :func:`pyramid_flops`: FLOPs of a featurized image pyramid vs one backbone pass + FPN.
- :func:`draw_designs`: schematic of the four designs (image pyramid, single scale, hierarchy, FPN).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "image_pyramid",
    "backbone_stages",
    "STAGE_NODES",
    "SimpleFPN",
    "fpn_level",
    "level_for_size",
    "pyramid_flops",
    "draw_designs",
    "draw_level_boxes",
]

#: torchvision ResNet node -> pyramid name (stride 4, 8, 16, 32)
STAGE_NODES = {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"}


def image_pyramid(image: torch.Tensor, num_levels: int = 4, factor: float = 2.0) -> list[torch.Tensor]:
    """The image (C, H, W) resized by 1, 1/factor, 1/factor**2, ... (bilinear, antialiased).

    Returns ``num_levels`` tensors (C, H_i, W_i), H_i = round(H / factor**i).
    """
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {tuple(image.shape)}")
    h, w = image.shape[-2:]
    out = []
    for i in range(num_levels):
        size = (max(1, round(h / factor**i)), max(1, round(w / factor**i)))
        out.append(F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0])
    return out


def backbone_stages(name: str = "resnet18", weights=None) -> tuple[nn.Module, list[int]]:
    """A torchvision ResNet cut into its four stages with ``create_feature_extractor``.

    Returns (extractor mapping images (N, 3, H, W) to OrderedDict c2..c5 of (N, C_k, H/2^k, W/2^k),
    list of the stages' channel counts). ``weights=None`` (random init) is enough for shapes.
    """
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    if not name.startswith("resnet"):
        raise ValueError(f"backbone {name!r} is not supported; use a torchvision ResNet such as 'resnet18'")
    model = getattr(torchvision.models, name)(weights=weights).eval()
    extractor = create_feature_extractor(model, return_nodes=dict(STAGE_NODES))
    with torch.no_grad():
        shapes = extractor(torch.zeros(1, 3, 64, 64))
    return extractor, [v.shape[1] for v in shapes.values()]


class SimpleFPN(nn.Module):
    """Feature Pyramid Network: lateral 1x1 convs, nearest-neighbour top-down upsampling and sum, 3x3 smoothing.

    forward: OrderedDict of maps ordered fine to coarse, (N, C_i, H_i, W_i) -> OrderedDict with the same
    keys of (N, out_channels, H_i, W_i). Every output level carries the coarse (semantic) information
    of the levels above it.
    """

    def __init__(self, in_channels_list: list[int], out_channels: int = 64) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels_list)
        self.smooth = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels_list)

    def forward(self, features: "OrderedDict[str, torch.Tensor]") -> "OrderedDict[str, torch.Tensor]":
        names, maps = list(features.keys()), list(features.values())
        top = self.lateral[-1](maps[-1])  # coarsest level, (N, D, h, w)
        outs = [self.smooth[-1](top)]
        for i in range(len(maps) - 2, -1, -1):
            lateral = self.lateral[i](maps[i])  # (N, D, H_i, W_i)
            top = lateral + F.interpolate(top, size=lateral.shape[-2:], mode="nearest")  # upsample, add
            outs.insert(0, self.smooth[i](top))
        return OrderedDict(zip(names, outs))

    @classmethod
    def from_torchvision(cls, fpn: nn.Module) -> "SimpleFPN":
        """Copy the weights of a ``torchvision.ops.FeaturePyramidNetwork`` (no norm layer, no extra blocks)."""
        inner = [block[0] for block in fpn.inner_blocks]
        layer = [block[0] for block in fpn.layer_blocks]
        ours = cls([c.in_channels for c in inner], inner[0].out_channels)
        with torch.no_grad():
            for dst, src in zip(list(ours.lateral) + list(ours.smooth), inner + layer):
                dst.weight.copy_(src.weight)
                dst.bias.copy_(src.bias)
        return ours


def fpn_level(
    boxes: torch.Tensor,
    k_min: int = 2,
    k_max: int = 5,
    canonical_size: float = 224.0,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Pyramid level k of each box (M, 4) [x0, y0, x1, y1] in input pixels -> (M,) int64 in [k_min, k_max].

    k = floor(k0 + log2(sqrt(w h) / 224)) (FPN paper, Eq. 1), clamped; a 224 x 224 box goes to k0 = 4,
    a box half as wide and high to level 3. ``eps`` guards exact powers of two against rounding
    (torchvision's LevelMapper uses the same 1e-6).
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float64)
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=0)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    scale = torch.sqrt(w * h)  # (M,)
    k = torch.floor(canonical_level + torch.log2(scale / canonical_size) + eps)
    return k.clamp(min=k_min, max=k_max).to(torch.int64)


def level_for_size(width: float, height: float, **kwargs) -> int:
    """:func:`fpn_level` of one box of ``width`` x ``height`` pixels."""
    return int(fpn_level(torch.tensor([[0.0, 0.0, float(width), float(height)]]), **kwargs)[0])


def pyramid_flops(
    name: str = "resnet18", image_size: int = 224, scales=(2.0, 1.0, 0.5, 0.25), out_channels: int = 256
) -> dict:
    """FLOPs (counted by ``torch.utils.flop_counter.FlopCounterMode``) of two ways to get multi-scale features.

    'image_pyramid': the backbone run on the image resized by each factor in ``scales`` (an image
    pyramid meant to find small objects must upsample, hence the 2);
    'fpn': the backbone once at ``image_size`` plus a torchvision FeaturePyramidNetwork with ``out_channels``.
    Returns a dict with both counts and their ratio (image pyramid / FPN).
    """
    from torch.utils.flop_counter import FlopCounterMode
    from torchvision.ops import FeaturePyramidNetwork

    extractor, channels = backbone_stages(name)
    fpn = FeaturePyramidNetwork(channels, out_channels).eval()
    # count on the "meta" device: shapes and FLOPs only, no arithmetic is done
    extractor, fpn = extractor.to("meta"), fpn.to("meta")
    image = torch.zeros(1, 3, image_size, image_size, device="meta")
    with torch.no_grad():
        with FlopCounterMode(display=False) as pyramid_counter:
            for factor in scales:
                size = max(32, round(image_size * factor))
                extractor(F.interpolate(image, size=(size, size)))
        with FlopCounterMode(display=False) as fpn_counter:
            fpn(extractor(image))
    pyramid, single = pyramid_counter.get_total_flops(), fpn_counter.get_total_flops()
    return {"image_pyramid": int(pyramid), "fpn": int(single), "ratio": pyramid / single}


# ----------------------------------------------------------------------------- figures
def draw_designs():
    """Schematic of (a) featurized image pyramid, (b) single-scale features, (c) pyramidal feature
    hierarchy, (d) Feature Pyramid Network. Rectangles are feature maps; thicker edges = stronger
    semantics; highlighted maps are those used for prediction. Returns a matplotlib Figure."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, Rectangle

    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    sizes = [1.6, 1.2, 0.85, 0.55]
    ys = [0.2, 2.0, 3.4, 4.5]

    def box(ax, cx, y, s, lw=1.0, color="tab:blue", fill=None):
        ax.add_patch(Rectangle((cx - s / 2, y), s, s * 0.55, lw=lw, edgecolor=color,
                               facecolor=fill or "none"))

    def arrow(ax, p, q, color="k"):
        ax.add_patch(FancyArrowPatch(p, q, arrowstyle="-|>", mutation_scale=9, color=color, lw=1))

    titles = ["(a) image pyramid", "(b) single scale", "(c) feature hierarchy", "(d) FPN"]
    for ax, title in zip(axes, titles):
        ax.set_xlim(-0.2, 4.2), ax.set_ylim(-0.2, 5.6), ax.set_aspect("equal"), ax.axis("off")
        ax.set_title(title, fontsize=11)
    pred = "#fde0a6"
    # (a): an image per scale, each with its own (strong) feature map
    for s, y in zip(sizes, ys[:4]):
        box(axes[0], 1.0, y, s, lw=1, color="gray", fill="#e8e8e8")
        box(axes[0], 3.0, y, s * 0.6, lw=3, fill=pred)
        arrow(axes[0], (1.0 + s / 2 + 0.05, y + s * 0.27), (3.0 - s * 0.3 - 0.05, y + s * 0.17))
    # (b), (c), (d): one image, a bottom-up stack
    for k, ax in enumerate(axes[1:], start=1):
        box(ax, 1.0, ys[0], sizes[0], color="gray", fill="#e8e8e8")
        for i in range(1, 4):
            strong = i == 3
            fill = pred if (k == 1 and strong) or (k == 2) else None
            box(ax, 1.0, ys[i], sizes[i], lw=1 + i * 0.7, fill=fill)
            arrow(ax, (1.0, ys[i - 1] + sizes[i - 1] * 0.55), (1.0, ys[i]))
    # (d): top-down pathway, lateral connections, predictions at every level
    ax = axes[3]
    for i in range(1, 4):
        box(ax, 3.0, ys[i], sizes[i], lw=3, fill=pred)
        arrow(ax, (1.0 + sizes[i] / 2 + 0.05, ys[i] + sizes[i] * 0.27), (3.0 - sizes[i] / 2 - 0.05, ys[i] + sizes[i] * 0.27), color="tab:green")
        if i < 3:
            arrow(ax, (3.0, ys[i + 1]), (3.0, ys[i] + sizes[i] * 0.55), color="tab:red")
    ax.text(3.55, 3.0, "top-down\n(2x up)", color="tab:red", fontsize=8)
    ax.text(1.5, 1.2, "lateral 1x1", color="tab:green", fontsize=8)
    fig.tight_layout()
    return fig


def draw_level_boxes(image: torch.Tensor, boxes: torch.Tensor, ax=None):
    """Draw boxes (M, 4) [x0, y0, x1, y1] on an image (3, H, W), coloured and labelled by :func:`fpn_level`.
    Returns the matplotlib Axes."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
    colors = {2: "tab:red", 3: "tab:orange", 4: "tab:green", 5: "tab:blue"}
    for b, k in zip(boxes.tolist(), fpn_level(boxes).tolist()):
        ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, lw=2, edgecolor=colors[k]))
        side = math.sqrt((b[2] - b[0]) * (b[3] - b[1]))
        ax.text(b[0] + 2, b[1] + 10, f"P{k} ({side:.0f} px)", color="white", fontsize=8,
                bbox={"facecolor": colors[k], "alpha": 0.8, "pad": 1, "lw": 0})
    ax.axis("off")
    return ax
