"""Unit tests of cvcourse.interpret against independent oracles (captum, pytorch_grad_cam, scikit-learn, NumPy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cvcourse import interpret as ci


def _cnn(seed: int = 0, in_ch: int = 3, classes: int = 4, stride: int = 2) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(in_ch, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, stride=stride, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, classes),
    ).eval()


def _images(n: int = 5, size: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# ---------------------------------------------------------------- Grad-CAM / CAM


def test_grad_cam_matches_captum_layer_gradcam():
    from captum.attr import LayerAttribution, LayerGradCam

    model, images = _cnn(), _images()
    classes = torch.tensor([0, 1, 2, 3, 1])
    ours_raw = ci.grad_cam(model, model[3], images, classes, upsample=False, normalize=False)
    theirs = LayerGradCam(model, model[3]).attribute(images, target=classes, relu_attributions=True)  # (N, 1, h, w)
    assert ours_raw.shape == (5, 6, 6)
    torch.testing.assert_close(ours_raw, theirs[:, 0].detach(), rtol=1e-4, atol=1e-6)
    # Upsampled and max-normalized: captum's bilinear interpolation, then divide by the max.
    up = LayerAttribution.interpolate(theirs.detach(), (12, 12), interpolate_mode="bilinear")[:, 0]
    want = up / up.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    ours = ci.grad_cam(model, model[3], images, classes)
    torch.testing.assert_close(ours, want, rtol=1e-4, atol=1e-6)
    assert ours.shape == (5, 12, 12) and float(ours.max()) == pytest.approx(1.0)


def test_grad_cam_matches_pytorch_grad_cam():
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, images = _cnn(seed=3, stride=1), _images(4, 10, seed=2)  # layer at input size: no resize
    classes = [2, 0, 3, 1]
    with GradCAM(model=model, target_layers=[model[3]]) as cam:
        theirs = cam(input_tensor=images, targets=[ClassifierOutputTarget(c) for c in classes])  # (N, H, W), min-max scaled
    ours = ci.grad_cam(model, model[3], images, torch.tensor(classes)).numpy()
    lo = ours.reshape(4, -1).min(1)[:, None, None]
    ours_minmax = (ours - lo) / (ours.reshape(4, -1).max(1)[:, None, None] - lo + 1e-7)
    np.testing.assert_allclose(ours_minmax, theirs, atol=1e-4)


def test_grad_cam_class_idx_forms_and_top_class():
    model, images = _cnn(seed=4), _images(3)
    top = model(images).argmax(1)
    torch.testing.assert_close(ci.grad_cam(model, model[2], images), ci.grad_cam(model, model[2], images, top))
    torch.testing.assert_close(ci.grad_cam(model, model[2], images, 2), ci.grad_cam(model, model[2], images, torch.tensor([2, 2, 2])))
    with pytest.raises(ValueError, match="class_idx"):
        ci.grad_cam(model, model[2], images, torch.tensor([0, 1]))


def test_grad_cam_equals_cam_for_pooled_linear_models():
    # For GAP + linear, d logit_c / d A_k = w_ck / (h w) everywhere: Grad-CAM = CAM / (h w) (closed form).
    model, images = _cnn(seed=5), _images(4)
    classes = torch.tensor([3, 2, 1, 0])
    g = ci.grad_cam(model, model[3], images, classes, upsample=False, normalize=False)
    c = ci.class_activation_map(model, model[3], model[6].weight, images, classes, upsample=False, normalize=False)
    torch.testing.assert_close(g, c / 36, rtol=1e-4, atol=1e-7)
    # CAM against NumPy: activations from a separate forward pass of the first layers.
    acts = model[:4](images).detach().numpy()  # (N, K, h, w)
    w = model[6].weight.detach().numpy()[classes.numpy()]  # (N, K)
    want = np.maximum(np.einsum("nk,nkhw->nhw", w, acts), 0)
    np.testing.assert_allclose(c.numpy(), want, rtol=1e-5, atol=1e-6)
    # The CAM's spatial mean plus the bias is the logit (before ReLU): checks weights pick the right class.
    logits = model(images).detach()
    mean_map = np.einsum("nk,nkhw->n", w, acts) / 36 + model[6].bias.detach().numpy()[classes.numpy()]
    np.testing.assert_allclose(mean_map, logits[torch.arange(4), classes].numpy(), rtol=1e-4, atol=1e-5)


def test_grad_cam_leaves_model_as_found():
    model, images = _cnn(seed=6), _images(2)
    model.train()  # no BatchNorm/Dropout here, so train mode gives the same outputs
    model[0].weight.grad = torch.full_like(model[0].weight, 7.0)
    ci.grad_cam(model, model[3], images)
    assert model.training and all(m.training for m in model.modules())
    assert torch.all(model[0].weight.grad == 7.0) and model[2].weight.grad is None
    assert _hook_count(model) == 0
    # Frozen models (no parameter requires grad) work too.
    for p in model.parameters():
        p.requires_grad_(False)
    assert ci.grad_cam(model.eval(), model[3], images).shape == (2, 12, 12)
    assert _hook_count(model) == 0


@pytest.mark.parametrize("grad_enabled", [True, False])
def test_grad_cam_restores_grad_mode_and_records_no_graph_before_the_layer(grad_enabled):
    model, images = _cnn(seed=7), _images(3)
    expected = ci.grad_cam(model, model[3], images)
    recorded = []  # the input of the first conv layer after the target: its autograd history
    handle = model[4].register_forward_hook(lambda m, i, o: recorded.append(i[0].grad_fn))
    try:
        with torch.set_grad_enabled(grad_enabled):
            maps = ci.grad_cam(model, model[3], images)
            assert torch.is_grad_enabled() is grad_enabled
    finally:
        handle.remove()
    torch.testing.assert_close(maps, expected)
    assert recorded == [None]  # the target's output is a leaf: nothing before it was recorded


def test_grad_cam_when_the_model_sets_the_grad_mode_around_the_layer():
    # a forward that wraps its body in enable_grad() restores the caller's mode after the body,
    # which turns recording off again before the head: grad_cam must still give the right map
    class ModeSettingModel(nn.Module):
        def __init__(self, body: nn.Module, head: nn.Module) -> None:
            super().__init__()
            self.body, self.head = body, head

        def forward(self, x):
            with torch.enable_grad():
                features = self.body(x)
            return self.head(features)

    base, images = _cnn(seed=8), _images(2)
    wrapped = ModeSettingModel(base[:4], base[4:]).eval()
    torch.testing.assert_close(ci.grad_cam(wrapped, base[3], images), ci.grad_cam(base, base[3], images))
    assert torch.is_grad_enabled() and _hook_count(wrapped) == 0


def test_capture_activations_removes_hook_and_propagates_errors():
    model = _cnn()

    class Boom(RuntimeError):
        pass

    with pytest.raises(Boom):
        with ci.capture_activations(model[1]) as cap:
            model(_images(1))
            assert cap.activations.shape == (1, 8, 12, 12)
            raise Boom("must not be swallowed")
    assert _hook_count(model) == 0
    # A failing forward pass inside grad_cam also leaves no hook behind.
    with pytest.raises(RuntimeError):
        ci.grad_cam(model, model[3], torch.rand(1, 5, 12, 12))  # wrong number of channels
    assert _hook_count(model) == 0


def test_normalize_keeps_zero_maps_zero():
    maps = torch.zeros(2, 3, 3)
    maps[1, 1, 1] = 4.0
    out = ci.normalize_maps(maps)
    assert torch.all(out[0] == 0) and float(out[1].max()) == 1.0


# ---------------------------------------------------------------- occlusion


@pytest.mark.parametrize("window,stride", [(4, 4), (4, 2), (3, 3), (6, 3)])
def test_occlusion_attribution_matches_captum(window, stride):
    # captum adds a last, truncated window when (H - window) % stride != 0; we (and the
    # assignment's contract) use only whole windows, so compare where the two agree.
    from captum.attr import Occlusion

    model, images = _cnn(seed=7), _images(3, 12)
    targets = torch.tensor([1, 3, 0])
    ours = ci.occlusion_attribution(model, images, targets, window, stride, baseline=0.25)
    occ = Occlusion(lambda x: model(x).softmax(1))
    theirs = occ.attribute(images, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                           baselines=0.25, target=targets)  # (N, C, H, W), equal over channels
    torch.testing.assert_close(ours, theirs[:, 0].detach(), rtol=1e-4, atol=1e-6)


def test_occlusion_map_brute_force():
    model, image = _cnn(seed=8), _images(1, 11)[0]
    m = ci.occlusion_map(model, image, target=2, window=4, stride=3, baseline=0.5)
    assert m.shape == ((11 - 4) // 3 + 1, (11 - 4) // 3 + 1)
    p = lambda x: float(model(x[None]).softmax(1)[0, 2])  # noqa: E731
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            x = image.clone()
            x[:, i * 3 : i * 3 + 4, j * 3 : j * 3 + 4] = 0.5
            assert float(m[i, j]) == pytest.approx(p(image) - p(x), abs=1e-6)
    with pytest.raises(ValueError, match="window"):
        ci.occlusion_map(model, image, 0, window=12, stride=1)


# ---------------------------------------------------------------- pointing game


def test_pointing_and_mass_against_numpy():
    rng = np.random.default_rng(0)
    maps = rng.random((20, 9, 7)).astype(np.float32)
    boxes = np.stack([rng.integers(0, 3, 20), rng.integers(0, 4, 20), rng.integers(3, 8, 20), rng.integers(4, 10, 20)], 1)
    peaks = np.array([np.unravel_index(m.argmax(), m.shape) for m in maps])  # (row, col)
    want_hits = [(b[0] <= c < b[2]) and (b[1] <= r < b[3]) for (r, c), b in zip(peaks, boxes)]
    hits = ci.pointing_hits(torch.from_numpy(maps), torch.from_numpy(boxes))
    assert hits.tolist() == want_hits
    assert ci.pointing_accuracy(torch.from_numpy(maps), torch.from_numpy(boxes)) == pytest.approx(np.mean(want_hits))
    want_mass = [m[b[1] : b[3], b[0] : b[2]].sum() / m.sum() for m, b in zip(maps, boxes)]
    np.testing.assert_allclose(ci.mass_in_box(torch.from_numpy(maps), torch.from_numpy(boxes)).numpy(), want_mass, rtol=1e-5)
    one_box = ci.mass_in_box(torch.from_numpy(maps), (0, 0, 2, 3))
    np.testing.assert_allclose(one_box.numpy(), maps[:, :3, :2].sum((1, 2)) / maps.sum((1, 2)), rtol=1e-5)


# ---------------------------------------------------------------- feature space


def _blobs(n=120, d=6, seed=0):
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=n, n_features=d, centers=4, cluster_std=3.0, random_state=seed)
    return torch.from_numpy(x).float(), torch.from_numpy(y).long()


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_nearest_neighbors_and_knn_match_sklearn(metric):
    from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

    x, y = _blobs()
    train, test = slice(0, 90), slice(90, 120)
    nn_ = NearestNeighbors(n_neighbors=5, metric=metric, algorithm="brute").fit(x[train].numpy())
    want_d, want_i = nn_.kneighbors(x[test].numpy())
    idx, dist = ci.nearest_neighbors(x[train], x[test], k=5, metric=metric)
    assert idx.tolist() == want_i.tolist()
    np.testing.assert_allclose(dist.numpy(), want_d, rtol=1e-4, atol=1e-5)
    clf = KNeighborsClassifier(5, metric=metric, algorithm="brute").fit(x[train].numpy(), y[train].numpy())
    want = clf.score(x[test].numpy(), y[test].numpy())
    got = ci.knn_accuracy(x[train], y[train], 5, test_features=x[test], test_labels=y[test], metric=metric)
    assert got == pytest.approx(want)


def test_knn_leave_one_out_matches_sklearn():
    from sklearn.model_selection import LeaveOneOut, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    x, y = _blobs(80, seed=1)
    want = cross_val_score(KNeighborsClassifier(5, algorithm="brute"), x.numpy(), y.numpy(), cv=LeaveOneOut()).mean()
    assert ci.knn_accuracy(x, y, k=5) == pytest.approx(want)
    assert 0.2 < want < 1.0  # the oracle must be able to disagree
    assert ci.chance_accuracy(torch.tensor([0, 0, 1, 2])) == 0.5


def test_extract_features_is_the_classifier_input():
    model, images = _cnn(seed=9), _images(7)
    feats = ci.extract_features(model, images, device="cpu", batch_size=3)
    torch.testing.assert_close(feats, model[:6](images).detach())
    conv = ci.extract_features(model, images, layer=model[3], device="cpu")
    assert conv.shape == (7, 6 * 6 * 6)
    assert _hook_count(model) == 0


@pytest.mark.parametrize("n, d, offset", [(60, 5, 0.0), (300, 40, 1e3), (20, 50, 5.0)])
def test_pca_matches_sklearn(n, d, offset):
    # tall (eigenvectors of the scatter matrix), far from the origin (centring), and wide (SVD)
    from sklearn.decomposition import PCA

    x, _ = _blobs(n, d=d, seed=2)
    x = x.double() + offset
    ours = ci.embed_pca(x, 3)
    theirs = PCA(3, svd_solver="full").fit_transform(x.numpy())
    assert ours.shape == (n, 3)
    for j in range(3):  # equal up to the sign of each component
        s = np.sign(ours[:, j] @ theirs[:, j])
        np.testing.assert_allclose(ours[:, j], s * theirs[:, j], rtol=1e-6, atol=1e-8)
        assert ours[:, j].var() >= (ours[:, j + 1].var() if j < 2 else 0)  # largest variance first
    with pytest.raises(ValueError, match="n_components"):
        ci.embed_pca(x, min(n, d) + 1)


def test_autoencoder_learns_and_is_seeded():
    x, y = _blobs(100, d=8, seed=3)
    _, codes, losses = ci.fit_autoencoder(x, 2, epochs=150, seed=0)
    _, codes2, _ = ci.fit_autoencoder(x, 2, epochs=150, seed=0)
    assert codes.shape == (100, 2) and np.array_equal(codes, codes2)
    assert losses[-1] < 0.6 * losses[0]
    assert ci.knn_accuracy(torch.from_numpy(codes), y, 5) > 0.8  # 4 blobs stay apart in the bottleneck


def test_tsne_embedding_keeps_clusters():
    x, y = _blobs(100, d=8, seed=4)
    z = ci.embed_tsne(x, seed=0, perplexity=15)
    assert z.shape == (100, 2)
    assert ci.knn_accuracy(torch.from_numpy(z), y, 5) > 0.9


@pytest.mark.slow
def test_umap_embedding_keeps_clusters():
    x, y = _blobs(150, d=8, seed=5)
    z = ci.embed_umap(x, seed=0)
    assert z.shape == (150, 2)
    assert ci.knn_accuracy(torch.from_numpy(z), y, 5) > 0.9


# ---------------------------------------------------------------- feature visualization


def test_color_correlation_sqrt_against_numpy():
    images = _images(4, 8)
    images[:, 1] = 0.5 * images[:, 0] + 0.5 * images[:, 1]  # correlate green with red
    m = ci.color_correlation_sqrt(images).double().numpy()
    cov = np.cov(images.permute(1, 0, 2, 3).reshape(3, -1).double().numpy())
    np.testing.assert_allclose(m @ m.T, cov, rtol=1e-5, atol=1e-7)


def test_fourier_image_against_numpy_irfft():
    param = ci.FourierImage((8, 10), decay=1.0, init_std=1.0, seed=0)
    spec = param.spectrum.detach().double().numpy()
    spec = spec[0, ..., 0] + 1j * spec[0, ..., 1]  # (3, 8, 6)
    fy, fx = np.fft.fftfreq(8)[:, None], np.fft.rfftfreq(10)[None, :]
    scale = np.maximum(np.sqrt(fy**2 + fx**2), 1 / 10) ** -1.0
    want = np.fft.irfft2(spec * scale, s=(8, 10), norm="ortho")
    np.testing.assert_allclose(param.decorrelated().detach().numpy()[0], want, rtol=1e-4, atol=1e-5)
    img = param()
    assert img.shape == (1, 3, 8, 10) and 0 < float(img.min()) and float(img.max()) < 1
    torch.testing.assert_close(img[0], torch.sigmoid(torch.from_numpy(want).float()), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("parameterization", ["fourier", "pixel"])
def test_visualize_channel_finds_the_known_optimum(parameterization):
    # Closed form: channel 0 of this conv computes red - green, so the best image in [0, 1]
    # is red = 1, green = 0 everywhere (blue does not matter). We read the conv's output, before
    # the ReLU, so that no pixel's gradient dies.
    conv = nn.Conv2d(3, 2, 3)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0, 0], conv.weight[0, 1], conv.weight[1, 2] = 1.0, -1.0, 1.0
    model = nn.Sequential(conv, nn.ReLU())
    res = ci.visualize_channel(model, model[0], channel=0, size=24, steps=60, lr=0.2, jitter=2,
                               parameterization=parameterization, mean=None, std=None, device="cpu")
    red, green, blue = res.image.mean(dim=(1, 2)).tolist()
    # Adam gives the tiny border-effect gradients of high frequencies full-size steps, so the
    # Fourier image is less uniform than the pixel one; both must head for the optimum.
    bound = 0.95 if parameterization == "pixel" else 0.75
    assert red > bound and green < 1 - bound and abs(blue - 0.5) < 0.1, (red, green, blue)
    assert res.objective[-1] > 10 * res.objective[0]
    assert res.image.shape == (3, 24, 24) and 0 <= float(res.image.min()) and float(res.image.max()) <= 1
    assert conv.weight.grad is None and _hook_count(model) == 0
    both = ci.visualize_channel(model, model[0], channel=[0, 1], size=16, steps=30, lr=0.2, jitter=1,
                                parameterization=parameterization, mean=None, std=None, device="cpu")
    assert both.image.shape == (2, 3, 16, 16)
    assert float(both.image[0, 0].mean()) > 0.7 and float(both.image[1, 2].mean()) > 0.7  # red, then blue
    with pytest.raises(ValueError, match="channel"):
        ci.visualize_channel(model, model[1], channel=5, size=8, steps=1, mean=None, std=None, device="cpu")
