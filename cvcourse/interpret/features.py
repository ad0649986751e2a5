"""Feature space: extract learned features, find nearest neighbours, embed them in 2D.

A trained network maps each image to a feature vector (for our CNNs the globally pooled
activations that enter the final linear layer). Images of the same class should land close
together there; :func:`knn_accuracy` measures how often they do, and the 2D embeddings
(PCA, t-SNE, UMAP, an autoencoder's bottleneck) let us look at it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
    "extract_features",
    "pairwise_distances",
    "nearest_neighbors",
    "knn_predict",
    "knn_accuracy",
    "chance_accuracy",
    "embed_pca",
    "embed_tsne",
    "embed_umap",
    "Autoencoder",
    "fit_autoencoder",
    "embed",
    "ensure_numba_cache",
    "one_thread",
]


@contextmanager
def one_thread() -> Iterator[None]:
    """Run tiny models on one CPU thread (the previous count is restored, also on errors).

    Their operations are too small for intra-op parallelism to pay: on a busy 2-core machine
    two threads made small trainings several times slower in CPU time.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _device(device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    from cvcourse.train import default_device  # the house rule: a GPU when present

    return default_device()


def extract_features(
    model: nn.Module,
    images: torch.Tensor,
    layer: nn.Module | None = None,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Features (N, D) on the CPU for ``images`` (N, C, H, W).

    ``layer=None``: the input of the model's last ``nn.Linear`` (the pooled features a
    classifier reads). Otherwise the output of ``layer``, flattened to (N, D).
    The model's mode is left as found (run it in eval mode yourself for BatchNorm/Dropout).
    """
    if layer is None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("model has no nn.Linear; pass layer= to choose which output to use as features")
        layer, use_input = linears[-1], True
    else:
        use_input = False
    device = _device(device)
    params = next(model.parameters(), None)
    original = params.device if params is not None else torch.device("cpu")
    model.to(device)
    out: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        value = inputs[0] if use_input else output
        out.append(value.detach().flatten(1).cpu())  # (b, D)

    handle = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            for i in range(0, images.shape[0], batch_size):
                model(images[i : i + batch_size].to(device))
    finally:
        handle.remove()
        model.to(original)
    return torch.cat(out)


def pairwise_distances(a: torch.Tensor, b: torch.Tensor, metric: str = "euclidean") -> torch.Tensor:
    """Distances (Na, Nb) between rows of ``a`` (Na, D) and ``b`` (Nb, D): "euclidean" or "cosine" (1 - cos)."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    if metric == "euclidean":
        return torch.cdist(a, b)
    if metric == "cosine":
        a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
        b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return 1 - a @ b.T
    raise ValueError(f"metric={metric!r}; use 'euclidean' or 'cosine'")


def nearest_neighbors(
    features: torch.Tensor,
    queries: torch.Tensor | None = None,
    k: int = 5,
    metric: str = "euclidean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and distances (Q, k) of each query's k nearest rows of ``features`` (N, D).

    ``queries=None`` uses the features themselves and excludes each point from its own list.
    """
    self_query = queries is None
    d = pairwise_distances(queries if not self_query else features, features, metric)  # (Q, N)
    if self_query:
        d.fill_diagonal_(float("inf"))
    if not 1 <= k <= d.shape[1] - int(self_query):
        raise ValueError(f"k={k} must be between 1 and the number of candidate neighbours {d.shape[1] - int(self_query)}")
    dist, idx = d.topk(k, dim=1, largest=False)  # sorted nearest first
    return idx, dist.float()


def knn_predict(neighbor_labels: torch.Tensor) -> torch.Tensor:
    """Majority vote (Q,) over neighbour labels (Q, k); ties go to the smallest label."""
    num_classes = int(neighbor_labels.max()) + 1
    votes = torch.zeros(neighbor_labels.shape[0], num_classes, dtype=torch.long)
    votes.scatter_add_(1, neighbor_labels.long(), torch.ones_like(neighbor_labels, dtype=torch.long))
    return votes.argmax(dim=1)  # argmax returns the first (smallest) of tied classes


def knn_accuracy(
    features: torch.Tensor,
    labels: torch.Tensor,
    k: int = 5,
    *,
    test_features: torch.Tensor | None = None,
    test_labels: torch.Tensor | None = None,
    metric: str = "euclidean",
) -> float:
    """Accuracy of a k-nearest-neighbour vote in a feature space.

    Without test data: leave-one-out on ``features`` (N, D) / ``labels`` (N,) (each point is
    classified by its k nearest other points). With ``test_features``/``test_labels``: the
    test points are classified by their neighbours among ``features``.
    """
    features, labels = torch.as_tensor(features), torch.as_tensor(labels).long()
    if (test_features is None) != (test_labels is None):
        raise ValueError("pass both test_features and test_labels, or neither")
    idx, _ = nearest_neighbors(features, test_features, k, metric)
    truth = labels if test_labels is None else torch.as_tensor(test_labels).long()
    return float((knn_predict(labels[idx]) == truth).float().mean())


def chance_accuracy(labels: torch.Tensor) -> float:
    """Accuracy of always guessing the most frequent class (the bar a feature space must beat)."""
    counts = torch.bincount(torch.as_tensor(labels).long())
    return float(counts.max() / counts.sum())


def _numpy(features: torch.Tensor | np.ndarray) -> np.ndarray:
    return features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else np.asarray(features, float)


def embed_pca(features: torch.Tensor, n_components: int = 2) -> np.ndarray:
    """Project (N, D) features on their top principal components -> (N, n_components).

    Components are signed so that each one's entry of largest absolute value is positive.
    With N >= D the principal axes are the top eigenvectors of the (D, D) scatter matrix of the
    centred features (one matrix product and a small symmetric eigenproblem, which is cheaper
    than the SVD of the (N, D) matrix and gives the same axes); with N < D, the SVD.
    """
    x = _numpy(features)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {x.shape}; flatten them with features.flatten(1)")
    n, d = x.shape
    k = int(n_components)
    if not 1 <= k <= min(n, d):
        raise ValueError(f"n_components must be in 1..{min(n, d)} for features of shape {x.shape}, got {n_components}")
    x = x - x.mean(axis=0)  # centre a copy first: exact where subtracting the mean from x^T x afterwards is not
    if n >= d:
        # NumPy alone: mixing its BLAS with SciPy's (a second thread pool) costs more than it saves
        _, vecs = np.linalg.eigh(x.T @ x)  # (D, D), eigenvalues ascending
        comps = np.ascontiguousarray(vecs[:, ::-1][:, :k].T)  # (k, D), largest variance first
    else:
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        comps = vt[:k]  # (k, D)
    signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
    return x @ (comps * signs[:, None]).T


def embed_tsne(features: torch.Tensor, seed: int = 0, perplexity: float = 30.0, max_iter: int = 500) -> np.ndarray:
    """t-SNE (van der Maaten and Hinton, 2008) of (N, D) features -> (N, 2), PCA-initialised.

    ``max_iter=500`` (scikit-learn's default is 1000) halves the cost; small sets converge by then.
    """
    from sklearn.manifold import TSNE

    x = _numpy(features)
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed, max_iter=max_iter).fit_transform(x)


def ensure_numba_cache() -> Path:
    """Point numba's cache (used by UMAP) at a writable folder if ``NUMBA_CACHE_DIR`` is unset."""
    if "NUMBA_CACHE_DIR" not in os.environ:
        path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cvcourse" / "numba"
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError:
            import tempfile

            path = Path(tempfile.gettempdir()) / "cvcourse-numba"
            path.mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = str(path)
    return Path(os.environ["NUMBA_CACHE_DIR"])


def embed_umap(features: torch.Tensor, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1) -> np.ndarray:
    """UMAP (McInnes et al., 2018) of (N, D) features -> (N, 2). Imports umap-learn lazily (slow)."""
    ensure_numba_cache()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by setting random_state" and numba chatter
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=min_dist, random_state=seed)
        return reducer.fit_transform(_numpy(features).astype(np.float32))


class Autoencoder(nn.Module):
    """A small fully connected autoencoder: D -> hidden -> bottleneck -> hidden -> D."""

    def __init__(self, in_features: int, bottleneck: int = 2, hidden: int = 64) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, bottleneck))
        self.decoder = nn.Sequential(nn.Linear(bottleneck, hidden), nn.ReLU(), nn.Linear(hidden, in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def fit_autoencoder(
    features: torch.Tensor,
    bottleneck: int = 2,
    *,
    hidden: int = 64,
    epochs: int = 200,
    lr: float = 1e-2,
    seed: int = 0,
) -> tuple[Autoencoder, np.ndarray, list[float]]:
    """Train an :class:`Autoencoder` on standardized (N, D) features with full-batch Adam.

    Returns the model, the bottleneck codes (N, bottleneck) and the loss (mean squared
    reconstruction error of the standardized features) per epoch.
    """
    x = torch.as_tensor(_numpy(features), dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)  # standardized (N, D)
    generator = torch.Generator().manual_seed(seed)
    model = Autoencoder(x.shape[1], bottleneck, hidden)
    with torch.no_grad():
        for p in model.parameters():  # seeded init, independent of the global RNG
            bound = 1 / max(1, p.shape[-1]) ** 0.5
            p.uniform_(-bound, bound, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    with one_thread():
        for _ in range(epochs):
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(x), x)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    with torch.no_grad():
        codes = model.encoder(x).numpy()
    return model, codes, losses


def embed(features: torch.Tensor, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2D embedding (N, 2) of features by ``method``: "pca", "tsne", "umap" or "autoencoder"."""
    if method == "pca":
        return embed_pca(features, 2)
    if method == "tsne":
        return embed_tsne(features, seed)
    if method == "umap":
        return embed_umap(features, seed)
    if method == "autoencoder":
        return fit_autoencoder(features, 2, seed=seed)[1]
    raise ValueError(f"method={method!r}; use 'pca', 'tsne', 'umap' or 'autoencoder'")
