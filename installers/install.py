"""The one-command installer: from nothing to "Remove Background" in GIMP and Krita.

Run by ``installers/install.sh`` / ``installers/install.ps1`` with the system Python (3.10+), from
a clone. Standard library only. Steps, each safe to repeat (re-running upgrades in place):

1. maskd's own virtual environment (``~/.local/share/maskd/venv``; macOS ``~/Library/Application
   Support/maskd``; Windows ``%LOCALAPPDATA%\\maskd``; ``--prefix`` / ``MASKD_HOME`` override);
2. the torch build for this machine (see ``installers.torch_choice``);
3. maskd itself (this clone, or ``--package`` a wheel), plus a ``maskd`` command in ``~/.local/bin``;
4. the model weights: the default preset downloaded once (``general`` with a GPU, ``lite`` on CPU),
   or ``--weights FILE --variant NAME``;
5. the plugins, into every GIMP 3 and Krita found (``maskd install-plugins``);
6. a summary of what was done and the next step.

Everything written is recorded in ``install.json`` beside the venv; ``maskd uninstall`` (or
``install.sh --uninstall``) removes exactly that.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from maskd.installers import InstallError  # noqa: E402
from maskd.installers.locations import Platform  # noqa: E402
from maskd.installers.manifest import Manifest  # noqa: E402
from maskd.installers.torch_choice import KINDS, choose_torch  # noqa: E402

EXIT_INCOMPLETE = 3  # installed, but without weights: the message says how to supply them
GPU_PRESET, CPU_PRESET = "general", "lite"


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


class Installer:
    def __init__(self, args: argparse.Namespace, plat: Platform):
        self.args = args
        self.plat = plat
        self.done: list[str] = []
        self.warnings: list[str] = []
        self.manifest_path = plat.manifest_path

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
            self.warnings.append(note)
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
        version = self.venv_output("import torch; print(torch.__version__)") or "?"
        self.done.append(f"torch {version} ({choice.kind}: {choice.reason})")
        return choice.kind

    def install_maskd(self) -> None:
        package = self.args.package or str(REPO)
        self.step(f"maskd from {package}")
        before = self.venv_output("import importlib.metadata as m; print(m.version('maskd'))")
        # the `layered` extra (gimpformats, pure Python) lets `maskd remove` read GIMP's XCF files
        self.run(
            [self.python, "-m", "pip", "install", package + "[layered]"],
            "installing maskd and its dependencies",
        )
        if before:  # same version number: pip would keep the old files, so replace them (upgrade in place)
            self.run(
                [self.python, "-m", "pip", "install", "--force-reinstall", "--no-deps", package],
                "upgrading maskd in place",
            )
        version = self.venv_output("import importlib.metadata as m; print(m.version('maskd'))") or "?"
        self.done.append(f"maskd {version}" + (f" (was {before})" if before else ""))
        maskd = self.plat.venv_maskd(self.venv)
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
            on_path = str(bin_dir) in self.plat.env.get("PATH", "").split(os.pathsep)
            hint = "" if on_path else f" ({bin_dir} is not on PATH)"
            self.done.append(f"command: {link} -> {maskd}{hint}")
        else:
            self.warnings.append(f"{link} exists and is not maskd's link; left alone. Use {maskd}")
        m.save()

    def install_weights(self, torch_kind: str) -> bool:
        a = self.args
        if a.no_weights:
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
            preset = a.preset or (GPU_PRESET if gpu else CPU_PRESET)
            why = "" if a.preset else f" (the default {'with a GPU' if gpu else 'on CPU'})"
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
        editors = self.manifest().settings.get("editors") or []
        self.done.append("plugins: " + (", ".join(editors) if editors else "no editor found"))

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
        maskd = self.plat.venv_maskd(self.venv)
        print(f"\n==> done in {time.monotonic() - start:.0f} s")
        for line in self.done:
            print(f"    - {line}")
        for line in self.warnings:
            print(f"    ! {line}")
        print(f"    manifest: {self.manifest_path} (`maskd uninstall` removes all of it)")
        if not weights_ok:
            print(
                "\nINCOMPLETE: the model weights are missing (see WEIGHTS NOT INSTALLED above). "
                "Everything else is in place; re-run the installer with --weights FILE --variant NAME "
                "to finish."
            )
            return EXIT_INCOMPLETE
        print(
            f"\nNext: restart GIMP/Krita and use Layer ▸ Transparency ▸ Remove Background… (GIMP) or "
            f"the Background Removal docker (Krita); on the command line: "
            f"`maskd remove photo.jpg -o cutout.png`; "
            f"check the setup any time with `{maskd} doctor`."
        )
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
