"""The maskd wire format (documented for humans in ``server/PROTOCOL.md``).

Every message is a ZeroMQ multipart message ``[tag, signature, header, buffer...]``:
``tag`` = ``b"MASKD/1"`` (major version), ``signature`` = HMAC-SHA256(key, tag + header) as 32 raw
bytes, ``header`` = UTF-8 JSON, then raw pixel buffers whose sizes the signed header declares.
The stdlib client (``plugins/maskd_client.py``) carries its own copy of the few constants below;
``tests/test_protocol.py`` checks the two agree.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from dataclasses import dataclass, field

import numpy as np

TAG = b"MASKD/1"
VERSION = (1, 0)
SIGNATURE_BYTES = 32
MAX_HEADER_BYTES = 64 * 1024
TIMESTAMP_WINDOW_S = 300.0  # requests older/newer than this are refused (replay defence)

LAYOUT_CHANNELS = {"RGBA": 4, "BGRA": 4, "RGB": 3, "GRAY": 1, "GRAYA": 2}
DTYPES = {"u8": np.dtype("<u1"), "u16": np.dtype("<u2"), "f16": np.dtype("<f2"), "f32": np.dtype("<f4")}
ALPHA_DTYPES = ("u8", "u16", "f32")
TRANSFERS = ("srgb", "linear")
OPS = ("hello", "ping", "status", "segment", "refine", "cancel", "shutdown", "models", "switch_model")
PIXEL_OPS = ("segment", "refine")

# code -> whether retrying the same request can help
ERROR_CODES = {
    "bad_request": False,  # malformed frames, header, sizes, options
    "auth": False,  # missing/wrong signature, stale timestamp, replayed id
    "version": False,  # unsupported protocol major version
    "too_large": False,  # over --max-pixels or the message size limit
    "busy": True,  # the job queue is full
    "cancelled": False,  # cancelled by a client or by shutdown
    "out_of_memory": True,  # (GPU) memory ran out; a smaller image or --device cpu helps
    "model_unavailable": False,  # the model could not be loaded
    "internal": True,  # a bug; the message says what failed
    "shutting_down": True,  # the daemon is stopping
}


class ProtocolError(Exception):
    """A request the daemon answers with an error reply (never a crash)."""

    def __init__(self, code: str, message: str, retryable: bool | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = ERROR_CODES.get(code, False) if retryable is None else retryable


def sign(key: bytes, header: bytes) -> bytes:
    return hmac.new(key, TAG + header, hashlib.sha256).digest()


def encode_header(fields: dict) -> bytes:
    return json.dumps(fields, separators=(",", ":"), allow_nan=False).encode("utf-8")


def make_message(key: bytes, fields: dict, buffers=()) -> list:
    raw = encode_header(fields)
    return [TAG, sign(key, raw), raw, *buffers]


def reply_fields(request_id, kind: str, **fields) -> dict:
    return dict(fields, v=list(VERSION), id=request_id, kind=kind)


def error_fields(request_id, code: str, message: str, retryable: bool | None = None) -> dict:
    retry = ERROR_CODES.get(code, False) if retryable is None else retryable
    return reply_fields(request_id, "error", code=code, message=message, retryable=retry)


class ReplayGuard:
    """Refuses request ids seen within the timestamp window, and timestamps outside it."""

    def __init__(self, window_s: float = TIMESTAMP_WINDOW_S):
        self.window_s = window_s
        self.seen: dict[str, float] = {}
        self._last_prune = 0.0

    def check(self, request_id: str, ts, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if not isinstance(ts, (int, float)) or not math.isfinite(ts) or abs(now - ts) > self.window_s:
            raise ProtocolError(
                "auth", "request timestamp missing or outside the allowed window (is the clock right?)"
            )
        if request_id in self.seen:
            raise ProtocolError("auth", f"request id {request_id} was already used (replay refused)")
        if now - self._last_prune > 10.0:
            cutoff = now - 2 * self.window_s
            self.seen = {k: t for k, t in self.seen.items() if t > cutoff}
            self._last_prune = now
        self.seen[request_id] = now


@dataclass
class Request:
    header: dict
    buffers: list = field(default_factory=list)  # zmq.Frame or bytes-like

    @property
    def op(self) -> str:
        return self.header["op"]

    @property
    def id(self) -> str:
        return self.header["id"]


def _nbytes(buf) -> int:
    return memoryview(buf).nbytes


def parse_request(frames: list, key: bytes, guard: ReplayGuard | None) -> Request:
    """Check tag, signature, header and declared buffer sizes; raise ``ProtocolError`` on any fault.

    ``frames`` excludes the ROUTER identity. The request id is returned in the error where known
    (``ProtocolError.request_id``) so the client can match the reply.
    """
    if len(frames) < 3:
        raise ProtocolError(
            "bad_request", f"a request needs at least 3 frames (tag, signature, header); got {len(frames)}"
        )
    tag = bytes(frames[0]) if _nbytes(frames[0]) <= 64 else b""
    if tag != TAG:
        if tag.startswith(b"MASKD/"):
            raise ProtocolError(
                "version",
                f"protocol {tag.decode('ascii', 'replace')} is not supported; "
                f"this daemon speaks {TAG.decode()} (update the plugin or maskd)",
            )
        raise ProtocolError("bad_request", "not a maskd message (bad protocol tag)")
    if _nbytes(frames[2]) > MAX_HEADER_BYTES:
        raise ProtocolError("bad_request", f"header over {MAX_HEADER_BYTES} bytes")
    raw = bytes(frames[2])
    sig = bytes(frames[1]) if _nbytes(frames[1]) == SIGNATURE_BYTES else b""
    if not sig or not hmac.compare_digest(sig, sign(key, raw)):
        raise ProtocolError(
            "auth",
            "bad signature: the request was not signed with this daemon's key "
            "(stale connection file? reconnect)",
        )
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError("bad_request", f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("bad_request", "header must be a JSON object")
    rid = header.get("id")
    if not isinstance(rid, str) or not 1 <= len(rid) <= 128:
        raise ProtocolError("bad_request", "header.id must be a string of 1-128 characters")
    op = header.get("op")
    if op not in OPS:
        err = ProtocolError("bad_request", f"unknown op {op!r}; known: {', '.join(OPS)}")
        err.request_id = rid
        raise err
    try:
        if guard is not None:
            guard.check(rid, header.get("ts"))
        declared = header.get("buffers", [])
        if not isinstance(declared, list) or not all(isinstance(n, int) and n >= 0 for n in declared):
            raise ProtocolError("bad_request", "header.buffers must list the byte size of each buffer")
        buffers = list(frames[3:])
        if len(buffers) != len(declared):
            raise ProtocolError(
                "bad_request", f"header declares {len(declared)} buffers, the message carries {len(buffers)}"
            )
        for i, (buf, n) in enumerate(zip(buffers, declared)):
            if _nbytes(buf) != n:
                raise ProtocolError(
                    "bad_request", f"buffer {i} has {_nbytes(buf)} bytes, header declares {n}"
                )
        job = header.get("job")
        if job is not None and (not isinstance(job, str) or not 1 <= len(job) <= 128):
            raise ProtocolError("bad_request", "header.job must be a string of 1-128 characters")
    except ProtocolError as err:
        err.request_id = rid
        raise
    return Request(header, buffers)


@dataclass
class ImageSpec:
    width: int
    height: int
    layout: str
    dtype: str
    transfer: str

    @property
    def channels(self) -> int:
        return LAYOUT_CHANNELS[self.layout]

    @property
    def nbytes(self) -> int:
        return self.width * self.height * self.channels * DTYPES[self.dtype].itemsize


def _int(header: dict, name: str, lo: int, hi: int) -> int:
    value = header.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ProtocolError("bad_request", f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def check_image_request(header: dict, buffers: list, max_pixels: int, max_side: int) -> ImageSpec:
    """Validate a segment/refine header against its buffers and the daemon's limits."""
    width = header.get("width")
    height = header.get("height")
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ProtocolError("bad_request", f"{name} must be a positive integer, got {v!r}")
    if width > max_side or height > max_side or width * height > max_pixels:
        raise ProtocolError(
            "too_large",
            f"{width}x{height} is over this daemon's limit "
            f"({max_pixels:,} pixels, {max_side} per side; maskd serve --max-pixels)",
        )
    layout = header.get("layout", "RGBA")
    if layout not in LAYOUT_CHANNELS:
        raise ProtocolError("bad_request", f"layout {layout!r} is not one of {', '.join(LAYOUT_CHANNELS)}")
    dtype = header.get("dtype", "u8")
    if dtype not in DTYPES:
        raise ProtocolError("bad_request", f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    transfer = header.get("transfer", "srgb")
    if transfer not in TRANSFERS:
        raise ProtocolError("bad_request", f"transfer {transfer!r} is not one of {', '.join(TRANSFERS)}")
    alpha_dtype = header.get("alpha_dtype", "u8")
    if alpha_dtype not in ALPHA_DTYPES:
        raise ProtocolError(
            "bad_request", f"alpha_dtype {alpha_dtype!r} is not one of {', '.join(ALPHA_DTYPES)}"
        )
    spec = ImageSpec(width, height, layout, dtype, transfer)
    need = 2 if header["op"] == "refine" else 1
    if len(buffers) != need:
        raise ProtocolError("bad_request", f"{header['op']} carries {need} buffer(s), got {len(buffers)}")
    if _nbytes(buffers[0]) != spec.nbytes:
        raise ProtocolError(
            "bad_request",
            f"pixel buffer has {_nbytes(buffers[0])} bytes; {width}x{height} "
            f"{layout} {dtype} needs {spec.nbytes}",
        )
    roi = header.get("roi")
    if roi is not None:
        if (
            not isinstance(roi, list)
            or len(roi) != 4
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in roi)
        ):
            raise ProtocolError("bad_request", "roi must be [x, y, w, h] integers")
        x, y, w, h = roi
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
            raise ProtocolError("bad_request", f"roi {roi} is not inside the {width}x{height} image")
    if not isinstance(header.get("options", {}) or {}, dict):
        raise ProtocolError("bad_request", "options must be a JSON object")
    if header["op"] == "refine":
        mask = header.get("mask")
        if not isinstance(mask, dict):
            raise ProtocolError("bad_request", "refine needs header.mask = {width, height, dtype}")
        mw = _int(mask, "width", 1, max_side)
        mh = _int(mask, "height", 1, max_side)
        mdt = mask.get("dtype", "u8")
        if mdt not in DTYPES:
            raise ProtocolError("bad_request", f"mask dtype {mdt!r} is not one of {', '.join(DTYPES)}")
        if mw * mh > max_pixels:
            raise ProtocolError("too_large", f"mask {mw}x{mh} is over the {max_pixels:,}-pixel limit")
        if _nbytes(buffers[1]) != mw * mh * DTYPES[mdt].itemsize:
            raise ProtocolError(
                "bad_request",
                f"mask buffer has {_nbytes(buffers[1])} bytes; {mw}x{mh} "
                f"{mdt} needs {mw * mh * DTYPES[mdt].itemsize}",
            )
    return spec


def buffer_view(buf):
    """A memoryview of a received frame (``zmq.Frame.buffer`` without copying)."""
    return buf.buffer if hasattr(buf, "buffer") else memoryview(buf)


def decode_image(buf, spec: ImageSpec) -> np.ndarray:
    """Wire pixels -> H×W×C array in RGB(A)/gray order as uint8/uint16/float32 (no copy for
    RGBA/RGB/GRAY in u8/u16/f32)."""
    arr = np.frombuffer(buffer_view(buf), dtype=DTYPES[spec.dtype]).reshape(
        spec.height, spec.width, spec.channels
    )
    if spec.layout == "BGRA":
        arr = arr[..., [2, 1, 0, 3]]
    if spec.dtype == "f16":
        arr = arr.astype(np.float32)
    elif not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def decode_mask(buf, mask: dict) -> np.ndarray:
    dt = DTYPES[mask.get("dtype", "u8")]
    arr = np.frombuffer(buffer_view(buf), dtype=dt).reshape(mask["height"], mask["width"])
    return arr.astype(np.float32) if mask.get("dtype") == "f16" else arr


def encode_alpha(alpha: np.ndarray, alpha_dtype: str) -> np.ndarray:
    """float32 [0, 1] (or already-integer) alpha -> contiguous little-endian array of ``alpha_dtype``."""
    if alpha_dtype == "f32":
        return np.ascontiguousarray(alpha, dtype="<f4")
    if alpha.dtype == np.uint8 and alpha_dtype == "u8":
        return np.ascontiguousarray(alpha)
    scale = 255.0 if alpha_dtype == "u8" else 65535.0
    out = np.empty(alpha.shape, np.float32)
    np.multiply(alpha, scale, out=out, casting="unsafe")
    np.add(out, 0.5, out=out)
    np.clip(out, 0, scale, out=out)
    return out.astype("<u1" if alpha_dtype == "u8" else "<u2")


def encode_colours(rgb: np.ndarray, dtype: str) -> np.ndarray:
    """float32 [0, 1] H×W×3 colours -> the wire dtype (u8/u16 rounded, f16/f32 as is)."""
    if dtype in ("f16", "f32"):
        return np.ascontiguousarray(rgb, dtype=DTYPES[dtype])
    scale = 255.0 if dtype == "u8" else 65535.0
    # C order always: a strided view (a slice of RGBA colours) cannot go out as one zero-copy frame
    return np.ascontiguousarray(np.clip(rgb * scale + 0.5, 0, scale), dtype=DTYPES[dtype])
