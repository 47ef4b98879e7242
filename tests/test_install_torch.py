"""How the installer picks the torch build (CUDA / MPS / CPU) and how a user overrides it."""

from __future__ import annotations

import pytest
from maskd.core.errors import MaskdError
from maskd.installers.torch_choice import CPU_INDEX, CUDA_INDEX, DEFAULT_TORCH_SPEC, choose_torch


def pick(requested=None, system="linux", machine="x86_64", nvidia="", reachable=True, **env):
    return choose_torch(
        requested, system=system, machine=machine, env=env, nvidia=nvidia, probe=lambda url: reachable
    )


def test_cpu_machine_gets_the_cpu_index():
    choice = pick()
    assert choice.kind == "cpu" and choice.index_url == CPU_INDEX
    assert choice.pip_args() == [DEFAULT_TORCH_SPEC, "--index-url", CPU_INDEX]
    assert "no NVIDIA driver" in choice.reason


def test_cpu_index_unreachable_falls_back_to_pips_configuration():
    """This machine: no route to the PyTorch index, but pip finds the CPU wheel on local disk."""
    choice = pick(reachable=False)
    assert choice.kind == "cpu" and choice.index_url is None
    assert choice.pip_args() == [DEFAULT_TORCH_SPEC]
    assert any("cannot be reached" in n for n in choice.notes)


def test_nvidia_linux_uses_pypi_cuda_build_and_windows_the_cuda_index():
    linux = pick(nvidia="/proc/driver/nvidia")
    assert linux.kind == "cuda" and linux.index_url is None and "NVIDIA driver found" in linux.reason
    windows = pick(system="windows", nvidia="nvidia-smi at C:/Windows/System32/nvidia-smi.exe")
    assert windows.kind == "cuda" and windows.index_url == CUDA_INDEX


def test_apple_silicon_gets_mps_and_intel_mac_cpu():
    assert pick(system="darwin", machine="arm64").kind == "mps"
    intel = pick(system="darwin", machine="x86_64")
    assert intel.kind == "cpu" and intel.index_url is None  # macOS wheels on PyPI are the CPU/MPS builds


def test_overrides():
    assert pick("cpu", nvidia="/proc/driver/nvidia").kind == "cpu"
    assert pick("cuda").kind == "cuda"
    assert pick(MASKD_TORCH="skip").kind == "skip"
    custom = pick(MASKD_TORCH_SPEC="torch>=2.4", MASKD_TORCH_INDEX_URL="https://mirror.example/whl")
    assert custom.pip_args() == ["torch>=2.4", "--index-url", "https://mirror.example/whl"]
    assert pick(MASKD_TORCH_INDEX_URL="").index_url is None  # empty: pip's own configuration
    with pytest.raises(MaskdError, match="not one of"):
        pick("rocm")
