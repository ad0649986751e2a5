"""The claims that book/interpretation.md prints, asserted through the same cvcourse functions.

The models are trained once per process (cached in cvcourse.interpret.experiments), on the
chapter's seeds. Thresholds are the chapter's claims, not our measured numbers.
"""

from __future__ import annotations

import pytest
import torch

import cvcourse as cv
from cvcourse import interpret as ci
from cvcourse.interpret import experiments as ex


@pytest.fixture(scope="module")
def fair():
    return ex.train_shapes_model(spurious=0.0).model


@pytest.fixture(scope="module")
def biased():
    return ex.train_shapes_model(spurious=1.0).model


@pytest.fixture(scope="module")
def digits():
    return ex.digits_features()


def test_pointing_game_gradcam_and_occlusion(fair):
    images, labels, boxes = ex.shapes_test_set(200, spurious=0.0)
    assert cv.train.accuracy(fair, images, labels, device="cpu") > 0.9
    assert ex.gradcam_pointing(fair, images, boxes) >= 0.9
    assert ex.occlusion_pointing(fair, images[:100], boxes[:100]) >= 0.8
    # A map that ignores the image (always the centre) scores far lower: the game can be lost.
    centre = ex.centre_pointing(boxes)
    assert centre < 0.6
    peaks = torch.zeros(200, 32, 32)
    peaks[:, 16, 16] = 1.0
    assert centre == ci.pointing_accuracy(peaks, boxes)


def test_biased_model_looks_at_the_marker(biased, fair):
    images, labels, _ = ex.shapes_test_set(200, spurious=1.0)
    clean_images, clean_labels, _ = ex.shapes_test_set(200, spurious=0.0)
    assert cv.train.accuracy(biased, images, labels, device="cpu") > 0.95
    # The shortcut: the biased model loses accuracy when the marker is random, the fair one does not.
    assert cv.train.accuracy(biased, clean_images, clean_labels, device="cpu") < 0.8
    assert cv.train.accuracy(fair, clean_images, clean_labels, device="cpu") > 0.9
    assert ex.marker_mass(biased, images) > 0.5  # the 12 x 12 corner the 8 x 8 map can resolve
    assert ex.marker_mass(fair, images) < 0.14  # less than the corner's share of the image area
    assert ex.marker_mass(biased, images, region=None) > 10 * ex.marker_mass(fair, images, region=None)
    assert ex.marker_pointing(biased, images) > 0.9
    assert ex.marker_pointing(fair, images) < 0.05


def test_nearest_neighbours_share_the_class(digits):
    chance = ci.chance_accuracy(digits.labels)
    assert chance < 0.15
    assert digits.features.shape == (450, 64)
    assert ci.knn_accuracy(digits.features, digits.labels, k=5) > 0.9


def test_2d_embeddings_cluster_by_class(digits):
    tsne = ci.embed_tsne(digits.features, seed=0)
    assert ci.knn_accuracy(torch.from_numpy(tsne), digits.labels, k=5) > 0.85
    pca = ci.embed_pca(digits.features, 2)
    assert ci.knn_accuracy(torch.from_numpy(pca), digits.labels, k=5) > 0.3  # far above chance, below t-SNE
    codes = ci.fit_autoencoder(digits.features, 2, seed=0)[1]
    assert ci.knn_accuracy(torch.from_numpy(codes), digits.labels, k=5) > 0.5


@pytest.mark.slow
def test_umap_embedding_clusters_by_class(digits):
    z = ci.embed_umap(digits.features, seed=0)
    assert ci.knn_accuracy(torch.from_numpy(z), digits.labels, k=5) > 0.85
