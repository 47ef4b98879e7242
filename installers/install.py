"""The one-command installer: from nothing to "Remove Background" in GIMP and Krita.

Run by ``installers/install.sh`` / ``installers/install.ps1`` with the system Python (3.10+), from
a clone. Standard library only. Steps, each safe to repeat (re-running upgrades in place):

1. maskd's own virtual environment (``~/.local/share/maskd/venv``; macOS ``~/Library/Application
   Support/maskd``; Windows ``%LOCALAPPDATA%\\maskd``; ``--prefix`` / ``MASKD_HOME`` override);
2. the torch build for this machine (see ``installers.torch_choice``);
3. maskd itself (this clone, built from a clean copy of its package files, or ``--package`` a
   wheel), skipped when the recorded source digest says it is unchanged; plus a ``maskd`` command in
   ``~/.local/bin`` (the summary says how to put that on PATH when it is not);
4. the model weights: the default preset downloaded once (``general`` with a GPU, ``lite`` on CPU),
   or ``--weights FILE --variant NAME``; the choice is recorded even when the download fails, and a
   re-run keeps it;
5. the plugins, into every GIMP 3 and Krita found (``maskd install-plugins``, which also rewrites
   an autostart entry an earlier install wrote);
6. a summary of what was done and the next step (naming only the editors found).

Everything written is recorded in ``install.json`` beside the venv; ``maskd uninstall`` (or
``install.sh --uninstall``) removes exactly that.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from maskd.installers import InstallError  # noqa: E402
from maskd.installers.locations import Platform, editor_targets  # noqa: E402
from maskd.installers.manifest import Manifest  # noqa: E402
from maskd.installers.torch_choice import CPU_INDEX, KINDS, choose_torch  # noqa: E402

EXIT_INCOMPLETE = 3  # installed, but without weights: the message says how to supply them
GPU_PRESET, CPU_PRESET = "general", "lite"
# What a source folder contributes to the maskd package (pyproject.toml's package-dir maps the
# repository root to `maskd`): only these are hashed and copied for a build, so a user's photos in
# the clone, a .venv, and pip's own build/ and *.egg-info leftovers neither trigger nor leak into it.
SOURCE_PARTS = ("pyproject.toml", "README.md", "__init__.py", "core", "server", "plugins", "installers")
_NOT_SOURCE = {"__pycache__", "build", "dist", ".git"}


def _source_files(folder: Path) -> list[Path]:
    """The files of a source folder that make up the package, sorted (see ``SOURCE_PARTS``)."""
    files = []
    for part in SOURCE_PARTS:
        path = folder / part
        if path.is_file():
            files.append(path)
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in _NOT_SOURCE and not d.endswith(".egg-info"))
            files += [Path(root) / n for n in sorted(names) if not n.endswith((".pyc", ".pyo"))]
    return files


def source_digest(package: str) -> str | None:
    """A content hash of what ``package`` (a source folder or a wheel file) installs; None if unknown."""
    path = Path(package)
    digest = hashlib.sha256()
    if path.is_file():
        digest.update(path.read_bytes())
    elif (path / "pyproject.toml").is_file():
        for file in _source_files(path):
            digest.update(file.relative_to(path).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    else:
        return None
    return digest.hexdigest()


def clean_source_copy(folder: Path, dest: Path) -> Path:
    """Copy only the package's own files (no stale build/ or *.egg-info, whose leftovers pip would
    install again) to ``dest``, so a build never writes into the user's clone either."""
    for file in _source_files(folder):
        target = dest / file.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, target)
    return dest


def parse_args(argv=None) -> argparse.Namespace:
    env = os.environ
    p = argparse.ArgumentParser(
        prog="install.sh",
        description="Install maskd, its model weights and the "
        "GIMP/Krita plugins (re-run to upgrade in place).",
    )
    p.add_argument("--prefix", type=Path, help="maskd's folder (venv, weights, manifest); env MASKD_HOME")
    p.add_argument(
        "--package",
        default=env.get("MASKD_PACKAGE"),
        help="what to pip-install as maskd: a wheel or source folder (default: this clone)",
    )
    t = p.add_argument_group("torch")
    t.add_argument(
        "--torch",
        choices=KINDS,
        default=env.get("MASKD_TORCH", "auto"),
        help="which build: auto (NVIDIA driver → cuda, Apple Silicon → mps, else cpu), or "
        "force one; skip keeps the torch already in the environment",
    )
    t.add_argument(
        "--torch-spec", help="pip requirement for torch (env MASKD_TORCH_SPEC; default torch==2.13.0)"
    )
    t.add_argument(
        "--torch-index-url", help="pip index for torch (env MASKD_TORCH_INDEX_URL; '' = pip's own)"
    )
    w = p.add_argument_group("model weights")
    w.add_argument(
        "--preset",
        default=env.get("MASKD_PRESET"),
        help=f"preset to download (default: {GPU_PRESET} with a GPU, {CPU_PRESET} on CPU)",
    )
    w.add_argument(
        "--weights",
        type=Path,
        default=env.get("MASKD_WEIGHTS") or None,
        help="use this local weights file instead of downloading (env MASKD_WEIGHTS)",
    )
    w.add_argument(
        "--variant",
        default=env.get("MASKD_VARIANT"),
        help="the preset whose architecture --weights has, e.g. lite (env MASKD_VARIANT)",
    )
    w.add_argument("--sha256", help="expected SHA-256 of --weights")
    w.add_argument("--no-weights", action="store_true", help="skip the weights step")
    e = p.add_argument_group("editors")
    e.add_argument("--editors", help="only these editors/locations (see `maskd install-plugins --list`)")
    e.add_argument("--no-plugins", action="store_true", help="skip the plugin step")
    e.add_argument(
        "--no-service", action="store_true", help="no daemon autostart entry for sandboxed editors"
    )
    e.add_argument("--no-start", action="store_true", help="do not start the autostart entry now")
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda", "mps"],
        default="auto",
        help="device the daemon uses (default auto: CUDA > MPS > CPU)",
    )
    p.add_argument("--no-bin-link", action="store_true", help="do not link maskd into ~/.local/bin")
    p.add_argument("--uninstall", action="store_true", help="remove what an earlier install put in place")
    p.add_argument("--keep-weights", action="store_true", help="with --uninstall: keep the model weights")
    return p.parse_args(argv)


def path_hint(bin_dir: Path, shell: str) -> str:
    """How to put ``bin_dir`` on PATH, for the user's shell, now and in every new terminal."""
    name = Path(shell).name
    if name == "fish":
        return f"{bin_dir} is not on your PATH. Add it: fish_add_path {bin_dir}"
    rc = "~/.zshrc" if name == "zsh" else "~/.bashrc"
    line = f'export PATH="{bin_dir}:$PATH"'
    return (
        f"{bin_dir} is not on your PATH, so `maskd` alone is not found yet. Add it (now and for new "
        f"terminals):\n        {line}\n        echo '{line}' >> {rc}"
    )


class Installer:
    def __init__(self, args: argparse.Namespace, plat: Platform):
        self.args = args
        self.plat = plat
        self.done: list[str] = []
        self.warnings: list[str] = []
        self.manifest_path = plat.manifest_path
        self.command = str(plat.venv_maskd(plat.venv_dir))  # how the user runs maskd (summary)
        self.path_hint = ""  # how to put ~/.local/bin on PATH, when it is not
        self.editors: list[str] | None = None  # editors the plugin step found (None: step skipped)

    # -- helpers
    def step(self, title: str) -> None:
        print(f"\n==> {title}", flush=True)

    def run(self, cmd: list, what: str, env: dict | None = None, check: bool = True) -> int:
        cmd = [str(c) for c in cmd]
        print("    $ " + " ".join(cmd), flush=True)
        r = subprocess.run(cmd, env={**self.plat.env, **(env or {})}, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise InstallError(f"{what} failed (exit {r.returncode}; the command and its output are above)")
        return r.returncode

    def manifest(self) -> Manifest:
        return Manifest.load(self.manifest_path)

    @property
    def venv(self) -> Path:
        return self.plat.venv_dir

    @property
    def python(self) -> Path:
        return self.plat.venv_python(self.venv)

    def venv_output(self, code: str) -> str | None:
        try:
            r = subprocess.run(
                [str(self.python), "-c", code],
                capture_output=True,
                text=True,
                timeout=120,
                env=dict(self.plat.env),
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    # -- steps
    def make_venv(self) -> None:
        self.step(f"maskd's environment: {self.venv}")
        if self.venv_output("import sys; print(sys.version_info >= (3, 10))") == "True":
            print("    exists; reused")
            self.done.append(f"environment {self.venv} (reused)")
            return
        m = self.manifest()
        existed = self.venv.exists()
        m.ensure_dir(self.venv.parent)
        if not existed:
            m.add("tree", self.venv)
        m.save()
        r = subprocess.run(
            [sys.executable, "-m", "venv", *(["--clear"] if existed else []), str(self.venv)],
            capture_output=True,
            text=True,
            env=dict(self.plat.env),
        )
        if r.returncode != 0:
            text = (r.stdout + r.stderr).strip()
            fix = (
                "install it: `sudo apt install python3-venv` (Debian/Ubuntu), then run the installer again"
                if "ensurepip" in text or "venv" in text
                else "see the message above"
            )
            raise InstallError(
                f"could not create the virtual environment {self.venv} with "
                f"{sys.executable}:\n"
                f"{text[-1500:]}\nFix: {fix}"
            )
        self.done.append(f"environment {self.venv} (Python {sys.version.split()[0]})")

    def install_torch(self) -> str:
        self.step("torch")
        env = dict(self.plat.env)
        if self.args.torch_spec:
            env["MASKD_TORCH_SPEC"] = self.args.torch_spec
        if self.args.torch_index_url is not None:
            env["MASKD_TORCH_INDEX_URL"] = self.args.torch_index_url
        choice = choose_torch(self.args.torch, system=self.plat.system, env=env)
        print(f"    choice: {choice.describe()}")
        for note in choice.notes:
            print(f"    note: {note}")
        have = self.venv_output("import torch; print(torch.__version__, bool(torch.version.cuda))")
        if choice.kind == "skip":
            if not have:
                raise InstallError(
                    "--torch skip, but maskd's environment has no torch. Fix: drop --torch skip"
                )
            self.done.append(f"torch {have.split()[0]} (kept)")
            return "skip"
        extra = []
        if have and choice.kind == "cuda" and have.split()[1] == "False":
            extra = ["--force-reinstall"]  # a CPU build is there but this machine has an NVIDIA GPU
            print(f"    torch {have.split()[0]} is a CPU build: replacing it with the CUDA build")
        elif have and choice.kind == "cpu" and have.split()[1] == "True":
            print(f"    torch {have.split()[0]} is a CUDA build; it runs on CPU too, so it is kept")
        self.run([self.python, "-m", "pip", "install", *choice.pip_args(), *extra], "installing torch")
        have = self.venv_output("import torch; print(torch.__version__, bool(torch.version.cuda))")
        version, cuda_build = (have or "? False").split()
        self.done.append(
            f"torch {version}, {'CUDA' if cuda_build == 'True' else 'CPU'} build "
            f"({choice.kind}: {choice.reason})"
        )
        if choice.kind == "cpu" and cuda_build == "True" and self.plat.system != "darwin":
            self.warnings.append(
                f"torch {version} in maskd's environment is a CUDA build (several GB) although no NVIDIA "
                "GPU was found; it runs on the CPU all the same. For the small CPU build: "
                f"{self.python} -m pip install --force-reinstall {choice.spec} --index-url {CPU_INDEX}"
            )
        return choice.kind

    def install_maskd(self) -> None:
        package = self.args.package or str(REPO)
        self.step(f"maskd from {package}")
        probe = "import importlib.metadata as m; print(m.version('maskd'))"
        before = self.venv_output(probe)
        digest = source_digest(package)
        recorded = self.manifest().settings.get("maskd_source") or {}
        unchanged = before and digest and recorded == {"digest": digest, "version": before}
        if unchanged and self.venv_output("import maskd.server.cli; print('ok')") == "ok":
            print(f"    maskd {before} is installed from exactly this source already; kept")
            self.done.append(f"maskd {before} (unchanged; kept)")
        else:
            self.pip_install_maskd(package, before)
            version = self.venv_output(probe) or "?"
            self.done.append(f"maskd {version}" + (f" (was {before})" if before else ""))
            if digest and version != "?":
                m = self.manifest()
                m.settings["maskd_source"] = {"digest": digest, "version": version}
                m.save()
        self.link_command()

    def pip_install_maskd(self, package: str, before: str | None) -> None:
        """pip-install maskd with the `layered` extra (gimpformats, pure Python: `maskd remove` reads
        GIMP's XCF files). A source folder is built from a clean copy (pip always rebuilds and
        reinstalls a folder); a wheel of the installed version is forced, or pip would keep the old
        files. Either way pip's uninstall of the old version removes every file it had installed."""
        with tempfile.TemporaryDirectory(prefix="maskd-source-") as tmp:
            source = Path(package)
            is_folder = source.is_dir() and (source / "pyproject.toml").is_file()
            target = str(clean_source_copy(source, Path(tmp) / "maskd")) if is_folder else package
            self.run(
                [self.python, "-m", "pip", "install", target + "[layered]"],
                "installing maskd and its dependencies",
            )
            if before and not is_folder:
                self.run(
                    [self.python, "-m", "pip", "install", "--force-reinstall", "--no-deps", target],
                    "upgrading maskd in place",
                )

    def link_command(self) -> None:
        """``~/.local/bin/maskd`` → the venv's ``maskd``; remembers how the user can type it."""
        maskd = self.plat.venv_maskd(self.venv)
        self.command = str(maskd)
        bin_dir = self.plat.user_bin_dir
        if bin_dir is None or self.args.no_bin_link:
            self.done.append(f"command: {maskd}")
            return
        m = self.manifest()
        m.ensure_dir(bin_dir)
        link = bin_dir / "maskd"
        if link.is_symlink() or not link.exists():
            if link.is_symlink():
                link.unlink()
            link.symlink_to(maskd)
            m.add("file", link)
            self.done.append(f"command: {link} -> {maskd}")
            on_path = str(bin_dir) in self.plat.env.get("PATH", "").split(os.pathsep)
            self.command = "maskd" if on_path else str(link)
            if not on_path:
                self.path_hint = path_hint(bin_dir, self.plat.env.get("SHELL", ""))
        else:
            self.warnings.append(f"{link} exists and is not maskd's link; left alone. Use {maskd}")
        m.save()

    def install_weights(self, torch_kind: str) -> bool:
        """The model: ``--weights FILE``, ``--preset``, else what an earlier run recorded, else the
        default for this machine. The choice is recorded in the manifest even when the download
        fails (exit 3), so every command names the model the user is told to supply."""
        a = self.args
        if a.no_weights:
            return True
        recorded = [str(x) for x in self.manifest().settings.get("model_args") or []]
        if not a.weights and not a.preset and recorded[:1] == ["--weights"]:
            variant = recorded[3] if recorded[2:3] == ["--variant"] else "?"
            if Path(recorded[1]).is_file():
                self.step(f"model weights: {recorded[1]} (as '{variant}', from the earlier install)")
                print("    kept; --preset NAME or --weights FILE --variant NAME installs another")
                self.done.append(f"weights: {recorded[1]} (kept; daemon: maskd serve {' '.join(recorded)})")
                return True
        if a.weights:
            if not a.variant:
                raise InstallError(
                    "--weights FILE needs --variant NAME: the preset whose architecture "
                    "the file has (lite for BiRefNet_lite, general for BiRefNet, ...)"
                )
            self.step(f"model weights from {a.weights} (as '{a.variant}')")
            cmd = ["--file", Path(a.weights).expanduser().resolve(), "--variant", a.variant]
            cmd += ["--sha256", a.sha256] if a.sha256 else []
        else:
            probe = "import torch; print(torch.cuda.is_available() or torch.backends.mps.is_available())"
            gpu = torch_kind in ("cuda", "mps") or (
                torch_kind == "skip" and self.venv_output(probe) == "True"
            )
            if a.preset:
                preset, why = a.preset, ""
            elif recorded[:1] == ["--model"] and len(recorded) > 1:
                preset, why = recorded[1], " (chosen by the earlier install)"
            else:
                preset = GPU_PRESET if gpu else CPU_PRESET
                why = f" (the default {'with a GPU' if gpu else 'on CPU'})"
            self.step(f"model weights: preset '{preset}'{why}")
            cmd = ["--preset", preset]
        code = self.run(
            [self.python, "-m", "maskd.installers.weights", "--manifest", self.manifest_path, *cmd],
            "the weights step",
            check=False,
        )
        if code == 3:
            return False
        if code != 0:
            raise InstallError("the model weights could not be installed (see the message above)")
        settings = self.manifest().settings
        self.done.append(
            f"weights: {settings.get('weights_path')} (daemon: maskd serve "
            f"{' '.join(settings.get('model_args', []))})"
        )
        return True

    def install_plugins(self) -> None:
        if self.args.no_plugins:
            return
        self.step("plugins for GIMP 3 and Krita")
        m = self.manifest()
        m.settings["daemon_base"] = [str(self.plat.venv_maskd(self.venv))]
        m.settings["device"] = self.args.device
        m.settings["venv"] = str(self.venv)
        m.save()
        cmd = [self.plat.venv_maskd(self.venv), "install-plugins"]
        cmd += ["--device", self.args.device] if self.args.device != "auto" else []
        cmd += ["--editors", self.args.editors] if self.args.editors else []
        cmd += ["--no-service"] if self.args.no_service else []
        cmd += ["--no-start"] if self.args.no_start else []
        self.run(cmd, "installing the plugins")
        wanted = [e for e in (self.args.editors or "").split(",") if e.strip()] or None
        found = editor_targets(self.plat, wanted, found_only=True)
        self.editors = sorted({t.editor for t in found})
        keys = ", ".join(sorted(t.key for t in found))
        self.done.append("plugins: " + (keys or "no GIMP 3 or Krita found"))

    def next_steps(self) -> str:
        """What to do now, naming only the editors that got the plugin."""
        names = {"gimp": "GIMP", "krita": "Krita"}
        lines = []
        if self.editors:
            where = {
                "gimp": "Layer ▸ Transparency ▸ Remove Background… (GIMP)",
                "krita": "the Background Removal docker (Krita)",
            }
            lines.append(
                f"Next: restart {' and '.join(names[e] for e in self.editors)} and use "
                + " or ".join(where[e] for e in self.editors)
                + "."
            )
        elif self.editors is not None:
            lines.append(
                "No GIMP 3 or Krita was found, so no plugin was installed; after installing one (or "
                f"starting it once), run `{self.command} install-plugins`."
            )
        lines.append(
            f"On the command line: `{self.command} remove photo.jpg -o cutout.png`; check the setup "
            f"any time with `{self.command} doctor`."
        )
        return "\n".join(lines)

    def install(self) -> int:
        start = time.monotonic()
        m = self.manifest()
        m.data.setdefault("installer", {})["repo"] = str(REPO)
        m.save()
        self.make_venv()
        torch_kind = self.install_torch()
        self.install_maskd()
        weights_ok = self.install_weights(torch_kind)
        self.install_plugins()
        print(f"\n==> done in {time.monotonic() - start:.0f} s")
        for line in self.done:
            print(f"    - {line}")
        for line in self.warnings + ([self.path_hint] if self.path_hint else []):
            print(f"    ! {line}")
        print(f"    manifest: {self.manifest_path} (`maskd uninstall` removes all of it)")
        if not weights_ok:
            print(
                "\nINCOMPLETE: the model weights are missing (see WEIGHTS NOT INSTALLED above). "
                "Everything else is in place; re-run the installer with --weights FILE --variant NAME "
                "to finish."
            )
            return EXIT_INCOMPLETE
        print("\n" + self.next_steps())
        return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = {}
    if args.prefix:
        env = dict(os.environ, MASKD_HOME=str(args.prefix.expanduser().resolve()))
        overrides["env"] = env
    plat = Platform.current(**overrides)
    try:
        if args.uninstall:
            from maskd.installers.uninstall import uninstall

            report = uninstall(plat, keep_weights=args.keep_weights)
            print(
                "\n".join(report) if report else f"nothing to uninstall (no manifest at {plat.manifest_path})"
            )
            return 0
        return Installer(args, plat).install()
    except InstallError as exc:
        print(f"\ninstall: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninstall: interrupted; run it again to continue (finished steps are reused)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
