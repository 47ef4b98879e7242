"""Layered files in, layered files out: XCF (GIMP), OpenRaster and KRA (Krita).

Each format module opens a file into a ``LayeredDocument``: a flat list of ``Layer`` records
(top of the stack first, groups before their children, like the editors' layer panels), a way to
read one layer's own pixels as RGBA uint8, and a way to write a copy of the file with a mask
added to chosen layers. Everything the mask does not need is carried over byte for byte: layer
pixels, offsets, opacity, blend modes, groups, parasites, metadata.

Which layers get a mask (``select_layers``), the same in every format:

- default: the bottom-most visible paint layer that is not one flat colour (the photo, not the
  white "Background" both editors start with); if every visible paint layer is flat, the
  bottom-most visible one;
- ``all``: every paint layer; ``visible``: every paint layer that is visible with all its groups;
- names: the paint layers with these names (``group/name`` paths also match).

Layers that already have a mask are left alone and reported, so running twice never stacks
masks and never loses a hand-painted one. Groups are never masked (their pixels are a composite).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from maskd.core import atomicfile, limits
from maskd.core.colour import linear_to_srgb
from maskd.core.errors import InputError, MaskdError

LAYERED_SUFFIXES = (".xcf", ".ora", ".kra")

AlphaFn = Callable[[np.ndarray], np.ndarray]  # RGBA uint8 H×W×4 -> alpha float32 H×W in [0, 1]


class LayeredFileError(InputError):
    """A layered file that cannot be parsed (truncated, corrupt, or an unsupported variant)."""


@dataclass
class Layer:
    """One entry of a layer stack, as the editors show it."""

    name: str
    kind: str  # "paint", "group", or what the format calls anything else ("vectorlayer", ...)
    visible: bool  # the layer's own eye
    shown: bool  # visible, and every group above it visible too
    depth: int  # 0 for top-level layers
    path: str  # group names and the layer name joined with "/"
    has_mask: bool
    size: tuple[int, int]  # (width, height) of the pixels read_rgba returns
    offset: tuple[int, int]  # where those pixels sit on the canvas
    key: object = None  # format-specific handle
    note: str = ""  # why a layer cannot be processed ("" when it can)


@dataclass
class MaskResult:
    """What happened to one file."""

    source: Path
    output: Path | None = None
    masked: list[str] = field(default_factory=list)  # layer paths that got a mask
    skipped: list[str] = field(default_factory=list)  # "layer: reason"
    seconds_alpha: float = 0.0  # time inside alpha_fn (the model and its transport)
    seconds_total: float = 0.0
    cpu_alpha: float = 0.0  # the same as this process's CPU time (what a busy machine does not skew)
    cpu_total: float = 0.0


class LayeredDocument:
    """Interface shared by the format modules."""

    format_name = "layered"
    path: Path
    width: int
    height: int
    layers: list[Layer]

    _last_read: tuple[int, np.ndarray] | None = None

    def read_rgba(self, layer: Layer) -> np.ndarray:
        """The layer's own pixels (no mask, no opacity), RGBA uint8, ``layer.size``.

        The last layer read is kept, so choosing the default layer and masking it decode it once.
        """
        if self._last_read is not None and self._last_read[0] == id(layer):
            return self._last_read[1]
        rgba = self._read_rgba(layer)
        self._last_read = (id(layer), rgba)
        return rgba

    def _read_rgba(self, layer: Layer) -> np.ndarray:
        raise NotImplementedError

    def with_masks(self, masks: dict[int, np.ndarray]) -> bytes:
        """The whole file with a mask added to each layer index in ``masks`` (alpha float32)."""
        raise NotImplementedError

    def read_mask(self, layer: Layer) -> np.ndarray | None:
        """The layer's mask as float32 in [0, 1] over ``layer.size`` (None without a mask)."""
        raise NotImplementedError


def open_layered(path: str | os.PathLike) -> LayeredDocument:
    """Open an XCF, ORA or KRA file; ``LayeredFileError`` when it cannot be parsed."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".xcf":
        from maskd.core.layered.xcf import XcfDocument as cls
    elif suffix == ".ora":
        from maskd.core.layered.ora import OraDocument as cls
    elif suffix == ".kra":
        from maskd.core.layered.kra import KraDocument as cls
    else:
        raise InputError(f"{path}: not a layered file (expected one of {', '.join(LAYERED_SUFFIXES)})")
    try:
        limits.check_bytes(path, path.stat().st_size)  # the whole file is held in memory
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return cls(path, data)
    except MaskdError:
        raise
    except Exception as exc:  # any parser failure on a damaged file: one clear line, no traceback
        raise LayeredFileError(
            f"{path}: cannot parse this {cls.format_name} file ({type(exc).__name__}: "
            f"{exc}); it may be truncated or damaged — it was skipped"
        ) from None


def is_layered(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in LAYERED_SUFFIXES


def _is_flat(rgba: np.ndarray) -> bool:
    """One colour everywhere it is visible (a fill layer such as a white Background)."""
    pixels = rgba.reshape(-1, 4)
    alpha = pixels[:, 3]
    if alpha.min() == alpha.max():  # the usual case: one alpha everywhere (opaque fills, photos)
        return alpha[0] == 0 or bool((pixels == pixels[0]).all())
    visible = pixels[alpha > 0]
    return visible.size == 0 or bool((visible == visible[0]).all())


def select_layers(doc: LayeredDocument, spec: str | list[str] | None = None) -> tuple[list[int], list[str]]:
    """Indices of the layers to mask for ``spec`` (None/"default", "all", "visible" or names), by
    the one rule in ``core.layered.choice`` (the editor batches use it too).

    Returns ``(indices, skipped)`` where ``skipped`` says which requested layers were left alone and
    why. Unknown names raise ``InputError`` listing the names the file has.
    """
    from maskd.core.layered.choice import ChoiceError, Layer, choose

    layers = doc.layers
    described = [
        Layer(ly.path, ly.name, ly.kind, ly.shown, ly.has_mask, ly.note, min(ly.size) <= 0) for ly in layers
    ]
    try:
        return choose(described, spec, lambda i: _is_flat(doc.read_rgba(layers[i])))
    except ChoiceError as exc:
        raise InputError(f"{doc.path}: {exc}") from None


def check_layered(path: str | os.PathLike) -> None:
    """Parse the whole file — every layer's pixels and masks, every zip member's checksum — or raise
    ``LayeredFileError``. For handing files to an editor that would quietly salvage a damaged one
    (GIMP opens a truncated XCF with the missing layers empty)."""
    doc = open_layered(path)
    with _as_file_error(path, doc.format_name):
        for layer in doc.layers:
            if layer.kind == "paint" and limits.LIMIT_WORDS in layer.note:  # an editor would decode it
                raise limits.ImageTooLarge(f"{path}: layer {layer.path!r}: {layer.note}")
            if layer.kind == "paint" and not layer.note:
                doc._read_rgba(layer)
                doc.read_mask(layer)
        archive = getattr(doc, "zip", None)
        if archive is not None:
            damaged = archive.testzip()
            if damaged is not None:
                raise LayeredFileError(
                    f"{path}: the member {damaged!r} is damaged (checksum mismatch); skipped"
                )


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a random temporary file in the same folder and a rename
    (``atomicfile.write_atomic``, synced): a crash or a full disk leaves either the old file or no
    file, never half of one, and no name planted in the folder is ever followed."""
    atomicfile.write_atomic(Path(path), data, sync=True)


def add_masks(
    source: str | os.PathLike,
    output: str | os.PathLike,
    alpha_fn: AlphaFn,
    layers: str | list[str] | None = None,
) -> MaskResult:
    """Read ``source``, compute a mask for each selected layer with ``alpha_fn``, write ``output``.

    ``output`` may equal ``source`` (in-place); the file is replaced atomically only after the new
    one has been built completely. Nothing is written when no layer needs a mask.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    doc = open_layered(source)
    result = MaskResult(source=Path(source))
    masks: dict[int, np.ndarray] = {}
    with _as_file_error(source, doc.format_name):
        indices, result.skipped = select_layers(doc, layers)
        for i in indices:
            rgba = doc.read_rgba(doc.layers[i])
            t1, c1 = time.perf_counter(), time.process_time()
            alpha = np.asarray(alpha_fn(rgba), dtype=np.float32)
            result.seconds_alpha += time.perf_counter() - t1
            result.cpu_alpha += time.process_time() - c1
            if alpha.shape != rgba.shape[:2]:
                raise InputError(
                    f"{source}: the alpha for layer {doc.layers[i].path!r} is {alpha.shape}, "
                    f"expected {rgba.shape[:2]}"
                )
            masks[i] = np.clip(alpha, 0.0, 1.0)
            result.masked.append(doc.layers[i].path)
        data = doc.with_masks(masks) if masks else None
    if data is not None:
        atomic_write(Path(output), data)
        result.output = Path(output)
    result.seconds_total = time.perf_counter() - t0
    result.cpu_total = time.process_time() - c0
    return result


@contextlib.contextmanager
def _as_file_error(source, format_name: str):
    """Damage found while decoding pixels (after the header parsed) is a per-file error too."""
    try:
        yield
    except MaskdError as exc:
        if isinstance(exc, LayeredFileError) and str(source) not in str(exc):
            raise LayeredFileError(f"{source}: {exc}; skipped") from None
        raise
    except Exception as exc:
        raise LayeredFileError(
            f"{source}: cannot read this {format_name} file ({type(exc).__name__}: "
            f"{exc}); it may be truncated or damaged — it was skipped"
        ) from None


def unsafe_member_name(name: str) -> bool:
    """A zip member name that is absolute or climbs out of the archive (``../``): maskd never copies
    one into an output, where an unpacking tool could write outside its folder."""
    n = name.replace("\\", "/")
    return n.startswith("/") or bool(re.match(r"[A-Za-z]:", n)) or ".." in n.split("/") or "\0" in n


def check_archive(archive, path) -> None:
    """Member names and declared (uncompressed) sizes of a zip-based layered file, before anything
    in it is inflated: ``LayeredFileError`` for an unsafe name, ``limits.ImageTooLarge`` for a member
    — or all of them together — over maskd's memory budget."""
    total = 0
    for info in archive.infolist():
        if unsafe_member_name(info.filename):
            raise LayeredFileError(
                f"{path}: the member {info.filename!r} has an absolute name or one with '..' (no "
                "editor writes that; it could point outside a folder it is unpacked into); skipped"
            )
        limits.check_member(path, info)
        total += info.file_size
    limits.check_bytes(f"{path} (all its members)", total)


def to_uint8(values: np.ndarray, *, linear: bool) -> np.ndarray:
    """Float colour in [0, 1] (``linear`` light or sRGB-encoded) to sRGB uint8."""
    v = np.clip(np.nan_to_num(values.astype(np.float32)), 0.0, 1.0)
    if linear:
        v = linear_to_srgb(v)
    return np.rint(v * 255.0).astype(np.uint8)


def mask_name(layer_name: str) -> str:
    return f"{layer_name} (maskd)"


def open_archive(path, data: bytes, what: str, root_member: str):
    """A zip-based layered file (KRA, OpenRaster; ``what``: "a Krita file"): its checked archive
    (``check_archive``), its member names and the text of its root XML ``root_member``
    (maindoc.xml, stack.xml), read within the XML size limit. A clear error when any is missing."""
    archive = read_zip(path, data, what)
    check_archive(archive, path)
    members = set(archive.namelist())
    if root_member not in members:
        raise LayeredFileError(f"{path}: not {what} (no {root_member}); skipped")
    limits.check_member(path, archive.getinfo(root_member), limits.MAX_XML_BYTES)
    return archive, members, archive.read(root_member).decode("utf-8")


def read_zip(path, data: bytes, what: str):
    """The zip archive a KRA or OpenRaster file is (``what``: "a Krita file"); a clear error when
    it is none."""
    import io
    import zipfile

    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise LayeredFileError(
            f"{path}: not {what} (not a zip archive, or a truncated one); skipped"
        ) from None


def rewrite_zip(
    source: bytes, replace: dict[str, bytes], add: list[tuple[str, bytes]], first: str = "mimetype"
) -> bytes:
    """A copy of the zip ``source`` with members replaced and added, ``first`` kept first and stored.

    Member contents are copied unchanged. Members over 256 KiB (PNG layers, Krita tiles — already
    compressed) are stored rather than deflated again, which keeps a 3000×2000 file fast to write.
    A member with an unsafe name (``unsafe_member_name``) or over the size limit is refused, not copied.
    """
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(source)) as zin, zipfile.ZipFile(out, "w") as zout:
        infos = zin.infolist()
        infos.sort(key=lambda info: info.filename != first)
        for name in [info.filename for info in infos] + [name for name, _ in add]:
            if unsafe_member_name(name):
                raise LayeredFileError(f"the member name {name!r} is absolute or has '..'; not copied")
        for info in infos:
            data = replace.get(info.filename)
            if data is None:
                limits.check_member("the source file", info)
                data = zin.read(info)
            _write_member(zout, info.filename, data, stored=info.filename == first, date=info.date_time)
        for name, data in add:
            _write_member(zout, name, data, stored=False)
    return out.getvalue()


def _write_member(zout, name: str, data: bytes, *, stored: bool, date=None) -> None:
    import zipfile

    info = zipfile.ZipInfo(name, date_time=date or time.localtime()[:6])
    info.external_attr = 0o644 << 16
    big = len(data) > 256 * 1024
    info.compress_type = zipfile.ZIP_STORED if stored or big else zipfile.ZIP_DEFLATED
    zout.writestr(info, data)
