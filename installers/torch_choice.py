"""Which torch build the installer puts in maskd's environment, and why.

Rule (``--torch auto``, the default):
- an NVIDIA driver is present (``nvidia-smi`` on PATH or ``/proc/driver/nvidia``) → a CUDA build:
  on Linux the default PyPI wheel (it is the CUDA build), on Windows the PyTorch CUDA index;
- macOS on Apple Silicon → the default PyPI wheel (it has MPS);
- otherwise → the CPU-only build from the PyTorch CPU index (a few hundred MB instead of several
  GB). Where that index cannot be reached (an offline mirror, a wheel folder), pip's own
  configuration decides (``pip install torch==…``); the installer warns when that turns out to
  be a CUDA build.

Overrides: ``--torch cpu|cuda|mps|skip`` (or ``MASKD_TORCH``), ``--torch-spec`` (or
``MASKD_TORCH_SPEC``, default ``torch==2.13.0``, the version maskd is tested with) and
``--torch-index-url`` (or ``MASKD_TORCH_INDEX_URL``; an empty value means pip's own configuration).
"""

from __future__ import annotations

import os
import platform as _platform
import urllib.request
from dataclasses import dataclass, field

DEFAULT_TORCH_SPEC = "torch==2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CUDA_INDEX = "https://download.pytorch.org/whl/cu128"
KINDS = ("auto", "cpu", "cuda", "mps", "skip")


@dataclass
class TorchChoice:
    kind: str  # cpu | cuda | mps | skip
    reason: str
    spec: str = DEFAULT_TORCH_SPEC
    index_url: str | None = None  # None: pip's own configuration
    notes: list[str] = field(default_factory=list)

    def pip_args(self) -> list[str]:
        args = [self.spec]
        if self.index_url:
            args += ["--index-url", self.index_url]
        return args

    def describe(self) -> str:
        where = f" from {self.index_url}" if self.index_url else " (pip's configured index)"
        return f"{self.spec} [{self.kind}]{where}: {self.reason}"


def nvidia_driver(env: dict | None = None, which=None) -> str:
    """How an NVIDIA driver showed itself ("" when none)."""
    import shutil

    env = os.environ if env is None else env
    which = which or (lambda name: shutil.which(name, path=env.get("PATH", "")))
    if os.path.exists("/proc/driver/nvidia/version"):
        return "/proc/driver/nvidia"
    exe = which("nvidia-smi")
    if exe:
        return f"nvidia-smi at {exe}"
    return ""


def reachable(url: str, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except Exception:
        return False


def choose_torch(
    requested: str | None = None,
    *,
    system: str,
    machine: str | None = None,
    env: dict | None = None,
    nvidia: str | None = None,
    probe=reachable,
) -> TorchChoice:
    """Decide the torch build; ``nvidia``/``probe`` are injectable for tests."""
    env = dict(os.environ if env is None else env)
    requested = (requested or env.get("MASKD_TORCH") or "auto").lower()
    if requested not in KINDS:
        from maskd.installers import InstallError

        raise InstallError(f"--torch {requested!r} is not one of {', '.join(KINDS)}")
    machine = (machine or _platform.machine()).lower()
    spec = env.get("MASKD_TORCH_SPEC") or DEFAULT_TORCH_SPEC
    index_override = env.get("MASKD_TORCH_INDEX_URL")
    if requested == "skip":
        return TorchChoice("skip", "--torch skip: the torch already in the environment is kept", spec)
    if nvidia is None:
        nvidia = nvidia_driver(env)
    if requested == "auto":
        if nvidia:
            kind, reason = "cuda", f"NVIDIA driver found ({nvidia})"
        elif system == "darwin" and machine in ("arm64", "aarch64"):
            kind, reason = "mps", "macOS on Apple Silicon (the PyPI build has MPS)"
        else:
            kind, reason = "cpu", "no NVIDIA driver found (no nvidia-smi, no /proc/driver/nvidia)"
    else:
        kind, reason = requested, f"--torch {requested} was asked for"
    choice = TorchChoice(kind, reason, spec)
    if index_override is not None:
        choice.index_url = index_override or None
        choice.notes.append(f"index from MASKD_TORCH_INDEX_URL={index_override!r}")
        return choice
    if kind == "cuda" and system == "windows":
        choice.index_url = CUDA_INDEX
    elif kind == "cpu" and system != "darwin":
        if probe(CPU_INDEX + "/torch/"):
            choice.index_url = CPU_INDEX
        else:
            choice.notes.append(
                f"{CPU_INDEX} cannot be reached: installing {spec} with pip's own configuration "
                "(a CPU wheel pip finds locally is used; the installer's summary warns if pip "
                "picks PyPI's large CUDA build instead)"
            )
    return choice
