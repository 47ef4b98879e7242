"""Pixel conventions shared by every part of maskd, and image/mask file reading and writing.

Conventions (import these helpers rather than re-deriving them):
- Arrays are H×W×C in **RGB(A)** order (never OpenCV's BGR); a 2-D array is gray.
- Channels: 1 = gray, 2 = gray + alpha, 3 = RGB, 4 = RGBA.
- Dtypes: uint8 (0..255), uint16 (0..65535), float32/float64 (0..1, clipped). ``value_scale``
  gives the divisor that maps a dtype to [0, 1].
- Transfer: pixels are sRGB-encoded unless a caller says ``linear=True``; ``srgb_to_linear`` /
  ``linear_to_srgb`` use the exact IEC 61966-2-1 piecewise curve.
- Alpha is float32 H×W in [0, 1], *straight* (colours are never premultiplied in maskd's outputs).
- Files are written atomically (a random, exclusively created temporary + rename; see
  ``atomicfile``): an interrupted run never leaves a half-written output in place of a good one.
- Files are read only after their header's size passed ``limits.check_image_file``: a
  decompression bomb is refused before any pixel is decoded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from maskd.core import atomicfile, limits
from maskd.core.colour import linear_to_srgb, srgb_to_linear  # noqa: F401  (the one sRGB curve, re-exported)
from maskd.core.errors import InputError, MaskdError


def value_scale(dtype) -> float:
    """The divisor that maps values of ``dtype`` to [0, 1] (1.0 for floats)."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if dtype == np.bool_:
        return 1.0
    if dtype.kind == "f":
        return 1.0
    raise InputError(f"unsupported pixel type {dtype}: use uint8, uint16 or float32 pixels")


def split_channels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Split an H×W×{1,2,3,4} (or H×W) image into colour (H×W×3 or H×W×1 view) and alpha (view or None).

    Dtype is kept (no copy for the colour part); gray stays single-channel: use ``colour_view``
    when three channels are needed.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise InputError(
            f"image has shape {image.shape}: expected H×W (gray) or H×W×C with C = 1, 2, 3 or 4 "
            "(gray, gray+alpha, RGB, RGBA)"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"image is empty (shape {image.shape})")
    value_scale(image.dtype)  # validates the dtype
    c = image.shape[2]
    if c in (2, 4):
        return image[..., : c - 1], image[..., c - 1]
    return image, None


def to_float(x: np.ndarray) -> np.ndarray:
    """Any supported dtype → float32 in [0, 1] (floats are clipped; NaN becomes 0)."""
    x = np.asarray(x)
    if x.dtype.kind == "f":
        out = np.clip(x, 0.0, 1.0).astype(np.float32, copy=False)
        if np.isnan(out.sum()):  # one cheap reduction instead of a full-size mask
            np.nan_to_num(out, copy=False, nan=0.0)
        return out
    if x.dtype == np.bool_:
        return x.astype(np.float32)
    out = x.astype(np.float32)
    out *= np.float32(1.0 / value_scale(x.dtype))  # in place: no second full-size temporary
    return out


def to_uint8(x: np.ndarray) -> np.ndarray:
    """float in [0, 1] (or uint8/uint16) → uint8, rounded."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x
    if x.dtype == np.uint16:
        return ((x.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def to_uint16(x: np.ndarray) -> np.ndarray:
    """float in [0, 1] (or uint8/uint16) → uint16, rounded."""
    x = np.asarray(x)
    if x.dtype == np.uint16:
        return x
    if x.dtype == np.uint8:
        return x.astype(np.uint16) * 257
    return (np.clip(x, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)


def colour_float(image: np.ndarray, *, linear: bool = False, to_srgb: bool = True) -> np.ndarray:
    """H×W×3 float32 in [0, 1] from any supported image (gray is replicated, alpha dropped).

    With ``linear=True`` the input is linear light; ``to_srgb`` then encodes it to sRGB (what
    the model and the guided filter expect). Without ``linear`` values pass through unchanged.
    """
    colour, _ = split_channels(image)
    rgb = to_float(colour)
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    if linear and to_srgb:
        rgb = linear_to_srgb(rgb)
    return rgb


def alpha_float(image: np.ndarray) -> np.ndarray | None:
    """The image's own alpha as float32 H×W in [0, 1], or None when it has none."""
    _, alpha = split_channels(image)
    return None if alpha is None else to_float(alpha)


def mask_float(mask: np.ndarray) -> np.ndarray:
    """A mask array (H×W, or H×W×C: see ``read_mask`` for how channels are read) → float32 H×W in [0, 1]."""
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = _mask_channel(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise InputError(f"mask has shape {mask.shape}: expected a non-empty H×W grayscale mask")
    return to_float(mask)


def _mask_channel(mask: np.ndarray) -> np.ndarray:
    """Gray from a mask stored with colour and/or alpha: the alpha if the colour is flat, else luma."""
    c = mask.shape[2]
    if c == 1:
        return mask[..., 0]
    colour = mask[..., : 1 if c == 2 else 3]
    if c in (2, 4):
        alpha = mask[..., c - 1]
        if colour.min() == colour.max() and alpha.min() != alpha.max():
            return alpha
    if colour.shape[2] == 1:
        return colour[..., 0]
    f = colour.astype(np.float32)
    luma = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
    if mask.dtype.kind == "f":
        return luma
    return np.clip(luma + 0.5, 0, value_scale(mask.dtype)).astype(mask.dtype)


# ---------------------------------------------------------------------------------------------
# Files

_JPEG = {".jpg", ".jpeg", ".jpe", ".jfif"}


def read_image(path) -> np.ndarray:
    """Read an image file as H×W×C RGB(A) (or H×W gray), keeping its bit depth (uint8/uint16/float32).

    JPEGs are turned upright by their EXIF orientation (as editors show them). Raises
    ``InputError`` with the path when the file is missing or not a readable image, and
    ``limits.ImageTooLarge`` — before decoding — when its header declares more than maskd's limits.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file not found: {path}")
    limits.configure_decoders()
    limits.check_bytes(path, path.stat().st_size)
    limits.check_image_file(path)
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8)  # works with non-ASCII paths, unlike cv2.imread
    if path.suffix.lower() in _JPEG:
        flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
    else:
        flags = cv2.IMREAD_UNCHANGED
    img = cv2.imdecode(data, flags) if data.size else None
    if img is None:
        img = _read_with_pillow(path)
    if img.ndim == 3:
        if img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        elif img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    if img.dtype == np.float64:
        img = img.astype(np.float32)
    if img.dtype not in (np.uint8, np.uint16, np.float32):
        raise InputError(f"{path}: unsupported pixel type {img.dtype} (use 8/16-bit or float images)")
    return img


def _read_with_pillow(path: Path) -> np.ndarray:
    """Formats OpenCV cannot decode (e.g. some GIF/BMP variants); returns BGR(A) like cv2."""
    import cv2
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(im, dtype=np.uint16)
            if im.mode not in ("L", "LA", "RGB", "RGBA"):
                im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"cannot read {path} as an image ({exc}); use PNG, JPEG, TIFF or WebP") from None
    if arr.ndim == 3 and arr.shape[2] == 3:
        return cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    if arr.ndim == 3 and arr.shape[2] == 4:
        return cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA)
    if arr.ndim == 3 and arr.shape[2] == 2:
        return arr
    return arr


def read_mask(path) -> np.ndarray:
    """Read a mask file as float32 H×W in [0, 1].

    Gray files are read as they are (8 or 16 bit). A colour file is converted to luma; a file
    whose colour is flat but whose alpha varies (a mask saved as transparency) gives its alpha.
    """
    if not Path(path).is_file():
        raise InputError(f"mask file not found: {path}")
    return mask_float(read_image(path))


def write_image(path, array: np.ndarray) -> Path:
    """Write an RGB(A)/gray uint8 or uint16 array atomically; the format follows the extension.

    Floats are written as 8-bit (16-bit for .tif/.tiff). Raises ``MaskdError`` when the
    folder is missing or the format cannot hold the data.
    """
    import cv2

    path = Path(path)
    if not path.parent.is_dir():
        raise MaskdError(f"cannot write {path}: folder {path.parent} does not exist")
    arr = np.asarray(array)
    ext = path.suffix.lower() or ".png"
    if arr.dtype.kind == "f":
        arr = to_uint16(arr) if ext in (".tif", ".tiff") else to_uint8(arr)
    if ext in _JPEG or ext == ".bmp":
        arr = to_uint8(arr)
        if arr.ndim == 3 and arr.shape[2] in (2, 4):
            raise MaskdError(f"cannot write {path}: {ext} has no alpha channel; use .png, .tif or .webp")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA)
    ok, encoded = cv2.imencode(ext, np.ascontiguousarray(arr))
    if not ok:
        raise MaskdError(f"cannot encode {path} as {ext} (shape {array.shape}, {array.dtype})")
    try:
        atomicfile.write_atomic(path, encoded.data)
    except OSError as exc:
        raise MaskdError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
