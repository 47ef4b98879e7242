"""Wire-format units: the stdlib client and the daemon agree, signing, replay defence, pixel codecs."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest
from maskd.plugins import maskd_client as mc
from maskd.server import protocol as P


def test_client_and_daemon_constants_agree():
    assert mc.PROTOCOL_TAG == P.TAG
    assert mc.PROTOCOL_VERSION == P.VERSION
    assert mc.LAYOUT_CHANNELS == P.LAYOUT_CHANNELS
    assert {k: v for k, v in mc.DTYPE_BYTES.items()} == {k: d.itemsize for k, d in P.DTYPES.items()}
    assert tuple(mc.ALPHA_DTYPES) == P.ALPHA_DTYPES
    key = b"k" * 32
    assert mc.sign(key, b"{}") == P.sign(key, b"{}") and len(P.sign(key, b"{}")) == P.SIGNATURE_BYTES


def test_replay_guard():
    g = P.ReplayGuard(window_s=10)
    now = time.time()
    g.check("a", now, now=now)
    with pytest.raises(P.ProtocolError, match="replay"):
        g.check("a", now, now=now + 1)
    for bad in (now - 11, now + 11, None, float("nan"), "1"):
        with pytest.raises(P.ProtocolError) as e:
            g.check("b" + str(bad), bad, now=now)
        assert e.value.code == "auth"


def test_parse_request_checks_everything():
    key = b"s" * 32
    frames = P.make_message(key, {"op": "ping", "id": "r1", "ts": time.time(), "buffers": [3]}, [b"abc"])
    req = P.parse_request(frames, key, P.ReplayGuard())
    assert req.op == "ping" and req.id == "r1" and req.buffers == [b"abc"]
    with pytest.raises(P.ProtocolError) as e:
        P.parse_request(frames[:3] + [b"abcd"], key, None)
    assert e.value.code == "bad_request" and e.value.request_id == "r1"
    with pytest.raises(P.ProtocolError) as e:
        P.parse_request(frames, b"x" * 32, None)
    assert e.value.code == "auth"


def test_decode_image_layouts_and_dtypes():
    spec = P.ImageSpec(2, 1, "BGRA", "u8", "srgb")
    arr = P.decode_image(bytes([1, 2, 3, 4, 5, 6, 7, 8]), spec)
    assert arr.tolist() == [[[3, 2, 1, 4], [7, 6, 5, 8]]]
    f16 = struct.pack("<4e", 0.0, 0.5, 1.0, 0.25)
    arr = P.decode_image(f16, P.ImageSpec(1, 1, "RGBA", "f16", "linear"))
    assert arr.dtype == np.float32 and arr.tolist() == [[[0.0, 0.5, 1.0, 0.25]]]
    arr = P.decode_image(struct.pack("<2H", 1, 65535), P.ImageSpec(1, 1, "GRAYA", "u16", "srgb"))
    assert arr.dtype == np.uint16 and arr.tolist() == [[[1, 65535]]]


def test_encode_alpha_rounds_and_clips():
    a = np.array([[0.0, 0.5, 1.0, 1.2, -0.1, 1 / 255]], np.float32)
    assert P.encode_alpha(a, "u8").tolist() == [[0, 128, 255, 255, 0, 1]]
    assert P.encode_alpha(a, "u16").tolist()[0][:3] == [0, 32768, 65535]
    assert P.encode_alpha(a, "f32").dtype == np.dtype("<f4")
    assert P.encode_colours(np.full((1, 1, 3), 0.5, np.float32), "u8").tolist() == [[[128, 128, 128]]]


@pytest.mark.parametrize("dtype", ["u8", "u16", "f16", "f32"])
def test_encoded_colours_are_one_contiguous_frame(dtype):
    """Strided colours (an RGBA slice, a transposed crop) go out C-contiguous: zmq sends a buffer
    zero-copy only when it is one block, and a BufferError there once killed the daemon's worker."""
    rgba = np.random.default_rng(0).random((5, 7, 4), dtype=np.float32)
    for view in (rgba[..., :3], rgba.transpose(1, 0, 2)[..., :3], rgba[::-1, :, 1:]):
        out = P.encode_colours(view, dtype)
        assert out.flags.c_contiguous and out.shape == view.shape
        memoryview(out).cast("B")  # what send_multipart(copy=False) needs
        back = out.astype(np.float32) / {"u8": 255.0, "u16": 65535.0}.get(dtype, 1.0)
        assert np.abs(back - view).max() <= 1 / 254


def test_every_error_code_is_documented():
    text = P.__file__.rsplit("/", 1)[0] + "/PROTOCOL.md"
    doc = open(text, encoding="utf-8").read()
    for code in P.ERROR_CODES:
        assert f"`{code}`" in doc, code
    for op in P.OPS:
        assert f"`{op}`" in doc, op


def test_client_validates_before_sending():
    c = mc.Client.__new__(mc.Client)
    c.hello_info = {"limits": {"max_pixels": 100, "max_message_bytes": 10**6}}
    with pytest.raises(mc.MaskdClientError, match="needs 64"):
        c._check_image(b"\0" * 63, 4, 4, "RGBA", "u8")
    with pytest.raises(mc.MaskdClientError) as e:
        c._check_image(b"\0" * 4 * 121, 11, 11, "RGBA", "u8")
    assert e.value.code == "too_large"
    with pytest.raises(mc.MaskdClientError, match="layout"):
        c._check_image(b"", 1, 1, "CMYK", "u8")


def test_plugin_config_defaults(tmp_path):
    assert mc.load_plugin_config(str(tmp_path)) == {
        "daemon_command": [],
        "connection_file": None,
        "autostart": True,
    }
    (tmp_path / "maskd_config.json").write_text('{"autostart": false, "daemon_command": ["maskd", "serve"]}')
    cfg = mc.load_plugin_config(str(tmp_path))
    assert cfg["autostart"] is False and cfg["daemon_command"] == ["maskd", "serve"]
    (tmp_path / "maskd_config.json").write_text("{broken")
    with pytest.raises(mc.MaskdClientError, match="unreadable"):
        mc.load_plugin_config(str(tmp_path))


def test_connection_file_location(monkeypatch, tmp_path):
    monkeypatch.delenv("MASKD_CONNECTION_FILE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert mc.default_connection_file() == str(tmp_path / "maskd" / "connection.json")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert mc.default_connection_file().endswith(f"maskd-{__import__('os').getuid()}/connection.json")
    monkeypatch.setenv("MASKD_CONNECTION_FILE", "/x/y.json")
    assert mc.default_connection_file() == "/x/y.json"
