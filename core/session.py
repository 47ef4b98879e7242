"""Matte sessions: what produces the coarse matte that the pipeline refines.

A session wraps one model (loaded once, reused for every image) behind one method,
``matte(rgb) -> float32 matte in [0, 1] at the model's own resolution``. The daemon holds one
session; the CLI's ``refine`` path needs none. ``StandInSession`` needs no weights at all: it is
the "trivial model" of the transport tests and throughput benchmarks, never a product feature.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np


@dataclass
class SessionSpec:
    """Which model to serve: a preset name, or a weights path with the preset its architecture follows."""

    model: str | None = None  # preset name or Hugging Face repo id ("general", "lite", ...)
    weights: str | None = None  # local .safetensors / .pth / snapshot directory
    variant: str | None = None  # preset whose architecture a bare weights file has
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto | fp32 | fp16 | bf16
    patch_order: str | None = None  # override the preset's decoder patch order
    resolution: int | None = None  # override the model input size (square, multiple of 32)

    @property
    def source(self) -> str:
        return self.weights or self.model or "general"


class MatteSession:
    """Interface: one loaded model. Thread-safe for one caller at a time (the daemon's worker)."""

    name = "abstract"
    resolution: tuple[int, int] = (1024, 1024)  # (height, width) the model sees
    device = "cpu"
    dtype = "float32"

    def matte(self, rgb: np.ndarray) -> np.ndarray:
        """``rgb``: H×W×3 uint8 sRGB. Returns the model's matte, float32 in [0, 1], at model size."""
        raise NotImplementedError

    def load(self) -> None:
        """Load weights now (otherwise the first ``matte`` does)."""

    def unload(self) -> None:
        """Free (GPU) memory; the next ``matte`` loads again."""

    def describe(self) -> dict:
        return {
            "name": self.name,
            "resolution": list(self.resolution),
            "device": self.device,
            "dtype": self.dtype,
        }


class StandInSession(MatteSession):
    """A weight-free stand-in: foreground = pixels whose colour differs from the border's.

    Deterministic and cheap (a few ms at 1024²), so daemon, transport and batch tests exercise
    the whole path without a model forward.
    """

    name = "stand-in"

    def __init__(self, resolution: int = 1024):
        self.resolution = (resolution, resolution)

    def matte(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        h, w = self.resolution
        small = cv2.resize(rgb[..., :3], (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        border = np.concatenate([small[0], small[-1], small[:, 0], small[:, -1]])
        ref = np.median(border, axis=0)
        dist = np.sqrt(((small - ref) ** 2).sum(-1))
        matte = 1.0 / (1.0 + np.exp(-(dist - 0.15) * 40.0))
        return cv2.GaussianBlur(matte.astype(np.float32), (0, 0), 1.0)


class BiRefNetSession(MatteSession):
    """BiRefNet from ``core.birefnet``, loaded lazily on first use, unloadable when idle."""

    name = "birefnet"

    def __init__(self, spec: SessionSpec):
        self.spec = spec
        self._model = None
        self._lock = threading.Lock()
        from maskd.core import presets

        preset = presets.resolve_preset(spec.variant or spec.model or "general", default="general")
        size = spec.resolution or None
        self.resolution = (size, size) if size else tuple(preset.resolution)
        self.name = preset.name
        self.device = spec.device
        self.dtype = spec.precision

    def load(self) -> None:
        with self._lock:
            if self._model is None:
                from maskd.core import birefnet

                dtype = None if self.spec.precision == "auto" else self.spec.precision
                self._model = birefnet.load_model(
                    self.spec.source,
                    variant=self.spec.variant,
                    device=self.spec.device,
                    dtype=dtype,
                    patch_order=self.spec.patch_order,
                )
                param = next(self._model.parameters())
                self.device = str(param.device)
                self.dtype = str(param.dtype).replace("torch.", "")

    def unload(self) -> None:
        with self._lock:
            if self._model is not None:
                device = self.device
                self._model = None
                from maskd.core.device import release_memory

                release_memory(device)

    def matte(self, rgb: np.ndarray) -> np.ndarray:
        self.load()
        from maskd.core import birefnet

        return birefnet.predict_matte_native(self._model, rgb, size=self.resolution)


def open_session(spec: SessionSpec | None = None, *, stand_in: bool = False) -> MatteSession:
    """The session the daemon serves: BiRefNet for ``spec``, or the weight-free stand-in."""
    if stand_in or (spec and spec.model == "stand-in"):
        return StandInSession(resolution=(spec.resolution if spec and spec.resolution else 1024))
    return BiRefNetSession(spec or SessionSpec())
