"""One seeded, device-aware training loop (Adam + cross-entropy), prediction and accuracy.

Uses a GPU when there is one (:func:`default_device`) and never needs it. ``fit`` is
deterministic for a given ``seed`` on a given device: shuffling uses its own
``torch.Generator`` and the global RNG (dropout, if any) is seeded inside a
``torch.random.fork_rng`` block, so the caller's random state is left untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["History", "accuracy", "default_device", "fit", "predict"]


def default_device() -> torch.device:
    """``cuda`` if a GPU is available, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class History:
    """Per-epoch training record: mean ``loss`` and training ``accuracy`` (fraction in [0, 1]);
    ``val_accuracy`` when validation data were given to :func:`fit`."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)


def fit(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 5,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    weight_decay: float = 0.0,
    val_images: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
) -> History:
    """Train ``model`` in place with Adam on mean cross-entropy; return its :class:`History`.

    ``images`` is any batch-first tensor the model accepts (N, ...); ``labels`` (N,) int64.
    Each epoch visits all samples in an order drawn from ``torch.Generator().manual_seed(seed)``.
    The model ends on ``device`` (default :func:`default_device`) in eval mode.
    """
    if len(images) != len(labels):
        raise ValueError(f"images ({len(images)}) and labels ({len(labels)}) differ in length")
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"need epochs >= 0 and batch_size >= 1, got {epochs} and {batch_size}")
    device = torch.device(device) if device is not None else default_device()
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(int(seed))
    history = History()
    n = len(images)
    labels = labels.long()
    epoch_iter = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        epoch_iter = tqdm(epoch_iter, desc="epochs", leave=False)
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(int(seed))
        for _ in epoch_iter:
            model.train()
            order = torch.randperm(n, generator=generator)
            total_loss, correct = 0.0, 0
            for begin in range(0, n, batch_size):
                batch = order[begin : begin + batch_size]
                x = images[batch].to(device, non_blocking=True)
                y = labels[batch].to(device, non_blocking=True)
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += loss.item() * len(batch)
                correct += int((logits.argmax(1) == y).sum())
            history.loss.append(total_loss / n)
            history.accuracy.append(correct / n)
            if val_images is not None and val_labels is not None:
                history.val_accuracy.append(accuracy(model, val_images, val_labels, device=device))
            if progress:
                epoch_iter.set_postfix(loss=f"{history.loss[-1]:.3f}", acc=f"{history.accuracy[-1]:.3f}")
    model.eval()
    return history


@torch.no_grad()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Logits (N, K) of ``model`` on ``images`` (N, ...), computed in eval mode, returned on CPU.

    The model is moved to ``device`` (default: where its parameters are, else
    :func:`default_device`) and left in the train/eval mode it had.
    """
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else default_device()
    device = torch.device(device)
    model.to(device)
    was_training = model.training
    model.eval()
    try:
        outputs = [
            model(images[i : i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0)


def accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> float:
    """Fraction of ``images`` whose top logit is the label (a Python float in [0, 1])."""
    logits = predict(model, images, batch_size=batch_size, device=device)
    return float((logits.argmax(1) == labels.cpu()).float().mean())
