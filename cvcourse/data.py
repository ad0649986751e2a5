"""Real data as float32 tensors in [0, 1]: digits, photos, the Big Buck Bunny clip.

Everything here is offline: scikit-learn's digits and sample images, scikit-image's data
folder, and the clip that :mod:`cvcourse.assets` cached at setup time. The synthetic sets
(moving shapes, shapes with boxes, coloured shapes) live in :mod:`cvcourse.synthetic`.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "PHOTOS",
    "imagenet_categories",
    "load_clip",
    "load_digits",
    "load_photo",
    "resize_center_crop",
    "split",
]

#: Names accepted by :func:`load_photo` ("china" and "flower" come from scikit-learn,
#: the others from scikit-image's data folder; all ship with the packages, no download).
PHOTOS: tuple[str, ...] = (
    "chelsea",
    "coffee",
    "astronaut",
    "rocket",
    "china",
    "flower",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
)


def load_digits(size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 handwritten digits.

    Returns ``images`` (1797, 1, s, s) float32 in [0, 1] (the 0..16 pixel values / 16;
    ``s`` = 8, or ``size`` after bilinear resizing) and ``labels`` (1797,) int64 in 0..9.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    if size is not None and (not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be a positive int or None, got {size!r}")
    bunch = sk_load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    if size is not None and size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        images = images.clamp(0.0, 1.0)  # (N, 1, size, size)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    return images, labels


def split(
    images: torch.Tensor,
    labels: torch.Tensor,
    test_fraction: float = 0.25,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stratified random split: each class keeps its share in both parts.

    Returns ``(train_images, train_labels, test_images, test_labels)``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if len(images) != len(labels):
        raise ValueError(f"images ({len(images)}) and labels ({len(labels)}) differ in length")
    rng = np.random.default_rng(seed)
    labels_np = np.asarray(labels.cpu())
    train_idx, test_idx = [], []
    for cls in np.unique(labels_np):
        idx = np.flatnonzero(labels_np == cls)
        idx = rng.permutation(idx)
        n_test = int(round(test_fraction * len(idx)))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    train = torch.as_tensor(rng.permutation(np.concatenate(train_idx)))
    test = torch.as_tensor(rng.permutation(np.concatenate(test_idx)))
    return images[train], labels[train], images[test], labels[test]


def resize_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize so the short side is ``size`` (bilinear, antialiased), then center-crop.

    ``images`` (N, C, H, W) or (C, H, W) float -> same rank with H = W = ``size``.
    """
    squeeze = images.dim() == 3
    if squeeze:
        images = images.unsqueeze(0)  # (1, C, H, W)
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) != (h, w):
        images = F.interpolate(
            images, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True
        )
    top, left = (new_h - size) // 2, (new_w - size) // 2
    images = images[..., top : top + size, left : left + size].clamp(0.0, 1.0)  # (N, C, size, size)
    return images[0] if squeeze else images


def _photo_array(name: str) -> np.ndarray:
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    import skimage.data

    return getattr(skimage.data, name)()


def load_photo(name: str, size: int | None = 224) -> torch.Tensor:
    """A real colour photo as ``(3, H, W)`` float32 in [0, 1].

    ``name`` is one of :data:`PHOTOS`. ``size`` resizes the short side to ``size``
    (bilinear, antialiased) and center-crops to ``size x size``; ``None`` keeps the original.
    """
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose one of {PHOTOS}")
    array = _photo_array(name)  # (H, W, 3) uint8
    image = torch.from_numpy(np.array(array[..., :3], dtype=np.uint8)).permute(2, 0, 1)  # (3, H, W)
    image = image.to(torch.float32) / 255.0
    if size is not None:
        image = resize_center_crop(image, size)
    return image


def load_clip(
    num_frames: int = 16,
    size: int = 112,
    start: float = 0.0,
    step: int = 1,
) -> tuple[torch.Tensor, float]:
    """Frames of the real Big Buck Bunny clip (5.3 s, 25 fps), decoded with PyAV.

    Takes ``num_frames`` frames, every ``step``-th, beginning with the frame nearest to
    ``start`` seconds (frame ``round(start * fps)``); each frame is resized (short side
    ``size``, area averaging) and center-cropped.
    Returns ``clip`` (T, 3, size, size) float32 in [0, 1] and ``fps``, the source video's
    frame rate (frames per second; the returned frames are ``step / fps`` seconds apart).
    Needs the cached clip (``make setup`` or ``python -m cvcourse.assets``).
    """
    import av

    from cvcourse.assets import video_path

    if num_frames < 1 or step < 1 or start < 0:
        raise ValueError(
            f"need num_frames >= 1, step >= 1, start >= 0; got {num_frames}, {step}, {start}"
        )
    path = video_path()
    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        time_base = stream.time_base or Fraction(1, 1)
        duration = float(stream.duration * time_base) if stream.duration else None
        needed = start + (num_frames - 1) * step / fps
        if duration is not None and needed >= duration:
            raise ValueError(
                f"start={start} s with num_frames={num_frames}, step={step} needs {needed:.2f} s of "
                f"video, but the clip lasts {duration:.2f} s at {fps:g} fps: lower start or num_frames"
            )
        h, w = stream.codec_context.height, stream.codec_context.width
        scale = size / min(h, w)
        out_w, out_h = max(size, round(w * scale)), max(size, round(h * scale))
        if start > 0:
            # Seek to the key frame at or before `start`, then decode forward.
            container.seek(int(start / time_base), stream=stream, backward=True, any_frame=False)
        stream.thread_type = "AUTO"
        taken = 0
        eps = 0.5 / fps
        for frame in container.decode(stream):
            if frame.time is not None and frame.time < start - eps:
                continue
            if taken % step == 0:
                rgb = frame.reformat(width=out_w, height=out_h, format="rgb24", interpolation="AREA")
                frames.append(rgb.to_ndarray())  # (out_h, out_w, 3) uint8
                if len(frames) == num_frames:
                    break
            taken += 1
    if len(frames) < num_frames:
        raise ValueError(f"the clip ended after {len(frames)} of {num_frames} frames; lower start")
    clip = torch.as_tensor(np.stack(frames)).permute(0, 3, 1, 2)  # (T, 3, out_h, out_w)
    top, left = (out_h - size) // 2, (out_w - size) // 2
    clip = clip[..., top : top + size, left : left + size]  # (T, 3, size, size)
    return clip.to(torch.float32) / 255.0, fps


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, in logit order (torchvision's weights metadata, offline)."""
    from torchvision.models import MobileNet_V2_Weights

    return list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])
