"""Each fact of maskd has one home, and every place that uses it agrees with it.

The sRGB curve: every conversion (the client's scalar one the plugins use, core's numpy one, the
torch refinement's, the layered writer's) against one reference written out here. Colour names:
every parser in maskd reads every name of the one table the same way. The version: read from the
client's ``CLIENT_VERSION`` everywhere. Rectangles, device memory clean-up and hub reachability:
one definition each, and no product file carries its own copy (checked on the sources).
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re

import numpy as np
import pytest
from maskd.core import colour, compose, imageio, shadow
from maskd.plugins import maskd_client as mc

from tests.fake_editors import load_krita_module
from tests.helpers import REPO, product_files

# ------------------------------------------------------------------------------ the sRGB curve


def reference_to_linear(v):
    """IEC 61966-2-1, in float64: the reference every conversion is held to."""
    v = np.asarray(v, np.float64)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def reference_to_srgb(v):
    v = np.asarray(v, np.float64)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)


# float32 carries ~7 digits: 1e-6 is float precision (a 16-bit step is 1.5e-5)
SAMPLES = np.concatenate([np.linspace(0, 1, 1001), [0.04045, 0.0031308, 0.04046, 0.0031309, 1e-6]])


def test_the_clients_scalar_curve_is_the_reference():
    for v in SAMPLES:
        assert mc.srgb_to_linear(float(v)) == pytest.approx(float(reference_to_linear(v)), abs=1e-12)
        assert mc.linear_to_srgb(float(v)) == pytest.approx(float(reference_to_srgb(v)), abs=1e-12)


def test_cores_array_curve_is_the_reference():
    x = SAMPLES.astype(np.float32)
    assert np.abs(colour.srgb_to_linear(x) - reference_to_linear(x)).max() < 1e-6
    assert np.abs(colour.linear_to_srgb(x) - reference_to_srgb(x)).max() < 1e-6
    image = np.random.default_rng(0).random((7, 9, 3)).astype(np.float32)
    assert colour.srgb_to_linear(image).shape == image.shape
    assert colour.linear_to_srgb(np.float32(0.5)).shape == ()
    # the modules that convert use this one, not a copy of it
    assert imageio.srgb_to_linear is colour.srgb_to_linear
    assert imageio.linear_to_srgb is colour.linear_to_srgb
    assert compose.srgb_to_linear is colour.srgb_to_linear


def test_the_torch_path_curve_is_the_reference():
    torch = pytest.importorskip("torch")
    from maskd.core import refine_torch

    x = torch.from_numpy(SAMPLES.astype(np.float32))
    assert np.abs(refine_torch._srgb(x).numpy() - reference_to_srgb(SAMPLES)).max() < 1e-6
    assert np.abs(colour.srgb_to_linear_torch(x).numpy() - reference_to_linear(SAMPLES)).max() < 1e-6


def test_the_layered_writer_encodes_with_the_reference():
    from maskd.core.layered import to_uint8

    x = SAMPLES.astype(np.float32)
    want = np.rint(reference_to_srgb(x) * 255)
    assert np.abs(to_uint8(x, linear=True).astype(np.float64) - want).max() <= 1  # rounding at .5


def test_the_krita_plugins_curve_is_the_clients():
    px = load_krita_module("pixels")
    assert px.srgb_to_linear is mc.srgb_to_linear and px.linear_to_srgb is mc.linear_to_srgb
    # and what it writes for a solid colour in a linear-light layer follows it
    fmt = px.PixelFormat("RGBA", "F32", "sRGB-elle-V2-g10.icc")
    r, g, b, a = np.frombuffer(px.solid_pixel((0.2, 0.5, 0.8), fmt), "<f4")
    assert np.allclose([r, g, b], reference_to_linear([0.2, 0.5, 0.8]), atol=1e-6) and a == 1


def test_no_product_file_writes_the_curve_again():
    """The curve's constants stand in the client only (core reads them from there)."""
    constant = re.compile(r"(?<![\d.])(0\.04045|0\.0031308|12\.92)(?!\d)")
    found = [
        f"{path.relative_to(REPO)}:{n}"
        for path in product_files()
        if path.name != "maskd_client.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if constant.search(line.split("#")[0])
    ]
    assert found == [], "sRGB constants outside plugins/maskd_client.py: " + ", ".join(found)


# ------------------------------------------------------------------------------ colour names


@pytest.mark.parametrize("name", sorted(mc.NAMED_COLOURS))
def test_every_parser_reads_every_name_the_same(name):
    want = tuple(v / 255 for v in mc.NAMED_COLOURS[name])
    px = load_krita_module("pixels")
    assert mc.parse_colour(name) == want + (1.0,)
    assert colour.parse_colour(name.upper()) == want + (1.0,)
    assert compose.parse_background(name).color == want + (1.0,)
    assert shadow.parse_shadow(f"drop,color={name}").color == want
    assert px.parse_color(f" {name} ") == want


@pytest.mark.parametrize(
    "text, want",
    [
        ("#3366cc", (0x33 / 255, 0x66 / 255, 0xCC / 255, 1.0)),
        ("3366CC", (0x33 / 255, 0x66 / 255, 0xCC / 255, 1.0)),
        ("#abc", (0xAA / 255, 0xBB / 255, 0xCC / 255, 1.0)),
        ("#ff000080", (1.0, 0.0, 0.0, 128 / 255)),
        ("10,20,30", (10 / 255, 20 / 255, 30 / 255, 1.0)),
        ("rgba(10, 20, 30, 0.5)", (10 / 255, 20 / 255, 30 / 255, 0.5)),
        ("transparent", (0.0, 0.0, 0.0, 0.0)),
    ],
)
def test_every_parser_reads_the_other_forms_the_same(text, want):
    px = load_krita_module("pixels")
    assert mc.parse_colour(text) == pytest.approx(want)
    assert colour.parse_colour(text) == pytest.approx(want)
    assert px.parse_color(text) == pytest.approx(want[:3])


@pytest.mark.parametrize("text", ["#12", "nocolour", "1,2", "300,0,0", "#gggggg", "10,20,30,300"])
def test_every_parser_refuses_the_same_texts(text):
    from maskd.core.errors import InputError

    px = load_krita_module("pixels")
    with pytest.raises(ValueError):
        mc.parse_colour(text)
    with pytest.raises(ValueError):
        px.parse_color(text)
    with pytest.raises(InputError, match="#rrggbb"):
        colour.parse_colour(text)


def test_no_product_file_keeps_its_own_colour_table():
    """A colour table is a dict with CSS names in it; only the client holds one."""
    tables = []
    for path in product_files():
        if path.name == "maskd_client.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                if {"white", "black"} <= keys or {"red", "blue"} <= keys:
                    tables.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert tables == [], "colour tables outside plugins/maskd_client.py: " + ", ".join(tables)


# ------------------------------------------------------------------------------ the version


def test_the_version_is_read_from_the_client():
    import maskd
    from maskd import server

    assert maskd.__version__ == server.__version__ == mc.CLIENT_VERSION
    assert importlib.metadata.version("maskd") == mc.CLIENT_VERSION
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'version = { attr = "maskd.plugins.maskd_client.CLIENT_VERSION" }' in pyproject
    # the Krita plugin reads the client the installer copies next to it
    assert load_krita_module("__init__").__version__ == mc.CLIENT_VERSION


def test_no_product_file_writes_a_version_string():
    written = [
        f"{path.relative_to(REPO)}:{n}"
        for path in product_files()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.match(r"\s*(__version__|CLIENT_VERSION|VERSION)\s*=\s*[\"']\d", line)
        and path.name != "maskd_client.py"
    ]
    assert written == []


# ------------------------------------------------------------------------------ rectangles


def test_bounds_is_a_tuple_with_the_operations_core_and_the_plugins_need():
    b = mc.Bounds(2, 3, 10, 5)
    x, y, w, h = b
    assert (x, y, w, h) == b == (2, 3, 10, 5) and (b.right, b.bottom) == (12, 8)
    assert mc.Bounds.from_corners(2, 3, 12, 8) == b
    assert b.union((0, 0, 1, 1)) == (0, 0, 12, 8) and b.union(None) == b
    assert b.intersection((5, 0, 100, 4)) == (5, 3, 7, 1)
    assert b.intersection((50, 50, 1, 1)).is_empty
    assert b.contains((2, 3, 10, 5)) and not b.contains((1, 3, 10, 5))


def test_core_hands_out_the_one_rectangle_type():
    from maskd.core.canvas import plan, subject_bounds

    alpha = np.zeros((20, 30), np.float32)
    alpha[4:9, 6:16] = 1
    found = subject_bounds(alpha)
    assert isinstance(found, mc.Bounds) and found == (6, 4, 10, 5)
    p = plan((20, 30), found)
    assert isinstance(p.box, mc.Bounds) and isinstance(p.to_canvas(found), mc.Bounds)
    done = compose.finish(
        np.zeros((20, 30, 3), np.uint8), alpha, options=compose.FinishOptions(crop="subject")
    )
    assert isinstance(done.subject_box, mc.Bounds) and done.subject_box == (0, 0, 10, 5)


# ------------------------------------------------------------------------------ device memory, the hub


def _calls(name: str) -> list[str]:
    out = []
    for path in product_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name:
                out.append(path.relative_to(REPO).as_posix())
    return sorted(set(out))


def test_accelerator_memory_is_given_back_in_one_place():
    assert _calls("empty_cache") == ["core/device.py"]
    from maskd.core.device import release_memory

    release_memory("cpu")  # nothing to give back; must not touch CUDA/MPS
    release_memory()


def test_hub_reachability_is_checked_in_one_place(monkeypatch):
    # (the client's ZMTP transport connects to the daemon, not the hub)
    assert _calls("create_connection") == ["core/weights.py", "plugins/maskd_client.py"]
    from maskd.core import weights
    from maskd.installers import weights as installer_weights

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for proxy in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a closed port: refused at once
    why = weights.hub_unreachable()
    assert why is not None and "127.0.0.1:9" in why and "cannot be reached" in why
    assert installer_weights.hub_reachable() == (False, why)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert weights.hub_unreachable() == "HF_HUB_OFFLINE is set"
    assert installer_weights.hub_reachable() == (False, "HF_HUB_OFFLINE is set")
