"""OpenRaster (``.ora``): a zip of ``mimetype``, ``stack.xml`` and one PNG per layer.

OpenRaster has no layer masks. maskd writes the mask the way the format composites: the layer
is wrapped in an isolated ``<stack>`` named ``"NAME (masked)"`` (not ``NAME``: GIMP would rename a
layer that shares its group's name) together with a new layer above it, ``"NAME (maskd)"``,
whose PNG is white with the mask as its alpha and whose ``composite-op`` is ``svg:dst-in`` (keep
the layer where the mask is opaque). Krita opens this as a group holding the
layer and a "Destination In" mask layer, and shows the cut-out. GIMP 3's OpenRaster importer
knows no ``svg:dst-in``: it shows the mask as an ordinary white layer — for GIMP, use XCF.

Everything else is carried over: every PNG byte for byte, ``stack.xml`` edited only where the
layer is wrapped (a non-normal ``composite-op`` moves from the layer to its new stack, so the
layer still blends with what is below it), thumbnails and ``mergedimage.png`` as they were (they
show the unmasked image until an editor saves the file again).
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
from maskd.core import limits
from maskd.core.errors import InputError
from maskd.core.layered import (
    Layer,
    LayeredDocument,
    LayeredFileError,
    mask_name,
    open_archive,
    rewrite_zip,
)

DST_IN = "svg:dst-in"


class OraDocument(LayeredDocument):
    format_name = "OpenRaster"

    def __init__(self, path: Path, data: bytes):
        self.path = Path(path)
        self.data = data
        self.zip, names, self.stack_xml = open_archive(path, data, "an OpenRaster file", "stack.xml")
        root = ET.fromstring(self.stack_xml)
        if root.tag != "image":
            raise LayeredFileError(f"{path}: stack.xml does not start with <image>; skipped")
        self.width, self.height = int(root.get("w", "0")), int(root.get("h", "0"))
        self.members = names
        self.layers: list[Layer] = []
        top = root.find("stack")
        if top is not None:
            self._walk(top, parent=None, depth=0)

    def _walk(self, stack: ET.Element, parent: Layer | None, depth: int) -> None:
        children = list(stack)
        masked_below = False
        for element in children:
            name = element.get("name", "")
            visible = element.get("visibility", "visible") != "hidden"
            shown = visible and (parent.shown if parent else True)
            path = (parent.path + "/" if parent else "") + name
            x, y = int(float(element.get("x", "0"))), int(float(element.get("y", "0")))
            place = dict(visible=visible, shown=shown, depth=depth, path=path, offset=(x, y))
            if element.tag == "stack":
                layer = Layer(name=name, kind="group", has_mask=False, size=(0, 0), key=element, **place)
                self.layers.append(layer)
                self._walk(element, layer, depth + 1)
                continue
            if element.tag != "layer":
                self.layers.append(Layer(name=name, kind=element.tag, has_mask=False, size=(0, 0), **place))
                continue
            is_mask = element.get("composite-op") == DST_IN
            src = element.get("src", "")
            note = "" if src in self.members else f"its PNG {src!r} is missing from the file"
            size = (0, 0)
            if not note and not is_mask:
                try:
                    size = self._png_member(src, f"its PNG {src!r}")
                except limits.ImageTooLarge as exc:
                    note = str(exc)  # reported and skipped; the other layers are still usable
            self.layers.append(
                Layer(
                    name=name,
                    kind="mask" if is_mask else "paint",
                    has_mask=masked_below and not is_mask,
                    size=size,
                    key=element,
                    note=note,
                    **place,
                )
            )
            masked_below = masked_below or is_mask

    def _png_member(self, src: str, what: str) -> tuple[int, int]:
        """A PNG member's size from its header (26 bytes inflated, not the member), checked against
        maskd's limits along with the member's declared length (``limits.ImageTooLarge``)."""
        info = self.zip.getinfo(src)
        with self.zip.open(info) as f:
            head = f.read(26)
        try:
            w, h, bpp = limits.png_header(head)
        except InputError:
            raise LayeredFileError(f"{self.path}: the layer PNG {src!r} is not a PNG image") from None
        limits.check_pixels(what, w, h, bpp)
        limits.check_bytes(what, info.file_size, limits.png_max_file_bytes(w, h, bpp))
        return w, h

    def _decode_png(self, src: str, what: str) -> np.ndarray:
        """RGBA uint8 of a PNG member: header checked first, then the member read and decoded once."""
        from PIL import Image

        self._png_member(src, what)
        limits.configure_decoders()
        with Image.open(io.BytesIO(self.zip.read(src))) as im:
            return np.ascontiguousarray(np.asarray(im.convert("RGBA")))

    def _read_rgba(self, layer: Layer) -> np.ndarray:
        src = layer.key.get("src")
        return self._decode_png(src, f"{self.path}: the PNG {src!r} of layer {layer.path!r}")

    def read_mask(self, layer: Layer) -> np.ndarray | None:
        """The alpha of the dst-in layer above ``layer`` in its stack, placed over the layer's pixels."""
        if not layer.has_mask:
            return None
        index = self.layers.index(layer)
        mask = next(
            ly for ly in reversed(self.layers[:index]) if ly.kind == "mask" and ly.depth == layer.depth
        )
        src = mask.key.get("src")
        rgba = self._decode_png(src, f"{self.path}: the mask PNG {src!r} of layer {layer.path!r}")
        alpha = rgba[..., 3].astype(np.float32) / 255.0
        w, h = layer.size
        out = np.zeros((h, w), np.float32)
        dx, dy = mask.offset[0] - layer.offset[0], mask.offset[1] - layer.offset[1]
        ys = slice(max(dy, 0), min(dy + alpha.shape[0], h))
        xs = slice(max(dx, 0), min(dx + alpha.shape[1], w))
        out[ys, xs] = alpha[ys.start - dy : ys.stop - dy, xs.start - dx : xs.stop - dx]
        return out

    def with_masks(self, masks: dict[int, np.ndarray]) -> bytes:
        xml = self.stack_xml
        added = []
        for n, (index, alpha) in enumerate(sorted(masks.items())):
            layer = self.layers[index]
            element = layer.key
            src = element.get("src")
            w, h = layer.size
            mask_src = _unique(f"data/maskd-mask-{n}.png", self.members)
            rgba = np.empty((h, w, 4), np.uint8)
            rgba[..., :3] = 255
            rgba[..., 3] = (alpha.astype(np.float32, copy=False) * 255.0 + 0.5).astype(np.uint8)
            added.append((mask_src, _fast_png(rgba)))
            xml = _wrap_layer(xml, src, layer, mask_src)
        return rewrite_zip(self.data, {"stack.xml": xml.encode("utf-8")}, added)


def _fast_png(rgba: np.ndarray) -> bytes:
    """An RGBA8 PNG with no row filters and fast deflate: ~5× quicker than Pillow's adaptive filters
    on a noisy 3000×2000 matte, and a mask (white + alpha) compresses well without them anyway."""
    import struct
    import zlib

    h, w = rgba.shape[:2]
    rows = np.empty((h, 1 + w * 4), np.uint8)
    rows[:, 0] = 0  # filter type: none
    rows[:, 1:] = rgba.reshape(h, w * 4)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 1))
        + chunk(b"IEND", b"")
    )


def _unique(name: str, members: set[str]) -> str:
    stem, n = name[:-4], 0
    while name in members:
        n += 1
        name = f"{stem}-{n}.png"
    members.add(name)
    return name


def _wrap_layer(xml: str, src: str, layer: Layer, mask_src: str) -> str:
    """Wrap the ``<layer src=SRC .../>`` element of stack.xml in a stack with a dst-in mask layer.

    A text edit rather than an ElementTree round trip: every other byte of stack.xml stays as the
    editor wrote it.
    """
    pattern = re.compile(r"<layer\b[^<>]*?\bsrc=(\"|')" + re.escape(src) + r"\1[^<>]*?/>", re.S)
    found = list(pattern.finditer(xml))
    if len(found) != 1:
        raise LayeredFileError(f"layer {layer.path!r}: cannot find its element in stack.xml")
    element = found[0].group(0)
    op = layer.key.get("composite-op", "svg:src-over")
    stack_op = "svg:src-over"
    if op not in ("svg:src-over", ""):
        stack_op = op  # the group blends with the image below; the layer inside composes normally
        element = re.sub(r"\bcomposite-op=(\"|')[^\"']*\1", 'composite-op="svg:src-over"', element)
    x, y = layer.offset
    mask = (
        f'<layer name={quoteattr(mask_name(layer.name))} src={quoteattr(mask_src)} x="{x}" y="{y}" '
        f'opacity="1.0" visibility="visible" composite-op="{DST_IN}" />'
    )
    group_name = quoteattr(layer.name + " (masked)")
    wrapped = (
        f'<stack name={group_name} x="0" y="0" opacity="1.0" visibility="visible" '
        f'composite-op="{stack_op}" isolation="isolate">{mask}{element}</stack>'
    )
    return xml[: found[0].start()] + wrapped + xml[found[0].end() :]
