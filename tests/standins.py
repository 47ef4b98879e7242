"""The tests' stand-ins for a model: the ``stand-in`` session kind and the daemon's ``null`` worker.

They ship with the tests, not the product. Importing this module registers them
(``core.session.register_session_kind``, ``server.daemon.register_worker``), so:

- in the test process, ``import tests.standins`` (or use ``StandInSession`` directly);
- in the processes the tests start (``maskd serve``, the daemon it re-executes, a daemon a batch
  command starts, Ray's workers for ``--ray``), the environment names this module in
  ``$MASKD_EXTENSIONS`` (``core.extensions``): ``tests.helpers.standin_env`` gives that
  environment, and ``tests.daemon_fixtures.start_daemon`` uses it. Every maskd process imports the
  module the first time it meets a name it does not know, so ``maskd serve --model stand-in
  --worker null`` works through the real CLI and a real daemon subprocess.

``stand-in`` (``--model stand-in``): a weight-free model, foreground = pixels whose colour differs
from the border's; deterministic and a few ms at 1024², so daemon, batch and Ray tests run the whole
real pipeline without a model forward.

``null`` (``--worker null``): no pipeline at all; alpha = the input's alpha channel (or opaque), or
the refine mask, so transport and reliability tests check exact bytes. ``options.null_delay_s``
makes it a slow job (progress every 10 ms) for cancel/kill tests.
"""

from __future__ import annotations

import time

import numpy as np
from maskd.core.session import MatteSession, SessionSpec, register_session_kind
from maskd.server import protocol as P
from maskd.server.daemon import register_worker

MODEL = "stand-in"
WORKER = "null"


class StandInSession(MatteSession):
    """A weight-free stand-in: foreground = pixels whose colour differs from the border's.

    Deterministic and cheap (a few ms at 1024²), so daemon, transport and batch tests exercise
    the whole path without a model forward.
    """

    name = MODEL

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


def stand_in_session(spec: SessionSpec) -> StandInSession:
    """The stand-in at ``spec``'s resolution (``--resolution``), 1024² by default."""
    return StandInSession(resolution=spec.resolution or 1024)


def null_work(daemon, job, image: np.ndarray, progress):
    """The ``null`` worker: (alpha, colours or None, no timings) straight from the request."""
    delay = (job.header.get("options") or {}).get("null_delay_s")
    if isinstance(delay, (int, float)) and delay > 0:
        end = time.monotonic() + min(float(delay), 600.0)
        while time.monotonic() < end:
            progress("null work", 1.0 - (end - time.monotonic()) / delay)
            time.sleep(0.01)
    if job.op == "refine":
        alpha = _refine_mask(job, image)
    elif image.shape[2] in (2, 4):
        alpha = _alpha_channel(job, image)
    else:
        alpha = np.ones(image.shape[:2], np.float32)
    fg = None
    if job.header.get("foreground"):
        rgb = image[..., :3] if image.shape[2] >= 3 else np.repeat(image[..., :1], 3, axis=2)
        scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(rgb.dtype, 1.0)
        fg = rgb.astype(np.float32) / scale
    return alpha, fg, {}


def _refine_mask(job, image: np.ndarray) -> np.ndarray:
    """The client's mask at the image's size, as the alpha."""
    mask = P.decode_mask(job.buffers[1], job.header["mask"])
    if mask.shape != image.shape[:2]:
        import cv2

        mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    if mask.dtype == np.uint8:
        return mask.astype(np.float32) / 255.0 if job.header.get("alpha_dtype") != "u8" else mask
    if mask.dtype == np.uint16:
        return mask.astype(np.float32) / 65535.0
    return mask


def _alpha_channel(job, image: np.ndarray) -> np.ndarray:
    """The image's own alpha channel (its last), as the alpha."""
    if image.dtype in (np.uint8, np.uint16, np.float32) and image.flags.c_contiguous:
        import cv2

        a = cv2.extractChannel(image, image.shape[2] - 1)  # 2.5x faster than a strided numpy copy
    else:
        a = image[..., -1]
    if a.dtype == np.uint8:
        return a if job.header.get("alpha_dtype", "u8") == "u8" else a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    return a


register_session_kind(MODEL, stand_in_session)
register_worker(WORKER, null_work, session=stand_in_session)
