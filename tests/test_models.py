"""cvcourse.models: SmallCNN structure and accuracy; the offline ImageNet classifier on real photos."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch
from scipy.special import softmax
from torch import nn
from torchvision.transforms import v2

from cvcourse import data, models, train

CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat"}


@pytest.mark.parametrize("size", [8, 16, 28, 32])
def test_small_cnn_shapes(size):
    model = models.SmallCNN(in_channels=3, num_classes=7, width=8)
    images = torch.rand(2, 3, size, size)
    assert isinstance(model.features, nn.Sequential)
    assert isinstance(model.features[-1][0], nn.Conv2d)
    activations = model.features(images)
    assert activations.shape == (2, 32, size // 4, size // 4)
    assert isinstance(model.classifier, nn.Linear) and model.classifier.in_features == 32
    logits = model(images)
    assert logits.shape == (2, 7)
    # global average pooling then a linear layer: the CAM identity holds
    manual = activations.mean(dim=(2, 3)) @ model.classifier.weight.T + model.classifier.bias
    torch.testing.assert_close(logits, manual)
    torch.testing.assert_close(model.embed(images), activations.mean(dim=(2, 3)))


@pytest.fixture
def one_thread():
    """Train on one thread: deterministic numerics and no OpenMP spinning on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_small_cnn_learns_digits(one_thread):
    images, labels = data.load_digits(size=16)
    train_x, train_y, test_x, test_y = data.split(images, labels, seed=0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = models.SmallCNN(in_channels=1, num_classes=10, width=16)
    history = train.fit(model, train_x, train_y, epochs=10, lr=1e-3, batch_size=32, seed=0)
    assert history.loss[-1] < history.loss[0]
    predicted = train.predict(model, test_x).argmax(1)
    assert (predicted == test_y).float().mean().item() > 0.95


@pytest.fixture(scope="module")
def imagenet_model():
    return models.imagenet_classifier(device="cpu")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("chelsea", CAT_CLASSES), ("coffee", {"espresso", "cup"})],
)
def test_imagenet_classifier_on_real_photos(imagenet_model, name, expected):
    image = data.load_photo(name, size=224)
    with torch.no_grad():
        logits = imagenet_model(models.imagenet_preprocess(image))
    assert logits.shape == (1, 1000)
    top = models.top_classes(logits, k=5)[0]
    assert top[0][0] in expected, top


def test_imagenet_classifier_is_in_eval_mode(imagenet_model):
    assert not imagenet_model.training
    assert next(imagenet_model.parameters()).device.type == "cpu"


def test_imagenet_classifier_without_weights_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("CVCOURSE_CACHE", str(tmp_path / "cvcourse"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("no download expected"))
    with pytest.raises(FileNotFoundError, match="make setup"):
        models.imagenet_classifier(device="cpu")


def test_imagenet_preprocess_matches_torchvision_transforms():
    gen = torch.Generator().manual_seed(0)
    square = torch.rand(2, 3, 224, 224, generator=gen)
    normalize = v2.Normalize(mean=models.IMAGENET_MEAN, std=models.IMAGENET_STD)
    torch.testing.assert_close(models.imagenet_preprocess(square), normalize(square))
    wide = torch.rand(3, 300, 450, generator=gen)  # short side 300 -> 224 x 336 exactly
    pipeline = v2.Compose([v2.Resize(224, antialias=True), v2.CenterCrop(224), normalize])
    out = models.imagenet_preprocess(wide)
    assert out.shape == (1, 3, 224, 224)
    expected = pipeline(wide)
    assert (out[0] - expected).abs().mean() < 1e-3
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        models.imagenet_preprocess(torch.rand(1, 1, 224, 224))


def test_top_classes_matches_softmax():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1000, generator=gen)
    result = models.top_classes(logits, k=4)
    names = data.imagenet_categories()
    probs = softmax(logits.numpy().astype(np.float64), axis=1)
    for row, p in zip(result, probs):
        order = np.argsort(-p)[:4]
        assert [name for name, _ in row] == [names[i] for i in order]
        np.testing.assert_allclose([q for _, q in row], p[order], rtol=1e-5)
    single = models.top_classes(logits[0], k=1, categories=None)
    assert single[0][0][0] == result[0][0][0]
    small = models.top_classes(torch.tensor([[0.0, 1.0]]), k=5, categories=["a", "b"])
    assert [n for n, _ in small[0]] == ["b", "a"]
