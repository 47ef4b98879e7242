"""The GIMP 3 plug-in, driven through the PDB inside a real GIMP 3.0 (Debian 13 root).

One GIMP start runs every case (``gimp/run_cases.py``): GIMP takes seconds to start, a case takes
milliseconds. The host writes each test image as raw samples, GIMP builds the image from them, the
plug-in asks the real daemon (generated-weights ``lite`` model), and GIMP dumps what it then holds.
The host asks the same daemon for the same pixels itself and compares: the mask must equal that
alpha within 1/255. GIMP runs under Xvfb so undo can be checked the way a user does it (Ctrl+Z in
the image window; GIMP has no undo procedure in its PDB). ``gimpformats`` reads a saved XCF back
as an independent check of the file.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from maskd.installers.plugins import CONFIG_NAME, GIMP_PLUGIN_NAME, PLUGINS_DIR
from maskd.plugins import maskd_client as mc

from tests.helpers import (
    INSTALLED_PRESETS,
    NO_AUTOSTART,
    REPO,
    differing_files,
    host_python_binds,
    installed_home,
    maskd_serve_command,
    place_gimp_plugin,
    read_json,
    run_in_root,
    stop_daemon,
)

pytestmark = [pytest.mark.editors]
LABELS = mc.LABELS  # the one table of words both plugins show

GIMP_SCRIPTS = Path(__file__).resolve().parent / "gimp"
PLUGIN_FILE = PLUGINS_DIR / "gimp" / GIMP_PLUGIN_NAME / f"{GIMP_PLUGIN_NAME}.py"
TOL = 1.0 / 255.0 + 1e-6
CANVAS = (96, 64)
# what the plug-in sends by default (decontamination only for the cut-out layer)
DEFAULT_OPTIONS = {"refine": True, "decontaminate": False, "quality": "default"}


# ------------------------------------------------------------------------------ test images


def photo(width: int, height: int, seed: int) -> np.ndarray:
    """A small synthetic photo in sRGB floats: a textured subject with soft edges on a gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    bg = np.stack([0.15 + 0.25 * xx / width, 0.55 + 0.2 * yy / height, np.full_like(xx, 0.35)], -1)
    cx, cy = width * (0.45 + 0.1 * rng.random()), height * (0.5 + 0.05 * rng.random())
    d = np.sqrt(((xx - cx) / (0.3 * width)) ** 2 + ((yy - cy) / (0.35 * height)) ** 2)
    inside = np.clip((1.0 - d) * 12.0, 0.0, 1.0)[..., None]
    fg = np.array([0.85, 0.3, 0.2], np.float32) + 0.08 * rng.standard_normal((height, width, 3))
    return np.clip(bg * (1 - inside) + fg * inside, 0.0, 1.0).astype(np.float32)


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).astype(np.float32)


def encode(values: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "u8":
        return np.round(values * 255).astype(np.uint8)
    if dtype == "u16":
        return np.round(values * 65535).astype("<u2")
    return values.astype("<f4")


class Case:
    """One image for GIMP: its pixels as the plug-in will read them, and the plug-in's arguments."""

    def __init__(
        self,
        name,
        *,
        size=None,
        offsets=(0, 0),
        precision="U8_NON_LINEAR",
        gray=False,
        alpha=True,
        alpha_values=None,
        args=None,
        selection=None,
        existing_mask=None,
        undo=False,
        save=False,
        group=False,
        plugin_config=None,
        interactive=False,
        target=None,
        below=(),
        in_group=False,
        seed=0,
    ):
        self.name, self.offsets, self.args, self.selection = name, tuple(offsets), dict(args or {}), selection
        self.width, self.height = size or CANVAS
        self.gray, self.alpha, self.precision = gray, alpha, precision
        self.undo, self.save, self.group, self.plugin_config = undo, save, group, plugin_config
        self.interactive, self.target, self.below = interactive, target, list(below)
        self.in_group = in_group
        self.dtype = "u8" if "U8" in precision else "u16" if "U16" in precision else "f32"
        self.transfer = (
            "linear"
            if precision.endswith("_LINEAR") and "NON" not in precision and self.dtype == "f32"
            else "srgb"
        )
        colour = photo(self.width, self.height, seed)
        if gray:
            colour = colour @ np.array([0.2126, 0.7152, 0.0722], np.float32)
            colour = colour[..., None]
        if self.transfer == "linear":
            colour = srgb_to_linear(colour)
        a = np.ones((self.height, self.width, 1), np.float32)
        if alpha_values is not None:
            a = alpha_values[..., None]
        self.samples = encode(np.concatenate([colour, a], -1), self.dtype)  # what the plug-in reads
        self.existing_mask = existing_mask
        babl = {"u8": "u8", "u16": "u16", "f32": "float"}[self.dtype]
        trc = "" if self.transfer == "linear" else "'"
        self.read_format = f"Y{trc}A {babl}" if gray else f"R{trc}G{trc}B{trc}A {babl}"

    @property
    def layout(self):
        return "GRAYA" if self.gray else "RGBA"

    def plan(self, data: Path) -> dict:
        if self.alpha:
            stored, fmt = self.samples, self.read_format
        else:  # an alpha-less layer: GIMP gets colour only, the plug-in reads it back with A = 1
            stored, fmt = self.samples[..., :-1], self.read_format.replace("A ", " ")
        (data / f"{self.name}.raw").write_bytes(np.ascontiguousarray(stored).tobytes())
        kind = ("GRAY" if self.gray else "RGB") + ("A" if self.alpha else "") + "_IMAGE"
        entry = {
            "name": self.name,
            "width": CANVAS[0],
            "height": CANVAS[1],
            "base": "GRAY" if self.gray else "RGB",
            "precision": self.precision,
            "layer": {
                "width": self.width,
                "height": self.height,
                "type": kind,
                "offsets": list(self.offsets),
                "pixels": f"{self.name}.raw",
                "format": fmt,
            },
            "args": self.args,
            "undo": self.undo,
            "save": self.save,
            "interactive": self.interactive,
        }
        if self.existing_mask is not None:
            (data / f"{self.name}.mask.raw").write_bytes(self.existing_mask.astype("<f4").tobytes())
            entry["existing_mask"] = {"pixels": f"{self.name}.mask.raw", "format": "Y float"}
        if self.selection:
            entry["selection"] = list(self.selection)
        if self.group:
            entry.update(group=True, target="group")
        if self.in_group:  # the layer sits in a group, and is itself the target
            entry["group"] = True
        if self.plugin_config:
            entry["plugin_config"] = self.plugin_config
        if self.target:
            entry["target"] = self.target
        if self.below:
            entry["below"] = self.below
        return entry

    def roi(self):
        """The selection's bounds in layer coordinates, clipped to the layer (what the plug-in sends)."""
        if not self.selection:
            return (0, 0, self.width, self.height)
        sx, sy, sw, sh = self.selection
        x0, y0 = max(sx - self.offsets[0], 0), max(sy - self.offsets[1], 0)
        x1 = min(sx + sw - self.offsets[0], self.width)
        y1 = min(sy + sh - self.offsets[1], self.height)
        return (x0, y0, x1 - x0, y1 - y0)


def half_transparent(width, height):
    a = np.ones((height, width), np.float32)
    a[:, : width // 4] = 128 / 255
    a[:, width // 4 : width // 4 + 6] = 0.0
    return a


def split_mask(width, height):
    m = np.ones((height, width), np.float32)
    m[:, width // 2 :] = 128 / 255
    m[: height // 3, :] = 0.0
    return m


FINISH_SHADOW = ("drop", "color=#402010")  # style, overrides (the colour the daemon must return)
FINISH_ARGS = {
    "add-shadow": True,
    "shadow-style": FINISH_SHADOW[0],
    "shadow-settings": FINISH_SHADOW[1],
    "add-background": True,
    "background-color": "#3366cc",
}


def build_cases(plugin_config_path: Path, work: Path, autostart_command: list[str] | None) -> list[Case]:
    absent = {
        "path": str(plugin_config_path),
        "config": {
            "connection_file": "/nonexistent/maskd/connection.json",
            "autostart": False,
            "daemon_command": [],
        },
    }
    # autostart on, but the configured command dies at once: the plug-in must say so, not hang
    broken = {
        "path": str(plugin_config_path),
        "config": {
            "connection_file": str(work / "no-daemon" / "connection.json"),
            "autostart": True,
            "daemon_command": ["/bin/false"],
        },
    }
    # no daemon at this connection file: the plug-in runs the configured command (this checkout's
    # `maskd serve`, reachable inside the root through bind mounts) and waits for the model to load
    autostart = {
        "path": str(plugin_config_path),
        "config": {
            "connection_file": str(work / "autostart-run" / "connection.json"),
            "autostart": True,
            "daemon_command": autostart_command,
        },
    }
    cases = [
        Case("rgba8", save=True, undo=True, seed=1),
        Case("dialog", interactive=True, seed=18),  # the menu path: dialog, Return = OK
        Case("rgb8_larger", size=(120, 90), offsets=(-20, -10), alpha=False, seed=2),
        Case("rgba8_smaller", size=(40, 30), offsets=(70, 40), save=True, seed=3),
        Case("rgba16", precision="U16_NON_LINEAR", seed=4),
        Case("float_linear", precision="FLOAT_LINEAR", seed=5),
        Case("gray8", gray=True, seed=6),
        Case("roi", offsets=(8, 4), selection=(20, 10, 40, 30), seed=7),
        Case("alpha", args={"output": "alpha"}, alpha_values=half_transparent(*CANVAS), undo=True, seed=8),
        Case("layer", args={"output": "layer"}, size=(80, 56), offsets=(5, 3), undo=True, seed=9),
        Case("layer_plain", args={"output": "layer", "decontaminate": False}, seed=10),
        Case(
            "selection", args={"output": "selection"}, size=(120, 90), offsets=(-20, -10), undo=True, seed=11
        ),
        Case("intersect", existing_mask=split_mask(*CANVAS), undo=True, seed=12),
        Case("on_mask", existing_mask=split_mask(*CANVAS), target="mask", seed=19),  # mask being edited
        Case("replace", args={"existing-mask": "replace"}, existing_mask=split_mask(*CANVAS), seed=13),
        Case("group", group=True, seed=14),
        Case("absent", plugin_config=absent, seed=15),
        Case("autostart_fails", plugin_config=broken, seed=17),
        Case("alpha_with_mask", args={"output": "alpha"}, existing_mask=split_mask(*CANVAS), seed=16),
        # product-photo finishing (last: GIMP remembers an interactive run's values, keep them default)
        Case("finish", args=FINISH_ARGS, size=(80, 56), offsets=(5, 3), below=["floor"], undo=True, seed=20),
        Case(
            "finish_roi",
            args={"add-shadow": True, "shadow-style": "contact", "add-background": True},
            precision="U16_NON_LINEAR",
            offsets=(8, 4),
            selection=(20, 10, 40, 30),
            in_group=True,
            seed=21,
        ),
        Case("finish_absent", args=FINISH_ARGS, plugin_config=absent, seed=22),
        Case(
            "finish_bad_settings",
            args=dict(FINISH_ARGS, **{"shadow-settings": "direction=sideways"}),
            seed=23,
        ),
    ]
    # the engine program is gone (moved, uninstalled): a message for a person, details in the log
    moved = {
        "path": str(plugin_config_path),
        "config": {
            "connection_file": str(work / "no-daemon" / "connection.json"),
            "autostart": True,
            "daemon_command": ["/opt/maskd-moved/bin/maskd", "serve"],
        },
    }
    cases += [
        Case("missing_engine", plugin_config=moved, seed=25),
        # the dialog with a mask and a selection: the choices that then matter appear
        Case(
            "dialog_mask_selection",
            interactive=True,
            existing_mask=split_mask(*CANVAS),
            selection=(10, 8, 60, 40),
            seed=26,
        ),
        # models: a switch to the other installed preset and back, and a name remembered from an
        # older version (not installed): runs with the served model
        Case("model_switch", args={"model": "lite-2k"}, seed=27),
        Case("model_back", args={"model": "lite"}, seed=28),
        Case("model_stale", args={"model": "birefnet-2023"}, seed=29),
    ]
    if autostart_command:
        cases.append(Case("autostart", plugin_config=autostart, seed=24))
    return cases


# ------------------------------------------------------------------------------ running GIMP once


@pytest.fixture(scope="session")
def gimp_home(tmp_path_factory, editors_daemon) -> Path:
    """One HOME for every GIMP run of the session (a warm profile starts GIMP in seconds)."""
    home = tmp_path_factory.mktemp("gimp-home")
    place_gimp_plugin(home / ".config" / "GIMP" / "3.0", editors_daemon.config)
    return home


def run_gimp(
    root: Path,
    home: Path,
    work: Path,
    daemon,
    script: str,
    env: dict | None = None,
    timeout: float = 600,
    binds: dict | None = None,
):
    """Run a script from tests/editors/gimp inside GIMP 3 (GUI under Xvfb, so undo can be pressed)."""
    binds = dict(binds or {})
    binds.update({str(home): str(home), str(work): str(work), str(GIMP_SCRIPTS): "/maskd-gimp-tests"})
    binds.update(daemon.binds())
    command = [
        "xvfb-run",
        "-a",
        "-s",
        "-screen 0 1280x1024x24",
        "timeout",
        "-k",
        "5",
        str(int(timeout) - 30),
        "gimp-3.0",
        "-d",
        "-f",
        "--no-splash",
        "--batch-interpreter=python-fu-eval",
        "-b",
        f"exec(open('/maskd-gimp-tests/{script}').read())",
        "--quit",
    ]
    full_env = {"HOME": str(home), "GDK_CORE_DEVICE_EVENTS": "1", "NO_AT_BRIDGE": "1"}
    full_env.update(env or {})
    return run_in_root(root, command, binds=binds, env=full_env, timeout=timeout)


@pytest.fixture(scope="module")
def gimp_results(editors_root, editors_daemon, gimp_home, tmp_path_factory, lite_weights):
    work = tmp_path_factory.mktemp("gimp-cases")
    data, out, autostart_run = work / "data", work / "out", work / "autostart-run"
    data.mkdir()
    out.mkdir()
    autostart_run.mkdir(mode=0o700)
    config_path = gimp_home / ".config/GIMP/3.0/plug-ins" / GIMP_PLUGIN_NAME / CONFIG_NAME
    daemon_binds = host_python_binds(Path(lite_weights).parent)
    autostart = maskd_serve_command(lite_weights, autostart_run / "daemon.log") if daemon_binds else None
    cases = build_cases(config_path, work, autostart)
    (data / "plan.json").write_text(json.dumps({"cases": [c.plan(data) for c in cases]}))
    try:
        proc = run_gimp(
            editors_root,
            gimp_home,
            work,
            editors_daemon,
            "run_cases.py",
            env={
                "MASKD_PLAN": str(data / "plan.json"),
                "OUT_DIR": str(out),
                "MASKD_GIMP_DIALOG_REPORT": str(out),
                "MASKD_GIMP_TIMINGS": str(out / "runs.jsonl"),
            },
            binds=daemon_binds,
        )
        autostarted = read_json(autostart_run / "connection.json")  # before stopping removes it
    finally:
        stop_daemon(autostart_run / "connection.json")
    results = read_json(out / "results.json")
    if not results:
        pytest.fail(f"GIMP wrote no results (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    by_name = {r["name"]: r for r in results["cases"]}
    for r in results["cases"]:
        assert not r.get("exception"), f"case {r['name']} raised inside GIMP:\n{r['exception']}"
    return {
        "registration": results["registration"],
        "cases": {c.name: c for c in cases},
        "results": by_name,
        "out": out,
        "log": proc.stdout + proc.stderr,
        "autostarted": autostarted,
        "autostart_log": autostart_run / "daemon.log",
    }


@pytest.fixture(scope="module")
def reference(editors_daemon):
    """Ask the daemon from the host, with the shared client, for the alpha of the same pixels."""
    from maskd.plugins import maskd_client

    client = maskd_client.connect(str(editors_daemon.connection_file), timeout=120)
    cache = {}

    def ask(case: Case, foreground=False, options=None):
        x, y, w, h = case.roi()
        key = (case.name, foreground)
        if key not in cache:
            pixels = np.ascontiguousarray(case.samples[y : y + h, x : x + w])
            res = client.segment(
                pixels.tobytes(),
                w,
                h,
                layout=case.layout,
                dtype=case.dtype,
                transfer=case.transfer,
                options=options or DEFAULT_OPTIONS,
                alpha_dtype=case.dtype,
                foreground=foreground,
            )
            dt = {"u8": np.uint8, "u16": "<u2", "f32": "<f4"}[case.dtype]
            alpha = np.frombuffer(res.alpha, dt).reshape(h, w).astype(np.float32)
            alpha /= {"u8": 255.0, "u16": 65535.0, "f32": 1.0}[case.dtype]
            fg = None
            if res.foreground is not None:
                fdt = {"u8": np.uint8, "u16": "<u2", "f32": "<f4"}[res.foreground_dtype]
                fg = np.frombuffer(res.foreground, fdt).reshape(h, w, -1).astype(np.float32)
                fg /= {"u8": 255.0, "u16": 65535.0, "f32": 1.0}[res.foreground_dtype]
            cache[key] = (alpha, fg)
        return cache[key]

    try:
        yield ask
    finally:
        client.close()


def shadow_area(case: Case):
    """The layer's rectangle joined with the canvas, in layer coordinates (what the plug-in sends
    with a shadow and no selection: a cut-out's shadow falls outside its tight bounds)."""
    ox, oy = case.offsets
    x0, y0 = min(0, -ox), min(0, -oy)
    x1, y1 = max(case.width, CANVAS[0] - ox), max(case.height, CANVAS[1] - oy)
    return x0, y0, x1 - x0, y1 - y0


@pytest.fixture(scope="module")
def shadow_reference(editors_daemon):
    """The daemon's alpha, shadow alpha and shadow info for a case's pixels and a shadow style,
    asked from the host with the shared client (what the plug-in must put in GIMP)."""
    from maskd.plugins import maskd_client

    client = maskd_client.connect(str(editors_daemon.connection_file), timeout=120)
    scale = {"u8": 255.0, "u16": 65535.0, "f32": 1.0}

    def ask(case: Case, shadow: str):
        """(alpha of the processed part of the layer, shadow alpha of what was sent, shadow info):
        without a selection the plug-in sends the layer on the transparent canvas around it."""
        x, y, w, h = case.roi()
        pixels = np.ascontiguousarray(case.samples[y : y + h, x : x + w])
        sx, sy, sw, sh = x, y, w, h
        if not case.selection:
            sx, sy, sw, sh = shadow_area(case)
            canvas = np.zeros((sh, sw, pixels.shape[2]), pixels.dtype)  # transparent around the layer
            canvas[y - sy : y - sy + h, x - sx : x - sx + w] = pixels
            pixels = canvas
        res = client.segment(
            pixels.tobytes(),
            sw,
            sh,
            layout=case.layout,
            dtype=case.dtype,
            transfer=case.transfer,
            options=DEFAULT_OPTIONS,
            alpha_dtype=case.dtype,
            shadow=shadow,
        )
        dt = {"u8": np.uint8, "u16": "<u2", "f32": "<f4"}[case.dtype]
        alpha = np.frombuffer(res.alpha, dt).reshape(sh, sw).astype(np.float32) / scale[case.dtype]
        alpha = alpha[y - sy : y - sy + h, x - sx : x - sx + w]
        assert res.shadow is not None, "the daemon returned no shadow"
        shadow_alpha = np.frombuffer(res.shadow, dt).reshape(sh, sw).astype(np.float32) / scale[case.dtype]
        return alpha, shadow_alpha, res.shadow_info

    try:
        yield ask
    finally:
        client.close()


def load(out: Path, entry: dict) -> np.ndarray:
    """A float32 dump from GIMP: H×W for one channel, else H×W×C."""
    data = np.fromfile(out / entry["file"], "<f4")
    channels = data.size // (entry["height"] * entry["width"])
    data = data.reshape(entry["height"], entry["width"], channels)
    return data[..., 0] if channels == 1 else data


def result(gimp_results, name, expect_success=True):
    if name == "autostart" and name not in gimp_results["cases"]:
        pytest.skip(NO_AUTOSTART.format(sys.base_prefix))
    r = gimp_results["results"][name]
    if expect_success:
        assert r["status"] == "success", f"{name}: {r['status']}: {r['error']}"
    return r


def assert_unchanged(gimp_results, r, tag="after"):
    out = gimp_results["out"]
    before, after = r["before"], r[tag]
    assert after["layers"] == before["layers"]
    assert np.array_equal(load(out, after["layer"]), load(out, before["layer"]))
    assert after["layer"]["offsets"] == before["layer"]["offsets"]
    assert (after["mask"] is None) == (before["mask"] is None)
    if before["mask"] is not None:
        assert np.array_equal(load(out, after["mask"]), load(out, before["mask"]))
    assert after["selection_bounds"] == before["selection_bounds"]


# ------------------------------------------------------------------------------ the tests


def test_plugin_imports_only_stdlib_gi_and_the_client():
    """GIMP's bundled Python (Windows, macOS, Flatpak) has no numpy or pyzmq."""
    tree = ast.parse(PLUGIN_FILE.read_text(encoding="utf-8"))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    foreign = {m for m in modules if m not in sys.stdlib_module_names and m not in ("gi", "maskd_client")}
    assert not foreign, f"the GIMP plug-in imports {sorted(foreign)}"


def test_the_plugin_gimp_runs_is_the_installed_copy(gimp_results, gimp_home):
    """GIMP registered the plug-in from this HOME's profile; its files are the installer's copy
    (with ``MASKD_TEST_INSTALLED_HOME``: the one-command installer's, byte for byte)."""
    assert gimp_results["registration"]["found"]
    placed = gimp_home / ".config/GIMP/3.0/plug-ins" / GIMP_PLUGIN_NAME
    home = installed_home()
    if home is not None:
        assert not differing_files(placed, home / ".config/GIMP/3.0/plug-ins" / GIMP_PLUGIN_NAME)
    assert (placed / "maskd_client.py").read_bytes() == (PLUGINS_DIR / "maskd_client.py").read_bytes()
    # the plug-in's own files are this checkout's; the client module is the one added beside it
    assert differing_files(placed, PLUGINS_DIR / "gimp" / GIMP_PLUGIN_NAME) == ["maskd_client.py"]


def test_registration(gimp_results):
    reg = gimp_results["registration"]
    assert reg["found"], "GIMP did not register plug-in-maskd-remove-background"
    assert reg["menu_paths"] == ["<Image>/Layer/Transparency"]
    assert reg["menu_label"].replace("_", "") == "Remove Background…"
    assert reg["image_types"] == "RGB*, GRAY*"
    for arg in (
        "output",
        "existing-mask",
        "refine",
        "decontaminate",
        "quality",
        "model",
        "use-selection",
        "add-shadow",
        "shadow-style",
        "shadow-settings",
        "add-background",
        "background-color",
    ):
        assert arg in reg["arguments"]
    # GIMP warns when two dialog labels (or a label and a button) share a keyboard mnemonic
    assert "duplicate mnemonic" not in gimp_results["log"]


@pytest.mark.parametrize(
    "name",
    ["rgba8", "rgb8_larger", "rgba8_smaller", "rgba16", "float_linear", "gray8", "dialog", "autostart"],
)
def test_mask_equals_daemon_alpha(gimp_results, reference, name):
    """Layer mask: exists, has the layer's size, equals the daemon's alpha within 1/255."""
    r = result(gimp_results, name)
    case = gimp_results["cases"][name]
    mask = r["after"]["mask"]
    assert mask is not None, f"{name}: no layer mask"
    assert (mask["width"], mask["height"]) == (case.width, case.height)
    assert r["after"]["layer"]["offsets"] == list(case.offsets)
    got = load(gimp_results["out"], mask)
    want, _ = reference(case)
    assert 0.02 < want.mean() < 0.98, "the test image should give a non-trivial matte"
    assert np.abs(got - want).max() <= TOL
    # the layer's own pixels are untouched (non-destructive), and no finishing layer without asking
    assert np.array_equal(
        load(gimp_results["out"], r["after"]["layer"]), load(gimp_results["out"], r["before"]["layer"])
    )
    assert r["after"]["layers"] == ["photo"] and r["after"]["finishing"] == {}


def test_autostart_runs_the_configured_daemon_command(gimp_results):
    """No daemon at the configured connection file: the plug-in ran ``daemon_command`` inside GIMP,
    waited for the model, and the mask came from that daemon (see test_mask_equals_daemon_alpha)."""
    assert result(gimp_results, "autostart")["status"] == "success"
    started = gimp_results["autostarted"]
    assert started.get("pid"), "the autostarted daemon wrote no connection file"
    log = gimp_results["autostart_log"].read_text()
    assert "'name': 'lite'" in log, log[-2000:]


def test_selection_is_the_roi_and_the_rest_is_black(gimp_results, reference):
    r = result(gimp_results, "roi")
    case = gimp_results["cases"]["roi"]
    got = load(gimp_results["out"], r["after"]["mask"])
    x, y, w, h = case.roi()
    assert (x, y, w, h) == (12, 6, 40, 30)
    want, _ = reference(case)
    assert np.abs(got[y : y + h, x : x + w] - want).max() <= TOL
    outside = got.copy()
    outside[y : y + h, x : x + w] = 0
    assert outside.max() == 0.0
    assert r["after"]["selection_bounds"] == r["before"]["selection_bounds"]


def test_apply_to_alpha(gimp_results, reference):
    r = result(gimp_results, "alpha")
    case = gimp_results["cases"]["alpha"]
    out = gimp_results["out"]
    assert r["after"]["mask"] is None
    before, after = load(out, r["before"]["layer"]), load(out, r["after"]["layer"])
    want, _ = reference(case)
    assert np.abs(after[..., 3] - before[..., 3] * want).max() <= 2 * TOL
    assert np.array_equal(after[..., :3], before[..., :3])  # colours kept
    assert after[:, 24:30, 3].max() == 0.0  # fully transparent stays transparent


def test_new_cutout_layer(gimp_results, reference):
    r = result(gimp_results, "layer")
    case = gimp_results["cases"]["layer"]
    new = r["after"]["new_layer"]
    assert r["after"]["layers"] == ["photo (cut-out)", "photo"]
    assert r["after"]["selected"] == ["photo (cut-out)"]
    assert (new["width"], new["height"]) == (case.width, case.height)
    assert new["offsets"] == list(case.offsets) and not new["has_mask"]
    assert r["after"]["mask"] is None  # the source layer is left alone
    pixels = load(gimp_results["out"], new)
    alpha, fg = reference(case, foreground=True, options=dict(DEFAULT_OPTIONS, decontaminate=True))
    assert np.abs(pixels[..., 3] - alpha).max() <= TOL
    seen = alpha > 0.02
    assert np.abs(pixels[..., :3][seen] - fg[seen]).max() <= TOL


def test_new_layer_without_decontamination_keeps_colours(gimp_results, reference):
    r = result(gimp_results, "layer_plain")
    case = gimp_results["cases"]["layer_plain"]
    pixels = load(gimp_results["out"], r["after"]["new_layer"])
    original = load(gimp_results["out"], r["before"]["layer"])
    alpha, _ = reference(case)
    assert np.abs(pixels[..., 3] - alpha).max() <= TOL
    seen = alpha > 0.02
    assert np.abs(pixels[..., :3][seen] - original[..., :3][seen]).max() <= TOL


def test_selection_from_matte(gimp_results, reference):
    r = result(gimp_results, "selection")
    case = gimp_results["cases"]["selection"]
    assert r["after"]["mask"] is None
    sel = load(gimp_results["out"], r["after"]["selection"])
    assert sel.shape == (CANVAS[1], CANVAS[0])
    want, _ = reference(case)
    ox, oy = case.offsets  # the layer sticks out of the canvas on every side
    expected = want[-oy : -oy + CANVAS[1], -ox : -ox + CANVAS[0]]
    assert np.abs(sel - expected).max() <= TOL
    assert r["after"]["selected"] == r["before"]["selected"] == ["photo"]  # the active layer stays


@pytest.mark.parametrize("name", ["intersect", "on_mask"])
def test_existing_mask_is_combined_by_default(gimp_results, reference, name):
    """Also when the selected drawable is the mask itself (the user was painting on it)."""
    r = result(gimp_results, name)
    case = gimp_results["cases"][name]
    got = load(gimp_results["out"], r["after"]["mask"])
    old = load(gimp_results["out"], r["before"]["mask"])
    want, _ = reference(case)
    assert np.abs(got - np.minimum(old, want)).max() <= TOL
    assert got[: CANVAS[1] // 3].max() == 0.0  # what the user painted out stays out
    assert r["after"]["layers"] == ["photo"] and r["after"]["selected"] == ["photo"]


def test_existing_mask_replace(gimp_results, reference):
    r = result(gimp_results, "replace")
    got = load(gimp_results["out"], r["after"]["mask"])
    want, _ = reference(gimp_results["cases"]["replace"])
    assert np.abs(got - want).max() <= TOL


@pytest.mark.parametrize("name", ["rgba8", "alpha", "layer", "selection", "intersect", "finish"])
def test_one_undo_restores_the_original(gimp_results, name):
    r = result(gimp_results, name)
    assert r.get("undo_clean"), f"{name}: Ctrl+Z did not bring the image back to its saved state"
    assert_unchanged(gimp_results, r, "undone")


@pytest.mark.parametrize(
    "name,words",
    [
        ("absent", ["not running"]),
        ("finish_absent", ["not running"]),
        ("finish_bad_settings", ["Shadow direction", "sideways"]),
        ("autostart_fails", ["failed to start", "autostart.log"]),
        ("group", ["layer group"]),
        ("alpha_with_mask", ["already has a layer mask"]),
    ],
)
def test_failures_give_a_clear_error_and_leave_the_image_unchanged(gimp_results, name, words):
    r = result(gimp_results, name, expect_success=False)
    assert r["status"] == "execution-error"
    for word in words:
        assert word in (r["error"] or ""), r["error"]
    assert "Traceback" not in (r["error"] or "")
    assert_unchanged(gimp_results, r)


def test_saved_xcf_reads_back_with_gimpformats(gimp_results):
    """An independent reader sees the layers, offsets and the mask GIMP holds."""
    pytest.importorskip("gimpformats")
    from maskd.core.layered import gimpformats_compat

    gimpformats_compat.install()  # gimpformats 2025 cannot skip GIMP 3's newer layer properties
    from gimpformats.gimpXcfDocument import GimpDocument

    out = gimp_results["out"]
    for name in ("rgba8", "rgba8_smaller"):
        r = result(gimp_results, name)
        assert r["saved"]
        case = gimp_results["cases"][name]
        doc = GimpDocument(str(out / f"{name}.xcf"))
        assert (doc.width, doc.height) == CANVAS
        layers = doc.raw_layers
        assert [layer.name for layer in layers] == ["photo"]
        layer = layers[0]
        assert (layer.width, layer.height) == (case.width, case.height)
        assert (layer.xOffset, layer.yOffset) == case.offsets
        assert layer.mask is not None, f"{name}: the XCF has no layer mask"
        mask = np.asarray(layer.mask.image, np.float32) / 255.0
        assert mask.shape == (case.height, case.width)
        assert np.abs(mask - load(out, r["after"]["mask"])).max() <= TOL


# ------------------------------------------------------------------------------ finishing layers


def hex_rgb(text: str) -> np.ndarray:
    return np.array([int(text[i : i + 2], 16) for i in (1, 3, 5)], np.float32) / 255.0


def test_shadow_and_background_layers(gimp_results, shadow_reference):
    """Both toggles: the photo keeps its pixels and gets the daemon's mask; "photo shadow" sits
    directly under it (covering the photo and the canvas — the layer is smaller than the canvas and
    the shadow may fall outside it —, filled with the returned colour, the daemon's shadow alpha as
    its mask); "photo background" (canvas-sized, the colour) is at the bottom of the stack."""
    r = result(gimp_results, "finish")
    case = gimp_results["cases"]["finish"]
    out = gimp_results["out"]
    after = r["after"]
    assert r["before"]["layers"] == ["photo", "floor"]
    assert after["layers"] == ["photo", "photo shadow", "floor", "photo background"]
    assert after["selected"] == ["photo"]
    assert np.array_equal(load(out, after["layer"]), load(out, r["before"]["layer"]))
    assert after["layer"]["offsets"] == list(case.offsets)
    want_alpha, want_shadow, info = shadow_reference(case, ",".join(FINISH_SHADOW))
    assert np.abs(load(out, after["mask"]) - want_alpha).max() <= TOL

    shadow = after["finishing"]["shadow"]
    ax, ay, aw, ah = shadow_area(case)
    assert (aw, ah) == CANVAS and (ax, ay) == (-case.offsets[0], -case.offsets[1])  # this case's layout
    assert (shadow["width"], shadow["height"], shadow["offsets"]) == (
        aw,
        ah,
        [case.offsets[0] + ax, case.offsets[1] + ay],
    )
    assert info["color"].lower() == "#402010" and info["style"]
    outside = np.ones((ah, aw), bool)
    outside[-ay : -ay + case.height, -ax : -ax + case.width] = False
    assert want_shadow[outside].max() > 0.05, "the test's shadow should reach beyond the layer"
    assert want_shadow.max() > 0.1, "the test image should cast a visible shadow"
    assert shadow["mask"] is not None
    assert np.abs(load(out, shadow["mask"]) - want_shadow).max() <= TOL
    pixels = load(out, shadow)
    assert np.abs(pixels[..., :3] - hex_rgb(info["color"])).max() <= TOL
    assert pixels[..., 3].min() == 1.0  # the colour is everywhere; the mask alone shapes the shadow

    background = after["finishing"]["background"]
    assert (background["width"], background["height"], background["offsets"]) == (*CANVAS, [0, 0])
    assert background["mask"] is None
    pixels = load(out, background)
    assert np.abs(pixels[..., :3] - hex_rgb("#3366cc")).max() <= TOL
    assert pixels[..., 3].min() == 1.0


def test_finishing_in_a_group_with_a_selection_and_16_bit(gimp_results, shadow_reference):
    """A 16-bit layer inside a group, a selection ROI and the default background colour (white):
    both layers go into the group (the background at its bottom); the shadow's mask is the daemon's
    shadow inside the ROI and black elsewhere, written through the linear format."""
    r = result(gimp_results, "finish_roi")
    case = gimp_results["cases"]["finish_roi"]
    out = gimp_results["out"]
    assert r["after"]["layers"] == ["group"]
    assert r["after"]["stack"] == ["photo", "photo shadow", "photo background"]
    _, want_shadow, info = shadow_reference(case, "contact")
    assert want_shadow.max() > 0.1, "the test image should have a contact shadow"
    shadow = r["after"]["finishing"]["shadow"]
    assert (shadow["width"], shadow["height"], shadow["offsets"]) == (
        case.width,
        case.height,
        list(case.offsets),
    )
    got = load(out, shadow["mask"])
    x, y, w, h = case.roi()
    assert np.abs(got[y : y + h, x : x + w] - want_shadow).max() <= TOL
    got[y : y + h, x : x + w] = 0
    assert got.max() == 0.0
    assert np.abs(load(out, shadow)[..., :3] - hex_rgb(info["color"])).max() <= TOL
    background = load(out, r["after"]["finishing"]["background"])
    assert background.shape == (CANVAS[1], CANVAS[0], 4) and background.min() == 1.0  # opaque white


def test_a_system_python_is_never_mounted_over_the_editors_root(monkeypatch):
    """The autostart checks mount this Python into the root; Debian's /usr/bin/python3 cannot be
    (it would hide the root's own /usr), so they are skipped there instead of breaking the root."""
    monkeypatch.setattr(sys, "base_prefix", "/usr")
    assert host_python_binds() is None
    monkeypatch.setattr(sys, "base_prefix", str(REPO))
    monkeypatch.setattr(sys, "prefix", str(REPO / ".venv"))
    assert host_python_binds() == {str(REPO.resolve()): str(REPO.resolve())}


def _runs(gimp_results) -> list:
    path = gimp_results["out"] / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_model_switch_from_gimp_reports_progress(gimp_results, editors_daemon):
    for name in ("model_switch", "model_back"):
        result(gimp_results, name)
    runs = _runs(gimp_results)
    switched = [r for r in runs if r.get("model") == "lite-2k"]
    assert switched, [r.get("model") for r in runs]
    assert "Loading model" in switched[0]["stages"], switched[0]["stages"]
    assert any(r.get("model") == "lite" for r in runs[runs.index(switched[0]) :]), "and back"
    with mc.connect(str(editors_daemon.connection_file)) as client:
        models = client.models()
    assert [m["name"] for m in models["installed"]] == list(INSTALLED_PRESETS)
    assert models["served"] == "lite"


def test_a_stale_remembered_preset_runs_with_the_served_model(gimp_results, reference):
    r = result(gimp_results, "model_stale")
    case = gimp_results["cases"]["model_stale"]
    got = load(gimp_results["out"], r["after"]["mask"])
    want, _ = reference(case)
    assert np.abs(got - want).max() <= TOL
    notes = [run.get("note") for run in _runs(gimp_results)]
    assert "The model “birefnet-2023” is not installed; using “lite” instead." in notes, notes


def test_missing_engine_reads_as_a_person_reads_it(gimp_results):
    r = result(gimp_results, "missing_engine", expect_success=False)
    message = r["error"]
    assert "The maskd engine could not be started" in message, message
    assert "maskd install-plugins" in message and "Errno" not in message
    assert "/opt/maskd-moved" not in message
    assert_unchanged(gimp_results, r)


def _dialogs(gimp_results) -> list:
    out = gimp_results["out"]
    return [
        json.loads((out / f"gimp-dialog-{n}.json").read_text())
        for n in range(2)
        if (out / f"gimp-dialog-{n}.json").exists()
    ]


def test_dialog_first_group_is_small_and_shows_what_matters(gimp_results):
    dialogs = _dialogs(gimp_results)
    assert len(dialogs) == 2, "both interactive runs reported their dialog"
    plain, with_mask = dialogs
    assert plain["first_group_count"] <= 6 and with_mask["first_group_count"] <= 6
    words = " | ".join(plain["first_group"])
    assert LABELS["output"] in words and LABELS["model"] in words and LABELS["quality"] in words
    assert LABELS["existing_mask"] not in words, "no mask: the existing-mask choice is hidden"
    assert LABELS["use_selection"] not in words, "no selection: the selection choice is hidden"
    assert [m[0] for m in plain["models"] if m[0]] == list(INSTALLED_PRESETS), "the engine's models"
    words = " | ".join(with_mask["first_group"])
    assert LABELS["existing_mask"] in words and LABELS["use_selection"] in words
    for d in dialogs:
        assert (gimp_results["out"] / d["screenshot"]).stat().st_size > 1000


def test_labels_are_the_shared_table(gimp_results):
    nicks = gimp_results["registration"]["nicks"]
    for arg, key in (
        ("output", "output"),
        ("quality", "quality"),
        ("refine", "refine"),
        ("decontaminate", "decontaminate"),
        ("add-shadow", "shadow"),
        ("add-background", "background"),
        ("existing-mask", "existing_mask"),
    ):
        assert nicks[arg] == LABELS[key], (arg, nicks[arg])
