"""Generated datasets with known ground truth, built in code (vectorised, seeded).

- :func:`moving_shapes`: tiny videos for the video chapter. ``task="direction"`` is a pure
  motion task (every single frame has the same distribution in every class);
  ``task="shape"`` is a pure appearance task (the motion is random and carries no label).
- :func:`shapes_with_boxes`: one object per image with its bounding box, on a textured
  background, optionally with a spurious coloured marker (a shortcut) for the
  interpretation chapter.
- :func:`colored_shapes`: coloured shapes with two labels (colour, shape) for CLIP-style
  image-text training and zero-shot tests on unseen combinations.

All images are float32 in [0, 1]; every function takes ``seed`` and uses its own
``torch.Generator`` (no global random state is touched).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "COLORS",
    "COLOR_VALUES",
    "DIRECTIONS",
    "MARKER_BOX",
    "MARKER_COLORS",
    "OBJECT_SHAPES",
    "SHAPES",
    "colored_shapes",
    "moving_shapes",
    "shape_masks",
    "shapes_with_boxes",
]

#: Class names of ``moving_shapes(task="direction")``, in label order.
DIRECTIONS: tuple[str, ...] = ("right", "left", "down", "up")
#: Class names of ``moving_shapes(task="shape")`` and ``shapes_with_boxes``, in label order.
OBJECT_SHAPES: tuple[str, ...] = ("square", "disk", "triangle")
#: Shapes of :func:`colored_shapes` (index = ``shape_idx``).
SHAPES: tuple[str, ...] = ("square", "disk", "triangle", "cross")
#: Colours of :func:`colored_shapes` (index = ``color_idx``), RGB values in :data:`COLOR_VALUES`.
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "magenta", "cyan")
COLOR_VALUES: torch.Tensor = torch.tensor(
    [
        [1.0, 0.1, 0.1],
        [0.1, 0.9, 0.1],
        [0.15, 0.3, 1.0],
        [1.0, 0.9, 0.1],
        [1.0, 0.1, 1.0],
        [0.1, 0.95, 0.95],
    ]
)
#: The spurious marker of :func:`shapes_with_boxes`: pixels ``[y0:y1, x0:x1]`` (top-left corner).
MARKER_BOX: tuple[int, int, int, int] = (0, 0, 5, 5)
#: Colour code of each class (square, disk, triangle) used by the spurious marker.
MARKER_COLORS: torch.Tensor = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])

_DIRECTION_STEPS = torch.tensor([[1, 0], [-1, 0], [0, 1], [0, -1]])  # (dx, dy) per class


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def shape_masks(
    shape_idx: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    radius: torch.Tensor,
    size: int,
) -> torch.Tensor:
    """Boolean masks ``(N, size, size)`` of shapes centred at (cx, cy) (pixel units, float).

    ``shape_idx`` indexes :data:`SHAPES` (0 square, 1 disk, 2 triangle, 3 cross); ``radius``
    is the half-width of the shape's bounding box. The pixel (row y, column x) is inside when
    its centre (x + 0.5, y + 0.5) is.
    """
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    dx = coords.view(1, 1, size) - cx.view(-1, 1, 1)  # (N, 1, size)
    dy = coords.view(1, size, 1) - cy.view(-1, 1, 1)  # (N, size, 1)
    r = radius.view(-1, 1, 1)
    square = (dx.abs() <= r * 0.82) & (dy.abs() <= r * 0.82)
    disk = dx**2 + dy**2 <= r**2
    # Upward triangle: apex at the top (dy = -r), base at the bottom (dy = +r).
    triangle = (dy <= r) & (dy >= -r) & (dx.abs() <= (dy + r) * 0.5)
    cross = ((dx.abs() <= r * 0.3) & (dy.abs() <= r)) | ((dy.abs() <= r * 0.3) & (dx.abs() <= r))
    stack = torch.stack([square, disk, triangle, cross], dim=1)  # (N, 4, size, size)
    index = shape_idx.view(-1, 1, 1, 1).expand(-1, 1, size, size)
    return stack.gather(1, index).squeeze(1)  # (N, size, size)


def moving_shapes(
    n: int,
    task: str = "direction",
    num_frames: int = 8,
    size: int = 32,
    seed: int = 0,
    noise: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tiny grey-scale videos of one bright moving object.

    Returns ``clips`` (n, T, 1, size, size) float32 in [0, 1] and ``labels`` (n,) int64.

    - ``task="direction"``: a square (side ``size // 8``) moves right/left/down/up
      (labels 0..3, :data:`DIRECTIONS`) by ``size // 16`` pixels per frame, wrapping around
      the borders (the frame is a torus). Its start is uniform over the whole frame, so every
      single frame has the same distribution in every class: only motion tells them apart.
    - ``task="shape"``: a square, disk or triangle (labels 0..2, :data:`OBJECT_SHAPES`) of
      random size drifts one pixel per frame in a uniformly random direction, staying inside
      the frame. The motion carries no label: one frame suffices.

    ``noise`` is the standard deviation of additive Gaussian pixel noise.
    """
    if n < 1 or num_frames < 1 or size < 8:
        raise ValueError(f"need n >= 1, num_frames >= 1, size >= 8; got {n}, {num_frames}, {size}")
    g = _generator(seed)
    t = torch.arange(num_frames, dtype=torch.float32).view(1, -1)  # (1, T)
    coords = torch.arange(size)
    if task == "direction":
        labels = torch.randint(0, 4, (n,), generator=g)
        side = max(2, size // 8)
        speed = max(1, size // 16)
        x0 = torch.randint(0, size, (n, 1), generator=g)
        y0 = torch.randint(0, size, (n, 1), generator=g)
        steps = _DIRECTION_STEPS[labels]  # (n, 2)
        xs = (x0 + steps[:, :1] * speed * t.long()) % size  # (n, T) top-left column
        ys = (y0 + steps[:, 1:] * speed * t.long()) % size  # (n, T) top-left row
        in_x = (coords.view(1, 1, size) - xs.unsqueeze(-1)) % size < side  # (n, T, size)
        in_y = (coords.view(1, 1, size) - ys.unsqueeze(-1)) % size < side  # (n, T, size)
        clips = (in_y.unsqueeze(-1) & in_x.unsqueeze(-2)).float()  # (n, T, size, size)
    elif task == "shape":
        labels = torch.randint(0, 3, (n,), generator=g)
        radius = size * (0.14 + 0.08 * torch.rand(n, generator=g))  # (n,)
        angle = 2 * torch.pi * torch.rand(n, generator=g)
        vx, vy = torch.cos(angle), torch.sin(angle)  # (n,) pixels per frame
        travel = num_frames - 1
        # Start centres chosen so the whole trajectory stays inside the frame.
        lo_x = radius + (-vx * travel).clamp(min=0)
        hi_x = size - radius - (vx * travel).clamp(min=0)
        lo_y = radius + (-vy * travel).clamp(min=0)
        hi_y = size - radius - (vy * travel).clamp(min=0)
        cx0 = lo_x + (hi_x - lo_x).clamp(min=0) * torch.rand(n, generator=g)
        cy0 = lo_y + (hi_y - lo_y).clamp(min=0) * torch.rand(n, generator=g)
        cx = (cx0.view(-1, 1) + vx.view(-1, 1) * t).reshape(-1)  # (n*T,)
        cy = (cy0.view(-1, 1) + vy.view(-1, 1) * t).reshape(-1)  # (n*T,)
        masks = shape_masks(
            labels.repeat_interleave(num_frames),
            cx,
            cy,
            radius.repeat_interleave(num_frames),
            size,
        )  # (n*T, size, size)
        clips = masks.float().view(n, num_frames, size, size)
    else:
        raise ValueError(f"task must be 'direction' or 'shape', got {task!r}")
    clips = 0.1 + 0.8 * clips
    if noise > 0:
        clips = clips + noise * torch.randn(clips.shape, generator=g)
    return clips.clamp(0.0, 1.0).unsqueeze(2), labels  # (n, T, 1, size, size)


def _texture(n: int, size: int, g: torch.Generator, low: float, high: float) -> torch.Tensor:
    """Smooth random colour texture (n, 3, size, size) with values in [low, high]."""
    coarse = torch.rand(n, 3, max(2, size // 8), max(2, size // 8), generator=g)
    fine = torch.rand(n, 3, size, size, generator=g)
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    grey = (0.7 * smooth + 0.3 * fine).mean(1, keepdim=True)  # mostly grey
    texture = 0.75 * grey + 0.25 * (0.7 * smooth + 0.3 * fine)
    return low + (high - low) * texture


def _random_vivid_colors(n: int, g: torch.Generator) -> torch.Tensor:
    """Random saturated RGB colours (n, 3): random hue, high saturation and value."""
    hue = torch.rand(n, generator=g) * 6.0
    k = (torch.tensor([5.0, 3.0, 1.0]).view(1, 3) + hue.view(-1, 1)) % 6  # HSV -> RGB
    channel = 1.0 - torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
    sat = 0.7 + 0.3 * torch.rand(n, 1, generator=g)
    val = 0.85 + 0.15 * torch.rand(n, 1, generator=g)
    return val * (1.0 - sat * (1.0 - channel))


def shapes_with_boxes(
    n: int,
    size: int = 32,
    seed: int = 0,
    spurious: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One object per image, with its bounding box, on a textured background.

    Returns ``images`` (n, 3, size, size) float32 in [0, 1], ``labels`` (n,) int64 (0 square,
    1 disk, 2 triangle: :data:`OBJECT_SHAPES`) and ``boxes`` (n, 4) int64
    ``[x0, y0, x1, y1]`` in pixels, end-exclusive (the object lies in
    ``images[i, :, y0:y1, x0:x1]``). The object's colour is random and shared by all
    classes, so only its form tells the class. A small marker always sits at
    :data:`MARKER_BOX` (top-left corner; objects never touch it). With ``spurious=p`` its
    colour is the class's code (:data:`MARKER_COLORS`) with probability ``p`` and a random
    code otherwise (``p=0``: the marker carries no information; ``p=1``: a perfect shortcut).
    """
    if not 0.0 <= spurious <= 1.0:
        raise ValueError(f"spurious must be a probability in [0, 1], got {spurious!r}")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    g = _generator(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    radius = size * (0.16 + 0.1 * torch.rand(n, generator=g))  # (n,) half-width in pixels
    mx1, my1 = MARKER_BOX[2], MARKER_BOX[3]
    margin = 1.0
    lo, hi = radius + margin, size - radius - margin
    cx = lo + (hi - lo) * torch.rand(n, generator=g)
    cy = lo + (hi - lo) * torch.rand(n, generator=g)
    # Keep the object clear of the marker: move it right if its box would touch the corner.
    touches = (cx - radius < mx1 + 1) & (cy - radius < my1 + 1)
    cx = torch.where(touches, torch.maximum(cx, radius + mx1 + 1.0 + margin), cx).clamp(max=hi)
    masks = shape_masks(labels, cx, cy, radius, size)  # (n, size, size)
    colours = _random_vivid_colors(n, g)  # (n, 3)
    images = _texture(n, size, g, 0.15, 0.55)
    mask = masks.unsqueeze(1)  # (n, 1, size, size)
    images = torch.where(mask, colours.view(n, 3, 1, 1).expand_as(images), images)
    # Tight boxes from the masks themselves (end-exclusive).
    rows, cols = masks.any(2), masks.any(1)  # (n, size) each
    idx = torch.arange(size)
    x0 = torch.where(cols, idx, size).min(1).values
    x1 = torch.where(cols, idx, -1).max(1).values + 1
    y0 = torch.where(rows, idx, size).min(1).values
    y1 = torch.where(rows, idx, -1).max(1).values + 1
    boxes = torch.stack([x0, y0, x1, y1], dim=1).long()  # (n, 4)
    # The marker.
    use_class = torch.rand(n, generator=g) < spurious
    code = torch.where(use_class, labels, torch.randint(0, 3, (n,), generator=g))
    bx0, by0, bx1, by1 = MARKER_BOX
    images[:, :, by0:by1, bx0:bx1] = MARKER_COLORS[code].view(n, 3, 1, 1)
    return images.clamp(0.0, 1.0), labels, boxes


def _indices(values: Sequence[str | int] | None, names: tuple[str, ...], what: str) -> torch.Tensor:
    if values is None:
        return torch.arange(len(names))
    out = []
    for v in values:
        if isinstance(v, str):
            if v not in names:
                raise ValueError(f"unknown {what} {v!r}; choose from {names}")
            out.append(names.index(v))
        elif 0 <= int(v) < len(names):
            out.append(int(v))
        else:
            raise ValueError(f"{what} index {v!r} out of range 0..{len(names) - 1}")
    if not out:
        raise ValueError(f"need at least one {what}")
    return torch.tensor(out)


def colored_shapes(
    n: int,
    size: int = 32,
    seed: int = 0,
    colors: Sequence[str | int] | None = None,
    shapes: Sequence[str | int] | None = None,
    pairs: Sequence[tuple[str | int, str | int]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coloured shapes on a dark, slightly noisy background.

    Returns ``images`` (n, 3, size, size) float32 in [0, 1], ``color_idx`` (n,) and
    ``shape_idx`` (n,) int64 indexing :data:`COLORS` and :data:`SHAPES`. ``colors`` and
    ``shapes`` (names or indices) restrict the choices (default: all); ``pairs``, a list of
    (colour, shape), restricts to exactly those combinations instead (for zero-shot tests on
    combinations held out of training). Position and size are random.
    """
    g = _generator(seed)
    if pairs is not None:
        if colors is not None or shapes is not None:
            raise ValueError("give either pairs or colors/shapes, not both")
        c_all = _indices([p[0] for p in pairs], COLORS, "colour")
        s_all = _indices([p[1] for p in pairs], SHAPES, "shape")
        pick = torch.randint(0, len(c_all), (n,), generator=g)
        color_idx, shape_idx = c_all[pick], s_all[pick]
    else:
        c_all = _indices(colors, COLORS, "colour")
        s_all = _indices(shapes, SHAPES, "shape")
        color_idx = c_all[torch.randint(0, len(c_all), (n,), generator=g)]
        shape_idx = s_all[torch.randint(0, len(s_all), (n,), generator=g)]
    radius = size * (0.2 + 0.1 * torch.rand(n, generator=g))
    lo, hi = radius + 1.0, size - radius - 1.0
    cx = lo + (hi - lo) * torch.rand(n, generator=g)
    cy = lo + (hi - lo) * torch.rand(n, generator=g)
    masks = shape_masks(shape_idx, cx, cy, radius, size).unsqueeze(1)  # (n, 1, size, size)
    background = 0.05 + 0.05 * torch.rand(n, 3, size, size, generator=g)
    shade = 0.85 + 0.15 * torch.rand(n, 1, 1, 1, generator=g)
    colour = COLOR_VALUES[color_idx].view(n, 3, 1, 1) * shade
    images = torch.where(masks, colour.expand(n, 3, size, size), background)
    return images.clamp(0.0, 1.0), color_idx.long(), shape_idx.long()
