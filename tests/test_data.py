"""cvcourse.data against independent oracles (scikit-learn, scikit-image, PIL, OpenCV, PyAV)."""

from __future__ import annotations

import time

import av
import cv2
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from sklearn.datasets import load_digits as sk_load_digits
from sklearn.datasets import load_sample_image

from cvcourse import assets, data


def test_load_digits_equals_sklearn_over_16():
    images, labels = data.load_digits()
    bunch = sk_load_digits()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    assert labels.dtype == torch.int64
    np.testing.assert_allclose(images[:, 0].numpy(), bunch.images / 16.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(labels.numpy(), bunch.target)


@pytest.mark.parametrize("size", [16, 28])
def test_load_digits_resized_matches_opencv_bilinear(size):
    images, _ = data.load_digits(size)
    assert images.shape == (1797, 1, size, size)
    assert 0.0 <= images.min() and images.max() <= 1.0
    bunch = sk_load_digits()
    for i in (0, 100, 1796):
        expected = cv2.resize(
            (bunch.images[i] / 16.0).astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR
        )
        np.testing.assert_allclose(images[i, 0].numpy(), np.clip(expected, 0, 1), atol=1e-5)


def test_load_digits_rejects_bad_size():
    with pytest.raises(ValueError, match="size"):
        data.load_digits(0)


def test_split_is_stratified_disjoint_and_seeded():
    images, labels = data.load_digits()
    ids = torch.arange(len(labels), dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 8, 8)
    tr_x, tr_y, te_x, te_y = data.split(ids, labels, test_fraction=0.25, seed=0)
    tr_ids, te_ids = tr_x[:, 0, 0, 0].long(), te_x[:, 0, 0, 0].long()
    assert set(tr_ids.tolist()).isdisjoint(te_ids.tolist())
    assert sorted(tr_ids.tolist() + te_ids.tolist()) == list(range(1797))
    torch.testing.assert_close(labels[tr_ids], tr_y)
    torch.testing.assert_close(labels[te_ids], te_y)
    counts = np.bincount(labels.numpy(), minlength=10)
    test_counts = np.bincount(te_y.numpy(), minlength=10)
    assert np.all(np.abs(test_counts - 0.25 * counts) <= 1)
    again = data.split(ids, labels, seed=0)
    torch.testing.assert_close(again[2], te_x)
    other = data.split(ids, labels, seed=1)
    assert not torch.equal(other[2], te_x)


def test_split_rejects_bad_fraction():
    images, labels = data.load_digits()
    with pytest.raises(ValueError, match="test_fraction"):
        data.split(images, labels, test_fraction=1.5)


@pytest.mark.parametrize("name", ["chelsea", "coffee", "astronaut", "rocket"])
def test_load_photo_original_equals_skimage(name):
    image = data.load_photo(name, size=None)
    expected = getattr(skimage.data, name)()[..., :3] / 255.0
    assert image.dtype == torch.float32
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("name", ["chelsea", "china"])
def test_load_photo_resized_matches_pil(name):
    array = skimage.data.chelsea() if name == "chelsea" else load_sample_image("china.jpg")
    h, w = array.shape[:2]
    scale = 224 / min(h, w)
    new_w, new_h = round(w * scale), round(h * scale)
    resized = np.asarray(Image.fromarray(array).resize((new_w, new_h), Image.BILINEAR)) / 255.0
    top, left = (new_h - 224) // 2, (new_w - 224) // 2
    expected = resized[top : top + 224, left : left + 224]
    image = data.load_photo(name, size=224)
    assert image.shape == (3, 224, 224)
    diff = np.abs(image.permute(1, 2, 0).numpy() - expected)
    assert diff.mean() < 0.01, diff.mean()


def test_photos_all_load():
    for name in data.PHOTOS:
        image = data.load_photo(name, size=64)
        assert image.shape == (3, 64, 64) and 0.0 <= image.min() and image.max() <= 1.0


def test_load_photo_unknown_name():
    with pytest.raises(ValueError, match="unknown photo 'dog'"):
        data.load_photo("dog")


def _reference_frames(indices: list[int], size: int) -> np.ndarray:
    """Frames decoded sequentially from the start with PyAV, resized by OpenCV (INTER_AREA)."""
    out = {}
    with av.open(str(assets.video_path())) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in indices:
                rgb = frame.to_ndarray(format="rgb24")
                h, w = rgb.shape[:2]
                nw, nh = round(w * size / min(h, w)), round(h * size / min(h, w))
                small = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
                top, left = (nh - size) // 2, (nw - size) // 2
                out[i] = small[top : top + size, left : left + size] / 255.0
            if i >= max(indices):
                break
    return np.stack([out[i] for i in indices])  # (T, size, size, 3)


def test_load_clip_shape_fps_and_motion():
    clip, fps = data.load_clip(num_frames=16, size=112)
    with av.open(str(assets.video_path())) as container:
        assert fps == float(container.streams.video[0].average_rate)
    assert clip.shape == (16, 3, 112, 112) and clip.dtype == torch.float32
    assert 0.0 <= clip.min() and clip.max() <= 1.0
    changes = (clip[1:] - clip[:-1]).abs().mean(dim=(1, 2, 3))  # (T - 1,)
    assert torch.all(changes > 0), changes


def test_load_clip_seeks_fast_to_the_right_frames():
    start_time = time.process_time()  # CPU seconds: robust to a busy machine
    clip, fps = data.load_clip(num_frames=16, size=112, start=3.0, step=2)
    elapsed = time.process_time() - start_time
    assert elapsed < 2.0, elapsed
    first = round(3.0 * fps)
    expected = _reference_frames([first, first + 2, first + 30], size=112)
    got = clip[[0, 1, 15]].permute(0, 2, 3, 1).numpy()
    diff = np.abs(got - expected).mean(axis=(1, 2, 3))
    assert np.all(diff < 0.02), diff
    # and not some other frame: frames 1 s apart differ by much more
    assert np.abs(got[0] - expected[2]).mean() > 3 * diff[0]


def test_load_clip_step_takes_every_other_frame():
    dense, _ = data.load_clip(num_frames=9, size=32, start=1.0)
    sparse, _ = data.load_clip(num_frames=5, size=32, start=1.0, step=2)
    torch.testing.assert_close(sparse, dense[::2])


def test_load_clip_too_long_names_the_limit():
    with pytest.raises(ValueError, match="lasts 5.28 s"):
        data.load_clip(num_frames=16, start=5.0)


def test_imagenet_categories():
    names = data.imagenet_categories()
    assert len(names) == 1000 and names[0] == "tench" and names[281] == "tabby"
