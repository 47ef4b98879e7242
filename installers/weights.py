"""The weights step: download a preset once (resumable, checksum-verified) or take a local file.

Runs inside maskd's own environment (it needs huggingface_hub and torch). A download goes through
huggingface_hub's cache (``HF_HOME``/``HF_HUB_CACHE``/``HF_HUB_OFFLINE`` honoured) with its progress
bar; an interrupted download resumes from the partial file on the next run. The file is then
checked three ways: its SHA-256 against the hub's (the LFS object id, when the hub can be asked),
its safetensors structure (header, every tensor inside the file: catches truncation), and a strict
load into maskd's BiRefNet (every expected tensor present with the right shape).

When the hub cannot be reached the step says exactly which file it could not get and how to supply
it (``--weights FILE --variant NAME``); the rest of the install still completes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import sys
import time
from pathlib import Path

from maskd.core.errors import MaskdError, WeightsError
from maskd.installers.manifest import Manifest

EXIT_UNAVAILABLE = 3  # the weights could not be downloaded: everything else may still be installed


class WeightsUnavailable(MaskdError):
    """The weights could not be downloaded (no network, offline mode)."""


def hub_reachable(timeout: float = 5.0) -> tuple[bool, str]:
    """(reachable, why not): ``maskd.core.weights.hub_unreachable``, the one reachability check."""
    from maskd.core.weights import hub_unreachable

    why = hub_unreachable(timeout)
    return why is None, why or ""


def how_to_supply(preset) -> str:
    return (
        f"download {preset.url} on a machine with internet access, copy it here, and run\n"
        f"    ./installers/install.sh --weights /path/to/{preset.filename} --variant {preset.name}\n"
        f"(or set MASKD_WEIGHTS=/path/to/{preset.filename} MASKD_VARIANT={preset.name} before the "
        f"installer; with maskd installed, `maskd fetch --weights FILE --variant {preset.name}` "
        "checks a file)"
    )


# --------------------------------------------------------------------------- checks


def safetensors_header(path: Path) -> dict:
    """The header of a .safetensors file, after checking every tensor lies inside the file."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise WeightsError(
                f"{path} is too short to be a safetensors file ({size} bytes): an interrupted "
                "download? Delete it and fetch it again"
            )
        (length,) = struct.unpack("<Q", head)
        if length <= 0 or length > min(size - 8, 100 * 1024 * 1024):
            raise WeightsError(
                f"{path} is not a safetensors file (header length {length} for a {size:,}-byte file)"
            )
        try:
            header = json.loads(fh.read(length))
        except ValueError as exc:
            raise WeightsError(f"{path} has a corrupt safetensors header ({exc})") from None
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + length + end > size:
        raise WeightsError(
            f"{path} is truncated: its tensors need {8 + length + end:,} bytes, the file has "
            f"{size:,} (an interrupted download or copy). Delete it and fetch it again"
        )
    return header


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def hub_sha256(repo_id: str, filename: str) -> str | None:
    """The SHA-256 the hub publishes for an LFS file (its ETag), or None when it cannot be asked."""
    try:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        etag = (get_hf_file_metadata(hf_hub_url(repo_id, filename), timeout=10).etag or "").strip('"')
    except Exception:
        return None
    return etag.lower() if len(etag) == 64 and all(c in "0123456789abcdefABCDEF" for c in etag) else None


def verify(path: Path, variant: str | None, load: bool = True) -> str:
    """Check a weights file; returns a one-line summary or raises ``WeightsError``."""
    path = Path(path)
    parts = []
    if path.suffix == ".safetensors":
        header = safetensors_header(path)
        parts.append(f"{len([k for k in header if k != '__metadata__'])} tensors")
    if load:
        from maskd.core.birefnet import load_model

        start = time.perf_counter()
        model = load_model(str(path), variant=variant)
        params = sum(p.numel() for p in model.parameters())
        parts.append(
            f"loads strictly as '{model.preset.name}' ({model.preset.backbone}, "
            f"{params / 1e6:.1f} M parameters) in {time.perf_counter() - start:.1f} s"
        )
        del model
    return ", ".join(parts)


# --------------------------------------------------------------------------- the step


def _repo_cache_dir(repo_id: str) -> Path:
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub"
    )
    return Path(cache) / ("models--" + repo_id.replace("/", "--"))


def fetch_preset(name: str, manifest: Manifest | None = None, load_check: bool = True) -> Path:
    """The preset's weights from the cache or the hub, verified; raises ``WeightsUnavailable`` offline."""
    from maskd.core import presets, weights

    preset = presets.resolve_preset(name)
    if preset.non_commercial:
        print(f"note: {preset.repo_id} is licensed {preset.licence}")
    path = weights.cached_path(preset.repo_id, preset.filename)
    if path is None:
        ok, why = hub_reachable()
        if not ok:
            raise WeightsUnavailable(
                f"could not download the '{preset.name}' weights "
                f"({preset.repo_id}/{preset.filename}): {why}.\nTo finish the install, "
                + how_to_supply(preset)
            )
        repo_dir = _repo_cache_dir(preset.repo_id)
        existed = repo_dir.exists()
        print(f"downloading {preset.url} (resumes if interrupted)")
        try:
            path = weights.download(preset.repo_id, preset.filename, preset)
        except WeightsError as exc:
            raise WeightsUnavailable(f"{exc}\nTo finish the install, " + how_to_supply(preset)) from None
        if manifest is not None and not existed:
            manifest.add("hf_cache", repo_dir)
    else:
        print(f"'{preset.name}' weights already downloaded: {path}")
    expected = hub_sha256(preset.repo_id, preset.filename)
    if expected:
        actual = sha256_file(path)
        if actual != expected:
            blob = Path(os.path.realpath(path))
            blob.unlink(missing_ok=True)
            Path(path).unlink(missing_ok=True)
            raise WeightsError(
                f"{path} has SHA-256 {actual}, the hub publishes {expected}: the download is "
                "corrupt and was deleted. Fix: run the installer again to download it afresh"
            )
        print(f"sha256 {actual} matches the hub")
    else:
        print("sha256 not checked against the hub (it cannot be asked now); checking the file's structure")
    print("verified: " + verify(path, preset.name, load=load_check))
    return Path(path)


def import_file(
    file: Path,
    variant: str,
    dest_dir: Path,
    manifest: Manifest | None = None,
    sha256: str | None = None,
    load_check: bool = True,
) -> Path:
    """Verify a weights file the user supplied and place it in maskd's model folder (hard link or copy)."""
    from maskd.core import presets

    file = Path(file).expanduser().resolve()
    if not file.is_file():
        raise WeightsError(f"weights file {file} does not exist. Fix: check the path given to --weights")
    preset = presets.resolve_preset(variant)
    if sha256:
        actual = sha256_file(file)
        if actual.lower() != sha256.lower():
            raise WeightsError(
                f"{file} has SHA-256 {actual}, not the {sha256} given with --sha256: a "
                "corrupt or different file. Fix: download it again"
            )
        print(f"sha256 {actual} matches --sha256")
    print(f"verifying {file} as '{preset.name}' ...")
    print("verified: " + verify(file, preset.name, load=load_check))
    dest = Path(dest_dir) / f"{preset.name}{file.suffix or '.safetensors'}"
    if manifest is not None:
        manifest.ensure_dir(dest.parent)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and os.path.samefile(dest, file):
        pass
    elif (
        dest.exists()
        and dest.stat().st_size == file.stat().st_size
        and sha256_file(dest) == sha256_file(file)
    ):
        print(f"already in place: {dest}")
    else:
        import secrets

        from maskd.core.atomicfile import temporary

        # a random name, created exclusively (link() and mkstemp never follow a planted name)
        tmp = dest.with_name(f".{dest.name}.maskd-{secrets.token_hex(6)}.tmp")
        try:
            try:
                os.link(file, tmp)  # same file system: no copy
            except OSError:
                fd, tmp = temporary(dest)
                with os.fdopen(fd, "wb") as out, open(file, "rb") as src:
                    shutil.copyfileobj(src, out, 16 << 20)
                os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        print(f"placed at {dest}")
    if manifest is not None:
        manifest.add("weights", dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m maskd.installers.weights", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--preset", help="download this preset's weights")
    parser.add_argument("--file", type=Path, help="use this local weights file instead of a download")
    parser.add_argument("--variant", help="the preset whose architecture --file has")
    parser.add_argument("--sha256", help="expected SHA-256 of --file")
    parser.add_argument(
        "--dest", type=Path, help="folder for a local file (default: models/ beside the manifest)"
    )
    parser.add_argument("--no-load-check", action="store_true", help="skip the strict load (structure only)")
    args = parser.parse_args(argv)
    manifest = Manifest.load(args.manifest)
    try:
        from maskd.core.presets import resolve_preset

        if args.file:
            if not args.variant:
                raise WeightsError(
                    "--weights FILE needs --variant NAME (the preset whose architecture "
                    "the file has, e.g. lite or general)"
                )
            name = resolve_preset(args.variant).name
            dest = args.dest or args.manifest.parent / "models"
            path = import_file(
                args.file, args.variant, dest, manifest, args.sha256, load_check=not args.no_load_check
            )
            model_args = ["--weights", str(path), "--variant", name]
        else:
            name = resolve_preset(args.preset).name
            model_args = ["--model", name]
            # the choice holds even if the download fails: `maskd serve`, `remove`, `doctor`, `models`
            # and the plugins then name this model (and how to supply it), not the built-in default
            manifest.settings.update(preset=name, model_args=model_args)
            manifest.settings.pop("weights_path", None)
            path = fetch_preset(args.preset, manifest, load_check=not args.no_load_check)
    except WeightsUnavailable as exc:
        manifest.save()
        print(f"\nWEIGHTS NOT INSTALLED: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except MaskdError as exc:
        manifest.save()
        print(f"\nweights: error: {exc}", file=sys.stderr)
        return 1
    manifest.settings.update(preset=name, weights_path=str(path), model_args=model_args)
    manifest.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
