"""ResNeXt blocks and the MAC counter, against closed forms, PyTorch's FlopCounterMode and torchvision."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cvcourse import resnext


def _randomize_bn(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)


def _closed_form_conv_params(c: int, width: int, cardinality: int, group_width: int) -> tuple[int, int]:
    # The paper's arithmetic (Xie et al., 2017, Sec. 3.3): 256*64 + 3*3*64*64 + 64*256 and
    # C * (256*d + 3*3*d*d + d*256).
    resnet = c * width + 9 * width * width + width * c
    resnext = cardinality * (c * group_width + 9 * group_width * group_width + group_width * c)
    return resnet, resnext


def test_block_shapes_and_residual():
    x = torch.randn(2, 256, 7, 7)
    for block in (resnext.ResNetBottleneck(), resnext.ResNeXtBlock()):
        assert block(x).shape == x.shape
    # groups really are 32 and each sees 4 channels
    conv = resnext.ResNeXtBlock().body[3]
    assert conv.groups == 32 and conv.weight.shape == (128, 4, 3, 3)


def test_conv_params_match_paper_closed_form():
    costs = resnext.compare_blocks()
    want_resnet, want_resnext = _closed_form_conv_params(256, 64, 32, 4)
    assert (want_resnet, want_resnext) == (69632, 70144)
    assert costs[0].conv_params == want_resnet
    assert costs[1].conv_params == want_resnext


def test_params_counted_like_torch():
    for block in (resnext.ResNetBottleneck(), resnext.ResNeXtBlock()):
        assert resnext.count_params(block) == sum(p.numel() for p in block.parameters())


@pytest.mark.parametrize(
    "layer, shape",
    [
        (nn.Conv2d(8, 12, 3, padding=1), (8, 10, 10)),
        (nn.Conv2d(8, 12, 3, stride=2), (8, 11, 9)),
        (nn.Conv2d(8, 16, (3, 5), padding=(1, 2), groups=4), (8, 7, 7)),
        (nn.Sequential(nn.Conv2d(3, 6, 1), nn.Flatten(), nn.Linear(6 * 5 * 5, 7)), (3, 5, 5)),
    ],
)
def test_count_macs_matches_torch_flop_counter(layer, shape):
    with FlopCounterMode(display=False) as counter:
        layer(torch.zeros(1, *shape))
    assert resnext.count_macs(layer, shape) == counter.get_total_flops() // 2


def test_count_macs_closed_form_and_hooks_removed():
    block = resnext.ResNeXtBlock()
    block.train()
    macs = resnext.count_macs(block, (256, 56, 56))
    # every conv is stride 1 with 'same' padding, so MACs = conv weights * H * W
    assert macs == resnext.conv_weight_params(block) * 56 * 56 == 70144 * 3136
    assert block.training, "count_macs must restore the mode"
    assert all(not m._forward_hooks for m in block.modules()), "hooks left registered"


def test_blocks_have_same_budget_within_5_percent():
    resnet, resnext_block = resnext.compare_blocks()
    assert abs(resnext_block.conv_params / resnet.conv_params - 1) < 0.05
    assert abs(resnext_block.params / resnet.params - 1) < 0.05
    assert abs(resnext_block.macs / resnet.macs - 1) < 0.05
    # about 0.22 G multiply-adds each on a 56 x 56 map (0.44 GFLOPs)
    assert 0.21e9 < resnet.macs < 0.23e9


def test_split_transform_merge_equals_grouped_block():
    block = resnext.ResNeXtBlock(channels=64, cardinality=8, group_width=4)
    _randomize_bn(block)
    block.eval()
    x = torch.randn(2, 64, 6, 6, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(resnext.split_transform_merge(block, x), block(x), rtol=1e-4, atol=1e-5)
    block.train()
    with pytest.raises(ValueError):
        resnext.split_transform_merge(block, x)


def test_torchvision_full_model_counts():
    counts = resnext.torchvision_param_counts()
    assert counts == {"ResNet-50": 25_557_032, "ResNeXt-50 (32x4d)": 25_028_904}
    assert abs(counts["ResNeXt-50 (32x4d)"] / counts["ResNet-50"] - 1) < 0.05


def test_cited_tables_are_consistent():
    years = [row[0] for row in resnext.ILSVRC_TOP5]
    assert years == list(range(2010, 2018))
    errors = [row[2] for row in resnext.ILSVRC_TOP5]
    assert errors == sorted(errors, reverse=True)
    top1 = [e for _, e in resnext.RESNEXT50_TOP1]
    assert top1 == sorted(top1, reverse=True)


def test_cardinality_sweep_keeps_budget():
    sweep = resnext.cardinality_sweep()
    assert [c.name for c in sweep] == ["1 x 64d", "2 x 40d", "4 x 24d", "8 x 14d", "32 x 4d"]
    for cost, (c, d) in zip(sweep, resnext.CARDINALITY_SETTINGS):
        assert cost.conv_params == c * (256 * d + 9 * d * d + d * 256)
    params = [c.conv_params for c in sweep]
    assert max(params) / min(params) - 1 < 0.05
    # C = 1 is exactly the ResNet bottleneck
    assert sweep[0].params == resnext.count_params(resnext.ResNetBottleneck(256, 64))


@pytest.mark.parametrize("name", ["resnet50", "resnext50_32x4d", "vit_b_16"])
def test_full_model_macs_match_torch_flop_counter(name):
    from torchvision import models

    cost = resnext.torchvision_costs((name,))[name]
    with torch.device("meta"):
        model = getattr(models, name)(weights=None).eval()
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, 224, 224))
    want = counter.get_total_flops() // 2
    assert abs(cost.macs / want - 1) < 0.01, (cost.macs, want)


def test_full_model_costs_stated_in_chapter():
    full = resnext.torchvision_costs()
    r50, rx50, vit = full["resnet50"], full["resnext50_32x4d"], full["vit_b_16"]
    assert (r50.params, rx50.params, vit.params) == (25_557_032, 25_028_904, 86_567_656)
    assert round(r50.macs / 1e9, 2) == 4.09 and round(rx50.macs / 1e9, 2) == 4.23
    assert round(rx50.params / r50.params - 1, 2) == -0.02  # "about 2 % fewer"
    assert round(vit.params / rx50.params, 1) == 3.5 and round(vit.macs / rx50.macs) == 4
