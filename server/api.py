"""maskd's Python face: ``maskd.new_session``, ``maskd.remove``, ``maskd.refine``.

    import maskd
    cut = maskd.remove("photo.jpg")                         # RGBA numpy array, decontaminated colours
    session = maskd.new_session("lite")                     # open once, reuse for many images
    mask = maskd.remove(pil_image, session=session, output="alpha")      # PIL in → PIL out
    card = maskd.remove(array, session=session, background="white", shadow="soft", canvas="1:1")
    alpha = maskd.refine(array, rough_mask)                 # no model at all

A session is either a client of a running daemon (the model already loaded, shared with GIMP,
Krita and the CLI) or the model loaded in this process; ``daemon="auto"`` (the default) takes the
daemon when one runs. The options are the CLI's (``server.options``: the same names, choices and
daemon request), so ``maskd remove --mode mask`` and ``maskd.remove(output="alpha")`` ask the
model for the same thing — the alpha alone, no colours.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from maskd.core.errors import InputError, MaskdError
from maskd.server import options

OUTPUTS = ("rgba", "alpha", "finished")
FINISH_FIELDS = ("background", "shadow", "crop", "margin", "canvas", "scale", "align", "preset")


class Session:
    """An opened model: ``Session(client=DaemonClient)`` or ``Session(matte=MatteSession)``.
    Use ``maskd.new_session``; close it (or use ``with``) to let go of the connection or the model."""

    def __init__(self, *, client=None, matte=None, started: bool = False):
        if (client is None) == (matte is None):
            raise ValueError("a Session wraps either a daemon client or a matte session")
        self.client, self.matte, self._started = client, matte, started

    @property
    def uses_daemon(self) -> bool:
        return self.client is not None

    def describe(self) -> dict:
        if self.client is not None:
            return dict(self.client.status().get("model") or {}, daemon=True)
        return dict(self.matte.describe(), daemon=False)

    def _device(self) -> str:
        device = str(getattr(self.matte, "device", "cpu"))
        return device if device.startswith(("cuda", "mps")) else "cpu"

    def cutout(self, image: np.ndarray, opts: dict, *, colours: bool):
        """(alpha float32 H×W, colours float32 H×W×3 or None) for ``image`` as read."""
        if self.client is not None:
            answer = self.client.segment(image, opts, foreground=colours)
            return answer.alpha, answer.foreground
        from maskd.core import pipeline

        result = pipeline.cutout(image, self.matte.matte, _cutout_options(opts, self._device()))
        return result.alpha, result.foreground if colours else None

    def refine(self, image: np.ndarray, mask: np.ndarray, opts: dict, *, colours: bool):
        if self.client is not None:
            answer = self.client.refine(image, mask, opts, foreground=colours)
            return answer.alpha, answer.foreground
        return _refine_here(image, mask, opts, colours, self._device())

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        elif hasattr(self.matte, "unload"):
            self.matte.unload()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _cutout_options(opts: dict, device: str):
    from maskd.core import pipeline

    return pipeline.CutoutOptions(**opts, device=device).validate()


def _refine_here(image, mask, opts, colours, device):
    from maskd.core import pipeline

    result = pipeline.refine(image, mask, _cutout_options(opts, device))
    return result.alpha, result.foreground if colours else None


def new_session(
    model: str | None = None,
    *,
    daemon: bool | str = "auto",
    device: str | None = None,
    weights: str | os.PathLike | None = None,
    variant: str | None = None,
    resolution: int | None = None,
    connection_file: str | os.PathLike | None = None,
) -> Session:
    """Open a model once for many images.

    ``daemon="auto"``: the running daemon if there is one (``model``/``weights`` are then what it
    serves), else the model in this process. ``daemon=True``: the running daemon or an error.
    ``daemon=False``: always in this process. ``model``: a preset (``general``, ``lite``, …; default:
    the installed one), ``weights``: a local file (``variant`` names its architecture), ``device``:
    auto, cpu, cuda, cuda:N, mps."""
    if daemon not in ("auto", True, False):
        raise InputError(f"daemon={daemon!r}: give 'auto', True or False")
    if daemon is not False:
        from maskd.plugins import maskd_client as mc
        from maskd.server.client import DaemonClient

        try:
            return Session(client=DaemonClient.connect(connection_file, timeout=60.0))
        except mc.MaskdClientError as exc:
            if daemon is True or exc.code != "unavailable":
                raise MaskdError(f"cannot use the maskd daemon: {exc}") from None
    from maskd.core.session import SessionSpec, open_session

    if model is None and weights is None:
        model, weights, variant, device = _installed(variant, device)
    spec = SessionSpec(
        model=model,
        weights=str(weights) if weights is not None else None,
        variant=variant,
        device=device or "auto",
        resolution=resolution,
    )
    return Session(matte=open_session(spec))


def _installed(variant, device):
    """(model, weights, variant, device) the installer recorded (``maskd serve``'s default)."""
    from maskd.installers.defaults import installed_serve_args

    recorded = installed_serve_args()
    given = dict(zip(recorded[::2], recorded[1::2]))
    return (
        given.get("--model"),
        given.get("--weights"),
        variant or given.get("--variant"),
        device or given.get("--device"),
    )


# ---------------------------------------------------------------------------------- images


@dataclass
class _Picture:
    """The caller's image as an array, and how to hand a result back in the caller's kind."""

    array: np.ndarray
    kind: str  # "array" | "pil" | "path"

    def give_back(self, result: np.ndarray, like_input: bool = True):
        """float32 [0, 1] H×W×C (or H×W) → the input's kind and depth (PIL: 8-bit)."""
        from maskd.core import imageio

        if result.ndim == 3 and result.shape[2] == 1:
            result = result[..., 0]
        if self.kind == "pil":
            from PIL import Image

            return Image.fromarray(imageio.to_uint8(result))
        dtype = self.array.dtype
        if dtype == np.uint16:
            return imageio.to_uint16(result)
        if dtype == np.uint8:
            return imageio.to_uint8(result)
        return np.asarray(result, np.float32)


def _picture(image) -> _Picture:
    if isinstance(image, (str, os.PathLike)):
        from maskd.core import imageio

        return _Picture(imageio.read_image(Path(image)), "path")
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3):
            raise InputError(f"an image array is H×W or H×W×C, not {image.shape}")
        return _Picture(image, "array")
    if hasattr(image, "mode") and hasattr(image, "size"):  # a PIL image, without importing PIL
        if image.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
            image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
        return _Picture(np.asarray(image), "pil")
    raise InputError(
        f"cannot read an image from {type(image).__name__}: give a numpy array, a PIL image or a path"
    )


def _settings(quality, refine, threshold, grow, feather, fill_holes, invert, finish: dict) -> SimpleNamespace:
    """The CLI's argument namespace for these keyword arguments (one set of option definitions)."""
    if str(quality) not in options.values(options.Quality):
        raise InputError(f"quality={quality!r} is not one of {', '.join(options.values(options.Quality))}")
    return SimpleNamespace(
        quality=str(quality),
        no_refine=not refine,
        threshold=threshold,
        grow=int(grow),
        feather=float(feather),
        fill_holes=bool(fill_holes),
        invert=bool(invert),
        mode=options.Mode.CUTOUT.value,
        finish_alpha=finish.pop("keep_alpha", None),
        sidecar=False,
        save_layers=False,
        **{name: (str(finish[name]) if finish.get(name) is not None else None) for name in FINISH_FIELDS},
    )


def _output(output: str | None, finish: dict) -> str:
    if output is None:
        return "finished" if any(finish.get(n) is not None for n in FINISH_FIELDS) else "rgba"
    if output not in OUTPUTS:
        raise InputError(f"output={output!r} is not one of {', '.join(OUTPUTS)}")
    if output != "finished" and any(finish.get(n) is not None for n in FINISH_FIELDS):
        raise InputError(
            "background, shadow, crop, margin, canvas, scale, align and preset need output='finished'"
        )
    return output


def _result(pic: _Picture, args, output: str, alpha, colours, decontaminate: bool):
    from maskd.core import imageio

    if output == "alpha":
        return pic.give_back(alpha)
    if colours is None or not decontaminate:
        colours = imageio.colour_float(pic.array)
    if output == "rgba":
        return pic.give_back(np.concatenate([colours, alpha[..., None]], axis=2))
    from maskd.core import compose
    from maskd.server import finishing

    opts = finishing.options(args) or compose.FinishOptions(alpha=None)
    return pic.give_back(compose.finish(pic.array, alpha, colours, opts).image)


def remove(
    image,
    *,
    session: Session | None = None,
    output: str | None = None,
    decontaminate: bool = True,
    quality: str = "default",
    refine: bool = True,
    threshold: float | None = None,
    grow: int = 0,
    feather: float = 0.0,
    fill_holes: bool = False,
    invert: bool = False,
    **finish,
):
    """Remove the background of ``image`` (numpy array, PIL image or path).

    ``output``: ``"rgba"`` (colours + alpha; default), ``"alpha"`` (the mask alone, H×W) or
    ``"finished"`` (the default when any finishing option is given): ``background``, ``shadow``,
    ``crop``, ``margin``, ``canvas``, ``scale``, ``align``, ``preset`` and ``keep_alpha`` take the
    CLI's values (``background="white"``, ``shadow="soft"``, ``canvas="2000x2000"``).
    ``decontaminate=False`` keeps the photo's own colours at soft edges (``--mode rgba``).
    Returns the input's kind: a PIL image for a PIL image, else a numpy array of the input's
    dtype (uint8/uint16/float32; a path gives what ``imageio.read_image`` reads).
    Without ``session`` one is opened for this call (``new_session()``) and closed after."""
    unknown = set(finish) - set(FINISH_FIELDS) - {"keep_alpha"}
    if unknown:
        raise TypeError(f"remove() got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    output = _output(output, finish)
    args = _settings(quality, refine, threshold, grow, feather, fill_holes, invert, dict(finish))
    from maskd.server import finishing

    finishing.options(args)  # a bad finishing option fails before the model runs
    pic = _picture(image)
    colours = output != "alpha" and decontaminate
    opts = options.matte_options(args, colours=colours)
    own = session is None
    session = session or new_session()
    try:
        alpha, fg = session.cutout(pic.array, opts, colours=colours)
    finally:
        if own:
            session.close()
    return _result(pic, args, output, alpha, fg, decontaminate)


def refine(
    image,
    mask,
    *,
    session: Session | None = None,
    output: str = "alpha",
    decontaminate: bool = True,
    quality: str = "default",
    refine: bool = True,
    threshold: float | None = None,
    grow: int = 0,
    feather: float = 0.0,
    fill_holes: bool = False,
    invert: bool = False,
    **finish,
):
    """Refine a rough ``mask`` (any size, white = keep) to a full-resolution alpha for ``image`` —
    no model (``maskd refine``). ``output`` and the options as in ``remove``; with a daemon
    ``session`` the daemon does the work (on its GPU, if it has one)."""
    unknown = set(finish) - set(FINISH_FIELDS) - {"keep_alpha"}
    if unknown:
        raise TypeError(f"refine() got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    output = _output(output, finish)
    args = _settings(quality, refine, threshold, grow, feather, fill_holes, invert, dict(finish))
    from maskd.core import imageio
    from maskd.server import finishing
    from maskd.server.commands.refine import refine_device

    finishing.options(args)
    pic = _picture(image)
    m = imageio.mask_float(_picture(mask).array)  # as `maskd refine --mask` reads a file
    colours = output != "alpha" and decontaminate
    opts = options.matte_options(args, colours=colours)
    if session is not None:
        alpha, fg = session.refine(pic.array, m, opts, colours=colours)
    else:
        alpha, fg = _refine_here(pic.array, m, opts, colours, refine_device("auto"))
    return _result(pic, args, output, alpha, fg, decontaminate)
