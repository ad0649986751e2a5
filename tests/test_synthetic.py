"""cvcourse.synthetic: shapes, determinism, speed, and the properties the chapters rely on,
checked with closed-form oracles (exact shifts, uniform occupancy, fill ratios of shapes)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from cvcourse import synthetic


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: the CPU-time budgets below stay meaningful on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _fill_ratio_class(masks: np.ndarray) -> np.ndarray:
    """Classify binary masks (N, H, W) by fill ratio of their bounding box:
    square ~ 1, disk ~ pi/4, triangle ~ 1/2 (an oracle independent of the generator)."""
    out = []
    for m in masks:
        ys, xs = np.nonzero(m)
        ratio = m.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
        out.append(int(np.argmin(np.abs(ratio - np.array([1.0, math.pi / 4, 0.5])))))
    return np.array(out)


@pytest.mark.parametrize("task", ["direction", "shape"])
def test_moving_shapes_shapes_determinism_and_speed(task):
    start = time.process_time()
    clips, labels = synthetic.moving_shapes(2000, task=task, num_frames=8, size=32, seed=0)
    assert time.process_time() - start < 1.5
    assert clips.shape == (2000, 8, 1, 32, 32) and clips.dtype == torch.float32
    assert labels.shape == (2000,) and labels.dtype == torch.int64
    assert 0.0 <= clips.min() and clips.max() <= 1.0
    num_classes = 4 if task == "direction" else 3
    assert set(labels.tolist()) == set(range(num_classes))
    again, labels_again = synthetic.moving_shapes(2000, task=task, seed=0)
    assert torch.equal(again, clips) and torch.equal(labels_again, labels)
    other, _ = synthetic.moving_shapes(2000, task=task, seed=1)
    assert not torch.equal(other, clips)


def test_moving_shapes_unknown_task():
    with pytest.raises(ValueError, match="'spin'"):
        synthetic.moving_shapes(10, task="spin")


def test_direction_label_is_the_exact_shift_between_frames():
    clips, labels = synthetic.moving_shapes(400, task="direction", size=32, seed=3, noise=0.0)
    frames = clips[:, :, 0].numpy()  # (N, T, H, W)
    speed = 2  # size // 16
    shifts = [(0, speed), (0, -speed), (speed, 0), (-speed, 0)]  # (rows, cols): right, left, down, up
    for t in (0, 5):
        found = []
        for a, b in zip(frames[:, t], frames[:, t + 1]):
            matches = [k for k, s in enumerate(shifts) if np.array_equal(np.roll(a, s, axis=(0, 1)), b)]
            assert len(matches) == 1
            found.append(matches[0])
        np.testing.assert_array_equal(found, labels.numpy())


def test_direction_single_frames_carry_no_class_information():
    clips, labels = synthetic.moving_shapes(4000, task="direction", size=32, seed=0, noise=0.0)
    occupancy = (clips[:, :, 0] > 0.5).float()  # (N, T, H, W) where the square is
    expected = (32 // 8) ** 2 / 32**2  # uniform position on the torus: side^2 / size^2
    for t in (0, 7):
        for k in range(4):
            per_pixel = occupancy[labels == k, t].mean(0)  # (H, W)
            assert abs(per_pixel.mean().item() - expected) < 1e-6  # one square, fully visible
            assert (per_pixel - expected).abs().max().item() < 0.02
        class_means = torch.stack([clips[labels == k, t].mean(0) for k in range(4)])
        assert (class_means - class_means.mean(0)).abs().max().item() < 0.02


def test_shape_task_frames_show_the_shape_and_motion_is_uninformative():
    clips, labels = synthetic.moving_shapes(600, task="shape", size=32, seed=0, noise=0.0)
    masks = (clips[:, :, 0] > 0.5).numpy()  # (N, T, H, W)
    for t in (0, 7):
        predicted = _fill_ratio_class(masks[:, t])
        assert (predicted == labels.numpy()).mean() > 0.9
    # the object stays fully inside the frame and moves ~1 pixel per frame
    ys, xs = np.indices((32, 32))
    area = masks.sum(axis=(2, 3))  # (N, T)
    cx = (masks * xs).sum(axis=(2, 3)) / area
    cy = (masks * ys).sum(axis=(2, 3)) / area
    steps = np.hypot(np.diff(cx, axis=1), np.diff(cy, axis=1))
    assert 0.7 < np.median(steps) < 1.3
    assert np.all(masks[:, :, 0, :].sum(-1) + masks[:, :, -1, :].sum(-1) <= 32)
    mean_velocity = [np.diff(cx, axis=1)[labels.numpy() == k].mean() for k in range(3)]
    assert np.max(np.abs(mean_velocity)) < 0.15


def _object_masks(images: torch.Tensor) -> np.ndarray:
    """Object pixels: vivid (max channel > 0.7; the texture stays <= 0.55), marker excluded."""
    masks = (images.max(dim=1).values > 0.7).numpy().copy()  # (N, H, W)
    x0, y0, x1, y1 = synthetic.MARKER_BOX
    masks[:, y0:y1, x0:x1] = False
    return masks


def test_shapes_with_boxes_boxes_are_tight_and_clear_of_the_marker():
    start = time.process_time()
    images, labels, boxes = synthetic.shapes_with_boxes(2000, size=32, seed=0)
    assert time.process_time() - start < 1.5
    assert images.shape == (2000, 3, 32, 32) and labels.shape == (2000,) and boxes.shape == (2000, 4)
    assert boxes.dtype == torch.int64 and 0.0 <= images.min() and images.max() <= 1.0
    masks = _object_masks(images)
    for m, (x0, y0, x1, y1) in zip(masks[:300], boxes[:300].tolist()):
        ys, xs = np.nonzero(m)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
    mx0, my0, mx1, my1 = synthetic.MARKER_BOX
    overlap_x = (boxes[:, 0] < mx1) & (boxes[:, 2] > mx0)
    overlap_y = (boxes[:, 1] < my1) & (boxes[:, 3] > my0)
    assert not torch.any(overlap_x & overlap_y)
    assert torch.all(boxes[:, :2] >= 0) and torch.all(boxes[:, 2:] <= 32)


def test_shapes_with_boxes_shape_is_in_the_form_not_the_colour():
    images, labels, _ = synthetic.shapes_with_boxes(900, size=32, seed=1)
    masks = _object_masks(images)
    assert (_fill_ratio_class(masks) == labels.numpy()).mean() > 0.85
    colours = np.stack(
        [images[i].permute(1, 2, 0).numpy()[masks[i]].mean(0) for i in range(len(images))]
    )  # (N, 3) mean object colour
    per_class = np.stack([colours[labels.numpy() == k].mean(0) for k in range(3)])
    assert np.abs(per_class - per_class.mean(0)).max() < 0.06


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_marker_agrees_with_the_class_at_rate_p(p):
    images, labels, _ = synthetic.shapes_with_boxes(3000, size=32, seed=2, spurious=p)
    x0, y0, x1, y1 = synthetic.MARKER_BOX
    marker = images[:, :, y0:y1, x0:x1]  # (N, 3, h, w)
    assert torch.all(marker == marker[:, :, :1, :1])  # one flat colour
    code = marker[:, :, 0, 0].argmax(1)  # red, green, blue -> 0, 1, 2
    torch.testing.assert_close(marker[:, :, 0, 0], synthetic.MARKER_COLORS[code])
    agreement = (code == labels).float().mean().item()
    assert abs(agreement - (p + (1 - p) / 3)) < 0.03


def test_shapes_with_boxes_rejects_bad_probability():
    with pytest.raises(ValueError, match="spurious"):
        synthetic.shapes_with_boxes(10, spurious=1.5)


def test_colored_shapes_colours_and_restrictions():
    images, color_idx, shape_idx = synthetic.colored_shapes(500, size=32, seed=0)
    assert images.shape == (500, 3, 32, 32)
    assert set(color_idx.tolist()) == set(range(len(synthetic.COLORS)))
    assert set(shape_idx.tolist()) == set(range(len(synthetic.SHAPES)))
    bright = images.max(dim=1).values > 0.5  # (N, H, W) object pixels
    for i in range(50):
        mean_rgb = images[i].permute(1, 2, 0)[bright[i]].mean(0)  # (3,)
        target = synthetic.COLOR_VALUES
        cosine = torch.nn.functional.cosine_similarity(mean_rgb.view(1, 3), target)
        assert cosine.argmax().item() == color_idx[i].item()
    _, c, s = synthetic.colored_shapes(200, seed=1, colors=["red", "blue"], shapes=["disk"])
    assert set(c.tolist()) <= {0, 2} and set(s.tolist()) == {1}
    pairs = [("red", "square"), ("green", "triangle")]
    _, c, s = synthetic.colored_shapes(200, seed=1, pairs=pairs)
    assert set(zip(c.tolist(), s.tolist())) == {(0, 0), (1, 2)}
    with pytest.raises(ValueError, match="'purple'"):
        synthetic.colored_shapes(5, colors=["purple"])


def test_direction_needs_motion_single_frame_near_chance_early_fusion_solves():
    from cvcourse import models, train

    clips, labels = synthetic.moving_shapes(2000, task="direction", seed=0)
    train_clips, train_labels = clips[:1500], labels[:1500]
    test_clips, test_labels = clips[1500:], labels[1500:]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        frame_model = models.SmallCNN(in_channels=1, num_classes=4, width=8)
        fusion_model = models.SmallCNN(in_channels=8, num_classes=4, width=8)
    train.fit(frame_model, train_clips[:, 0], train_labels, epochs=3, lr=3e-3, device="cpu")
    single = train.accuracy(frame_model, test_clips[:, 3], test_labels)
    # early fusion: frames stacked along channels, (N, T, 1, H, W) -> (N, T*1, H, W)
    train.fit(fusion_model, train_clips.flatten(1, 2), train_labels, epochs=3, lr=3e-3, device="cpu")
    fused = train.accuracy(fusion_model, test_clips.flatten(1, 2), test_labels)
    assert single < 0.35, single
    assert fused >= 0.9, fused
