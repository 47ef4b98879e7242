"""The command line's client: numpy arrays in and out, on top of ``plugins/maskd_client.py``.

``DaemonClient.segment(image)`` takes an H×W[×C] uint8/uint16/float16/float32 array (gray,
gray+alpha, RGB, RGBA) and returns float32 alpha (and colours) at full resolution.
(A batch's own daemon, started and stopped around it, is ``server.batch.daemon_for_batch``.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from maskd.core.errors import MaskdError
from maskd.plugins import maskd_client as mc

_LAYOUTS = {1: "GRAY", 2: "GRAYA", 3: "RGB", 4: "RGBA"}
_DTYPES = {
    np.dtype(np.uint8): "u8",
    np.dtype(np.uint16): "u16",
    np.dtype(np.float16): "f16",
    np.dtype(np.float32): "f32",
}


@dataclass
class Answer:
    alpha: np.ndarray  # float32 H×W in [0, 1]
    foreground: np.ndarray | None  # float32 H×W×3 straight colours, same transfer as the input
    info: dict


def wire_format(image: np.ndarray) -> tuple[np.ndarray, str, str]:
    """(contiguous little-endian array, layout, dtype) for sending ``image``."""
    arr = image[..., None] if image.ndim == 2 else image
    if arr.ndim != 3 or arr.shape[2] not in _LAYOUTS:
        raise MaskdError(f"cannot send an image of shape {image.shape}: need H×W with 1-4 channels")
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    if arr.dtype not in _DTYPES:
        raise MaskdError(f"cannot send {arr.dtype} pixels: use 8/16-bit integers or floats")
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    return arr, _LAYOUTS[arr.shape[2]], _DTYPES[np.dtype(arr.dtype.name)]


def _request(layout, dtype, options, roi, foreground, progress, linear) -> dict:
    """The keyword arguments ``segment`` and ``refine`` both send: the image's layout, dtype and
    transfer, and float32 alpha and colours back (what ``_answer`` reads)."""
    return dict(
        layout=layout,
        dtype=dtype,
        options=options,
        roi=roi,
        alpha_dtype="f32",
        foreground=foreground,
        foreground_dtype="f32",
        progress=progress,
        transfer="linear" if linear else "srgb",
    )


def _answer(result: mc.Result) -> Answer:
    alpha = np.frombuffer(result.alpha, "<f4").reshape(result.height, result.width)
    fg = None
    if result.foreground is not None:
        fg = np.frombuffer(result.foreground, "<f4").reshape(result.height, result.width, 3)
    return Answer(alpha, fg, result.info)


class DaemonClient:
    def __init__(self, client: mc.Client):
        self.client = client

    @classmethod
    def connect(cls, connection_file=None, timeout: float = 60.0) -> DaemonClient:
        return cls(mc.connect(connection_file, timeout=timeout))

    def close(self) -> None:
        self.client.close()

    def status(self) -> dict:
        return self.client.status()

    def cancel(self, job_id: str | None = None) -> bool:
        """Stop a job in the daemon (default: the one running now, else the latest); whether the
        daemon still knew it. ``segment``/``refine`` already do this when Ctrl-C interrupts them."""
        return self.client.cancel(job_id or self.client._current_job or self.client.last_job)

    def segment(
        self,
        image: np.ndarray,
        options: dict | None = None,
        *,
        roi=None,
        foreground=False,
        linear: bool = False,
        progress=None,
    ) -> Answer:
        arr, layout, dtype = wire_format(image)
        h, w = arr.shape[:2]
        request = _request(layout, dtype, options, roi, foreground, progress, linear)
        r = self.client.segment(memoryview(arr).cast("B"), w, h, **request)
        return _answer(r)

    def refine(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        options: dict | None = None,
        *,
        roi=None,
        foreground=False,
        linear: bool = False,
        progress=None,
    ) -> Answer:
        arr, layout, dtype = wire_format(image)
        m, _, mdtype = wire_format(mask if mask.ndim == 2 else mask[..., 0])
        h, w = arr.shape[:2]
        r = self.client.refine(
            memoryview(arr).cast("B"),
            w,
            h,
            memoryview(m).cast("B"),
            m.shape[1],
            m.shape[0],
            mask_dtype=mdtype,
            **_request(layout, dtype, options, roi, foreground, progress, linear),
        )
        return _answer(r)
