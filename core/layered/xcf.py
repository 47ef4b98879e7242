"""GIMP's XCF: read the layer stack with gimpformats, add layer masks by appending to the file.

Reading: ``gimpformats`` (with ``gimpformats_compat`` so GIMP 3 files load) gives the layer list,
names, visibility, offsets, groups and existing masks. Two things are read here directly, because
gimpformats 2025 gets them wrong or is too slow for 3000×2000 layers: the image precision (it
maps XCF 7+ precision codes one step off, e.g. 8-bit as 16-bit) and the tile pixels (its RLE
decoder is a per-pixel Python loop and knows 8-bit layers only).

Writing: the output is the input byte for byte, plus, for each masked layer, a channel structure
(header, hierarchy, level, tiles) appended at the end of the file, and three in-place edits of
equal length: the layer's mask pointer, its ``PROP_APPLY_MASK`` flag (GIMP 3 stores it as 0
when there is no mask) and the image's tattoo high-water mark. Every other layer, offset,
opacity, mode, group, path, parasite and GIMP 3 property is untouched, including ones this code
does not know. Mask values are stored 1:1 (GIMP keeps masks in linear gray at the image's
precision), so an alpha of 0.5 is a 50% mask.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from maskd.core import limits
from maskd.core.errors import MaskdError
from maskd.core.layered import Layer, LayeredDocument, LayeredFileError, mask_name, to_uint8

TILE = 64
PROP_END, PROP_COLORMAP, PROP_OPACITY, PROP_VISIBLE = 0, 1, 6, 8
PROP_APPLY_MASK, PROP_SHOW_MASKED, PROP_COLOR, PROP_COMPRESSION, PROP_TATTOO = 11, 14, 16, 17, 20
PROP_FLOATING_SELECTION = 5

# XCF 7+ precision code -> (big-endian numpy dtype, linear light?)
_PRECISIONS = {
    100: (">u1", True),
    150: (">u1", False),
    200: (">u2", True),
    250: (">u2", False),
    300: (">u4", True),
    350: (">u4", False),
    500: (">f2", True),
    550: (">f2", False),
    600: (">f4", True),
    650: (">f4", False),
    700: (">f8", True),
    750: (">f8", False),
}
_LAYER_CHANNELS = {0: 3, 1: 4, 2: 1, 3: 2, 4: 1, 5: 2}  # GimpImageType -> components


@dataclass
class _XcfLayerKey:
    ptr: int
    hptr: int
    mptr_pos: int
    apply_mask_pos: int | None  # payload offset of PROP_APPLY_MASK, when the layer has one
    layer_type: int
    mask_ptr: int = 0


def _u32(data: bytes, pos: int) -> int:
    return struct.unpack_from(">I", data, pos)[0]


def _walk_props(data: bytes, pos: int) -> tuple[dict[int, tuple[int, int]], int]:
    """Property list at ``pos`` -> ({id: (payload offset, length)}, offset after PROP_END)."""
    props: dict[int, tuple[int, int]] = {}
    while True:
        pid, length = struct.unpack_from(">II", data, pos)
        pos += 8
        if pid == PROP_END:
            return props, pos
        if pos + length > len(data):
            raise LayeredFileError("a property runs past the end of the file")
        props.setdefault(pid, (pos, length))
        pos += length


class XcfDocument(LayeredDocument):
    format_name = "XCF"

    def __init__(self, path: Path, data: bytes):
        try:
            from maskd.core.layered import gimpformats_compat

            gimpformats_compat.install()
            from gimpformats.gimpXcfDocument import GimpDocument
        except ImportError:
            raise MaskdError(
                "reading XCF files needs the gimpformats package: "
                "pip install 'maskd[layered]' (or pip install gimpformats==2025)"
            ) from None

        self.path = Path(path)
        self.data = data
        if not data.startswith(b"gimp xcf "):
            raise LayeredFileError(f"{path}: not an XCF file (no 'gimp xcf' signature); skipped")
        doc = GimpDocument()
        doc.decode(data)
        self.version = doc.version
        self.width, self.height = doc.width, doc.height
        self.pointer_size = 8 if self.version >= 11 else 4
        pos = 14  # "gimp xcf vNNN\0" / "gimp xcf file\0"
        self.base_type = _u32(data, pos + 8)
        pos += 12
        if self.version >= 7:
            code = _u32(data, pos)
            pos += 4
            if code not in _PRECISIONS:
                raise LayeredFileError(f"{path}: unknown XCF precision code {code}; skipped")
            self.dtype, self.linear = _PRECISIONS[code]
        elif self.version >= 4:
            raise LayeredFileError(
                f"{path}: XCF version {self.version} comes from a GIMP development "
                "release; open and save it in GIMP 2.10 or 3 first"
            )
        else:
            self.dtype, self.linear = ">u1", False
        self.image_props, _ = _walk_props(data, pos)
        comp = self.image_props.get(PROP_COMPRESSION)
        self.compression = data[comp[0]] if comp else 0
        if self.compression not in (0, 1, 2):
            raise LayeredFileError(f"{path}: unsupported XCF tile compression {self.compression}; skipped")
        self.colormap = None
        if PROP_COLORMAP in self.image_props:
            cpos, _ = self.image_props[PROP_COLORMAP]
            n = _u32(data, cpos)
            self.colormap = np.frombuffer(data, np.uint8, n * 3, cpos + 4).reshape(n, 3)
        self.layers = self._layers(doc)

    def _layers(self, doc) -> list[Layer]:
        layers: list[Layer] = []
        by_item_path: dict[tuple[int, ...], Layer] = {}
        top_index = 0
        for raw, ptr in zip(doc.raw_layers, doc._layerPtr):
            name_len = _u32(self.data, ptr + 12)
            props, end = _walk_props(self.data, ptr + 16 + name_len)
            hptr = self._pointer(end)
            if hptr != raw._imageHierarchyPtr:
                raise LayeredFileError(f"{self.path}: layer {raw.name!r} has an inconsistent structure")
            if raw.itemPath:
                item_path = tuple(raw.itemPath)
            else:
                item_path = (top_index,)
                top_index += 1
            parent = by_item_path.get(item_path[:-1])
            is_group = bool(raw.isGroup)
            visible = bool(raw.visible)
            note = ""
            if PROP_FLOATING_SELECTION in props:
                note = "is a floating selection (anchor it in GIMP first)"
            elif raw.colorMode not in _LAYER_CHANNELS:
                note = f"has an unknown layer type {raw.colorMode}"
            elif not raw.isGroup:
                try:  # a layer over the limit is reported and skipped; the others stay usable
                    itemsize = np.dtype(self.dtype).itemsize
                    limits.check_pixels(
                        "its pixel data", raw.width, raw.height, _LAYER_CHANNELS[raw.colorMode] * itemsize
                    )
                except limits.ImageTooLarge as exc:
                    note = str(exc)
            layer = Layer(
                name=str(raw.name),
                kind="group" if is_group else "paint",
                visible=visible,
                shown=visible and (parent.shown if parent else True),
                depth=len(item_path) - 1,
                path=(parent.path + "/" if parent else "") + str(raw.name),
                has_mask=bool(raw._maskPtr),
                size=(raw.width, raw.height),
                offset=(raw.xOffset, raw.yOffset),
                key=_XcfLayerKey(
                    ptr=ptr,
                    hptr=hptr,
                    mptr_pos=end + self.pointer_size,
                    apply_mask_pos=props.get(PROP_APPLY_MASK, (None,))[0],
                    layer_type=raw.colorMode,
                    mask_ptr=raw._maskPtr or 0,
                ),
                note=note,
            )
            by_item_path[item_path] = layer
            layers.append(layer)
        return layers

    def _pointer(self, pos: int) -> int:
        fmt = ">Q" if self.pointer_size == 8 else ">I"
        return struct.unpack_from(fmt, self.data, pos)[0]

    # ---- pixels -------------------------------------------------------------------------------

    def _read_rgba(self, layer: Layer) -> np.ndarray:
        key: _XcfLayerKey = layer.key
        channels = _LAYER_CHANNELS[key.layer_type]
        w, h = layer.size
        values = self._read_hierarchy(key.hptr, w, h, channels)
        if key.layer_type in (4, 5):  # indexed: the palette holds sRGB bytes
            if self.colormap is None:
                raise LayeredFileError(f"{self.path}: indexed layer {layer.name!r} but no colour map")
            index = np.minimum(values[..., 0].astype(np.intp), len(self.colormap) - 1)
            rgb = self.colormap[index]
            alpha = values[..., 1].astype(np.uint8) if channels == 2 else np.full((h, w), 255, np.uint8)
            return np.dstack([rgb, alpha])
        scale = np.iinfo(values.dtype).max if values.dtype.kind == "u" else 1.0
        if values.dtype == np.uint8 and not self.linear:
            colour = values
            alpha = None
        else:
            unit = values.astype(np.float32) / np.float32(scale)
            colour = to_uint8(unit, linear=self.linear)
            alpha = to_uint8(unit[..., -1], linear=False)  # alpha is never gamma-encoded
        if channels in (1, 2):
            rgb = np.repeat(colour[..., :1], 3, axis=2)
        else:
            rgb = colour[..., :3]
        if channels in (2, 4):
            a = colour[..., -1] if alpha is None else alpha
        else:
            a = np.full((h, w), 255, np.uint8)
        return np.ascontiguousarray(np.dstack([rgb, a]))

    def _read_hierarchy(self, hptr: int, w: int, h: int, channels: int) -> np.ndarray:
        data = self.data
        itemsize = np.dtype(self.dtype).itemsize
        hw, hh, bpp = struct.unpack_from(">III", data, hptr)
        # sizes come from the file: check them before anything is allocated for them
        limits.check_pixels(f"{self.path}: pixel data at {hptr}", hw, hh, max(bpp, channels * itemsize))
        if (hw, hh) != (w, h) or bpp != channels * itemsize:
            raise LayeredFileError(
                f"{self.path}: pixel data {hw}×{hh}×{bpp} does not match its layer "
                f"{w}×{h}×{channels * itemsize}"
            )
        level = self._pointer(hptr + 12)
        lw, lh = struct.unpack_from(">II", data, level)
        if (lw, lh) != (w, h):
            raise LayeredFileError(f"{self.path}: level size {lw}×{lh} does not match {w}×{h}")
        out = np.empty((h, w, bpp), np.uint8)
        tiles_x = math.ceil(w / TILE)
        pos = level + 8
        for t in range(tiles_x * math.ceil(h / TILE)):
            ptr = self._pointer(pos)
            pos += self.pointer_size
            ty, tx = divmod(t, tiles_x)
            x0, y0 = tx * TILE, ty * TILE
            tw, th = min(TILE, w - x0), min(TILE, h - y0)
            npx = tw * th
            if self.compression == 1:
                planes = np.frombuffer(_rle_decode(data, ptr, npx, bpp), np.uint8).reshape(bpp, th, tw)
                out[y0 : y0 + th, x0 : x0 + tw] = planes.transpose(1, 2, 0)
            else:
                if self.compression == 2:
                    raw = zlib.decompressobj().decompress(data[ptr : ptr + npx * bpp * 2 + 1024], npx * bpp)
                else:
                    raw = data[ptr : ptr + npx * bpp]
                if len(raw) != npx * bpp:
                    raise LayeredFileError(f"{self.path}: tile data is cut short")
                out[y0 : y0 + th, x0 : x0 + tw] = np.frombuffer(raw, np.uint8).reshape(th, tw, bpp)
        dtype = np.dtype(self.dtype)
        values = out.view(dtype).reshape(h, w, channels)
        return values if dtype.itemsize == 1 else values.astype(dtype.newbyteorder("="))

    def read_mask(self, layer: Layer) -> np.ndarray | None:
        if not layer.key.mask_ptr:
            return None
        ptr = layer.key.mask_ptr
        w, h = struct.unpack_from(">II", self.data, ptr)
        _, end = _walk_props(self.data, ptr + 12 + _u32(self.data, ptr + 8))
        values = self._read_hierarchy(self._pointer(end), w, h, 1)[..., 0]
        if values.dtype.kind == "u":
            return values.astype(np.float32) / np.float32(np.iinfo(values.dtype).max)
        return values.astype(np.float32)

    # ---- writing ------------------------------------------------------------------------------

    def _mask_bytes(self, alpha: np.ndarray) -> np.ndarray:
        """Alpha in [0, 1] -> H×W×bpp bytes in the image's precision (stored 1:1, big-endian)."""
        dt = np.dtype(self.dtype)
        if dt.kind == "u":
            top = np.iinfo(dt).max
            work = alpha.astype(np.float64) if dt.itemsize > 2 else alpha.astype(np.float32, copy=False)
            values = (work * top + 0.5).astype(dt)
        else:
            values = alpha.astype(dt)
        h, w = alpha.shape
        return np.ascontiguousarray(values).view(np.uint8).reshape(h, w, dt.itemsize)

    def _encode_tiles(self, pixels: np.ndarray, base: int) -> tuple[list[int], bytes]:
        """Tile data for H×W×bpp bytes; returns tile pointers (``base`` = where the data starts)."""
        h, w, bpp = pixels.shape
        pointers, chunks = [], []
        offset = base
        for y0 in range(0, h, TILE):
            for x0 in range(0, w, TILE):
                tile = pixels[y0 : y0 + TILE, x0 : x0 + TILE]
                if self.compression == 1:
                    planes = tile.transpose(2, 0, 1).reshape(bpp, -1)
                    chunk = b"".join(_rle_encode_plane(p) for p in planes)
                elif self.compression == 2:
                    chunk = zlib.compress(tile.tobytes(), 6)
                else:
                    chunk = tile.tobytes()
                pointers.append(offset)
                chunks.append(chunk)
                offset += len(chunk)
        return pointers, b"".join(chunks)

    def _ptr(self, value: int) -> bytes:
        if self.pointer_size == 4:
            if value >= 2**32:
                raise LayeredFileError(
                    f"{self.path}: the file would exceed 4 GiB, which XCF version "
                    f"{self.version} cannot address; save it in GIMP 2.10+ first"
                )
            return struct.pack(">I", value)
        return struct.pack(">Q", value)

    def with_masks(self, masks: dict[int, np.ndarray]) -> bytes:
        buf = bytearray(self.data)
        tattoo_prop = self.image_props.get(PROP_TATTOO)
        tattoo = _u32(self.data, tattoo_prop[0]) if tattoo_prop else None
        for index, alpha in masks.items():
            layer = self.layers[index]
            key: _XcfLayerKey = layer.key
            w, h = layer.size
            if alpha.shape != (h, w):
                raise ValueError(f"mask for {layer.path!r} is {alpha.shape}, layer is {(h, w)}")
            pixels = self._mask_bytes(alpha)
            bpp = pixels.shape[2]
            name = mask_name(layer.name).encode("utf-8") + b"\0"
            props = [
                (PROP_OPACITY, struct.pack(">I", 255)),
                (PROP_VISIBLE, struct.pack(">I", 1)),
                (PROP_SHOW_MASKED, struct.pack(">I", 0)),
                (PROP_COLOR, b"\0\0\0"),
            ]
            if tattoo is not None:
                tattoo += 1
                props.append((PROP_TATTOO, struct.pack(">I", tattoo)))
            header = struct.pack(">III", w, h, len(name)) + name
            header += b"".join(struct.pack(">II", pid, len(p)) + p for pid, p in props)
            header += struct.pack(">II", PROP_END, 0)
            channel_ptr = len(buf)
            hierarchy_ptr = channel_ptr + len(header) + self.pointer_size
            level_ptr = hierarchy_ptr + 12 + 2 * self.pointer_size
            n_tiles = math.ceil(w / TILE) * math.ceil(h / TILE)
            tiles_base = level_ptr + 8 + (n_tiles + 1) * self.pointer_size
            pointers, tile_data = self._encode_tiles(pixels, tiles_base)
            buf += header + self._ptr(hierarchy_ptr)
            buf += struct.pack(">III", w, h, bpp) + self._ptr(level_ptr) + self._ptr(0)
            buf += struct.pack(">II", w, h) + b"".join(self._ptr(p) for p in pointers) + self._ptr(0)
            buf += tile_data
            buf[key.mptr_pos : key.mptr_pos + self.pointer_size] = self._ptr(channel_ptr)
            if key.apply_mask_pos is not None:
                buf[key.apply_mask_pos : key.apply_mask_pos + 4] = struct.pack(">I", 1)
        if tattoo is not None:
            pos = self.image_props[PROP_TATTOO][0]
            buf[pos : pos + 4] = struct.pack(">I", tattoo)
        return bytes(buf)


def _rle_decode(data: bytes, pos: int, npx: int, bpp: int) -> bytes:
    """XCF RLE: ``bpp`` byte planes of ``npx`` bytes each, one after the other."""
    out = bytearray(npx * bpp)
    o = 0
    for plane in range(bpp):
        end = (plane + 1) * npx
        while o < end:
            op = data[pos]
            pos += 1
            if op <= 127:  # run of one value
                if op == 127:
                    n = (data[pos] << 8) | data[pos + 1]
                    pos += 2
                else:
                    n = op + 1
                value = data[pos]
                pos += 1
                if o + n > end:
                    raise LayeredFileError("RLE run crosses a tile boundary")
                out[o : o + n] = bytes((value,)) * n
            else:  # literal bytes
                if op == 128:
                    n = (data[pos] << 8) | data[pos + 1]
                    pos += 2
                else:
                    n = 256 - op
                chunk = data[pos : pos + n]
                if len(chunk) != n or o + n > end:
                    raise LayeredFileError("RLE data is cut short")
                out[o : o + n] = chunk
                pos += n
            o += n
    return bytes(out)


def _long_runs(plane: np.ndarray, min_run: int) -> list[tuple[int, int]]:
    """(start, end) of the runs of at least ``min_run`` equal bytes, found with numpy."""
    n = plane.size
    edges = np.flatnonzero(plane[1:] != plane[:-1]) + 1
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [n]))
    keep = (ends - starts) >= min_run
    return list(zip(starts[keep].tolist(), ends[keep].tolist()))


def _rle_encode_plane(plane: np.ndarray) -> bytes:
    """One byte plane as XCF RLE: runs of 8+ equal bytes as repeats, the rest as one long literal each.

    The Python loop only visits long runs, so noisy (photo-like) and flat planes are both fast.
    """
    n = plane.size
    raw = plane.tobytes()
    out = bytearray()
    pos = 0
    for start, end in _long_runs(plane, 8):
        if pos < start:
            out += _rle_literal(raw[pos:start])
        out += _rle_repeat(raw[start], end - start)
        pos = end
    if pos < n:
        out += _rle_literal(raw[pos:n])
    return bytes(out)


def _rle_repeat(value: int, n: int) -> bytes:
    if n <= 127:
        return bytes((n - 1, value))
    return bytes((127, n >> 8, n & 0xFF, value))


def _rle_literal(chunk: bytes) -> bytes:
    n = len(chunk)
    if n <= 127:
        return bytes((256 - n,)) + chunk
    return bytes((128, n >> 8, n & 0xFF)) + chunk
