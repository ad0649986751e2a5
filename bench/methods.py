"""Benchmark: cvcourse's reference implementations against the libraries users would pick instead.

    .venv/bin/python bench/methods.py [--repeat 5] [--skip-torchattacks]

Side by side, in one run, on the same inputs:

- Grad-CAM: cvcourse vs pytorch-grad-cam (`GradCAM`) vs captum (`LayerGradCam` + bilinear
  upsampling + max scaling), on the ImageNet MobileNetV2 and real photos;
- FGSM: cvcourse vs a straightforward reference (autograd, sign, clamp) vs torchattacks (`FGSM`).
  torchattacks pins an old `requests`, so it is installed without dependencies into
  `.bench-envs/torchattacks` (never into .venv) and measured in a subprocess, with cvcourse's and
  the reference's FGSM timed again in that same process;
- PCA: cvcourse (`cv.interpret.features.embed_pca`) vs scikit-learn's `PCA` (`full`,
  `covariance_eigh` and `randomized`) on learned-feature-sized matrices;
- patch embedding: cvcourse's `PatchEmbedding.embed_patches` vs the same map written as
  `patchify` + `Linear`, timm's `PatchEmbed` and torchvision's ViT `conv_proj`, with the same
  weights.

For each: the largest absolute difference from cvcourse's result (equal results first) and the
time ratio cvcourse / fastest peer (goal: at most 1.0). Times are medians over `--repeat` interleaved rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import cvcourse as cv  # noqa: E402

TORCHATTACKS_ENV = ROOT / ".bench-envs" / "torchattacks"


def race(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, tuple[list[float], object]]:
    """Seconds of every round and the last result of each function, timed in interleaved rounds.

    Every round runs each function once, in a rotated order, so a slow spell of the machine
    falls on all of them alike instead of on whichever happened to run then.
    """
    names = list(fns)
    outs = {name: fns[name]() for name in names}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeat):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            start = time.perf_counter()
            outs[name] = fns[name]()
            times[name].append(time.perf_counter() - start)
    return {name: (times[name], outs[name]) for name in names}


def maxdiff(a, b) -> float:
    a = a.detach().cpu().double().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, float)
    b = b.detach().cpu().double().numpy() if isinstance(b, torch.Tensor) else np.asarray(b, float)
    return float(np.abs(a - b).max())


EQUAL = 1e-4  # a peer whose result differs from cvcourse's by at most this counts as equal


def report(title: str, rows: list[tuple[str, list[float], float]]) -> None:
    """rows: (name, seconds of each round, max abs difference from cvcourse); cvcourse first.

    Prints each row's median time relative to cvcourse's, then the figure the goal is about:
    cvcourse / the fastest peer whose result is equal (max abs difference <= EQUAL), as the
    median of the per-round ratios (each round timed both back to back) with its interquartile
    range, the noise a reader should allow for.
    """
    ours = rows[0][1]
    print(f"\n{title}")
    print(f"  {'implementation':<40}{'median s':>10}{'max |diff|':>12}{'x cvcourse':>12}")
    for name, seconds, diff in rows:
        print(f"  {name:<40}{statistics.median(seconds):>10.4f}{diff:>12.2e}"
              f"{statistics.median(seconds) / statistics.median(ours):>12.2f}")
    equal = [(statistics.median(seconds), name, seconds) for name, seconds, diff in rows[1:] if diff <= EQUAL]
    if not equal:
        print("  no peer gives an equal result")
        return
    _, name, peer = min(equal)
    ratios = sorted(a / b for a, b in zip(ours, peer))
    q1, median, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
    print(f"  cvcourse / fastest equal peer ({name}): {median:.2f} (interquartile range {q1:.2f}-{q3:.2f})")


def bench_gradcam(repeat: int) -> None:
    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = cv.models.imagenet_classifier()
    photos = torch.stack([cv.data.load_photo(name) for name in cv.data.PHOTOS[:4]])
    images = cv.models.imagenet_preprocess(photos)
    layer = model.features[-1]
    classes = model(images).argmax(1)

    def ours():
        return cv.interpret.grad_cam(model, layer, images, classes)

    def captum():
        raw = LayerGradCam(model, layer).attribute(images, target=classes, relu_attributions=True)
        up = torch.nn.functional.interpolate(raw, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        peak = up.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]
        return (up / peak).detach()

    cam = GradCAM(model=model, target_layers=[layer])

    def gradcam_lib():
        # pytorch-grad-cam resizes with OpenCV and min-max scales: compare only after the same max scaling
        maps = cam(input_tensor=images, targets=[ClassifierOutputTarget(int(c)) for c in classes])
        return torch.from_numpy(maps)

    res = race({"ours": ours, "captum": captum, "lib": gradcam_lib}, repeat)
    (t_ours, m_ours), (t_captum, m_captum), (t_lib, m_lib) = res["ours"], res["captum"], res["lib"]
    report("Grad-CAM, MobileNetV2 (ImageNet), 4 photos at 224 px", [
        ("cvcourse.interpret.grad_cam", t_ours, 0.0),
        ("captum LayerGradCam (+upsample, max)", t_captum, maxdiff(m_ours, m_captum)),
        ("pytorch-grad-cam GradCAM (min-max)", t_lib, maxdiff(m_ours, m_lib)),
    ])
    print("  (pytorch-grad-cam scales each map by min-max and resizes with OpenCV, so its maps differ by design)")


def reference_fgsm(model, images, labels, epsilon):
    images = images.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    (grad,) = torch.autograd.grad(loss, images)
    return (images + epsilon * grad.sign()).clamp(0, 1).detach()


def fgsm_setup(seed: int = 0):
    torch.manual_seed(seed)
    model = cv.models.SmallCNN(in_channels=1, num_classes=10, width=16).eval()
    images, labels = cv.data.load_digits(size=16)
    return model, images[:512], labels[:512]


def bench_fgsm(repeat: int, skip_torchattacks: bool) -> None:
    model, images, labels = fgsm_setup()
    eps = 0.1
    res = race({"ours": lambda: cv.attacks.fgsm(model, images, labels, eps),
                "ref": lambda: reference_fgsm(model, images, labels, eps)}, repeat)
    (t_ours, ours), (t_ref, ref) = res["ours"], res["ref"]
    rows = [("cvcourse.attacks.fgsm", t_ours, 0.0), ("straightforward reference", t_ref, maxdiff(ours, ref))]
    report("FGSM, SmallCNN on 512 digits at 16 px, epsilon 0.1", rows)
    if skip_torchattacks:
        return
    if not (TORCHATTACKS_ENV / "torchattacks").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                        str(TORCHATTACKS_ENV), "torchattacks"], check=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TORCHATTACKS_ENV), str(ROOT)]))
    out = subprocess.run([sys.executable, __file__, "--fgsm-torchattacks-child", str(repeat)], env=env,
                         capture_output=True, text=True, check=True)
    rows = [tuple(row) for row in json.loads(out.stdout.strip().splitlines()[-1])]
    report("FGSM in the torchattacks environment (same process for all three)", rows)


def fgsm_torchattacks_child(repeat: int) -> None:
    import torchattacks

    model, images, labels = fgsm_setup()
    eps = 0.1
    attack = torchattacks.FGSM(model, eps=eps)
    res = race({"ours": lambda: cv.attacks.fgsm(model, images, labels, eps),
                "ref": lambda: reference_fgsm(model, images, labels, eps),
                "ta": lambda: attack(images, labels)}, repeat)
    (t_ours, ours), (t_ref, ref), (t_ta, ta) = res["ours"], res["ref"], res["ta"]
    print(json.dumps([["cvcourse.attacks.fgsm", t_ours, 0.0],
                      ["straightforward reference", t_ref, maxdiff(ours, ref)],
                      [f"torchattacks {torchattacks.__version__} FGSM", t_ta, maxdiff(ours, ta)]]))


def bench_pca(repeat: int) -> None:
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    for n, d in ((1797, 64), (4000, 512)):
        x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)

        def sk(solver: str):
            z = PCA(n_components=2, svd_solver=solver, random_state=0).fit_transform(x)
            comps_sign = np.sign(z[np.abs(z).argmax(0), [0, 1]])  # align signs with ours for the diff
            return z, comps_sign

        solvers = ("full", "covariance_eigh", "randomized")
        fns = {"ours": lambda: cv.interpret.features.embed_pca(torch.from_numpy(x), 2)}
        fns.update({solver: (lambda solver=solver: sk(solver)) for solver in solvers})
        res = race(fns, repeat)
        t_ours, ours = res["ours"]
        rows = [("cvcourse embed_pca", t_ours, 0.0)]
        for solver in solvers:
            seconds, (theirs, _) = res[solver]
            signs = np.sign((ours * theirs).sum(0))  # components are defined up to sign
            rows.append((f"scikit-learn PCA {solver}", seconds, maxdiff(ours, theirs * signs)))
        report(f"PCA to 2 components, {n} x {d}", rows)


def bench_patch_embedding(repeat: int) -> None:
    from timm.layers import PatchEmbed
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    images = torch.rand(64, 3, 224, 224)
    p, dim = 16, 192
    ours = cv.transformers.PatchEmbedding(224, p, 3, dim).eval()
    timm_embed = PatchEmbed(img_size=224, patch_size=p, in_chans=3, embed_dim=dim).eval()
    vit = VisionTransformer(image_size=224, patch_size=p, num_layers=1, num_heads=3, hidden_dim=dim, mlp_dim=4 * dim).eval()
    with torch.no_grad():  # the same weights everywhere: Linear (D, C*p*p) <-> Conv2d (D, C, p, p)
        conv_weight = ours.proj.weight.reshape(dim, 3, p, p)
        timm_embed.proj.weight.copy_(conv_weight)
        timm_embed.proj.bias.copy_(ours.proj.bias)
        vit.conv_proj.weight.copy_(conv_weight)
        vit.conv_proj.bias.copy_(ours.proj.bias)

    def ours_tokens():
        with torch.no_grad():
            return ours.embed_patches(images)

    def patchify_linear():
        with torch.no_grad():
            return ours.proj(cv.transformers.patchify(images, p))

    def timm_tokens():
        with torch.no_grad():
            return timm_embed(images)

    def tv_tokens():
        with torch.no_grad():
            return vit.conv_proj(images).flatten(2).transpose(1, 2)

    res = race({"ours": ours_tokens, "linear": patchify_linear, "timm": timm_tokens, "tv": tv_tokens}, repeat)
    (t_ours, a), (t_lin, d), (t_timm, b), (t_tv, c) = res["ours"], res["linear"], res["timm"], res["tv"]
    report("Patch embedding, 64 images 224 px, patches 16, dim 192 (tokens without class/position)", [
        ("cvcourse PatchEmbedding.embed_patches", t_ours, 0.0),
        ("patchify + Linear (the definition)", t_lin, maxdiff(a, d)),
        ("timm PatchEmbed (Conv2d)", t_timm, maxdiff(a, b)),
        ("torchvision ViT conv_proj", t_tv, maxdiff(a, c)),
    ])


def main() -> int:
    if sys.argv[1:2] == ["--fgsm-torchattacks-child"]:
        fgsm_torchattacks_child(int(sys.argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--skip-torchattacks", action="store_true")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, python {platform.python_version()}")
    bench_gradcam(args.repeat)
    bench_fgsm(args.repeat, args.skip_torchattacks)
    bench_pca(args.repeat)
    bench_patch_embedding(args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
