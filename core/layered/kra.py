"""Krita's ``.kra``: a zip of ``maindoc.xml`` (the layer tree) and one tile file per layer.

A transparency mask is added the way Krita saves one: a ``<mask nodetype="transparencymask">``
element in the layer's ``<masks>`` list of ``maindoc.xml`` and a ``<image>/layers/<file>.
pixelselection`` tile file (8-bit, 64×64 LZF-compressed tiles, default pixel 0 = hidden) with
``.defaultpixel`` beside it. ``maindoc.xml`` is edited as text at that one place; every other
member (layer tiles, ICC profiles, animation, annotations) is copied unchanged. ``preview.png``
and ``mergedimage.png`` keep showing the unmasked image until Krita saves the file again.

The layer pixels the model sees are the layer over the whole canvas. Supported layer colour
spaces: RGBA and GRAYA at 8 and 16 bit integer (sRGB-encoded) and 16/32 bit float (Krita's
float default is linear light); a layer in another colour space (CMYK, Lab, ...) is reported and
skipped.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
from maskd.core import limits
from maskd.core.layered import (
    Layer,
    LayeredDocument,
    LayeredFileError,
    mask_name,
    open_archive,
    rewrite_zip,
    to_uint8,
    unsafe_member_name,
)

TILE = 64
NS = "{http://www.calligra.org/DTD/krita}"

# colorspacename -> (channels, little-endian dtype, BGR order for colour, linear light)
_SPACES = {
    "RGBA": (4, "<u1", True, False),
    "RGBA16": (4, "<u2", True, False),
    "RGBAF16": (4, "<f2", False, True),
    "RGBAF32": (4, "<f4", False, True),
    "GRAYA": (2, "<u1", False, False),
    "GRAYA16": (2, "<u2", False, False),
    "GRAYAF16": (2, "<f2", False, True),
    "GRAYAF32": (2, "<f4", False, True),
}


class KraDocument(LayeredDocument):
    format_name = "KRA"

    def __init__(self, path: Path, data: bytes):
        self.path = Path(path)
        self.data = data
        self.zip, self.members, self.maindoc = open_archive(path, data, "a Krita file", "maindoc.xml")
        root = ET.fromstring(self.maindoc)
        image = root.find(NS + "IMAGE")
        if image is None:
            raise LayeredFileError(f"{path}: maindoc.xml has no IMAGE element; skipped")
        self.image_name = image.get("name", "")
        self.width, self.height = int(image.get("width", "0")), int(image.get("height", "0"))
        if unsafe_member_name(self._member("x")):  # new members are named after it
            raise LayeredFileError(
                f"{path}: the image name {self.image_name!r} is absolute or has '..'; skipped"
            )
        # every layer is read over the whole canvas: refuse a canvas over the limit before anything
        # is allocated (4 bytes per pixel: the RGBA8 layer maskd hands on)
        limits.check_pixels(f"{path} (its canvas)", self.width, self.height, 4)
        self.layers: list[Layer] = []
        top = image.find(NS + "layers")
        if top is not None:
            self._walk(top, None, 0)

    def _walk(self, layers: ET.Element, parent: Layer | None, depth: int) -> None:
        for element in layers.findall(NS + "layer"):
            name = element.get("name", "")
            nodetype = element.get("nodetype", "")
            visible = element.get("visible", "1") != "0"
            masks = element.find(NS + "masks")
            has_mask = masks is not None and any(
                m.get("nodetype") == "transparencymask" for m in masks.findall(NS + "mask")
            )
            note = ""
            if nodetype == "paintlayer":
                space = element.get("colorspacename", "RGBA")
                if space not in _SPACES:
                    note = f"is in the {space} colour space (maskd reads RGBA and GRAYA layers)"
                elif self._member(element.get("filename", "")) not in self.members:
                    note = "its pixel data is missing from the file"
            layer = Layer(
                name=name,
                kind={"paintlayer": "paint", "grouplayer": "group"}.get(nodetype, nodetype),
                visible=visible,
                shown=visible and (parent.shown if parent else True),
                depth=depth,
                path=(parent.path + "/" if parent else "") + name,
                has_mask=has_mask,
                size=(self.width, self.height),
                offset=(0, 0),
                key=element,
                note=note,
            )
            self.layers.append(layer)
            children = element.find(NS + "layers")
            if children is not None:
                self._walk(children, layer, depth + 1)

    def _member(self, filename: str) -> str:
        return f"{self.image_name}/layers/{filename}"

    def _read_rgba(self, layer: Layer) -> np.ndarray:
        element = layer.key
        channels, dtype, bgr, linear = _SPACES[element.get("colorspacename", "RGBA")]
        dt = np.dtype(dtype)
        pixel_size = channels * dt.itemsize
        member = self._member(element.get("filename"))
        default = (
            self.zip.read(member + ".defaultpixel")
            if member + ".defaultpixel" in self.members
            else bytes(pixel_size)
        )
        if len(default) != pixel_size:
            raise LayeredFileError(f"{self.path}: layer {layer.path!r} has a bad default pixel")
        # the layer's device is offset by its x/y: canvas pixel (cx, cy) is device (cx - x, cy - y)
        lx, ly = int(element.get("x", "0")), int(element.get("y", "0"))
        limits.check_pixels(f"{self.path}: layer {layer.path!r}", self.width, self.height, pixel_size)
        canvas = np.empty((self.height, self.width, pixel_size), np.uint8)
        canvas[:] = np.frombuffer(default, np.uint8)
        inside = _on_canvas(lx, ly, self.width, self.height)
        for tx, ty, tile in _read_tiles(self.zip.read(member), pixel_size, inside):
            x0, y0 = tx + lx, ty + ly
            cx0, cy0 = max(x0, 0), max(y0, 0)
            cx1, cy1 = min(x0 + TILE, self.width), min(y0 + TILE, self.height)
            if cx0 < cx1 and cy0 < cy1:
                canvas[cy0:cy1, cx0:cx1] = tile[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        values = canvas.view(dt).reshape(self.height, self.width, channels)
        if dt == np.uint8:
            colour, alpha = values, values[..., -1]
        else:
            scale = np.iinfo(dt).max if dt.kind == "u" else 1.0
            unit = values.astype(np.float32) / np.float32(scale)
            colour = to_uint8(unit, linear=linear)
            alpha = to_uint8(unit[..., -1], linear=False)
        if channels == 2:
            rgb = np.repeat(colour[..., :1], 3, axis=2)
        else:
            rgb = colour[..., 2::-1] if bgr else colour[..., :3]
        return np.ascontiguousarray(np.dstack([rgb, alpha]))

    def read_mask(self, layer: Layer) -> np.ndarray | None:
        """The layer's first transparency mask over the canvas."""
        masks = layer.key.find(NS + "masks")
        element = next(
            (m for m in (masks if masks is not None else []) if m.get("nodetype") == "transparencymask"), None
        )
        if element is None:
            return None
        member = self._member(element.get("filename")) + ".pixelselection"
        default = (
            self.zip.read(member + ".defaultpixel")[:1] if member + ".defaultpixel" in self.members else b"\0"
        )
        out = np.full((self.height, self.width), default[0], np.uint8)
        mx, my = int(element.get("x", "0")), int(element.get("y", "0"))
        for tx, ty, tile in _read_tiles(
            self.zip.read(member), 1, _on_canvas(mx, my, self.width, self.height)
        ):
            x0, y0 = tx + mx, ty + my
            cx0, cy0 = max(x0, 0), max(y0, 0)
            cx1, cy1 = min(x0 + TILE, self.width), min(y0 + TILE, self.height)
            if cx0 < cx1 and cy0 < cy1:
                out[cy0:cy1, cx0:cx1] = tile[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0, 0]
        return out.astype(np.float32) / 255.0

    def with_masks(self, masks: dict[int, np.ndarray]) -> bytes:
        xml = self.maindoc
        added = []
        for n, (index, alpha) in enumerate(sorted(masks.items())):
            layer = self.layers[index]
            filename = _unique_filename(f"maskd_mask{n}", self.members, self._member)
            added.append((self._member(filename) + ".pixelselection", _write_tiles(alpha)))
            added.append((self._member(filename) + ".pixelselection.defaultpixel", b"\0"))
            mask = (
                f'<mask nodetype="transparencymask" name={quoteattr(mask_name(layer.name))} '
                f'filename={quoteattr(filename)} visible="1" locked="0" x="0" y="0" '
                f'colorlabel="0" intimeline="0" uuid="{{{uuid.uuid4()}}}"/>'
            )
            xml = _insert_mask(xml, layer, mask)
        return rewrite_zip(self.data, {"maindoc.xml": xml.encode("utf-8")}, added)


def _unique_filename(name: str, members: set[str], member) -> str:
    base, n = name, 0
    while any(m.startswith(member(name)) for m in members):
        n += 1
        name = f"{base}_{n}"
    members.add(member(name))
    return name


def _insert_mask(xml: str, layer: Layer, mask: str) -> str:
    """Add ``mask`` as the first entry of the layer's ``<masks>``: a text edit of maindoc.xml."""
    filename = layer.key.get("filename")
    pattern = re.compile(r"<layer\b[^<>]*?\bfilename=(\"|')" + re.escape(filename) + r"\1[^<>]*?(/?)>", re.S)
    found = list(pattern.finditer(xml))
    if len(found) != 1:
        raise LayeredFileError(f"layer {layer.path!r}: cannot find its element in maindoc.xml")
    start, end = found[0].span()
    tag = found[0].group(0)
    if found[0].group(2) == "/":  # <layer .../> -> <layer ...><masks>MASK</masks></layer>
        return xml[:start] + tag[:-2].rstrip() + ">" + f"<masks>{mask}</masks></layer>" + xml[end:]
    # <layer ...> with children: the first <masks> before the matching </layer>, else a new one
    close = xml.find("</layer>", end)
    nested = xml.find("<layer", end)
    masks_at = xml.find("<masks>", end)
    if masks_at != -1 and masks_at < close and (nested == -1 or masks_at < nested):
        at = masks_at + len("<masks>")
        return xml[:at] + mask + xml[at:]
    return xml[:end] + f"<masks>{mask}</masks>" + xml[end:]


# ---- Krita tile files ---------------------------------------------------------------------------


def _on_canvas(dx: int, dy: int, width: int, height: int):
    """Whether a tile at device (x, y), offset by (dx, dy), overlaps the canvas."""
    return lambda x, y: x + dx < width and y + dy < height and x + dx + TILE > 0 and y + dy + TILE > 0


def _read_tiles(blob: bytes, pixel_size: int, wanted=None):
    """Yield (x, y, tile H×W×pixel_size uint8) from a Krita "VERSION 2" tile file.

    Only tiles for which ``wanted(x, y)`` holds are decompressed, and a position may appear once: the
    work stays bounded by the canvas, however many tile records a file holds."""
    pos = 0
    header = {}
    for _ in range(5):
        end = blob.index(b"\n", pos)
        key, _, value = blob[pos:end].decode("ascii").partition(" ")
        header[key] = value
        pos = end + 1
    if header.get("VERSION") != "2":
        raise LayeredFileError(f"unsupported Krita tile format version {header.get('VERSION')!r}")
    if int(header.get("PIXELSIZE", "0")) != pixel_size:
        raise LayeredFileError("tile pixel size does not match the layer's colour space")
    tw, th = int(header["TILEWIDTH"]), int(header["TILEHEIGHT"])
    if (tw, th) != (TILE, TILE):
        raise LayeredFileError(f"unsupported Krita tile size {tw}×{th}")
    tile_bytes = TILE * TILE * pixel_size
    seen = set()
    for _ in range(int(header["DATA"])):
        end = blob.index(b"\n", pos)
        x, y, method, size = blob[pos:end].decode("ascii").split(",")
        pos = end + 1
        size = int(size)
        payload = blob[pos : pos + size]
        pos += size
        if len(payload) != size or size < 1:
            raise LayeredFileError("Krita tile data is cut short")
        if method != "LZF":
            raise LayeredFileError(f"unsupported Krita tile compression {method!r}")
        x, y = int(x), int(y)
        if (x, y) in seen:
            raise LayeredFileError(f"the Krita tile at {x},{y} appears twice")
        seen.add((x, y))
        if wanted is not None and not wanted(x, y):
            continue
        if payload[0] == 1:  # LZF of the byte-planar tile (all first bytes, then all second bytes, ...)
            raw = lzf_decompress(payload[1:], tile_bytes)
            planes = np.frombuffer(raw, np.uint8).reshape(pixel_size, TILE, TILE)
            yield int(x), int(y), planes.transpose(1, 2, 0)
        else:  # stored as is: interleaved pixels
            if len(payload) - 1 != tile_bytes:
                raise LayeredFileError("a Krita tile has the wrong size")
            pixels = np.frombuffer(payload, np.uint8, tile_bytes, 1)
            yield int(x), int(y), pixels.reshape(TILE, TILE, pixel_size)


def _write_tiles(alpha: np.ndarray) -> bytes:
    """An 8-bit selection tile file covering the canvas (the mask of a transparency mask)."""
    values = (alpha.astype(np.float32, copy=False) * 255.0 + 0.5).astype(np.uint8)
    h, w = values.shape
    parts = []
    count = 0
    tile = np.zeros((TILE, TILE), np.uint8)
    for y in range(0, h, TILE):
        for x in range(0, w, TILE):
            block = values[y : y + TILE, x : x + TILE]
            if block.shape != tile.shape:
                tile[:] = 0
            tile[: block.shape[0], : block.shape[1]] = block
            if not tile.any():
                continue  # the default pixel (0) already says "hidden"
            raw = tile.tobytes()
            packed = lzf_compress_runs(raw)
            # like Krita: raw when compression does not pay (Krita's read buffer holds at most a
            # tile's worth; a longer LZF stream crashes it)
            data = b"\x01" + packed if packed is not None and len(packed) < len(raw) else b"\x00" + raw
            parts.append(f"{x},{y},LZF,{len(data)}\n".encode("ascii") + data)
            count += 1
    head = f"VERSION 2\nTILEWIDTH {TILE}\nTILEHEIGHT {TILE}\nPIXELSIZE 1\nDATA {count}\n".encode("ascii")
    return head + b"".join(parts)


def lzf_decompress(data: bytes, size: int) -> bytes:
    """LZF (liblzf format, as Krita writes it) into exactly ``size`` bytes."""
    out = bytearray(size)
    ip = op = 0
    n = len(data)
    while ip < n:
        ctrl = data[ip]
        ip += 1
        if ctrl < 32:  # literal run
            length = ctrl + 1
            if op + length > size or ip + length > n:
                raise LayeredFileError("LZF literal runs past the tile")
            out[op : op + length] = data[ip : ip + length]
            ip += length
            op += length
        else:  # back reference
            length = ctrl >> 5
            if length == 7:
                length += data[ip]
                ip += 1
            ref = op - ((ctrl & 0x1F) << 8) - data[ip] - 1
            ip += 1
            length += 2
            if ref < 0 or op + length > size:
                raise LayeredFileError("LZF back reference outside the tile")
            if ref + length <= op:
                out[op : op + length] = out[ref : ref + length]
            else:  # overlapping copy repeats the pattern
                for k in range(length):
                    out[op + k] = out[ref + k]
            op += length
    if op != size:
        raise LayeredFileError("LZF data is cut short")
    return bytes(out)


def lzf_compress_runs(data: bytes) -> bytes | None:
    """Valid LZF that codes runs of 8+ equal bytes as back references (masks are mostly runs).

    Returns None when the runs cover under a quarter of the data: such a tile (a noisy matte) is
    stored raw, and the Python loop never walks through it byte by byte.
    """
    from maskd.core.layered.xcf import _long_runs

    arr = np.frombuffer(data, np.uint8)
    runs = _long_runs(arr, 8)
    if sum(end - start for start, end in runs) * 4 < len(data):
        return None
    out = bytearray()

    def literal(chunk: bytes) -> None:
        for i in range(0, len(chunk), 32):
            piece = chunk[i : i + 32]
            out.append(len(piece) - 1)
            out.extend(piece)

    pos = 0
    for start, end in runs:
        # one literal byte, then copies of it from distance 1, at most 264 bytes per reference
        literal(data[pos : start + 1])
        remaining = end - start - 1
        while remaining >= 3:
            chunk = min(remaining, 264)
            code = chunk - 2
            out += bytes((code << 5, 0)) if code < 7 else bytes((7 << 5, code - 7, 0))
            remaining -= chunk
        pos = end - remaining
    literal(data[pos:])
    return bytes(out)
