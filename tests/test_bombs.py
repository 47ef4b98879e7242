"""Decompression bombs are refused from their headers, before anything is decoded or allocated.

Each bomb is a real, well-formed file crafted here (small on disk, gigabytes once decoded): a 16-bit
16000² PNG, a 30000² JPEG, an ORA whose layer member inflates to 3 GB, an ORA whose layer PNG
declares 16000², a KRA declaring a 20000² canvas, an XCF whose layer declares 40000² with a tile
table to match. Each is opened in a fresh subprocess that measures the time and the peak resident
memory the attempt adds; the address space is capped there, so a regression fails with a
MemoryError instead of exhausting the machine. Issue 17 asks for under a second and at most 200 MB
extra: the timing bound is an assertion on a bound far from normal (the refusal takes milliseconds).
"""

from __future__ import annotations

import io
import json
import math
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from maskd.core import limits
from maskd.core.errors import InputError
from maskd.core.layered import open_layered

from tests.conftest import REPO
from tests.editors.layered.synth import SynthLayer, photo, write_kra, write_ora

SECONDS = 1.0
EXTRA_MB = 200


# ---- crafting ----------------------------------------------------------------------------------


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def deflate_zeros(head: bytes, zeros: int) -> tuple[bytes, int]:
    """A raw deflate stream of ``head`` + ``zeros`` zero bytes, and its CRC-32: one deflate block of
    16 MiB of zeros, ended by a full flush, repeated (the compressor state is reset at each flush,
    so the blocks are identical) — a gigabyte-sized stream crafted in well under a second."""
    chunk = bytes(16 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(zeros, len(chunk))
    stream = first + block * count + c.compress(bytes(rest)) + c.flush()
    crc = zlib.crc32(head)
    for _ in range(count):
        crc = zlib.crc32(chunk, crc)
    return stream, zlib.crc32(bytes(rest), crc)


def png_bomb(side: int = 16000, depth: int = 16, colour: int = 2) -> bytes:
    """A valid PNG of ``side``² black pixels (16-bit RGB: 1.5 GB of rows) in about 1.5 MB."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    raw = side * (1 + side * channels * depth // 8)  # filter byte 0 and zero samples: all zeros
    stream, _ = deflate_zeros(b"", raw)
    adler = (raw % 65521) << 16 | 1  # Adler-32 of zeros: a = 1, b = n
    idat = b"\x78\xda" + stream + struct.pack(">I", adler)
    header = struct.pack(">IIBBBBB", side, side, depth, colour, 0, 0, 0)
    return limits.PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def jpeg_bomb(side: int = 30000) -> bytes:
    """A small JPEG whose frame header (SOF0) is patched to declare ``side``² pixels."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 60, 30)).save(out, "JPEG")
    data = bytearray(out.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", side, side)
    return bytes(data)


def _zip_with_member(members: list[tuple[str, bytes]], big_name: str, big_head: bytes, zeros: int) -> bytes:
    """A zip of ``members`` plus ``big_name`` = ``big_head`` + ``zeros`` zero bytes, deflated, with a
    correct CRC and sizes (written by hand: zipfile would take minutes to deflate gigabytes)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members:
            z.writestr(name, data)
    body = out.getvalue()
    end_at = body.rindex(b"PK\x05\x06")
    count, _, cd_size, cd_offset = struct.unpack_from("<HHII", body, end_at + 8)
    local, central = body[:cd_offset], body[cd_offset : cd_offset + cd_size]
    stream, crc = deflate_zeros(big_head, zeros)
    size, name, offset = len(big_head) + zeros, big_name.encode(), len(local)
    lh = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(stream), size, len(name), 0)
    ch = struct.pack(
        "<4s6H3I5H2I",
        b"PK\x01\x02",
        20,
        20,
        0,
        8,
        0,
        0,
        crc,
        len(stream),
        size,
        len(name),
        0,
        0,
        0,
        0,
        0,
        offset,
    )
    central += ch + name
    end = struct.pack(
        "<4s4H2IH",
        b"PK\x05\x06",
        0,
        0,
        count + 1,
        count + 1,
        len(central),
        offset + len(lh) + len(name) + len(stream),
        0,
    )
    return local + lh + name + stream + central + end


def ora_member_bomb(gigabytes: float = 3.0) -> bytes:
    """An ORA whose only layer's PNG member inflates to ``gigabytes`` GB (a PNG header, then zeros)."""
    stack = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<image version="0.0.3" w="64" h="64"><stack>'
        '<layer name="photo" src="data/layer0.png" x="0" y="0" opacity="1.0" visibility="visible" '
        'composite-op="svg:src-over"/></stack></image>'
    )
    head = png_bomb(64, 8, 6)[:33]  # a real PNG signature and IHDR: 64×64, the size stack.xml says
    return _zip_with_member(
        [("mimetype", b"image/openraster"), ("stack.xml", stack.encode())],
        "data/layer0.png",
        head,
        int(gigabytes * 1e9),
    )


def ora_png_bomb() -> bytes:
    """A normal-looking ORA whose layer PNG is the 16000² 16-bit bomb."""
    small = write_ora(64, 64, [SynthLayer("photo", photo(64, 64))])
    return _replace_members(small, {"data/layer0.png": png_bomb()})


def _replace_members(data: bytes, replace: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info, replace.get(info.filename, zin.read(info)))
    return out.getvalue()


def kra_bomb(side: int = 20000) -> bytes:
    """A KRA of a few kilobytes whose maindoc.xml declares a ``side``² canvas (Krita layers are read
    over the whole canvas: 1.6 GB for RGBA8 before anything is checked, in the old reader)."""
    small = write_kra(64, 64, [SynthLayer("photo", photo(64, 64))])
    with zipfile.ZipFile(io.BytesIO(small)) as z:
        maindoc = z.read("maindoc.xml").decode()
    maindoc = maindoc.replace('width="64" height="64"', f'width="{side}" height="{side}"')
    return _replace_members(small, {"maindoc.xml": maindoc.encode()})


def xcf_bomb(side: int = 40000) -> bytes:
    """A GIMP 2 XCF with one 8-bit RGBA layer declaring ``side``² pixels: a full tile table whose
    pointers all share one RLE tile of zeros (6.4 GB once decoded, ~1.6 MB on disk)."""
    head = b"gimp xcf file\0" + struct.pack(">III", side, side, 0)
    props = struct.pack(">II", 17, 1) + b"\x01" + struct.pack(">II", 0, 0)  # RLE tiles
    layer_at = len(head) + len(props) + 12  # the table: one layer pointer, 0, no channels (0)
    name = b"photo\0"
    lprops = struct.pack(">III", 8, 4, 1) + struct.pack(">II", 0, 0)  # visible
    header = struct.pack(">IIII", side, side, 1, len(name)) + name + lprops
    hier_at = layer_at + len(header) + 8
    level_at = hier_at + 12 + 8
    tiles = math.ceil(side / 64) ** 2
    tile_at = level_at + 8 + (tiles + 1) * 4
    tile = bytes((127, 0x10, 0x00, 0)) * 4  # per plane: one run of 4096 zeros
    body = header + struct.pack(">II", hier_at, 0)
    body += struct.pack(">III", side, side, 4) + struct.pack(">II", level_at, 0)
    body += struct.pack(">II", side, side) + struct.pack(">I", tile_at) * tiles + struct.pack(">I", 0)
    return head + props + struct.pack(">III", layer_at, 0, 0) + body + tile


# ---- measuring ---------------------------------------------------------------------------------

_PROBE = r"""
import json, resource, sys, time
import numpy as np
from maskd.core import imageio, limits
from maskd.core.errors import InputError
from maskd.core.layered import add_masks, check_layered, open_layered
import maskd.core.layered.ora, maskd.core.layered.kra, maskd.core.layered.xcf
import cv2
from PIL import Image
from maskd.core.layered import gimpformats_compat
gimpformats_compat.install()
import gimpformats.gimpXcfDocument

what, path = sys.argv[1], sys.argv[2]
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
with open("/proc/self/statm") as f:
    vm = int(f.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (vm + 3 * 2**30, resource.RLIM_INFINITY))
before = rss()
t = time.perf_counter()
try:
    if what == "image":
        imageio.read_image(path)
    elif what == "mask":
        imageio.read_mask(path)
    elif what == "add_masks":
        add_masks(path, path + ".out", lambda rgba: np.ones(rgba.shape[:2], np.float32))
    else:
        check_layered(path)
    outcome, message = "accepted", ""
except InputError as exc:
    outcome, message = type(exc).__name__, str(exc)
except MemoryError:
    outcome, message = "MemoryError", ""
seconds = time.perf_counter() - t
# this process's own peak (VmHWM): ru_maxrss would carry the parent's peak over exec (vfork)
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) * 1024
print(json.dumps({"outcome": outcome, "message": message, "seconds": seconds,
                  "extra_mb": max(0, peak - before) / 2**20}))
"""


def probe(what: str, path: Path) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, what, str(path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    files = {
        "png16.png": png_bomb(),
        "huge.jpg": jpeg_bomb(),
        "member.ora": ora_member_bomb(),
        "layerpng.ora": ora_png_bomb(),
        "canvas.kra": kra_bomb(),
        "layer.xcf": xcf_bomb(),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = folder / name
        paths[name].write_bytes(data)
    return paths


def test_the_bombs_are_small_on_disk_and_huge_declared(bombs):
    sizes = {name: path.stat().st_size for name, path in bombs.items()}
    assert sizes["png16.png"] < 2.5e6 and sizes["canvas.kra"] < 100e3, sizes
    assert all(size < 5e6 for size in sizes.values()), sizes
    with zipfile.ZipFile(bombs["member.ora"]) as z:
        info = z.getinfo("data/layer0.png")
        assert info.file_size == 33 + 3_000_000_000
        with z.open(info) as f:  # the member really inflates: a CRC-checked stream, read a little
            assert f.read(8) == limits.PNG_SIGNATURE
    assert limits.png_header(bombs["png16.png"].read_bytes()[:26]) == (16000, 16000, 6)


@pytest.mark.parametrize(
    "name,what,expect",
    [
        ("png16.png", "image", "16000×16000 pixels (256 MP)"),
        ("png16.png", "mask", "16000×16000 pixels (256 MP)"),
        ("huge.jpg", "image", "30000×30000 pixels (900 MP)"),
        ("member.ora", "add_masks", "'data/layer0.png' is 2,861 MiB once read"),
        ("layerpng.ora", "add_masks", "16000×16000 pixels (256 MP)"),
        ("layerpng.ora", "check", "16000×16000 pixels (256 MP)"),
        ("canvas.kra", "add_masks", "20000×20000 pixels (400 MP)"),
        ("layer.xcf", "add_masks", "40000×40000 pixels (1,600 MP)"),
    ],
)
def test_bomb_is_refused_before_decoding(bombs, name, what, expect):
    r = probe(what, bombs[name])
    assert r["outcome"] in ("ImageTooLarge", "InputError"), r
    assert expect in r["message"] and limits.LIMIT_WORDS in r["message"], r["message"]
    assert "MASKD_MAX_PIXELS" in r["message"], r["message"]
    assert r["seconds"] < SECONDS, r
    assert r["extra_mb"] < EXTRA_MB, r


def test_xcf_decoder_checks_the_hierarchy_itself(bombs):
    """Below the layer list, ``_read_hierarchy`` checks the sizes it reads before allocating."""
    doc = open_layered(bombs["layer.xcf"])
    (layer,) = doc.layers
    assert "over maskd's limit" in layer.note
    with pytest.raises(limits.ImageTooLarge, match="40000×40000"):
        doc._read_rgba(layer)


def test_the_limit_can_be_raised_and_lowered(tmp_path, monkeypatch):
    from maskd.core import imageio

    path = tmp_path / "p.png"
    imageio.write_image(path, np.zeros((100, 200, 3), np.uint8))
    monkeypatch.setenv("MASKD_MAX_PIXELS", "10000")
    with pytest.raises(InputError, match=r"200×100 pixels .* limit of 0.01 MP"):
        imageio.read_image(path)
    monkeypatch.setenv("MASKD_MAX_PIXELS", "20000")
    assert imageio.read_image(path).shape == (100, 200, 3)
    monkeypatch.setenv("MASKD_MAX_PIXELS", "lots")
    with pytest.raises(InputError, match="MASKD_MAX_PIXELS"):
        imageio.read_image(path)


def test_pillow_own_bomb_check_gets_maskd_wording(tmp_path, monkeypatch):
    """Pillow raises DecompressionBombError itself at twice its limit; maskd words it the same way."""
    from PIL import Image

    path = tmp_path / "big.png"
    path.write_bytes(png_bomb(2000, 8, 0))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(limits.ImageTooLarge, match=r"4 MP of pixels, over maskd's limit"):
        limits.check_image_file(path)
