"""Tests of cvcourse.fpn against torchvision (FeaturePyramidNetwork, LevelMapper) and closed forms."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.poolers import LevelMapper

from cvcourse import fpn


def test_image_pyramid_halves_each_level():
    levels = fpn.image_pyramid(torch.rand(3, 64, 96), num_levels=4)
    assert [tuple(x.shape) for x in levels] == [(3, 64, 96), (3, 32, 48), (3, 16, 24), (3, 8, 12)]
    # the mean colour survives antialiased downsampling
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(fpn.image_pyramid(image, 3)[2].mean(), image.mean(), atol=1e-3, rtol=0)


def test_backbone_stages_shapes_and_strides():
    extractor, channels = fpn.backbone_stages("resnet18")
    assert channels == [64, 128, 256, 512]
    with torch.no_grad():
        feats = extractor(torch.rand(1, 3, 224, 224))
    assert list(feats) == ["c2", "c3", "c4", "c5"]
    assert [tuple(v.shape[-2:]) for v in feats.values()] == [(56, 56), (28, 28), (14, 14), (7, 7)]


def test_simple_fpn_matches_torchvision():
    torch.manual_seed(0)
    channels = [8, 16, 32]
    ref = FeaturePyramidNetwork(channels, 12).eval()
    ours = fpn.SimpleFPN.from_torchvision(ref).eval()
    feats = OrderedDict(
        (f"c{i + 2}", torch.randn(2, c, 40 // 2**i, 36 // 2**i)) for i, c in enumerate(channels)
    )  # includes odd sizes (10 x 9): nearest upsampling to the lateral's size
    with torch.no_grad():
        out, expected = ours(feats), ref(feats)
    assert list(out) == list(expected)
    for name in expected:
        assert out[name].shape == expected[name].shape == (2, 12) + feats[name].shape[-2:]
        torch.testing.assert_close(out[name], expected[name], rtol=1e-5, atol=1e-5)


def test_simple_fpn_top_down_carries_coarse_information():
    """Changing only the coarsest input changes the finest output (not true of the lateral path alone)."""
    torch.manual_seed(0)
    model = fpn.SimpleFPN([4, 4], 4)
    feats = OrderedDict(p2=torch.randn(1, 4, 8, 8), p3=torch.randn(1, 4, 4, 4))
    changed = OrderedDict(p2=feats["p2"], p3=feats["p3"] + 1.0)
    with torch.no_grad():
        assert (model(feats)["p2"] - model(changed)["p2"]).abs().max() > 1e-4


def _random_boxes(n, seed):
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=gen) * 300
    wh = torch.exp(torch.rand(n, 2, generator=gen) * math.log(900)) + 1  # 2 .. 900 px, log-uniform
    return torch.cat([xy, xy + wh], 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_fpn_level_matches_torchvision_level_mapper(seed):
    boxes = _random_boxes(500, seed)
    ours = fpn.fpn_level(boxes, k_min=2, k_max=5)
    mapper = LevelMapper(k_min=2, k_max=5, canonical_scale=224, canonical_level=4)
    expected = mapper([boxes]) + 2  # LevelMapper returns k - k_min
    assert torch.equal(ours, expected)
    assert set(ours.tolist()) == {2, 3, 4, 5}


def test_fpn_level_closed_form_and_edges():
    assert fpn.level_for_size(224, 224) == 4
    assert fpn.level_for_size(112, 112) == 3  # exact power of two: guarded by eps
    assert fpn.level_for_size(111, 111) == 2
    assert fpn.level_for_size(448, 448) == 5
    assert fpn.level_for_size(10, 10) == 2  # clamped below
    assert fpn.level_for_size(2000, 2000) == 5  # clamped above
    assert fpn.level_for_size(448, 112) == 4  # sqrt(w h) = 224


def test_feature_pyramid_cheaper_than_image_pyramid():
    cost = fpn.pyramid_flops("resnet18", image_size=224, scales=(2.0, 1.0, 0.5, 0.25), out_channels=256)
    single = fpn.pyramid_flops("resnet18", image_size=224, scales=(1.0,), out_channels=256)["image_pyramid"]
    # closed form: a conv net's FLOPs scale with the pixel count: 4 + 1 + 1/4 + 1/16 passes
    assert abs(cost["image_pyramid"] / single - (4 + 1 + 0.25 + 0.0625)) < 0.15
    # the chapter's claim: one pass plus FPN is cheaper than the pyramid (ratio about 2)
    assert cost["ratio"] > 1.5, cost
