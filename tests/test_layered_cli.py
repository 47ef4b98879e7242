"""``maskd remove`` on layered files through the real CLI and a real daemon (weight-free stand-in model).

The masks written must equal what the daemon returns for the same layer pixels (within 1/255);
truncated and fuzzed files are reported and skipped and leave nothing behind; ``--in-place``
replaces inputs atomically and ``-o`` never touches them.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from maskd.core.layered import open_layered

from tests.daemon_fixtures import short_tmp, start_daemon
from tests.helpers import daemon_alpha, run_maskd

FIXTURES = Path(__file__).parent / "editors" / "layered" / "fixtures"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = start_daemon(short_tmp(tmp_path_factory, "lay"), "--resolution", "128", worker="pipeline")
    yield d
    d.stop()


def remove(daemon, *args, timeout=300):
    return run_maskd("remove", *args, env=daemon.env(), timeout=timeout)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_folder_of_layered_files_with_damaged_ones(daemon, tmp_path):
    shots = tmp_path / "shots"
    shots.mkdir()
    for name in ("gimp3.xcf", "gimp3-16bit.xcf", "gimp3.ora", "krita5.kra", "krita5.ora"):
        shutil.copyfile(FIXTURES / name, shots / name)
    (shots / "truncated.xcf").write_bytes((FIXTURES / "gimp3.xcf").read_bytes()[:3000])
    (shots / "truncated.ora").write_bytes((FIXTURES / "gimp3.ora").read_bytes()[:5000])
    fuzzed = bytearray((FIXTURES / "krita5.kra").read_bytes())
    fuzzed[100:4000] = bytes(3900)
    (shots / "fuzzed.kra").write_bytes(bytes(fuzzed))
    before = {p.name: digest(p) for p in shots.iterdir()}
    out = tmp_path / "out"
    r = remove(daemon, shots, "-o", out)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "5 written" in r.stdout and "3 failed" in r.stdout, r.stdout
    for bad in ("truncated.xcf", "truncated.ora", "fuzzed.kra"):
        line = next(ln for ln in r.stdout.splitlines() if bad in ln and "skipped" in ln)
        assert "Traceback" not in line and ("truncated" in line or "damaged" in line), line
    assert sorted(p.name for p in out.iterdir()) == [
        "gimp3-16bit.xcf",
        "gimp3.ora",
        "gimp3.xcf",
        "krita5.kra",
        "krita5.ora",
    ], "nothing half-written"
    assert {p.name: digest(p) for p in shots.iterdir()} == before, "inputs untouched"
    for name in ("gimp3.xcf", "gimp3-16bit.xcf", "gimp3.ora", "krita5.kra", "krita5.ora"):
        doc = open_layered(out / name)
        masked = [ly for ly in doc.layers if ly.has_mask]
        assert [ly.name for ly in masked] == ["background"], name
        rgba = doc.read_rgba(masked[0])
        expected = daemon_alpha(daemon.connection_file, rgba)
        assert np.abs(doc.read_mask(masked[0]) - expected).max() <= 1 / 255 + 1e-6, name
        assert 0.05 < expected.mean() < 0.95, "the stand-in found a subject"


def test_layer_choice_in_place_and_errors(daemon, tmp_path):
    source = tmp_path / "work.xcf"
    shutil.copyfile(FIXTURES / "gimp3.xcf", source)
    out = tmp_path / "visible.xcf"
    r = remove(daemon, source, "-o", out, "--layers", "visible", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "masked 'decor/stripe', 'shadow', 'background', 'Background'" in r.stdout
    assert [ly.path for ly in open_layered(out).layers if ly.has_mask] == [
        "decor/stripe",
        "shadow",
        "background",
        "Background",
    ]

    r = remove(daemon, source, "-o", tmp_path / "x.xcf", "--layers", "nope", "-q")
    assert r.returncode == 1 and "no layer named 'nope'" in r.stdout and not (tmp_path / "x.xcf").exists()

    r = remove(daemon, source, "-o", tmp_path / "flat.png", "-q")
    assert r.returncode == 1 and "keeps its format" in r.stdout and not (tmp_path / "flat.png").exists()

    r = remove(daemon, source, "--in-place", "-o", tmp_path / "y.xcf")
    assert r.returncode == 1 and "leave out -o" in r.stderr
    r = remove(daemon, source)
    assert r.returncode == 2 and "--in-place" in r.stderr

    before = digest(source)
    r = remove(daemon, source, "--in-place", "--layers", "shadow")
    assert r.returncode == 0, r.stdout + r.stderr
    assert digest(source) != before
    assert [ly.path for ly in open_layered(source).layers if ly.has_mask] == ["shadow"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["visible.xcf", "work.xcf"], "no temp files left"
    r = remove(daemon, source, "--in-place", "--layers", "shadow")
    assert r.returncode == 0 and "already has a mask" in r.stderr


def test_in_place_refuses_flat_images(daemon, tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    r = remove(daemon, tmp_path / "a.png", "--in-place")
    assert r.returncode == 1 and "--in-place is for layered files" in r.stderr
