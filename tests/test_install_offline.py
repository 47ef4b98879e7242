"""The installer (``installers/install.py``) run whole on a machine without a route to Hugging Face.

A CPU machine, offline: the installer chooses ``lite``, cannot download it (exit 3), and must still
record that choice, so ``maskd models``, ``maskd doctor``, ``maskd remove`` and the plugins' config
name ``lite`` — not the built-in ``general``. Then the weights file is supplied and a re-run finishes.

To stay fast, maskd's venv here is a real venv (``--without-pip``) whose Python sees this
environment's packages (torch, this checkout's maskd) through a ``.pth`` file, and the manifest says
an earlier run installed maskd from exactly this source, so the installer keeps it (which is the
re-run behaviour under test too). Everything else is the real installer: the torch step with pip,
the weights step, ``maskd install-plugins``, the summary.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from maskd.installers import install as I
from maskd.installers.locations import Platform

from tests.helpers import REPO, cli_env, make_home


def dev_venv(path: Path) -> Path:
    """A venv seeing this environment's site-packages (a real venv: its own prefix and bin/)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    (site,) = (path / "lib").glob("python3*/site-packages")
    purelib = sysconfig.get_paths()["purelib"]
    (site / "dev-environment.pth").write_text(f"import site; site.addsitedir({purelib!r})\n")
    maskd = path / "bin" / "maskd"
    maskd.write_text(
        f"#!{path / 'bin' / 'python'}\nimport sys\nfrom maskd.server.cli import main\nsys.exit(main())\n"
    )
    maskd.chmod(0o755)
    return path


@pytest.fixture
def offline_machine(tmp_path):
    """A HOME with GIMP and Krita, maskd's venv in place, no route to the hub, an empty HF cache."""
    home = make_home(tmp_path, layouts=("native",))
    env = cli_env(tmp_path, home)
    env.pop("PYTHONPATH")  # the installed maskd runs from its venv, as for a user
    env.update(
        HF_HUB_CACHE=str(tmp_path / "hf-cache"),
        HF_ENDPOINT="http://127.0.0.1:9",  # nothing listens: refused at once
        PATH=os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if ".local" not in p),
        SHELL="/bin/bash",
    )
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("MASKD_TORCH_INDEX_URL", None)
    data = home / ".local/share/maskd"
    dev_venv(data / "venv")
    plat = Platform.current(home=home, env=env)
    manifest = I.Manifest.load(plat.manifest_path)  # as an earlier run of this source left it
    version = importlib.metadata.version("maskd")
    manifest.settings["maskd_source"] = {"digest": I.source_digest(str(REPO)), "version": version}
    manifest.save()
    return env


def installer(env, *args, timeout=600):
    return subprocess.run(
        [sys.executable, str(REPO / "installers" / "install.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=env["HOME"],
        stdin=subprocess.DEVNULL,
    )


def maskd(env, *args, timeout=300):
    exe = Path(env["HOME"]) / ".local/bin/maskd"  # the command the installer linked
    return subprocess.run(
        [str(exe), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=env["HOME"]
    )


@pytest.mark.slow
def test_offline_install_names_lite_everywhere_then_a_local_file_finishes_it(offline_machine, lite_weights):
    env = offline_machine
    home = Path(env["HOME"])
    r = installer(env, "--torch", "cpu")
    out = r.stdout + r.stderr
    assert r.returncode == I.EXIT_INCOMPLETE, out
    assert "model weights: preset 'lite' (the default on CPU)" in out
    assert "WEIGHTS NOT INSTALLED" in out and "--variant lite" in out
    assert "(unchanged; kept)" in out  # maskd itself was not reinstalled
    # the summary: torch's build is named, and a CUDA warning appears only for a CUDA build
    import torch

    cuda_build = bool(torch.version.cuda)
    assert (", CUDA build" if cuda_build else ", CPU build") in out
    assert ("is a CUDA build" in out) == cuda_build, out
    assert f"{home}/.local/bin is not on your PATH" in out
    assert f'export PATH="{home}/.local/bin:$PATH"' in out and "~/.bashrc" in out

    settings = json.loads((home / ".local/share/maskd/install.json").read_text())["settings"]
    assert settings["model_args"] == ["--model", "lite"]
    for config in (
        home / ".config/GIMP/3.0/plug-ins/maskd-remove-background/maskd_config.json",
        home / ".local/share/krita/pykrita/maskd/maskd_config.json",
    ):
        assert json.loads(config.read_text())["daemon_command"][1:] == ["serve", "--model", "lite"]

    models = maskd(env, "models")
    assert models.returncode == 0, models.stderr
    lines = models.stdout.splitlines()
    heads = lines[0].split()
    lite = next(line.split() for line in lines if line.startswith("lite "))
    general = next(line.split() for line in lines if line.startswith("general "))
    assert heads[-2:] == ["DEFAULT", "CACHED"] and lite[-2:] == ["yes", "no"] and general[-1] == "no"
    assert "Default: lite (chosen by the installer" in models.stdout
    assert "NOT DOWNLOADED yet. Run `maskd fetch lite`" in models.stdout
    default = next(line for line in lines if line.startswith("Default:"))
    assert "--variant lite" in models.stdout and "general" not in default

    doctor = maskd(env, "doctor", "--json")
    model = next(c for c in json.loads(doctor.stdout)["checks"] if c["area"] == "model")
    assert doctor.returncode == 1 and model["state"] == "problem"
    assert "'lite' weights" in model["message"] and "maskd fetch lite" in model["fix"]
    assert "--variant lite" in model["fix"] and "general" not in model["message"] + model["fix"]

    fetch = maskd(env, "fetch")  # no PRESET: the default model, i.e. the installer's choice
    assert fetch.returncode == 1
    assert "fetching the default model, lite (chosen by the installer)" in fetch.stdout
    assert "BiRefNet_lite" in fetch.stderr and "Traceback" not in fetch.stderr

    photo = home / "photo.png"
    from maskd.core import imageio

    imageio.write_image(photo, np.full((64, 64, 3), 200, np.uint8))
    remove = maskd(env, "remove", str(photo), "-o", str(home / "cutout.png"))
    assert remove.returncode != 0 and not (home / "cutout.png").exists()
    said = remove.stdout + remove.stderr
    assert "Traceback" not in said
    assert "maskd fetch lite" in said and "general" not in said, said

    # the file is fetched elsewhere and given to the installer: done, and the plugins serve it
    r = installer(env, "--torch", "skip", "--weights", str(lite_weights), "--variant", "lite")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Next: restart GIMP and Krita" in r.stdout
    placed = home / ".local/share/maskd/models/lite.safetensors"
    config = home / ".local/share/krita/pykrita/maskd/maskd_config.json"
    assert json.loads(config.read_text())["daemon_command"][1:] == [
        "serve",
        "--weights",
        str(placed),
        "--variant",
        "lite",
    ]
    rows = {row["name"]: row for row in json.loads(maskd(env, "models", "--json").stdout)}
    assert rows["lite"]["default"] and rows["lite"]["local_file"] == str(placed)
    assert not rows["general"]["default"] and rows["lite"]["cached"] is None

    # a plain re-run keeps that file (offline, it would otherwise try to download `lite` again)
    r = installer(env, "--torch", "skip", "--no-plugins")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"model weights: {placed} (as 'lite', from the earlier install)" in r.stdout
    assert "restart" not in r.stdout  # no plugin step, no editor to restart


def _installer(tmp_path, editors):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    plat = Platform(system="linux", home=home, env={"PATH": ""}, probe=False)
    inst = I.Installer(I.parse_args([]), plat)
    inst.editors = editors
    return inst


def test_next_steps_name_only_the_editors_found(tmp_path):
    nothing = _installer(tmp_path, []).next_steps()
    assert "restart" not in nothing and "No GIMP 3 or Krita was found" in nothing
    venv_maskd = tmp_path / "home/.local/share/maskd/venv/bin/maskd"
    assert f"`{venv_maskd} install-plugins`" in nothing  # the full path: no link on PATH yet
    gimp = _installer(tmp_path, ["gimp"]).next_steps()
    assert "Next: restart GIMP and use Layer ▸ Transparency ▸ Remove Background… (GIMP)." in gimp
    assert "Krita" not in gimp
    both = _installer(tmp_path, ["gimp", "krita"]).next_steps()
    assert "restart GIMP and Krita" in both and "Background Removal docker (Krita)" in both


def test_path_hint_for_each_shell(tmp_path):
    bash = I.path_hint(tmp_path / "bin", "/bin/bash")
    assert f'export PATH="{tmp_path}/bin:$PATH"' in bash and ">> ~/.bashrc" in bash
    assert ">> ~/.zshrc" in I.path_hint(tmp_path / "bin", "/usr/bin/zsh")
    assert I.path_hint(tmp_path / "bin", "/usr/bin/fish").endswith(f"fish_add_path {tmp_path}/bin")


def test_source_parts_cover_every_package_pyproject_builds():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    tool = project["tool"]["setuptools"]
    assert tool["package-dir"] == {"maskd": "."}
    needed = {"pyproject.toml", project["project"]["readme"]}
    for package in tool["packages"]:
        parts = package.split(".")
        needed.add("__init__.py" if parts == ["maskd"] else parts[1])
    assert needed <= set(I.SOURCE_PARTS), needed - set(I.SOURCE_PARTS)


def test_source_digest_sees_the_package_only_and_the_copy_is_clean(tmp_path):
    """pip's build/ and *.egg-info, caches and a user's photos in the clone change nothing."""
    src = tmp_path / "clone"
    for rel, text in {
        "pyproject.toml": "[project]\n",
        "README.md": "# maskd\n",
        "__init__.py": "",
        "core/a.py": "A = 1\n",
        "plugins/gimp/x/x.py": "X = 1\n",
    }.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    digest = I.source_digest(str(src))
    for rel in (
        "build/lib/maskd/core/old.py",  # a module deleted since: setuptools would ship it again
        "maskd.egg-info/SOURCES.txt",
        "core/__pycache__/a.cpython-311.pyc",
        "core/b.pyc",
        "photo.jpg",
        ".venv/bin/python",
    ):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text("noise")
    assert I.source_digest(str(src)) == digest
    copy = I.clean_source_copy(src, tmp_path / "copy")
    files = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file())
    assert files == ["README.md", "__init__.py", "core/a.py", "plugins/gimp/x/x.py", "pyproject.toml"]
    (src / "core/a.py").write_text("A = 2\n")
    assert I.source_digest(str(src)) != digest
    wheel = tmp_path / "maskd-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK")
    assert I.source_digest(str(wheel)) == I.hashlib.sha256(b"PK").hexdigest()
    assert I.source_digest("maskd==0.1.0") is None  # an index requirement: always handed to pip
