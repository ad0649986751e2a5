"""Tests of cvcourse.video against independent oracles (PyTorch layers, NumPy, OpenCV, closed forms),
and the claims of the video chapter (book/video.md) on the chapter's seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from cvcourse import video

# ---------------------------------------------------------------------------------------------
# Tensors and 3D-convolution arithmetic
# ---------------------------------------------------------------------------------------------


def test_early_fusion_puts_frame_channels_in_order():
    clip = torch.rand(2, 5, 3, 4, 6)
    fused = video.early_fusion(clip)
    expected = torch.cat([clip[:, t] for t in range(5)], dim=1)  # frame 0's channels first
    assert fused.shape == (2, 15, 4, 6)
    assert torch.equal(fused, expected)


def test_conv3d_layout_swaps_time_and_channels():
    clip = torch.rand(2, 5, 3, 4, 6)
    out = video.to_conv3d_layout(clip)
    assert out.shape == (2, 3, 5, 4, 6)
    assert torch.equal(out[1, 2, 4], clip[1, 4, 2])


def test_bad_clip_rank_names_the_fix():
    with pytest.raises(ValueError, match="unsqueeze"):
        video.early_fusion(torch.rand(5, 3, 4, 4))


@pytest.mark.parametrize(
    "shape, out_c, k, s, p, d",
    [
        ((1, 16, 30, 128, 128), 32, 3, 1, 0, 1),  # the lecture's example
        ((2, 3, 16, 112, 112), 8, (3, 7, 7), (1, 2, 2), (1, 3, 3), 1),
        ((1, 4, 9, 20, 17), 5, (2, 3, 4), (2, 1, 3), (0, 2, 1), (2, 1, 2)),
        ((3, 1, 5, 5, 5), 2, 5, 1, 0, 1),
    ],
)
def test_conv3d_output_shape_matches_pytorch(shape, out_c, k, s, p, d):
    conv = nn.Conv3d(shape[1], out_c, k, stride=s, padding=p, dilation=d, device="meta")
    expected = tuple(conv(torch.empty(shape, device="meta")).shape)
    assert video.conv3d_output_shape(shape, out_c, k, s, p, d) == expected


def test_lecture_example_shape():
    assert video.conv3d_output_shape((1, 16, 30, 128, 128), 32, 3) == (1, 32, 28, 126, 126)


def test_conv3d_output_shape_rejects_too_small_inputs():
    with pytest.raises(ValueError, match="too small"):
        video.conv3d_output_shape((1, 1, 2, 10, 10), 4, 3)


@pytest.mark.parametrize("cin, cout, k, bias, groups", [(16, 32, 3, True, 1), (6, 4, (1, 3, 5), False, 2), (8, 8, 3, True, 8)])
def test_conv3d_num_params_matches_pytorch(cin, cout, k, bias, groups):
    conv = nn.Conv3d(cin, cout, k, bias=bias, groups=groups)
    assert video.conv3d_num_params(cin, cout, k, bias, groups) == sum(p.numel() for p in conv.parameters())


def test_layer_costs_are_measured_correctly():
    rows = {r["layer"]: r for r in video.layer_costs(in_channels=2, out_channels=4, num_frames=6, size=10)}
    assert rows["2D conv, one frame"]["params"] == 4 * 2 * 9 + 4
    assert rows["2D conv, early fusion"]["params"] == 4 * 12 * 9 + 4
    assert rows["3D conv"]["params"] == 4 * 2 * 27 + 4
    assert rows["3D conv"]["output_shape"] == (1, 4, 6, 10, 10)
    assert rows["2D conv, every frame"]["output_shape"] == (6, 4, 10, 10)
    assert rows["2D conv, early fusion"]["output_shape"] == (1, 4, 10, 10)
    assert math.isclose(rows["3D conv"]["activation_mb"], 4 * 6 * 100 * 4 / 2**20)
    # One output value of the 3D conv costs Cin * 27 multiply-adds.
    assert math.isclose(rows["3D conv"]["mult_adds"], 4 * 6 * 100 * 2 * 27 / 1e6)


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", video.FUSION_MODELS)
def test_every_fusion_model_maps_clips_to_logits_and_trains(name):
    model = video.make_fusion_model(name, in_channels=1, num_classes=4, num_frames=8, size=16, seed=0)
    clip = torch.rand(3, 8, 1, 16, 16)
    logits = model(clip)
    assert logits.shape == (3, 4)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_make_fusion_model_is_seeded():
    a = video.make_fusion_model("c3d", seed=3)
    b = video.make_fusion_model("c3d", seed=3)
    c = video.make_fusion_model("c3d", seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_single_frame_model_ignores_the_other_frames():
    model = video.make_fusion_model("single_frame").eval()
    clip = torch.rand(2, 8, 1, 16, 16)
    other = torch.rand(2, 8, 1, 16, 16)
    other[:, 4] = clip[:, 4]  # same middle frame, everything else different
    assert torch.allclose(model(clip), model(other))


def test_frame_average_is_invariant_to_frame_order_but_early_fusion_is_not():
    clip = torch.rand(2, 8, 1, 16, 16)
    reversed_clip = clip.flip(1)
    avg = video.make_fusion_model("frame_average").eval()
    early = video.make_fusion_model("early_fusion").eval()
    assert torch.allclose(avg(clip), avg(reversed_clip), atol=1e-6)
    assert not torch.allclose(early(clip), early(reversed_clip), atol=1e-4)


def test_frame_average_returns_log_of_mean_probabilities():
    model = video.FrameAverageNet(num_classes=3).eval()
    clip = torch.rand(2, 5, 1, 16, 16)
    per_frame = model.frame_logits(clip)  # (N, T, K)
    expected = np.exp(per_frame.detach().numpy())
    expected = (expected / expected.sum(-1, keepdims=True)).mean(1)
    assert np.allclose(model(clip).exp().detach().numpy(), expected, atol=1e-6)


def test_average_frame_probabilities_matches_numpy():
    logits = torch.randn(4, 10)
    e = np.exp(logits.numpy() - logits.numpy().max(1, keepdims=True))
    expected = (e / e.sum(1, keepdims=True)).mean(0)
    assert np.allclose(video.average_frame_probabilities(logits).numpy(), expected, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Inflation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, k_t",
    [
        (dict(in_channels=3, out_channels=5, kernel_size=3, padding=1), 3),
        (dict(in_channels=4, out_channels=6, kernel_size=(3, 5), stride=(2, 1), padding=(0, 2), dilation=(1, 2), groups=2), 2),
        (dict(in_channels=2, out_channels=2, kernel_size=1, bias=False), 4),
    ],
)
def test_inflated_conv_reproduces_2d_conv_on_a_static_clip(kwargs, k_t):
    torch.manual_seed(0)
    conv2d = nn.Conv2d(**kwargs)
    before = {k: v.clone() for k, v in conv2d.state_dict().items()}
    conv3d = video.inflate_conv(conv2d, k_t)
    assert conv3d.kernel_size == (k_t, *conv2d.kernel_size)
    frame = torch.randn(2, kwargs["in_channels"], 12, 13)
    clip = frame.unsqueeze(2).repeat(1, 1, 7, 1, 1)  # (N, C, T, H, W), one frame repeated
    out = conv3d(clip)
    assert out.shape[2] == 7 - k_t + 1
    expected = conv2d(frame)
    for t in range(out.shape[2]):
        assert torch.allclose(out[:, :, t], expected, atol=1e-5)
    assert all(torch.equal(v, before[k]) for k, v in conv2d.state_dict().items())


def _randomize_batchnorm(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("which", ["FrameCNN", "SmallCNN"])
def test_inflated_network_reproduces_its_parent(which):
    if which == "FrameCNN":
        parent = video.FrameCNN(in_channels=3, num_classes=5)
    else:
        from cvcourse.models import SmallCNN

        parent = SmallCNN(in_channels=3, num_classes=5)
    _randomize_batchnorm(parent, 1)
    parent.eval()
    image = torch.rand(3, 16, 16)
    with torch.no_grad():
        expected = parent(image[None])
    assert video.inflation_max_error(parent, image, num_frames=9, time_kernel=3) < 1e-5
    inflated = video.inflate_network(parent, 3).eval()
    assert not any(isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) for m in inflated.modules())
    # and the result is a genuine function of time: a moving clip gives another answer
    moving = torch.stack([image.roll(t, dims=-1) for t in range(9)], dim=1)[None]  # (1, C, T, H, W)
    with torch.no_grad():
        assert not torch.allclose(inflated(moving), expected, atol=1e-4)


def test_inflate_network_refuses_unknown_2d_layers():
    with pytest.raises(TypeError, match="cannot inflate"):
        video.inflate_network(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Upsample(scale_factor=2)))


# ---------------------------------------------------------------------------------------------
# Optical flow
# ---------------------------------------------------------------------------------------------


def _smooth_pattern(size: int, shift_x: float, shift_y: float) -> torch.Tensor:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    xs, ys = xs - shift_x, ys - shift_y
    image = 0.5 + 0.2 * np.sin(2 * np.pi * xs / 16) * np.cos(2 * np.pi * ys / 13) + 0.15 * np.sin(2 * np.pi * (xs + ys) / 11)
    return torch.tensor(image, dtype=torch.float32)[None, None]  # (1, 1, H, W)


@pytest.mark.parametrize("dx, dy", [(1.0, 0.0), (0.0, -1.5), (2.0, 1.0), (-0.5, 0.5)])
def test_horn_schunck_recovers_a_known_translation(dx, dy):
    a, b = _smooth_pattern(48, 0, 0), _smooth_pattern(48, dx, dy)  # b is a moved by (dx, dy)
    flow = video.horn_schunck(a, b)
    inner = flow[0, :, 8:-8, 8:-8].reshape(2, -1).mean(1)
    assert abs(float(inner[0]) - dx) < 0.15 and abs(float(inner[1]) - dy) < 0.15, inner


def test_horn_schunck_agrees_with_opencv_farneback():
    cv2 = pytest.importorskip("cv2")
    a, b = _smooth_pattern(64, 0, 0), _smooth_pattern(64, 1.5, -1.0)
    ours = video.horn_schunck(a, b)[0, :, 12:-12, 12:-12].reshape(2, -1).mean(1).numpy()
    to8 = lambda t: (t[0, 0].numpy() * 255).astype(np.uint8)  # noqa: E731
    theirs = cv2.calcOpticalFlowFarneback(to8(a), to8(b), None, 0.5, 3, 15, 3, 5, 1.2, 0)
    theirs = theirs[12:-12, 12:-12].reshape(-1, 2).mean(0)
    assert np.allclose(ours, theirs, atol=0.2), (ours, theirs)


def test_clip_flow_shape_and_direction_on_moving_squares():
    from cvcourse.synthetic import moving_shapes

    clips, labels = moving_shapes(8, task="direction", size=32, num_frames=4, seed=1, noise=0.0)
    flow = video.clip_flow(clips)
    assert flow.shape == (8, 3, 2, 32, 32)
    expected = torch.tensor([[1, 0], [-1, 0], [0, 1], [0, -1]], dtype=torch.float32)[labels]  # (dx, dy)
    # the dominant flow (summed over the frame) points the way the square moves
    total = flow.sum(dim=(1, 3, 4))  # (N, 2)
    cosine = (total * expected).sum(1) / total.norm(dim=1)
    assert (cosine > 0.9).all(), cosine


def test_flow_to_rgb_colours():
    h, w = 4, 5
    right = torch.zeros(2, h, w)
    right[0] = 1.0
    rgb = video.flow_to_rgb(right)
    assert rgb.shape == (3, h, w)
    assert torch.allclose(rgb[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))  # hue 0: red
    assert torch.allclose(video.flow_to_rgb(-right)[:, 0, 0], torch.tensor([0.0, 1.0, 1.0]))  # cyan
    assert torch.equal(video.flow_to_rgb(torch.zeros(2, h, w)), torch.zeros(3, h, w))


# ---------------------------------------------------------------------------------------------
# ConvLSTM
# ---------------------------------------------------------------------------------------------


def test_convlstm_cell_equals_lstm_cell_on_1x1_maps():
    torch.manual_seed(0)
    cin, hid = 3, 4
    cell = video.ConvLSTMCell(cin, hid, kernel_size=1)
    ref = nn.LSTMCell(cin, hid)
    w = cell.gates.weight[:, :, 0, 0]  # (4*hid, cin+hid), gate order i, f, o, g
    i, f, o, g = w.chunk(4)
    bi, bf, bo, bg = cell.gates.bias.chunk(4)
    with torch.no_grad():
        reordered = torch.cat([i, f, g, o])  # nn.LSTMCell's order: i, f, g, o
        ref.weight_ih.copy_(reordered[:, :cin])
        ref.weight_hh.copy_(reordered[:, cin:])
        ref.bias_ih.copy_(torch.cat([bi, bf, bg, bo]))
        ref.bias_hh.zero_()
    x = torch.randn(5, cin)
    h0, c0 = torch.randn(5, hid), torch.randn(5, hid)
    h, (h_, c) = cell(x[:, :, None, None], (h0[:, :, None, None], c0[:, :, None, None]))
    h_ref, c_ref = ref(x, (h0, c0))
    assert torch.allclose(h[:, :, 0, 0], h_ref, atol=1e-6)
    assert torch.allclose(c[:, :, 0, 0], c_ref, atol=1e-6)


def test_forecaster_rollout_feeds_predictions_back():
    torch.manual_seed(0)
    model = video.ConvLSTMForecaster(1, 4).eval()
    context = torch.rand(2, 3, 1, 8, 8)
    rolled = model.rollout(context, steps=3)
    assert rolled.shape == (2, 3, 1, 8, 8)
    with torch.no_grad():
        teacher = model(torch.cat([context, rolled[:, :2]], dim=1))  # (2, 5, 1, 8, 8)
    assert torch.allclose(teacher[:, 2:], rolled, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# The chapter's claims (same functions, same seeds as book/video.md)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def appearance():
    return video.run_appearance_experiment(seed=0)


def test_claim_motion_needs_time():
    result = video.run_fusion_experiment(seed=0, models=("single_frame", "early_fusion", "c3d"))
    assert result["chance"] == 0.25
    assert result["single_frame"] <= 1.5 * result["chance"], result
    assert result["early_fusion"] >= 0.9, result
    assert result["c3d"] >= 0.9, result


def test_claim_frame_averaging_solves_appearance(appearance):
    assert appearance.accuracy >= 0.9
    assert appearance.accuracy >= appearance.frame_accuracy


def test_claim_inflated_network_equals_parent(appearance):
    image = appearance.test_clips[0, 0]  # one real test frame (1, H, W)
    assert video.inflation_max_error(appearance.model.cnn, image, num_frames=8) < 1e-5


def test_claim_convlstm_beats_copying_the_last_frame():
    result = video.run_forecast_experiment(seed=0)
    assert result.mse < 0.5 * result.copy_last_mse, (result.mse, result.copy_last_mse)


@pytest.mark.slow
def test_claim_all_temporal_models_solve_direction():
    temporal = ("early_fusion", "slow_fusion", "c3d", "stacked_2d_3d", "two_stream", "cnn_lstm")
    result = video.run_fusion_experiment(seed=0, models=temporal + ("frame_average", "late_fusion"))
    assert all(result[m] >= 0.9 for m in temporal), result
    # Per-frame averaging ignores order and late fusion compares only coarse features: both fail.
    assert result["frame_average"] <= 1.5 * result["chance"], result
    assert result["late_fusion"] <= 0.5, result
