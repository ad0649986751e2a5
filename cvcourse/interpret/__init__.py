"""Interpreting networks: occlusion, CAM and Grad-CAM, pointing game, feature space, feature visualization.

``import cvcourse as cv`` then ``cv.interpret.grad_cam(model, model.features[-1], images)``.
The chapter's experiments are in :mod:`cvcourse.interpret.experiments` and its figures in
:mod:`cvcourse.interpret.figures` (import them as submodules). Importing this package is cheap: UMAP and scikit-learn's t-SNE are imported only when used.
"""

from __future__ import annotations

from .cam import (
    Captured,
    capture_activations,
    class_activation_map,
    grad_cam,
    normalize_maps,
    resolve_classes,
    upsample_maps,
)
from .featvis import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FeatureVisResult,
    FourierImage,
    PixelImage,
    color_correlation_sqrt,
    random_jitter_scale,
    visualize_channel,
)
from .features import (
    Autoencoder,
    chance_accuracy,
    embed,
    embed_pca,
    embed_tsne,
    embed_umap,
    ensure_numba_cache,
    extract_features,
    fit_autoencoder,
    knn_accuracy,
    knn_predict,
    nearest_neighbors,
    one_thread,
    pairwise_distances,
)
from .imagenet import ImageNetInput, imagenet_for_images
from .occlusion import occlusion_attribution, occlusion_map, window_positions
from .pointing import box_masks, mass_in_box, peak_locations, pointing_accuracy, pointing_hits

__all__ = [
    # cam
    "Captured",
    "capture_activations",
    "class_activation_map",
    "grad_cam",
    "normalize_maps",
    "resolve_classes",
    "upsample_maps",
    # imagenet
    "ImageNetInput",
    "imagenet_for_images",
    # occlusion
    "occlusion_attribution",
    "occlusion_map",
    "window_positions",
    # pointing
    "box_masks",
    "mass_in_box",
    "peak_locations",
    "pointing_accuracy",
    "pointing_hits",
    # features
    "Autoencoder",
    "chance_accuracy",
    "embed",
    "embed_pca",
    "embed_tsne",
    "embed_umap",
    "ensure_numba_cache",
    "extract_features",
    "fit_autoencoder",
    "knn_accuracy",
    "knn_predict",
    "nearest_neighbors",
    "one_thread",
    "pairwise_distances",
    # featvis
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FeatureVisResult",
    "FourierImage",
    "PixelImage",
    "color_correlation_sqrt",
    "random_jitter_scale",
    "visualize_channel",
]
