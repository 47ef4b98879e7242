"""Small writers for layered test files when no editor is at hand (unit tests, benchmark).

``write_xcf`` writes what GIMP 2.10 writes for an 8-bit RGB image (XCF v3 with 32-bit pointers,
or v11 with 64-bit ones; RLE tiles; no GIMP 3 properties) — the old-file side of the
GIMP 2.10/3 compatibility tests; real GIMP 3 opens these files in the editor tests.
``write_ora`` and ``write_kra`` write the minimal structure Krita and GIMP write. The
round-trip tests themselves use files made by the real editors.
"""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass

import numpy as np


@dataclass
class SynthLayer:
    name: str
    rgba: np.ndarray  # H×W×4 uint8
    offset: tuple[int, int] = (0, 0)
    opacity: float = 1.0
    visible: bool = True
    mode: int = 28  # XCF layer mode (28 = normal)


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A photo-like RGBA layer: a lit disc on a gradient, with sensor-like noise (compresses like a photo)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    disc = ((x - w / 2) ** 2 + (y - h / 2) ** 2) < (min(h, w) * 0.3) ** 2
    rgb = np.stack([40 + 100 * x / w, 60 + 80 * y / h, 150 + 0 * x], axis=-1)
    rgb[disc] = [220, 140, 60]
    rgb += rng.normal(0, 6, rgb.shape)
    rgba = np.empty((h, w, 4), np.uint8)
    rgba[..., :3] = np.clip(rgb, 0, 255).astype(np.uint8)
    rgba[..., 3] = 255
    return rgba


def _rle_plane(plane: bytes) -> bytes:
    out = bytearray()
    for i in range(0, len(plane), 127):
        chunk = plane[i : i + 127]
        out.append(256 - len(chunk))
        out += chunk
    return bytes(out)


def write_xcf(width: int, height: int, layers: list[SynthLayer], version: int = 3) -> bytes:
    """An 8-bit RGB XCF (layers listed top first), as GIMP 2.x writes it."""
    psize = 8 if version >= 11 else 4
    ptr = (lambda v: struct.pack(">Q", v)) if psize == 8 else (lambda v: struct.pack(">I", v))
    head = b"gimp xcf " + (b"file" if version == 0 else f"v{version:03d}".encode()) + b"\0"
    head += struct.pack(">III", width, height, 0)
    if version >= 7:
        head += struct.pack(">I", 150)
    props = struct.pack(">II", 17, 1) + b"\x01" + struct.pack(">III", 20, 4, len(layers) + 1)
    props += struct.pack(">II", 0, 0)
    table_size = (len(layers) + 1) * psize + psize  # layer pointers + 0, channel list 0
    body = bytearray()
    base = len(head) + len(props) + table_size
    layer_ptrs = []
    for n, layer in enumerate(layers):
        h, w = layer.rgba.shape[:2]
        name = layer.name.encode() + b"\0"
        lprops = b"".join(
            struct.pack(">II", pid, len(p)) + p
            for pid, p in [
                (6, struct.pack(">I", round(layer.opacity * 255))),
                (8, struct.pack(">I", int(layer.visible))),
                (15, struct.pack(">ii", *layer.offset)),
                (7, struct.pack(">I", layer.mode)),
                (11, struct.pack(">I", 0)),
                (20, struct.pack(">I", n + 1)),
            ]
        ) + struct.pack(">II", 0, 0)
        layer_ptr = base + len(body)
        layer_ptrs.append(layer_ptr)
        header = struct.pack(">III", w, h, 1) + struct.pack(">I", len(name)) + name + lprops
        hier_ptr = layer_ptr + len(header) + 2 * psize
        level_ptr = hier_ptr + 12 + 2 * psize
        tiles = []
        for y0 in range(0, h, 64):
            for x0 in range(0, w, 64):
                tile = layer.rgba[y0 : y0 + 64, x0 : x0 + 64]
                tiles.append(b"".join(_rle_plane(tile[..., c].tobytes()) for c in range(4)))
        tile_base = level_ptr + 8 + (len(tiles) + 1) * psize
        pointers, offset = [], tile_base
        for t in tiles:
            pointers.append(offset)
            offset += len(t)
        body += header + ptr(hier_ptr) + ptr(0)
        body += struct.pack(">III", w, h, 4) + ptr(level_ptr) + ptr(0)
        body += struct.pack(">II", w, h) + b"".join(ptr(p) for p in pointers) + ptr(0) + b"".join(tiles)
    table = b"".join(ptr(p) for p in layer_ptrs) + ptr(0) + ptr(0)
    return head + props + table + bytes(body)


def _png(rgba: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(out, "PNG", compress_level=1)
    return out.getvalue()


def write_ora(width: int, height: int, layers: list[SynthLayer]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "image/openraster")
        items = []
        for n, layer in enumerate(layers):
            src = f"data/layer{n}.png"
            z.writestr(src, _png(layer.rgba))
            x, y = layer.offset
            items.append(
                f'<layer name="{layer.name}" src="{src}" x="{x}" y="{y}" '
                f'opacity="{layer.opacity}" visibility="{"visible" if layer.visible else "hidden"}" '
                f'composite-op="svg:src-over"/>'
            )
        z.writestr(
            "stack.xml",
            f'<?xml version="1.0" encoding="UTF-8"?>\n<image version="0.0.3" w="{width}" '
            f'h="{height}"><stack>{"".join(items)}</stack></image>',
        )
    return out.getvalue()


def write_kra(width: int, height: int, layers: list[SynthLayer]) -> bytes:
    """A KRA with canvas-sized RGBA U8 paint layers (tiles stored raw, as Krita does for noise)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/x-krita")
        items = []
        for n, layer in enumerate(layers):
            canvas = np.zeros((height, width, 4), np.uint8)
            h, w = layer.rgba.shape[:2]
            x, y = layer.offset
            canvas[y : y + h, x : x + w] = layer.rgba[: height - y, : width - x]
            bgra = canvas[..., [2, 1, 0, 3]]
            parts = []
            for ty in range(0, height, 64):
                for tx in range(0, width, 64):
                    tile = np.zeros((64, 64, 4), np.uint8)
                    block = bgra[ty : ty + 64, tx : tx + 64]
                    tile[: block.shape[0], : block.shape[1]] = block
                    data = b"\0" + tile.tobytes()
                    parts.append(f"{tx},{ty},LZF,{len(data)}\n".encode() + data)
            head = f"VERSION 2\nTILEWIDTH 64\nTILEHEIGHT 64\nPIXELSIZE 4\nDATA {len(parts)}\n".encode()
            z.writestr(f"synth/layers/layer{n}", head + b"".join(parts), zipfile.ZIP_STORED)
            z.writestr(f"synth/layers/layer{n}.defaultpixel", bytes(4))
            items.append(
                f'<layer nodetype="paintlayer" filename="layer{n}" name="{layer.name}" '
                f'visible="{int(layer.visible)}" opacity="{round(layer.opacity * 255)}" '
                f'colorspacename="RGBA" compositeop="normal" x="0" y="0"/>'
            )
        z.writestr(
            "maindoc.xml",
            '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE DOC PUBLIC '
            "'-//KDE//DTD krita 2.0//EN' 'http://www.calligra.org/DTD/krita-2.0.dtd'>\n"
            '<DOC xmlns="http://www.calligra.org/DTD/krita" syntaxVersion="2.0">\n'
            f' <IMAGE name="synth" width="{width}" height="{height}" colorspacename="RGBA" '
            f'mime="application/x-kra"><layers>{"".join(items)}</layers></IMAGE>\n</DOC>\n',
        )
    return out.getvalue()
