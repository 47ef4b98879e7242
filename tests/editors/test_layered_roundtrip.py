"""Layered files through real GIMP 3 and Krita 5.2: made by the editors → ``maskd remove`` → reopened.

Four editor launches in all (GIMP make, Krita make, GIMP inspect, Krita inspect), run one after
another by a module fixture; the tests then compare what the editors saw. Each editor must see the
same layers as in the original (names, groups, visibility, opacity, modes, offsets, pixels) plus
the masks, whose pixels equal the daemon's alpha for that layer within 1/255. The daemon is the
real one of the editor tests (generated-weights ``lite`` model at 256 px).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.editors.layered.synth import SynthLayer, photo, write_xcf
from tests.helpers import REPO, daemon_alpha, maskd_command, maskd_env, read_json, run_in_root

pytestmark = [pytest.mark.editors, pytest.mark.slow]

LAB = Path(__file__).parent / "layered"
W, H = 96, 64
GIMP = [
    "timeout",
    "-k",
    "5",
    "300",
    "gimp-console-3.0",
    "-i",
    "-d",
    "-f",
    "--batch-interpreter=python-fu-eval",
    "-b",
    'exec(open("/maskd-lab/gimp_layered.py").read())',
    "--quit",
]
KRITA = ["timeout", "-k", "5", "300", "kritarunner", "-s", "krita_layered", "-f"]
TOL = 1.0 / 255 + 1e-6


class Session:
    """Paths and results of one round trip (host folder ``work`` is ``/maskd-work`` inside the root)."""

    def __init__(self, root: Path, work: Path, daemon):
        self.root, self.work, self.daemon = root, work, daemon
        self._alpha_cache: dict[bytes, np.ndarray] = {}

    def inside(self, path: Path) -> str:
        return "/maskd-work/" + str(path.relative_to(self.work))

    def run(self, editor: str, out: Path, action: str, files: list[Path] = ()) -> dict:
        out.mkdir(parents=True, exist_ok=True)
        binds = {str(LAB): "/maskd-lab", str(self.work): "/maskd-work"}
        if editor == "gimp":
            env = {
                "HOME": "/maskd-work/home-gimp",
                "LAYERED_ACTION": action,
                "LAYERED_OUT": self.inside(out),
                "LAYERED_FILES": " ".join(self.inside(f) for f in files),
            }
            r = run_in_root(self.root, GIMP, binds=binds, env=env, timeout=360)
        else:
            env = {
                "HOME": "/maskd-work/home-krita",
                "QT_QPA_PLATFORM": "offscreen",
                "PYTHONPATH": "/maskd-lab",
            }
            r = run_in_root(
                self.root,
                KRITA + [action, self.inside(out)] + [self.inside(f) for f in files],
                binds=binds,
                env=env,
                timeout=360,
            )
        result = read_json(out / "result.json")
        if not result or "error" in result:
            pytest.fail(
                f"{editor} {action} failed (exit {r.returncode}): {result.get('error', '')}\n"
                f"{(r.stdout + r.stderr)[-3000:]}"
            )
        return result

    def alpha(self, rgba: np.ndarray) -> np.ndarray:
        """The daemon's alpha for these layer pixels (what ``maskd remove`` must have stored)."""
        key = rgba.tobytes()
        if key not in self._alpha_cache:
            self._alpha_cache[key] = daemon_alpha(self.daemon.connection_file, rgba)
        return self._alpha_cache[key]


@pytest.fixture(scope="module")
def trip(tmp_path_factory, editors_root, editors_daemon):
    work = tmp_path_factory.mktemp("layered-roundtrip")
    s = Session(editors_root, work, editors_daemon)
    made_gimp, made_krita, inputs = work / "made-gimp", work / "made-krita", work / "in"
    s.run("gimp", made_gimp, "make")
    s.run("krita", made_krita, "make")
    inputs.mkdir()
    for src, name in [
        (made_gimp / "made.xcf", "gimp.xcf"),
        (made_gimp / "made16.xcf", "gimp16.xcf"),
        (made_gimp / "made.ora", "gimp.ora"),
        (made_krita / "made.kra", "krita.kra"),
        (made_krita / "made.ora", "krita.ora"),
    ]:
        shutil.copyfile(src, inputs / name)
    # what GIMP 2.10 writes (XCF v3, 32-bit pointers, no GIMP 3 properties)
    old = [
        SynthLayer("logo", photo(20, 30, 1), (5, 7), 0.5),
        SynthLayer("photo", photo(H, W)),
        SynthLayer("Background", np.full((H, W, 4), 255, np.uint8)),
    ]
    (inputs / "gimp2-style.xcf").write_bytes(write_xcf(W, H, old, 3))
    env = maskd_env(MASKD_CONNECTION_FILE=editors_daemon.connection_file)
    s.remove_default = subprocess.run(
        maskd_command() + ["remove", str(inputs), "-o", str(work / "out"), "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=REPO,
    )
    s.remove_named = subprocess.run(
        maskd_command()
        + [
            "remove",
            str(inputs / "gimp16.xcf"),
            str(inputs / "krita.kra"),
            str(inputs / "krita.ora"),
            "-o",
            str(work / "vis"),
            "--layers",
            "shadow",
            "decor/stripe",
            "-q",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=REPO,
    )
    gimp_files = [
        inputs / "gimp.xcf",
        work / "out/gimp.xcf",
        inputs / "gimp16.xcf",
        work / "vis/gimp16.xcf",
        inputs / "gimp2-style.xcf",
        work / "out/gimp2-style.xcf",
        inputs / "gimp.ora",
        work / "out/gimp.ora",
        inputs / "krita.ora",
        work / "out/krita.ora",
    ]
    krita_files = [
        inputs / "krita.kra",
        work / "out/krita.kra",
        work / "vis/krita.kra",
        inputs / "krita.ora",
        work / "out/krita.ora",
        work / "vis/krita.ora",
        inputs / "gimp.ora",
        work / "out/gimp.ora",
    ]
    missing = [str(f) for f in gimp_files + krita_files if not f.exists()]
    if missing:
        pytest.fail(
            f"maskd remove did not write {missing}:\n{s.remove_default.stdout}{s.remove_default.stderr}"
            f"\n{s.remove_named.stdout}{s.remove_named.stderr}"
        )
    s.gimp_dir, s.krita_dir = work / "seen-gimp", work / "seen-krita"
    gimp_seen = s.run("gimp", s.gimp_dir, "inspect", gimp_files)["files"]
    krita_seen = s.run("krita", s.krita_dir, "inspect", krita_files)["files"]
    s.gimp = {Path(p).relative_to("/maskd-work").as_posix(): v for p, v in gimp_seen.items()}
    s.krita = {Path(p).relative_to("/maskd-work").as_posix(): v for p, v in krita_seen.items()}
    return s


# ---- GIMP ------------------------------------------------------------------------------------------


def _gimp_flat(layers, prefix=""):
    for layer in layers:
        path = prefix + layer["name"]
        yield path, layer
        yield from _gimp_flat(layer["children"], path + "/")


def _gimp_raw(s: Session, dump: str, channels: int, size) -> np.ndarray:
    w, h = size
    return np.fromfile(s.gimp_dir / dump, np.uint8).reshape(h, w, channels)


def _check_gimp_xcf(s: Session, original: str, processed: str, masked: set[str]):
    before, after = s.gimp[original], s.gimp[processed]
    assert "error" not in after, after
    a, b = dict(_gimp_flat(before["layers"])), dict(_gimp_flat(after["layers"]))
    assert list(a) == list(b), "same layers, same order, same groups"
    for path, la in a.items():
        lb = b[path]
        for field in ("group", "visible", "opacity", "mode", "offsets", "size"):
            assert la[field] == lb[field], (processed, path, field)
        if "dump" in la:
            assert np.array_equal(
                _gimp_raw(s, la["dump"], 4, la["size"]), _gimp_raw(s, lb["dump"], 4, lb["size"])
            )
        assert ("mask" in lb) == (path in masked), (processed, path)
        if path in masked:
            assert lb["apply_mask"]
            mask = _gimp_raw(s, lb["mask"], 1, lb["size"])[..., 0] / 255.0
            expected = s.alpha(_gimp_raw(s, la["dump"], 4, la["size"]))
            assert np.abs(mask - expected).max() <= TOL, (processed, path)


def test_remove_runs_were_clean(trip):
    assert trip.remove_default.returncode == 0, trip.remove_default.stdout + trip.remove_default.stderr
    assert trip.remove_named.returncode == 0, trip.remove_named.stdout + trip.remove_named.stderr


def test_gimp3_xcf_default_layer(trip):
    _check_gimp_xcf(trip, "in/gimp.xcf", "out/gimp.xcf", {"background"})


def test_gimp3_xcf_16bit_named_layers_with_offset_and_group(trip):
    _check_gimp_xcf(trip, "in/gimp16.xcf", "vis/gimp16.xcf", {"decor/stripe", "shadow"})


def test_gimp2_style_xcf_opened_by_gimp3(trip):
    _check_gimp_xcf(trip, "in/gimp2-style.xcf", "out/gimp2-style.xcf", {"photo"})


@pytest.mark.parametrize("name", ["gimp.ora", "krita.ora"])
def test_ora_in_gimp_shows_layers_and_the_mask_layer(trip, name):
    """GIMP's OpenRaster importer has no masks: it shows the dst-in mask layer as a layer in a group."""
    before = dict(_gimp_flat(trip.gimp[f"in/{name}"]["layers"]))
    after = dict(_gimp_flat(trip.gimp[f"out/{name}"]["layers"]))
    group, inner, mask = _wrapped("background", "background")
    expected_paths = []
    for path in before:
        expected_paths += [group, mask, inner] if path == "background" else [path]
    assert list(after) == expected_paths
    for path, la in before.items():
        lb = after[inner if path == "background" else path]
        for field in ("visible", "opacity", "offsets", "size"):
            assert la[field] == lb[field], (name, path, field)
        if "dump" in la:
            assert np.array_equal(
                _gimp_raw(trip, la["dump"], 4, la["size"]), _gimp_raw(trip, lb["dump"], 4, lb["size"])
            )
    mask_layer = after[mask]
    layer = before["background"]
    assert mask_layer["offsets"] == layer["offsets"] and mask_layer["size"] == layer["size"]
    alpha = _gimp_raw(trip, mask_layer["dump"], 4, mask_layer["size"])[..., 3] / 255.0
    expected = trip.alpha(_gimp_raw(trip, layer["dump"], 4, layer["size"]))
    assert np.abs(alpha - expected).max() <= TOL


def _wrapped(path: str, name: str) -> tuple[str, str, str]:
    """Where an OpenRaster layer ends up after masking: (its new group, the layer, the mask layer)."""
    group = f"{path} (masked)"
    return group, f"{group}/{name}", f"{group}/{name} (maskd)"


# ---- Krita -----------------------------------------------------------------------------------------


def _krita_flat(node, prefix=""):
    for child in node["children"]:
        path = prefix + child["name"]
        yield path, child
        yield from _krita_flat(child, path + "/")


def _krita_raw(s: Session, dump: str) -> np.ndarray:
    data = np.fromfile(s.krita_dir / dump, np.uint8)
    if dump.endswith(".mask"):
        return data.reshape(H, W)
    return data.reshape(H, W, 4)[..., [2, 1, 0, 3]]  # BGRA -> RGBA


def _check_krita(s: Session, original: str, processed: str, masked: set[str], ora: bool):
    before = dict(_krita_flat(s.krita[original]["tree"]))
    after = dict(_krita_flat(s.krita[processed]["tree"]))
    expected_extra = set()
    for path, la in before.items():
        if ora and path in masked:  # in a new group that took the layer's blend mode
            group, inner, mask_path = _wrapped(path, la["name"])
            expected_extra |= {group, inner, mask_path}
            lb = after[inner]
            assert after[group]["type"] == "grouplayer" and after[group]["mode"] == la["mode"], (
                processed,
                path,
            )
            assert lb["mode"] == "normal" and lb["type"] == la["type"], (processed, path)
            fields = ("visible", "opacity")
        else:
            lb = after[path]
            fields = ("type", "visible", "opacity", "mode")
        for field in fields:
            assert la[field] == lb[field], (processed, path, field)
        if "dump" in la:
            assert np.array_equal(_krita_raw(s, la["dump"]), _krita_raw(s, lb["dump"])), (processed, path)
        if path in masked:
            rgba = _krita_raw(s, la["dump"])
            if ora:
                # maskd saw the layer's PNG, which covers the layer's bounds, not the whole canvas;
                # the mask is a "Destination In" paint layer above the layer
                x, y, w, h = la["bounds"]
                expected = np.zeros((H, W), np.float32)
                expected[y : y + h, x : x + w] = s.alpha(rgba[y : y + h, x : x + w])
                mask_node = after[mask_path]
                assert mask_node["type"] == "paintlayer" and mask_node["mode"] == "destination-in"
                mask = _krita_raw(s, mask_node["dump"])[..., 3] / 255.0
            else:
                masks = [c for c in lb["children"] if c["type"] == "transparencymask"]
                assert len(masks) == 1, (processed, path)
                expected_extra.add(f"{path}/{masks[0]['name']}")
                assert masks[0]["name"] == f"{la['name']} (maskd)"
                mask = _krita_raw(s, masks[0]["dump"]) / 255.0
                expected = s.alpha(rgba)
            assert np.abs(mask - expected).max() <= TOL, (processed, path)
        elif not ora:
            assert not [c for c in lb["children"] if c["type"] == "transparencymask"], (processed, path)
    assert set(after) == (set(before) - (masked if ora else set())) | expected_extra


def test_krita_kra_default_layer_gets_a_transparency_mask(trip):
    _check_krita(trip, "in/krita.kra", "out/krita.kra", {"background"}, ora=False)


def test_krita_kra_named_layers(trip):
    _check_krita(
        trip,
        "in/krita.kra",
        "vis/krita.kra",
        {"decor/stripe", "shadow"},
        ora=False,
    )


@pytest.mark.parametrize(
    "original,processed,masked",
    [
        ("in/krita.ora", "out/krita.ora", {"background"}),
        ("in/krita.ora", "vis/krita.ora", {"decor/stripe", "shadow"}),
        ("in/gimp.ora", "out/gimp.ora", {"background"}),
    ],
)
def test_ora_in_krita_composites_the_mask(trip, original, processed, masked):
    _check_krita(trip, original, processed, masked, ora=True)
