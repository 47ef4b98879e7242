"""The editor batch recipes: ``maskd gimp-batch`` and ``maskd krita-batch`` with real GIMP 3 and Krita 5.2.

The editors run inside the Debian 13 root through a small wrapper script (``--gimp``/``--krita``
COMMAND, the way a user points maskd at a Flatpak or a custom install), with the maskd plugins
installed in their profiles and the editor tests' daemon. The files they save are read back with
``core.layered``: same layers, a mask on the default layer equal to the daemon's alpha, damaged
files reported and skipped, nothing half-written.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from maskd.core.layered import open_layered
from maskd.installers.plugins import install_gimp_plugin, install_krita_plugin

from tests.editors.layered.synth import SynthLayer, photo, write_xcf
from tests.helpers import REPO, daemon_alpha, maskd_command, maskd_env

pytestmark = [pytest.mark.editors, pytest.mark.slow]

HERE = Path(__file__).parent
FIXTURES = HERE / "layered" / "fixtures"


def wrapper(path: Path, root: Path, binds: list[Path], inner: str) -> str:
    """A script that runs ``inner`` (and its arguments) inside the root, keeping the variables maskd sets."""
    bind_args = " ".join(f"-b {b}:{b}" for b in binds)
    path.write_text(
        "#!/bin/sh\n"
        f"exec {HERE / 'in_root.sh'} {root} {bind_args} -- env HOME={path.parent}/home "
        'PYTHONPATH="$PYTHONPATH" QT_QPA_PLATFORM=offscreen '
        f'MASKD_CONNECTION_FILE="$MASKD_CONNECTION_FILE" timeout -k 5 600 {inner} "$@"\n'
    )
    path.chmod(0o755)
    return str(path)


def batch(daemon, *args):
    env = maskd_env(MASKD_CONNECTION_FILE=daemon.connection_file)
    return subprocess.run(
        maskd_command() + [str(a) for a in args] + ["--connection-file", str(daemon.connection_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=REPO,
    )


def check_masked(daemon, source: Path, output: Path, layer: str):
    before, after = open_layered(source), open_layered(output)
    assert [ly.path for ly in after.layers] == [ly.path for ly in before.layers]
    for a, b in zip(before.layers, after.layers):
        assert (a.kind, a.visible, a.offset, a.size) == (b.kind, b.visible, b.offset, b.size), a.path
        if a.kind == "paint":
            assert np.array_equal(before.read_rgba(a), after.read_rgba(b)), a.path
        assert b.has_mask == (b.path == layer), b.path
    target = next(ly for ly in after.layers if ly.path == layer)
    expected = daemon_alpha(daemon.connection_file, after.read_rgba(target))
    assert np.abs(after.read_mask(target) - expected).max() <= 1 / 255 + 1e-6


@pytest.fixture(scope="module")
def work(tmp_path_factory, editors_root, editors_daemon):
    base = tmp_path_factory.mktemp("layered-batch")
    return base


def test_gimp_batch(work, editors_root, editors_daemon):
    gimp_home = work / "gimp"
    gimp_home.mkdir()
    install_gimp_plugin(gimp_home / "home/.config/GIMP/3.0", editors_daemon.config)
    gimp = wrapper(gimp_home / "gimp.sh", editors_root, [work, editors_daemon.run_dir], "gimp-console-3.0")
    shots = work / "xcf"
    shots.mkdir()
    shutil.copyfile(FIXTURES / "gimp3.xcf", shots / "gimp3.xcf")
    layers = [
        SynthLayer("photo", photo(64, 96)),
        SynthLayer("Background", np.full((64, 96, 4), 255, np.uint8)),
    ]
    (shots / "sub").mkdir()
    (shots / "sub" / "gimp2-style.xcf").write_bytes(write_xcf(96, 64, layers, 11))
    (shots / "broken.xcf").write_bytes((FIXTURES / "gimp3.xcf").read_bytes()[:4000])
    out = work / "xcf-out"

    r = batch(editors_daemon, "gimp-batch", shots, "-o", out, "--gimp", gimp, "-q")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "2 file(s) masked (2 layer(s)), 1 failed" in r.stderr, r.stderr
    assert "skipped: " in r.stderr and "broken.xcf" in r.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "gimp3.xcf",
        "sub",
        "sub/gimp2-style.xcf",
    ]
    check_masked(editors_daemon, shots / "gimp3.xcf", out / "gimp3.xcf", "background")
    check_masked(editors_daemon, shots / "sub" / "gimp2-style.xcf", out / "sub" / "gimp2-style.xcf", "photo")

    (shots / "broken.xcf").unlink()
    r = batch(editors_daemon, "gimp-batch", shots, "-o", out, "--gimp", gimp, "-q")
    assert r.returncode == 0 and "2 file(s) skipped: the output exists" in r.stderr, r.stderr

    in_place = work / "xcf-in-place"
    in_place.mkdir()
    shutil.copyfile(FIXTURES / "gimp3.xcf", in_place / "a.xcf")
    r = batch(
        editors_daemon, "gimp-batch", in_place, "--in-place", "--layers", "shadow", "--gimp", gimp, "-q"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert [ly.path for ly in open_layered(in_place / "a.xcf").layers if ly.has_mask] == ["shadow"]
    assert sorted(p.name for p in in_place.iterdir()) == ["a.xcf"], "no temporary files left"


def test_krita_batch(work, editors_root, editors_daemon):
    krita_home = work / "krita"
    krita_home.mkdir()
    data = krita_home / "home/.local/share/krita"
    install_krita_plugin(data, krita_home / "home/.config/kritarc", editors_daemon.config)
    krita = wrapper(krita_home / "krita.sh", editors_root, [work, editors_daemon.run_dir], "kritarunner")
    shots = work / "kra"
    shots.mkdir()
    shutil.copyfile(FIXTURES / "krita5.kra", shots / "krita5.kra")
    (shots / "broken.kra").write_bytes((FIXTURES / "krita5.kra").read_bytes()[:20000])
    out = work / "kra-out"

    r = batch(editors_daemon, "krita-batch", shots, "-o", out, "--krita", krita, "-q")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 file(s) masked (1 layer(s)), 1 failed" in r.stderr, r.stderr
    assert "broken.kra" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["krita5.kra"], "nothing half-written"
    check_masked(editors_daemon, shots / "krita5.kra", out / "krita5.kra", "background")
