"""Transformers in vision: patch embedding, self-attention, a small ViT, a tiny CLIP, DETR matching.

Everything here is small enough to train in seconds on two CPU cores. Shapes follow the house
style: ``images`` are ``(N, C, H, W)`` floats in [0, 1]; a token sequence is ``(N, L, D)``.

- :func:`patchify`, :class:`PatchEmbedding`: images -> tokens (class token + position embeddings).
- :func:`attention`, :class:`MultiHeadSelfAttention`, :class:`ViT`: self-attention written out.
- :func:`class_token_attention`: what the class token looks at, per head, as an image-shaped map.
- :func:`attention_cost`: score-matrix size, FLOPs (counted by PyTorch) and time vs number of tokens.
- :class:`TinyCLIP`, :func:`clip_loss`, :func:`train_clip`, :func:`zero_shot_accuracy`:
  a contrastive image-text model on captions like "a red disk".
- :func:`generalized_box_iou`, :func:`detr_matching_cost`, :func:`hungarian_match`: DETR's set matching.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "patchify",
    "PatchEmbedding",
    "attention",
    "MultiHeadSelfAttention",
    "TransformerBlock",
    "ViT",
    "train_digits_vit",
    "class_token_attention",
    "attention_cost",
    "fit_power_law",
    "build_vocab",
    "tokenize",
    "caption",
    "held_out_pairs",
    "clip_dataset",
    "TinyCLIP",
    "clip_loss",
    "train_clip",
    "zero_shot_accuracy",
    "clip_experiment",
    "box_cxcywh_to_xyxy",
    "generalized_box_iou",
    "detr_matching_cost",
    "hungarian_match",
]


# ----------------------------------------------------------------------------- patches
def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into non-overlapping square patches, row-major over the grid.

    images (N, C, H, W) -> (N, L, C*p*p) with L = (H/p)*(W/p); ``out[n, i*(W//p) + j]`` equals
    ``images[n, :, i*p:(i+1)*p, j*p:(j+1)*p].reshape(-1)``.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    p = int(patch_size)
    if p < 1 or h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not divisible by patch_size={patch_size}; resize or pick a divisor")
    x = images.reshape(n, c, h // p, p, w // p, p)  # (N, C, gh, p, gw, p)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (N, gh, gw, C, p, p)
    return x.reshape(n, (h // p) * (w // p), c * p * p)  # (N, L, C*p*p)


class PatchEmbedding(nn.Module):
    """Linear patch embedding with a learnable class token and learnable position embeddings.

    forward: images (N, C, H, W) -> tokens (N, 1 + num_patches, embed_dim), token 0 is the class token.
    """

    def __init__(self, image_size: int, patch_size: int, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} is not divisible by patch_size={patch_size}")
        self.image_size = image_size
        self.patch_size = patch_size
        self.grid_size = image_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Linear(in_channels * patch_size**2, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, 1 + self.num_patches, embed_dim))

    def embed_patches(self, images: torch.Tensor) -> torch.Tensor:
        """Patch tokens without class token or positions: (N, C, H, W) -> (N, L, D).

        Equal to ``self.proj(patchify(images, p))``, computed as a convolution with kernel size
        and stride ``p`` whose kernel is ``proj``'s weight reshaped to (D, C, p, p): the same
        map, without copying the whole batch into patch order first (faster on a CPU; see
        ``bench/methods.py``).
        """
        if images.ndim != 4 or tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"images must be (N, C, {self.image_size}, {self.image_size}), got shape {tuple(images.shape)}; "
                f"resize them or build PatchEmbedding(image_size={images.shape[-1]}, ...)"
            )
        p = self.patch_size
        kernel = self.proj.weight.view(self.proj.out_features, -1, p, p)  # (D, C*p*p) -> (D, C, p, p)
        grid = F.conv2d(images, kernel, self.proj.bias, stride=p)  # (N, D, H/p, W/p)
        return grid.flatten(2).transpose(1, 2)  # (N, L, D), patches row-major like patchify

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        patches = self.embed_patches(images)  # (N, L, D)
        cls = self.cls_token.expand(images.shape[0], -1, -1)  # (N, 1, D)
        return torch.cat([cls, patches], dim=1) + self.pos_embed  # (N, 1 + L, D)


# ----------------------------------------------------------------------------- attention
def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention, written out.

    q (..., Lq, d), k (..., Lk, d), v (..., Lk, dv); ``mask`` (broadcastable to (..., Lq, Lk)) is
    boolean, True where attending is allowed. Returns (output (..., Lq, dv), weights (..., Lq, Lk));
    every row of ``weights`` is a probability distribution over the keys.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., Lq, Lk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)  # (..., Lq, Lk)
    return weights @ v, weights


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention with one fused q/k/v projection (the layout of nn.MultiheadAttention).

    forward: x (N, L, D) -> (N, L, D); with ``return_weights=True`` also the weights (N, heads, L, L).
    ``qkv.weight`` corresponds to ``nn.MultiheadAttention.in_proj_weight`` and ``out`` to its ``out_proj``.
    """

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.out = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        n, length, d = x.shape
        h = self.num_heads
        qkv = self.qkv(x).reshape(n, length, 3, h, d // h)  # (N, L, 3, heads, d_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (N, heads, L, d_head)
        y, weights = attention(q, k, v)  # (N, heads, L, d_head), (N, heads, L, L)
        y = self.out(y.transpose(1, 2).reshape(n, length, d))  # (N, L, D)
        return (y, weights) if return_weights else y


class TransformerBlock(nn.Module):
    """Pre-norm encoder block: x + MHSA(LN(x)), then x + MLP(LN(x)). (N, L, D) -> (N, L, D)."""

    def __init__(self, embed_dim: int, num_heads: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim)
        self.attn = MultiHeadSelfAttention(embed_dim, num_heads)
        self.norm2 = nn.LayerNorm(embed_dim)
        hidden = int(embed_dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, hidden), nn.GELU(), nn.Linear(hidden, embed_dim))

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        y, weights = self.attn(self.norm1(x), return_weights=True)
        x = x + y
        x = x + self.mlp(self.norm2(x))
        return (x, weights) if return_weights else x


class ViT(nn.Module):
    """A small Vision Transformer: patch embedding, ``depth`` encoder blocks, a linear head on the class token.

    forward: images (N, C, H, W) -> logits (N, num_classes).
    ``forward_with_attention`` also returns one weight tensor (N, heads, 1+L, 1+L) per block.
    """

    def __init__(
        self,
        image_size: int = 16,
        patch_size: int = 4,
        in_channels: int = 1,
        num_classes: int = 10,
        embed_dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        self.embed = PatchEmbedding(image_size, patch_size, in_channels, embed_dim)
        self.blocks = nn.ModuleList(TransformerBlock(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward_with_attention(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.embed(images)  # (N, 1 + L, D)
        maps = []
        for block in self.blocks:
            x, weights = block(x, return_weights=True)
            maps.append(weights)  # (N, heads, 1 + L, 1 + L)
        return self.head(self.norm(x[:, 0])), maps  # logits (N, K)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_with_attention(images)[0]


@contextlib.contextmanager
def _one_cpu_thread(device):
    """Run tiny CPU training on one intra-op thread, then restore the thread count.

    These models are so small that a second thread only adds synchronisation; on a shared 2-core
    machine it made training over 5x slower in wall time (measured), while one thread is also
    reproducible bit for bit.
    """
    if torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_digits_vit(
    size: int = 16,
    patch_size: int = 4,
    epochs: int = 20,
    seed: int = 0,
    device: torch.device | str | None = None,
    **vit_kwargs,
) -> tuple[ViT, float, dict[str, torch.Tensor]]:
    """Train a small ViT on the scikit-learn digits resized to ``size`` px (75/25 stratified split).

    Returns (model on CPU in eval mode, test accuracy in [0, 1], data dict with train/test tensors).
    """
    from cvcourse import data, train

    images, labels = data.load_digits(size=size)
    x_tr, y_tr, x_te, y_te = data.split(images, labels, test_fraction=0.25, seed=seed)
    device = torch.device(device) if device is not None else train.default_device()
    torch.manual_seed(seed)  # parameter init; training shuffles with its own generator
    model = ViT(image_size=size, patch_size=patch_size, in_channels=1, num_classes=10, **vit_kwargs)
    with _one_cpu_thread(device):
        train.fit(model, x_tr, y_tr, epochs=epochs, lr=2e-3, batch_size=64, seed=seed, device=device, weight_decay=1e-4)
        model = model.cpu().eval()
        acc = train.accuracy(model, x_te, y_te, device="cpu")
    return model, float(acc), {"train_images": x_tr, "train_labels": y_tr, "test_images": x_te, "test_labels": y_te}


@torch.no_grad()
def class_token_attention(model: ViT, images: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """How much the class token attends to each patch, per head, as a map over the patch grid.

    images (N, C, H, W) -> (N, heads, gh, gw); each map sums to 1 minus the class token's attention to itself.
    """
    was_training = model.training
    model.eval()
    try:
        _, maps = model.forward_with_attention(images)
    finally:
        model.train(was_training)
    weights = maps[layer][:, :, 0, 1:]  # (N, heads, L): row of the class token, patch columns
    g = model.embed.grid_size
    return weights.reshape(weights.shape[0], weights.shape[1], g, g)  # (N, heads, gh, gw)


# ----------------------------------------------------------------------------- cost
def fit_power_law(x, y) -> float:
    """Exponent b of the least-squares fit y ~ a * x**b in log-log space."""
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    return float(np.polyfit(lx, ly, 1)[0])


@dataclass
class AttentionCost:
    """Cost of one self-attention layer per number of tokens (lists aligned with ``tokens``)."""

    tokens: list[int]
    score_elements: list[int] = field(default_factory=list)  # entries of the (heads, L, L) weights, counted
    attention_flops: list[int] = field(default_factory=list)  # FLOPs of QK^T and AV (FlopCounterMode)
    layer_flops: list[int] = field(default_factory=list)  # FLOPs of the whole layer incl. projections
    seconds: list[float] = field(default_factory=list)  # median wall time of one forward pass


def attention_cost(
    tokens=(64, 128, 256, 512, 1024), embed_dim: int = 64, num_heads: int = 4, repeats: int = 3, seed: int = 0
) -> AttentionCost:
    """Measure a :class:`MultiHeadSelfAttention` layer on one sequence of each length in ``tokens``.

    Score elements are read off the returned weights tensor; FLOPs are counted by
    ``torch.utils.flop_counter.FlopCounterMode`` (machine independent); time is the median of ``repeats``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layer = MultiHeadSelfAttention(embed_dim, num_heads).eval()
    cost = AttentionCost(tokens=[int(t) for t in tokens])
    with torch.no_grad():
        for length in cost.tokens:
            x = torch.randn(1, length, embed_dim, generator=gen)  # (1, L, D)
            with FlopCounterMode(display=False) as counter:
                _, weights = layer(x, return_weights=True)
            counts = counter.get_flop_counts()["Global"]
            total = int(sum(counts.values()))
            batched = int(sum(v for op, v in counts.items() if "bmm" in str(op)))  # QK^T and AV
            cost.score_elements.append(int(weights.numel()))
            cost.attention_flops.append(batched)
            cost.layer_flops.append(total)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                layer(x)
                times.append(time.perf_counter() - t0)
            cost.seconds.append(float(np.median(times)))
    return cost


# ----------------------------------------------------------------------------- CLIP
def build_vocab(colors, shapes) -> dict[str, int]:
    """Word -> index for captions "a <colour> <shape>" (index 0 is padding)."""
    words = ["<pad>", "a", *colors, *shapes]
    return {w: i for i, w in enumerate(dict.fromkeys(words))}


def caption(color: str, shape: str) -> str:
    """The caption of an image: ``"a red disk"``."""
    return f"a {color} {shape}"


def tokenize(captions: list[str], vocab: dict[str, int]) -> torch.Tensor:
    """Captions -> token ids (N, T) int64, right-padded with 0. Unknown words raise KeyError naming the word."""
    rows = []
    for text in captions:
        ids = []
        for word in text.lower().split():
            if word not in vocab:
                raise KeyError(f"word {word!r} of caption {text!r} is not in the vocabulary; build_vocab with it")
            ids.append(vocab[word])
        rows.append(ids)
    length = max(len(r) for r in rows)
    return torch.tensor([r + [0] * (length - len(r)) for r in rows], dtype=torch.int64)


def held_out_pairs(num_colors: int, num_shapes: int) -> list[tuple[int, int]]:
    """(colour, shape) pairs kept out of training: one shape per colour, on a shifted diagonal.

    Every colour and every shape still appears in training, only these combinations do not.
    """
    return [(c, c % num_shapes) for c in range(num_colors)]


def clip_dataset(n: int, size: int = 32, seed: int = 0, exclude=(), include_only=None):
    """Images of coloured shapes with their (colour, shape) indices, restricted by pair.

    Uses ``cvcourse.synthetic.colored_shapes`` with every (colour, shape) pair not in ``exclude``
    (or only those in ``include_only``). Returns (images (n, 3, s, s), color_idx (n,), shape_idx (n,)).
    """
    from cvcourse import synthetic

    exclude = {tuple(p) for p in exclude}
    every = [(c, s) for c in range(len(synthetic.COLORS)) for s in range(len(synthetic.SHAPES))]
    allowed = [p for p in every if p not in exclude] if include_only is None else [tuple(p) for p in include_only]
    if not allowed:
        raise ValueError("no (colour, shape) pair left; exclude fewer pairs")
    return synthetic.colored_shapes(n, size=size, seed=seed, pairs=allowed)


class TinyCLIP(nn.Module):
    """A tiny two-tower contrastive model.

    Image tower: a small CNN -> (N, embed_dim). Text tower: mean of word embeddings (an embedding
    bag) -> linear -> (N, embed_dim). Both are L2-normalised; ``logit_scale`` is a learnable temperature.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 32, width: int = 32) -> None:
        super().__init__()
        self.image_encoder = nn.Sequential(
            nn.Conv2d(3, width // 2, 3, stride=2, padding=1), nn.ReLU(),  # (N, w/2, H/2, W/2)
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1), nn.ReLU(),  # (N, w, H/4, W/4)
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, embed_dim),
        )
        self.word_embedding = nn.EmbeddingBag(vocab_size, embed_dim, mode="mean", padding_idx=0)
        self.text_proj = nn.Linear(embed_dim, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_encoder(images), dim=-1)  # (N, E)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(self.word_embedding(tokens)), dim=-1)  # (M, E)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Similarity logits (N, M) = scale * cosine(image_i, text_j)."""
        return self.logit_scale.exp() * self.encode_image(images) @ self.encode_text(tokens).T


def clip_loss(logits: torch.Tensor, caption_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE: cross-entropy over texts for each image and over images for each text.

    logits (N, N) with the matching pairs on the diagonal. With ``caption_ids`` (N,), every pair whose
    captions are identical counts as a match (the target spreads evenly over them): a small
    vocabulary repeats captions within a batch, and those repeats are not true negatives.
    """
    n = logits.shape[0]
    if caption_ids is None:
        target = torch.arange(n, device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    same = (caption_ids[:, None] == caption_ids[None, :]).float()  # (N, N), symmetric
    target = same / same.sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def train_clip(
    n_train: int = 4000,
    size: int = 16,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    device: torch.device | str | None = None,
):
    """Train :class:`TinyCLIP` on captioned coloured shapes, without the :func:`held_out_pairs`.

    Returns (model on CPU in eval mode, vocab, list of mean loss per epoch).
    """
    from cvcourse import synthetic, train

    colors, shapes = list(synthetic.COLORS), list(synthetic.SHAPES)
    vocab = build_vocab(colors, shapes)
    held = held_out_pairs(len(colors), len(shapes))
    images, c, s = clip_dataset(n_train, size=size, seed=seed, exclude=held)
    tokens = tokenize([caption(colors[i], shapes[j]) for i, j in zip(c.tolist(), s.tolist())], vocab)  # (N, T)
    pair_ids = c * len(shapes) + s  # (N,) one id per distinct caption
    device = torch.device(device) if device is not None else train.default_device()
    torch.manual_seed(seed)
    model = TinyCLIP(len(vocab)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with _one_cpu_thread(device):
        losses = _clip_epochs(model, opt, images, tokens, pair_ids, epochs, batch_size, gen, device)
    return model.cpu().eval(), vocab, losses


def _clip_epochs(model, opt, images, tokens, pair_ids, epochs, batch_size, gen, device) -> list[float]:
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=gen)
        total, count = 0.0, 0
        for start in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            logits = model(images[idx].to(device), tokens[idx].to(device))  # (B, B)
            loss = clip_loss(logits, pair_ids[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
        losses.append(total / count)
    return losses


@torch.no_grad()
def zero_shot_accuracy(
    model: TinyCLIP, vocab: dict[str, int], images: torch.Tensor, color_idx: torch.Tensor, shape_idx: torch.Tensor
) -> tuple[float, torch.Tensor]:
    """Classify images by the most similar caption among all colour x shape captions.

    Returns (accuracy in [0, 1], predicted (colour, shape) index pairs (N, 2)).
    """
    from cvcourse import synthetic

    colors, shapes = list(synthetic.COLORS), list(synthetic.SHAPES)
    pairs = torch.tensor([(i, j) for i in range(len(colors)) for j in range(len(shapes))])  # (K, 2)
    tokens = tokenize([caption(colors[i], shapes[j]) for i, j in pairs.tolist()], vocab)  # (K, T)
    model.eval()
    pred = pairs[model(images, tokens).argmax(dim=1)]  # (N, 2)
    correct = (pred[:, 0] == color_idx) & (pred[:, 1] == shape_idx)
    return float(correct.float().mean()), pred


def clip_experiment(seed: int = 0, n_test: int = 300, **train_kwargs) -> dict:
    """Train :class:`TinyCLIP` without the held-out pairs, then classify zero-shot among all captions.

    Returns a dict: model, vocab, losses, held_out (pairs), unseen_accuracy / seen_accuracy
    (caption exactly right on held-out / trained pairs), unseen_color_accuracy, unseen_shape_accuracy,
    chance (1 / number of captions), and the unseen test images with their indices and predictions.
    """
    from cvcourse import synthetic

    size = train_kwargs.get("size", 16)
    model, vocab, losses = train_clip(seed=seed, **train_kwargs)
    held = held_out_pairs(len(synthetic.COLORS), len(synthetic.SHAPES))
    x_new, c_new, s_new = clip_dataset(n_test, size=size, seed=seed + 101, include_only=held)
    x_old, c_old, s_old = clip_dataset(n_test, size=size, seed=seed + 202, exclude=held)
    unseen, pred = zero_shot_accuracy(model, vocab, x_new, c_new, s_new)
    seen, _ = zero_shot_accuracy(model, vocab, x_old, c_old, s_old)
    return {
        "model": model, "vocab": vocab, "losses": losses, "held_out": held,
        "unseen_accuracy": unseen, "seen_accuracy": seen,
        "unseen_color_accuracy": float((pred[:, 0] == c_new).float().mean()),
        "unseen_shape_accuracy": float((pred[:, 1] == s_new).float().mean()),
        "chance": 1.0 / (len(synthetic.COLORS) * len(synthetic.SHAPES)),
        "images": x_new, "color_idx": c_new, "shape_idx": s_new, "pred": pred,
    }


# ----------------------------------------------------------------------------- DETR
def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) boxes [cx, cy, w, h] -> [x0, y0, x1, y1]."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise generalized IoU of (P, 4) and (G, 4) boxes [x0, y0, x1, y1] -> (P, G) in [-1, 1].

    GIoU = IoU - (area of the smallest enclosing box - area of the union) / area of the enclosing box.
    """
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])  # (P,)
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])  # (G,)
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])  # (P, G, 2)
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])  # (P, G, 2)
    inter = (rb - lt).clamp(min=0).prod(-1)  # (P, G)
    union = area1[:, None] + area2[None, :] - inter
    iou = inter / union
    lt_c = torch.minimum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb_c = torch.maximum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    enclose = (rb_c - lt_c).clamp(min=0).prod(-1)  # (P, G)
    return iou - (enclose - union) / enclose


def detr_matching_cost(
    pred_logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_boxes: torch.Tensor,
    w_class: float = 1.0,
    w_l1: float = 5.0,
    w_giou: float = 2.0,
) -> torch.Tensor:
    """DETR's matching cost between Q predictions and G ground-truth objects -> (Q, G).

    pred_logits (Q, K+1) (last class = "no object"), pred_boxes (Q, 4) and gt_boxes (G, 4) as
    [cx, cy, w, h] in [0, 1], gt_labels (G,). cost = -w_class * p(gt class) + w_l1 * L1(boxes)
    - w_giou * GIoU(boxes). Weights default to the DETR paper's (1, 5, 2).
    """
    prob = pred_logits.softmax(-1)  # (Q, K+1)
    cost_class = -prob[:, gt_labels]  # (Q, G)
    cost_l1 = torch.cdist(pred_boxes, gt_boxes, p=1)  # (Q, G)
    cost_giou = -generalized_box_iou(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(gt_boxes))
    return w_class * cost_class + w_l1 * cost_l1 + w_giou * cost_giou


def hungarian_match(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost one-to-one assignment (scipy's ``linear_sum_assignment``) for a (Q, G) cost, Q >= G.

    Returns (pred_idx (G,), gt_idx (G,)) int64: prediction ``pred_idx[i]`` is matched with object
    ``gt_idx[i]``; unmatched predictions are trained to say "no object".
    """
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost.detach().cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)
