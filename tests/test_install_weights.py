"""The weights step: a local file verified and placed, the offline message, checksums, truncation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from maskd.core.errors import WeightsError
from maskd.installers import weights as W
from maskd.installers.manifest import Manifest

from tests.helpers import REPO


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """An empty Hugging Face cache and a hub endpoint nothing listens on (refused at once)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "hf-cache"


def tiny_safetensors(path, **tensors):
    from safetensors.numpy import save_file

    save_file({k: np.asarray(v, dtype=np.float32) for k, v in tensors.items()}, str(path))
    return path


def test_truncated_and_foreign_files_are_refused(tmp_path):
    good = tiny_safetensors(tmp_path / "a.safetensors", w=np.ones((64, 64)))
    assert set(W.safetensors_header(good)) >= {"w"}
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(WeightsError, match="truncated"):
        W.safetensors_header(cut)
    text = tmp_path / "page.safetensors"
    text.write_text("<html>rate limited</html>")  # what a proxy error page saved as the file looks like
    with pytest.raises(WeightsError, match="not a safetensors file"):
        W.safetensors_header(text)
    with pytest.raises(WeightsError):
        W.verify(good, "lite")  # a safetensors file, but not BiRefNet: the strict load refuses it


def test_local_file_is_verified_and_placed(tmp_path, lite_weights):
    manifest = Manifest(tmp_path / "maskd" / "install.json")
    dest = W.import_file(
        lite_weights, "lite", tmp_path / "maskd" / "models", manifest, sha256=W.sha256_file(lite_weights)
    )
    assert dest == tmp_path / "maskd" / "models" / "lite.safetensors"
    assert dest.stat().st_size == lite_weights.stat().st_size
    assert [e["kind"] for e in manifest.entries if e["path"] == str(dest)] == ["weights"]
    # again (an idempotent re-run): nothing is copied twice
    mtime = dest.stat().st_mtime_ns
    W.import_file(lite_weights, "lite", dest.parent, manifest, load_check=False)
    assert dest.stat().st_mtime_ns == mtime
    with pytest.raises(WeightsError, match="SHA-256"):
        W.import_file(lite_weights, "lite", dest.parent, manifest, sha256="0" * 64, load_check=False)


def test_offline_says_what_it_could_not_download_and_how_to_supply_it(offline_hub):
    with pytest.raises(W.WeightsUnavailable) as info:
        W.fetch_preset("lite")
    message = str(info.value)
    assert "ZhengPeng7/BiRefNet_lite/model.safetensors" in message
    assert "https://huggingface.co/ZhengPeng7/BiRefNet_lite/resolve/main/model.safetensors" in message
    assert "--weights /path/to/model.safetensors --variant lite" in message
    assert "MASKD_WEIGHTS" in message


def test_offline_cli_exits_3_and_records_the_choice(offline_hub, tmp_path):
    """Nothing downloaded, but the chosen model is recorded, so every command names it (not the default)."""
    manifest = tmp_path / "maskd" / "install.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "maskd.installers.weights",
            "--manifest",
            str(manifest),
            "--preset",
            "BiRefNet",  # a repo name: recorded as the preset it resolves to
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )
    assert r.returncode == W.EXIT_UNAVAILABLE, r.stderr
    assert "WEIGHTS NOT INSTALLED" in r.stderr and "--variant general" in r.stderr
    settings = json.loads(manifest.read_text())["settings"]
    assert settings == {"preset": "general", "model_args": ["--model", "general"]}


def test_cached_download_is_reused_and_a_bad_checksum_deletes_it(offline_hub, monkeypatch, lite_weights):
    snapshot = offline_hub / "models--ZhengPeng7--BiRefNet_lite" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (offline_hub / "models--ZhengPeng7--BiRefNet_lite" / "refs").mkdir()
    (offline_hub / "models--ZhengPeng7--BiRefNet_lite" / "refs" / "main").write_text("a" * 40)
    cached = snapshot / "model.safetensors"
    try:
        os.link(lite_weights, cached)
    except OSError:
        shutil.copyfile(lite_weights, cached)
    assert W.fetch_preset("lite", load_check=False) == cached  # no network needed: already downloaded
    monkeypatch.setattr(W, "hub_sha256", lambda repo, name: "f" * 64)
    with pytest.raises(WeightsError, match="corrupt and was deleted"):
        W.fetch_preset("lite", load_check=False)
    assert not cached.exists()
