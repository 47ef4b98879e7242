"""Matte sessions: what produces the coarse matte that the pipeline refines.

A session wraps one model (loaded once, reused for every image) behind one method,
``matte(rgb) -> float32 matte in [0, 1] at the model's own resolution``. The daemon holds one
session; the CLI's ``refine`` path needs none.

``open_session`` opens BiRefNet for every model name, unless an extension registered a session kind
under that name (``register_session_kind``; see ``core.extensions``): that is how the test suite's
weight-free ``stand-in`` model, which is not part of the product, is served by a real daemon.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
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


# model name -> factory(spec) for sessions that are not BiRefNet presets (extensions only)
_SESSION_KINDS: dict[str, Callable[[SessionSpec], MatteSession]] = {}


def register_session_kind(name: str, factory: Callable[[SessionSpec], MatteSession]) -> None:
    """Serve ``factory(spec)`` for ``--model name`` instead of a BiRefNet preset (an extension's
    session kind: see ``core.extensions``)."""
    _SESSION_KINDS[name] = factory


def _session_kind(name: str | None) -> Callable[[SessionSpec], MatteSession] | None:
    if not name:
        return None
    if name not in _SESSION_KINDS:
        from maskd.core import extensions

        extensions.load()
    return _SESSION_KINDS.get(name)


def open_session(spec: SessionSpec | None = None) -> MatteSession:
    """The session the daemon serves: BiRefNet for ``spec``, or a registered session kind."""
    spec = spec or SessionSpec()
    factory = _session_kind(spec.model)
    return factory(spec) if factory else BiRefNetSession(spec)
