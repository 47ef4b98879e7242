"""Weights: every way a file can be wrong gives one clear WeightsError; nothing downloads."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
import torch
from maskd.core import weights
from maskd.core.birefnet import load_model
from maskd.core.errors import WeightsError

from tests.helpers import maskd_command, maskd_env


@pytest.fixture(scope="module")
def lite_state(lite_weights):
    return weights.read_state_dict(lite_weights)


def test_missing_file_names_it_and_says_how_to_fix(tmp_path):
    missing = tmp_path / "nope" / "model.safetensors"
    with pytest.raises(WeightsError) as err:
        load_model(str(missing), variant="lite")
    msg = str(err.value)
    assert str(missing) in msg and "does not exist" in msg
    assert "https://huggingface.co/ZhengPeng7/BiRefNet_lite/resolve/main/model.safetensors" in msg
    assert "--variant lite" in msg


def test_corrupt_safetensors(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + os.urandom(64))
    with pytest.raises(WeightsError, match="corrupt or truncated") as err:
        load_model(str(bad), variant="lite")
    assert str(bad) in str(err.value)


def test_truncated_safetensors(tmp_path, lite_weights):
    cut = tmp_path / "model.safetensors"
    with open(lite_weights, "rb") as src:
        cut.write_bytes(src.read(5_000_000))
    with pytest.raises(WeightsError, match="corrupt or truncated") as err:
        load_model(str(cut), variant="lite")
    assert "download it again" in str(err.value)


def test_empty_file(tmp_path):
    empty = tmp_path / "model.safetensors"
    empty.touch()
    with pytest.raises(WeightsError, match="empty"):
        load_model(str(empty))


def test_wrong_variant_names_the_closest_preset(lite_weights):
    with pytest.raises(WeightsError) as err:
        load_model(str(lite_weights), variant="general")
    msg = str(err.value)
    assert str(lite_weights) in msg and "'general' architecture" in msg and "Swin-L" in msg
    assert "looks like Swin-T" in msg and "--variant lite" in msg


def test_backbone_is_detected_without_a_variant(lite_weights, lite_state):
    assert weights.detect_backbone(lite_state) == "swin_v1_t"
    model = load_model(str(lite_weights))
    assert model.preset.name == "lite" and model.patch_order == "wg-hg-c"


def test_missing_tensors_are_reported(tmp_path, lite_state):
    from safetensors.torch import save_file

    partial = {k: v for k, v in lite_state.items() if not k.startswith("decoder.gdt_convs_attn_2")}
    path = tmp_path / "partial.safetensors"
    save_file(partial, str(path))
    with pytest.raises(WeightsError, match="2 tensors missing .*gdt_convs_attn_2"):
        load_model(str(path), variant="lite")


def test_not_a_birefnet_file(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(WeightsError, match="not a BiRefNet checkpoint"):
        load_model(str(path))


def test_pth_with_training_prefixes_loads_like_the_safetensors(tmp_path, lite_state):
    prefixed = {
        ("_orig_mod.module." if i % 2 else "module.") + k: v for i, (k, v) in enumerate(lite_state.items())
    }
    path = tmp_path / "BiRefNet-epoch_100.pth"
    torch.save(prefixed, path)
    model = load_model(str(path), variant="lite")
    ref = model.state_dict()
    assert torch.equal(ref["bb.patch_embed.proj.weight"], lite_state["bb.patch_embed.proj.weight"])
    assert set(ref) == set(lite_state)


def test_pth_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weights": torch.zeros(2), "hook": os.getcwd}, path)  # a pickled callable: not weights_only
    with pytest.raises(WeightsError, match="weights_only"):
        weights.read_state_dict(path)


def test_snapshot_directory(tmp_path, lite_weights):
    snap = tmp_path / "models--ZhengPeng7--BiRefNet_lite" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").symlink_to(lite_weights)
    located = weights.locate(str(snap))
    assert located.path == snap / "model.safetensors" and located.preset.name == "lite"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match="no weights file"):
        weights.locate(str(empty))


def test_unknown_source():
    with pytest.raises(WeightsError, match="neither a weights file"):
        weights.locate("no such thing")


def test_offline_hub_fails_at_once_with_a_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"), raising=False)
    start = time.monotonic()
    with pytest.raises(WeightsError) as err:
        weights.locate("lite")
    assert time.monotonic() - start < 10
    msg = str(err.value)
    assert "not in the local cache" in msg and "HF_HUB_OFFLINE" in msg
    assert "https://huggingface.co/ZhengPeng7/BiRefNet_lite/resolve/main/model.safetensors" in msg


def _cli(args, tmp_path, timeout=120, **env):
    env = maskd_env(HF_HOME=str(tmp_path / "hf"), **env)
    return subprocess.run(maskd_command() + args, env=env, capture_output=True, text=True, timeout=timeout)


def test_cli_fetch_unreachable_hub(tmp_path):
    # a closed local port: the connection is refused at once, nothing waits on a timeout
    start = time.monotonic()
    res = _cli(["fetch", "general"], tmp_path, HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_OFFLINE="0")
    assert res.returncode == 1, res.stderr
    assert "cannot be reached" in res.stderr and "maskd serve --weights FILE --variant general" in res.stderr
    assert "Traceback" not in res.stderr
    assert time.monotonic() - start < 60


def test_cli_fetch_checks_a_local_file(tmp_path, lite_weights):
    res = _cli(["fetch", "--weights", str(lite_weights), "--variant", "lite"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "loads strictly as 'lite'" in res.stdout
    res = _cli(["fetch", "--weights", str(lite_weights), "--variant", "general"], tmp_path)
    assert res.returncode == 1 and "--variant lite" in res.stderr and "Traceback" not in res.stderr


def test_cli_models_table(tmp_path):
    res = _cli(["models"], tmp_path, HF_HUB_OFFLINE="1")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split()[:3] == ["PRESET", "HUGGING", "FACE"]
    for name in ("general", "lite", "hr", "matting", "lite-2k", "dynamic", "portrait", "rmbg2"):
        assert any(line.startswith(name + " ") for line in lines), name
    rmbg = next(line for line in lines if line.startswith("rmbg2 "))
    assert "CC BY-NC 4.0" in rmbg and "non-commercial" in rmbg and rmbg.rstrip().endswith("no")
    assert "non-commercial use only" in res.stdout


def test_buffers_without_learned_values_may_be_left_out(tmp_path, lite_state):
    from safetensors.torch import save_file

    slim = {
        k: v
        for k, v in lite_state.items()
        if not k.endswith(("relative_position_index", "num_batches_tracked"))
    }
    assert len(slim) < len(lite_state)
    path = tmp_path / "slim.safetensors"
    save_file(slim, str(path))
    model = load_model(str(path), variant="lite")
    state = model.state_dict()
    for key, value in lite_state.items():
        if key.endswith("relative_position_index"):
            assert torch.equal(state[key], value), key
