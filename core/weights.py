"""Finding and reading BiRefNet weights, with one clear message for everything that can go wrong.

Sources: a preset name or Hugging Face repo id (downloaded once into huggingface_hub's cache with
a progress bar; ``HF_HUB_OFFLINE`` and ``HF_HOME`` are honoured), a snapshot directory, a
``.safetensors`` file, or an official ``.pth`` release file (read with ``weights_only=True``: no
code from the file is ever run; ``_orig_mod.`` / ``module.`` prefixes are stripped).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from maskd.core.errors import WeightsError
from maskd.core.presets import PRESETS, Preset, is_preset, presets_with_backbone, resolve_preset

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
PREFIXES = ("_orig_mod.", "module.")


@dataclass
class Located:
    path: Path
    preset: Preset | None  # known from the name, repo, directory or --variant; None: guess from shapes
    from_variant: bool = False  # the preset came from an explicit variant
    description: str = ""  # for messages: "preset 'lite' (ZhengPeng7/BiRefNet_lite)" or the path


def _fix_download(preset: Preset | None, repo_id: str, filename: str) -> str:
    url = f"https://huggingface.co/{repo_id}/resolve/main/{filename}"
    variant = preset.name if preset else "general"
    return (
        f"download {url} on a machine with internet access and run "
        f"`maskd serve --weights FILE --variant {variant}` "
        f"(or `maskd fetch --weights FILE --variant {variant}` to check it)"
    )


def download(repo_id: str, filename: str = "model.safetensors", preset: Preset | None = None) -> Path:
    """The file from the Hugging Face cache, downloading it (with a progress bar) if needed."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:  # pragma: no cover - a dependency
        raise WeightsError(
            "huggingface_hub is not installed; `pip install huggingface_hub`, or pass a "
            "local weights file with --weights FILE --variant NAME"
        ) from exc
    errors = _hub_errors()
    what = f"{repo_id}/{filename}"
    hint = _fix_download(preset, repo_id, filename)
    try:
        from huggingface_hub import constants

        cache = constants.HF_HUB_CACHE
    except (ImportError, AttributeError):  # pragma: no cover
        cache = "the Hugging Face cache"
    cached = cached_path(repo_id, filename)
    if cached is not None:  # no network round trip (and no retries when offline) for a cached file
        return cached
    unreachable = hub_unreachable()
    if unreachable:
        raise WeightsError(
            f"weights {what} are not in the local cache ({cache}) and {unreachable}. Fix: connect and run "
            f"`maskd fetch {preset.name if preset else repo_id}`, or {hint}"
        )
    try:
        return Path(hf_hub_download(repo_id, filename))
    except errors["LocalEntryNotFoundError"] as exc:
        why = "the Hugging Face hub could not be reached (no network, proxy or firewall?)"
        raise WeightsError(
            f"weights {what} are not in the local cache ({cache}) and {why}. "
            f"Fix: connect and run `maskd fetch {preset.name if preset else repo_id}`, "
            f"or {hint}"
        ) from exc
    except errors["GatedRepoError"] as exc:
        raise WeightsError(
            f"{repo_id} is a gated repository: accept its licence at https://huggingface.co/{repo_id} "
            f"and log in (`hf auth login` or HF_TOKEN), then retry; or {hint}"
        ) from exc
    except errors["RepositoryNotFoundError"] as exc:
        raise WeightsError(
            f"Hugging Face repository {repo_id!r} does not exist (or needs a login). "
            "Check the name; known presets: " + ", ".join(PRESETS)
        ) from exc
    except errors["EntryNotFoundError"] as exc:
        raise WeightsError(
            f"{repo_id} has no file {filename!r}; pass the weights file directly with "
            "--weights FILE --variant NAME"
        ) from exc
    except (errors["HfHubHTTPError"], OSError, ValueError) as exc:
        raise WeightsError(f"could not download {what}: {_short(exc)}. Fix: retry later, or {hint}") from exc
    except Exception as exc:  # network libraries raise their own connection errors
        if type(exc).__module__.split(".")[0] in ("httpx", "httpcore", "requests", "urllib3"):
            raise WeightsError(
                f"could not reach the Hugging Face hub for {what}: {_short(exc)}. "
                f"Fix: check the connection, or {hint}"
            ) from exc
        raise


def cached_path(repo_id: str, filename: str = "model.safetensors") -> Path | None:
    """The cached file if it has been downloaded before (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    found = try_to_load_from_cache(repo_id, filename)
    return Path(found) if isinstance(found, str) and os.path.exists(found) else None


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids the network (read now, as huggingface_hub reads it at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_endpoint() -> str:
    """The Hugging Face endpoint in use: ``HF_ENDPOINT`` as it is set now, else huggingface_hub's."""
    endpoint = os.environ.get("HF_ENDPOINT")
    if not endpoint:
        try:
            from huggingface_hub import constants

            endpoint = constants.ENDPOINT
        except Exception:  # pragma: no cover - a dependency
            endpoint = None
    return (endpoint or "https://huggingface.co").rstrip("/")


def hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why the hub cannot be used now, phrased to follow "and …" (None: it can, as far as is known).

    The one reachability check of maskd (``maskd fetch``, loading a preset, the installer).
    ``HF_HUB_OFFLINE`` set: no network at all. Otherwise one quick TCP connect to the endpoint:
    huggingface_hub retries an unreachable host for about 25 s, a direct check fails at once.
    Behind an HTTP(S) proxy a direct connection proves nothing, so the check is skipped there.
    """
    import socket
    from urllib.parse import urlsplit

    if hub_offline():
        return "HF_HUB_OFFLINE is set"
    proxies = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
    if any(os.environ.get(v) for v in proxies):
        return None
    parts = urlsplit(hub_endpoint())
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"the Hugging Face hub ({parts.hostname}:{port}) cannot be reached: {exc.strerror or exc}"


def _hub_errors() -> dict:
    import huggingface_hub

    modules = [getattr(huggingface_hub, "errors", None), getattr(huggingface_hub, "utils", None)]
    names = [
        "GatedRepoError",
        "RepositoryNotFoundError",
        "EntryNotFoundError",
        "LocalEntryNotFoundError",
        "HfHubHTTPError",
    ]

    class _Never(Exception):
        pass

    found = {}
    for name in names:
        found[name] = next((getattr(m, name) for m in modules if m is not None and hasattr(m, name)), _Never)
    return found


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _preset_from_path(path: Path) -> Preset | None:
    """A Hugging Face cache snapshot knows its repo: .../models--Owner--Name/snapshots/<rev>/."""
    for part in path.resolve().parts:
        m = re.fullmatch(r"models--([^/]+?)--(.+)", part)
        if m and is_preset(f"{m.group(1)}/{m.group(2)}"):
            return resolve_preset(f"{m.group(1)}/{m.group(2)}")
    return None


def _file_in_dir(directory: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).is_file():
            return directory / name
    candidates = sorted(directory.glob("*.safetensors")) + sorted(
        p for s in TORCH_SUFFIXES for p in directory.glob("*" + s)
    )
    if not candidates:
        raise WeightsError(
            f"no weights file (model.safetensors, *.safetensors or *.pth) in directory "
            f"{directory}. Fix: point --weights at the snapshot folder that holds "
            "model.safetensors, or at the file itself"
        )
    return candidates[0]


def locate(source: str, variant: str | None = None) -> Located:
    """Where the weights for ``source`` are (downloading a preset if needed)."""
    vpreset = resolve_preset(variant) if variant else None
    source = str(source).strip()
    path = Path(source).expanduser()
    # a bare preset name is the preset, even if a folder of that name happens to be here
    bare_preset = is_preset(source) and "/" not in source and os.sep not in source
    if not bare_preset and path.exists():
        if path.is_dir():
            file = _file_in_dir(path)
            preset = vpreset or _preset_from_path(path)
            return Located(file, preset, vpreset is not None, str(file))
        return Located(path, vpreset or _preset_from_path(path), vpreset is not None, str(path))
    looks_like_path = (
        (os.sep in source and not re.fullmatch(r"[\w.-]+/[\w.-]+", source))
        or source.lower().endswith((".safetensors",) + TORCH_SUFFIXES)
        or source.startswith((".", "~"))
    )
    if looks_like_path:
        preset = vpreset or resolve_preset("general")
        raise WeightsError(
            f"weights file {path} does not exist. Fix: check the path, use a preset name "
            f"({', '.join(PRESETS)}), "
            f"or {_fix_download(preset, preset.repo_id, preset.filename)}"
        )
    if is_preset(source):
        preset = resolve_preset(source)
        file = download(preset.repo_id, preset.filename, preset)
        return Located(
            file, vpreset or preset, vpreset is not None, f"preset '{preset.name}' ({preset.repo_id}, {file})"
        )
    if re.fullmatch(r"[\w.-]+/[\w.-]+", source):
        file = download(source, "model.safetensors", vpreset)
        return Located(file, vpreset, vpreset is not None, f"{source} ({file})")
    raise WeightsError(
        f"{source!r} is neither a weights file, a directory, a preset ({', '.join(PRESETS)}) "
        "nor a Hugging Face repo id (owner/name)"
    )


def _strip_prefixes(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        out[key] = value
    return out


def read_state_dict(path: Path | str) -> dict:
    """Tensors by name from a .safetensors or torch file; a clear ``WeightsError`` if unreadable."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist or is not a file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
    is_torch = path.suffix.lower() in TORCH_SUFFIXES or head[:2] == b"PK" or head[:1] == b"\x80"
    if size == 0:
        raise WeightsError(
            f"weights file {path} is empty (an interrupted download?). Fix: delete it and "
            "download it again (`maskd fetch PRESET`)"
        )
    if is_torch:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsError(
                f"cannot read {path} as a PyTorch weights file ({_short(exc)}): it is corrupt, truncated, or "
                "holds more than plain tensors (only weights_only files are read; no code is run). "
                "Fix: download it again, or use the model.safetensors of the Hugging Face repo"
            ) from exc
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise WeightsError(f"{path} does not hold a state dict of tensors; is it a BiRefNet checkpoint?")
    else:
        try:
            from safetensors.torch import load_file

            state = load_file(str(path))
        except Exception as exc:
            raise WeightsError(
                f"cannot read {path} as safetensors ({_short(exc)}): the file is corrupt or truncated "
                f"({size:,} bytes). Fix: delete it and download it again (`maskd fetch PRESET`, "
                "or the model.safetensors of the preset's Hugging Face repo)"
            ) from exc
    return _strip_prefixes(state)


def detect_backbone(state: dict) -> str | None:
    """Swin variant from tensor shapes: embedding width and the depth of stage 3."""
    embed = state.get("bb.patch_embed.proj.weight")
    if embed is None or embed.dim() != 4:
        return None
    blocks = {int(m.group(1)) for k in state for m in [re.match(r"bb\.layers\.2\.blocks\.(\d+)\.", k)] if m}
    depth = max(blocks) + 1 if blocks else 0
    width = int(embed.shape[0])
    return {(96, 6): "swin_v1_t", (96, 18): "swin_v1_s", (128, 18): "swin_v1_b", (192, 18): "swin_v1_l"}.get(
        (width, depth)
    )


def _custom_preset(backbone: str) -> Preset:
    return Preset(
        f"custom-{backbone}",
        "",
        "",
        backbone,
        (1024, 1024),
        "c-hg-wg",
        "no official release has this backbone: the current official code's order is assumed",
        "unknown (your own weights)",
        "guessed from the tensor shapes",
    )


def _describe_backbone(backbone: str | None) -> str:
    from maskd.core.swin import BACKBONE_NAMES

    if backbone is None:
        return "no BiRefNet Swin backbone"
    names = [p.name for p in presets_with_backbone(backbone)]
    return f"{BACKBONE_NAMES[backbone]}" + (f" (presets: {', '.join(names)})" if names else "")


def match_preset(state: dict, located: Located) -> Preset:
    """The preset whose architecture to build: the known one, else guessed from the shapes."""
    if located.preset is not None:
        return located.preset
    backbone = detect_backbone(state)
    if backbone is None:
        sample = ", ".join(list(state)[:3])
        raise WeightsError(
            f"{located.path} is not a BiRefNet checkpoint: it has no Swin backbone tensors "
            f"('bb.patch_embed.proj.weight'; first keys: {sample}). "
            "Fix: use the model.safetensors of a BiRefNet repo "
            f"({', '.join(p.repo_id for p in PRESETS.values())})"
        )
    known = presets_with_backbone(backbone)
    preferred = [p for p in known if p.name in ("general", "lite")]
    return (preferred or known)[0] if known else _custom_preset(backbone)


def fill_derivable(state: dict, model) -> list[str]:
    """Add buffers some exports leave out and that hold no learned value: Swin's relative position
    index (a function of the window size) and BatchNorm's ``num_batches_tracked`` (unused in eval).
    Only done when the file has the learned tensors next to them. Returns the keys added."""
    import torch
    from maskd.core.swin import relative_position_index

    added = []
    for key, ref in model.state_dict().items():
        if key in state:
            continue
        stem, leaf = key.rsplit(".", 1)
        if leaf == "relative_position_index" and f"{stem}.relative_position_bias_table" in state:
            state[key] = relative_position_index(int(round(ref.shape[0] ** 0.5)))
            added.append(key)
        elif leaf == "num_batches_tracked" and f"{stem}.running_mean" in state:
            state[key] = torch.zeros((), dtype=torch.long)
            added.append(key)
    return added


def check_compatible(state: dict, model, located: Located, preset: Preset) -> None:
    """Every tensor the architecture expects is there with the right shape, and nothing else."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [k for k in expected if k in got and got[k] != expected[k]]
    if not (missing or unexpected or wrong):
        return
    from maskd.core.swin import BACKBONE_NAMES

    detected = detect_backbone(state)
    details = []
    if missing:
        details.append(f"{len(missing)} tensors missing (e.g. {', '.join(missing[:2])})")
    if unexpected:
        details.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:2])})")
    if wrong:
        k = wrong[0]
        details.append(
            f"{len(wrong)} with other shapes (e.g. {k}: file {list(got[k])}, expected {list(expected[k])})"
        )
    if detected and detected != preset.backbone:
        closest = [p for p in presets_with_backbone(detected)]
        fix = (
            f"if the file is a {closest[0].name} checkpoint, pass --variant {closest[0].name}"
            if closest
            else f"this backbone has no preset; pass a {BACKBONE_NAMES[preset.backbone]} checkpoint"
        )
        fix += f"; the '{preset.name}' weights are at {preset.url}" if preset.repo_id else ""
    elif detected is None:
        fix = f"use the model.safetensors of a BiRefNet release, e.g. {preset.url or PRESETS['general'].url}"
    else:
        fix = "the file may be from a different BiRefNet version or a partial download; download it again" + (
            f" from {preset.url}" if preset.repo_id else ""
        )
    how = "from --variant" if located.from_variant else "for this source"
    raise WeightsError(
        f"weights {located.path} do not match the '{preset.name}' architecture {how} "
        f"({BACKBONE_NAMES[preset.backbone]}): {'; '.join(details)}. The file looks like "
        f"{_describe_backbone(detected)}. Fix: {fix}"
    )
