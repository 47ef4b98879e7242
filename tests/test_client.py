"""The CLI's numpy client (``server.client``) against a real stand-in daemon."""

from __future__ import annotations

import numpy as np
import pytest
from maskd.server.client import DaemonClient, wire_format

from tests.daemon_fixtures import short_tmp, start_daemon


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    d = start_daemon(short_tmp(tmp_path_factory, "np"), "--resolution", "128", worker="pipeline")
    c = DaemonClient.connect(str(d.connection_file))
    yield c
    c.close()
    d.stop()


def square(dtype=np.uint8, channels=3):
    img = np.zeros((64, 80, channels), np.float32)
    img[...] = 0.8
    img[16:48, 20:60, :3] = (0.1, 0.2, 0.9) if channels >= 3 else 0.1
    if channels in (2, 4):
        img[..., -1] = 1.0
    scale = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1)
    return (img * scale).astype(dtype) if scale != 1 else img.astype(dtype)


@pytest.mark.parametrize("dtype,channels", [(np.uint8, 3), (np.uint16, 1), (np.float32, 4), (np.float16, 2)])
def test_segment_any_dtype(client, dtype, channels):
    ans = client.segment(
        square(dtype, channels),
        {"quality": "fast"},
        foreground=True,
        linear=dtype in (np.float32, np.float16),
    )
    assert ans.alpha.dtype == np.float32 and ans.alpha.shape == (64, 80)
    assert ans.alpha[24:40, 30:50].mean() > 0.9 and ans.alpha[:8].mean() < 0.1
    assert ans.foreground.shape == (64, 80, 3) and ans.foreground.dtype == np.float32


def test_existing_alpha_is_respected(client):
    img = square(np.uint8, 4)
    img[:, :40, 3] = 0  # the left half is already transparent
    ans = client.segment(img)
    assert ans.alpha[:, :40].max() == 0 and ans.alpha[24:40, 45:55].mean() > 0.9


def test_refine_float_mask(client):
    rough = np.zeros((16, 20), np.float32)
    rough[4:12, 5:15] = 1.0
    ans = client.refine(square(), rough)
    assert ans.alpha.shape == (64, 80) and ans.alpha[24:40, 30:50].mean() > 0.9


def test_wire_format_rejects_what_cannot_travel():
    from maskd.core.errors import MaskdError

    with pytest.raises(MaskdError, match="channels"):
        wire_format(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(MaskdError, match="int32"):
        wire_format(np.zeros((4, 4), np.int32))
    arr, layout, dtype = wire_format(np.zeros((4, 4), np.float64))
    assert (layout, dtype, arr.dtype) == ("GRAY", "f32", np.dtype("<f4"))
