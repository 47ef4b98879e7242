#!/usr/bin/env python3
"""GIMP 3 plug-in: Layer ▸ Transparency ▸ Remove Background… (PDB ``plug-in-maskd-remove-background``).

The plug-in stays thin: it reads the active layer's pixels in a format the maskd daemon understands,
sends them through the shared standard-library client (``maskd_client.py``, installed next to this
file), and turns the full-resolution alpha the daemon returns into one of four outputs — a layer
mask (default, non-destructive), the layer's alpha channel, a new cut-out layer or a selection —
optionally with product-photo finishing layers: a shadow layer under the layer (the daemon's
generated shadow as its mask) and a plain background layer at the bottom. Nothing is flattened.
Everything the daemon can refuse happens before the image is touched, and every change is made
inside one undo group, so a failure leaves the image as it was and one Ctrl+Z undoes a success.

Imports: standard library, GObject introspection (Gimp, GimpUi, Gegl, GLib, GObject) and
``maskd_client`` only — GIMP's bundled Python on Windows/macOS/Flatpak has nothing else.
"""

import os
import sys
import time

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GLib, GObject  # noqa: E402

HERE = os.path.dirname(os.path.realpath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import maskd_client  # noqa: E402

PROC_NAME = "plug-in-maskd-remove-background"
TITLE = "Remove Background"

L = maskd_client.LABELS  # the words both plugins show (one table, in the shared client)

# (nick, label, help) — the nick is what scripts pass; the order is the dialog's order.
OUTPUTS = [
    ("mask", L["output.mask.gimp"], "Add the result as a layer mask you can keep painting on"),
    ("alpha", L["output.apply"], "Multiply the layer's alpha channel by the result (destructive)"),
    ("layer", L["output.layer"], "Add a new layer above with the cut-out"),
    ("selection", L["output.selection"], "Replace the selection with the result"),
]
EXISTING_MASK = [
    (
        "intersect",
        L["existing_mask.intersect"],
        "Keep what the old mask hides: nothing painted out comes back",
    ),
    ("replace", L["existing_mask.replace"], "Discard the old mask and use the new one"),
]
QUALITIES = [
    ("default", L["quality.default"], "Balanced edge refinement"),
    ("fast", L["quality.fast"], "Quicker, simpler edges"),
    ("quality", L["quality.quality"], "Slower, the finest edges"),
]
# The styles of `maskd remove --shadow` (core/shadow.py, docs/finishing.md).
SHADOW_STYLES = [
    ("soft", L["shadow.soft"], "Short diffuse floor shadow in front of the base, with a contact shadow"),
    ("contact", L["shadow.contact"], "Only the dark band where the object touches its floor"),
    ("drop", L["shadow.drop"], "Longer shadow falling back-right (window-light look)"),
    ("front", L["shadow.front"], "Shadow falling towards the viewer"),
]


# The procedure's arguments in the dialog's and scripts' order: (type, name, label, help, default,
# choices). GIMP remembers the last values by name (and scripts pass them by name), so a name, its
# type and its default are an interface: renaming one silently drops what users chose.
ARGUMENTS = [
    ("choice", "output", L["output"], "What to make from the matte", "mask", OUTPUTS),
    (
        "choice",
        "existing-mask",
        L["existing_mask"],
        "What the mask output does with a mask the layer already has",
        "intersect",
        EXISTING_MASK,
    ),
    (
        "boolean",
        "refine",
        L["refine"],
        "Refine the model's matte at full resolution (hair, soft edges)",
        True,
        None,
    ),
    (
        "boolean",
        "decontaminate",
        L["decontaminate"],
        "Remove the old background's colour from edge pixels (cut-out layer)",
        True,
        None,
    ),
    ("choice", "quality", L["quality"], "Edge refinement: speed or detail", "default", QUALITIES),
    (
        "string",
        "model",
        L["model"],
        "Installed model preset the engine should serve (empty: whichever it serves; a "
        "name that is not installed runs with the served model)",
        "",
        None,
    ),
    (
        "boolean",
        "use-selection",
        L["use_selection"],
        "With a selection, process only its bounding box (the rest is masked out)",
        True,
        None,
    ),
    (
        "boolean",
        "add-shadow",
        L["shadow"],
        "Add a layer under this one with a shadow generated from the matte "
        "(its colour, and the shadow as its layer mask)",
        False,
        None,
    ),
    (
        "choice",
        "shadow-style",
        L["shadow_style"],
        "The shadow's style (as maskd remove --shadow)",
        "soft",
        SHADOW_STYLES,
    ),
    (
        "string",
        "shadow-settings",
        "Shadow settings (scripts)",
        "Optional overrides in maskd remove --shadow syntax, e.g. "
        "direction=135,distance=30%,softness=0.1,opacity=0.4,color=#302820",
        "",
        None,
    ),
    (
        "color",
        "shadow-color",
        L["shadow_color"],
        "The shadow layer's colour (black: the style's own)",
        "#000000",
        None,
    ),
    (
        "boolean",
        "add-background",
        L["background"],
        "Add a layer the canvas's size filled with the background colour at the bottom of the layer stack",
        False,
        None,
    ),
    ("color", "background-color", L["background_color"], "The background layer's colour", "#ffffff", None),
]


def _choice(entries):
    choice = Gimp.Choice.new()
    for index, (nick, label, help_text) in enumerate(entries):
        choice.add(nick, index, label, help_text)
    return choice


def _declare_arguments(proc):
    """Declare ``ARGUMENTS`` on ``proc``, in order (colours without alpha, as GeglColors)."""
    flags = GObject.ParamFlags.READWRITE
    for kind, name, label, help_text, default, choices in ARGUMENTS:
        if kind == "choice":
            proc.add_choice_argument(name, label, help_text, _choice(choices), default, flags)
        elif kind == "boolean":
            proc.add_boolean_argument(name, label, help_text, default, flags)
        elif kind == "string":
            proc.add_string_argument(name, label, help_text, default, flags)
        else:
            proc.add_color_argument(name, label, help_text, False, Gegl.Color.new(default), flags)


class PluginError(Exception):
    """A failure shown to the user as one clear message (the image has not been changed)."""


# ----------------------------------------------------------------------------------------- pixel formats


class PixelFormat:
    """How this image's pixels travel to the daemon and how the matte comes back.

    Integer precisions travel as sRGB-encoded ("R'G'B'A") samples — 8-bit as u8, 16/32-bit as u16 —
    and float precisions as 32-bit float in the image's own transfer (linear "RGBA float" or
    perceptual "R'G'B'A float"), declared to the daemon with ``transfer``. The matte is written back
    through a *linear* gray format ("Y u8", "Y u16", "Y float"): layer masks are stored linear, and
    writing alpha through "Y'" would apply the sRGB curve and thin every soft edge.
    """

    def __init__(self, image):
        precision = image.get_precision()
        name = precision.value_name.upper()  # e.g. GIMP_PRECISION_U16_NON_LINEAR
        self.precision_name = name.replace("GIMP_PRECISION_", "").lower()
        self.linear = name.endswith("_LINEAR") and not name.endswith("NON_LINEAR")
        self.gray = image.get_base_type() == Gimp.ImageBaseType.GRAY
        if "_U8_" in name:
            self.dtype, babl_type, self.transfer, trc = "u8", "u8", "srgb", "'"
        elif "_U16_" in name or "_U32_" in name:
            self.dtype, babl_type, self.transfer, trc = "u16", "u16", "srgb", "'"
        else:  # half, float, double
            self.dtype, babl_type = "f32", "float"
            self.transfer, trc = ("linear", "") if self.linear else ("srgb", "'")
        self.alpha_dtype = self.dtype
        self.sample_bytes = maskd_client.DTYPE_BYTES[self.dtype]
        if self.gray:
            self.layout, self.channels = "GRAYA", 2
            self.pixels = f"Y{trc}A {babl_type}"
        else:
            self.layout, self.channels = "RGBA", 4
            self.pixels = f"R{trc}G{trc}B{trc}A {babl_type}"
        self.mask = "Y " + babl_type  # linear, on purpose (see the class docstring)


def with_colours(pixels, fmt, colours, colour_dtype):
    """``pixels`` (the layer's samples, alpha included) with their colour replaced by ``colours``
    (W×H×3 samples, e.g. the daemon's decontaminated foreground); C-speed extended-slice copies."""
    import array

    if colour_dtype != fmt.dtype:
        raise PluginError(
            f"maskd returned foreground colours as {colour_dtype}, not {fmt.dtype}; "
            "update maskd and the plug-in together (`maskd install-plugins`)."
        )
    typecode = {"u8": "B", "u16": "H", "f32": "f"}[fmt.dtype]
    out, fg = array.array(typecode), array.array(typecode)
    out.frombytes(pixels)
    fg.frombytes(colours)
    step = fmt.channels
    if fmt.gray:  # the daemon's foreground is RGB; a gray layer takes its (equal) first channel
        out[0::step] = fg[0::3]
    else:
        for c in range(3):
            out[c::step] = fg[c::3]
    return out.tobytes()


# ----------------------------------------------------------------------------------------- geometry


def _offsets(drawable):
    """``get_offsets`` returns (ok, x, y) or (x, y) depending on the binding version."""
    result = drawable.get_offsets()
    if len(result) == 3:
        return int(result[1]), int(result[2])
    return int(result[0]), int(result[1])


def selection_roi(image, layer, use_selection):
    """The part of the layer to process, in layer coordinates: (x, y, w, h), or None for all of it."""
    if not use_selection or Gimp.Selection.is_empty(image):
        return None
    result = layer.mask_intersect()
    ok, x, y, w, h = result if len(result) == 5 else (True, *result)
    if not ok or w <= 0 or h <= 0:
        raise PluginError(
            "The selection does not overlap the layer. Select part of the layer, or "
            "Select ▸ None to process the whole layer."
        )
    if (x, y, w, h) == (0, 0, layer.get_width(), layer.get_height()):
        return None
    return int(x), int(y), int(w), int(h)


def target_layer(image, drawables):
    """The one layer to process, or a PluginError saying why this drawable cannot be processed."""
    if len(drawables) != 1:
        raise PluginError(
            f"{TITLE} works on exactly one layer; {len(drawables)} are selected. "
            "Select a single layer in the Layers dialog."
        )
    drawable = drawables[0]
    if isinstance(drawable, Gimp.LayerMask):  # the mask is being edited: work on its layer
        drawable = Gimp.Layer.from_mask(drawable)
    if not isinstance(drawable, Gimp.Layer):
        raise PluginError(f"“{drawable.get_name()}” is a channel, not a layer. Select a layer.")
    if image.get_base_type() == Gimp.ImageBaseType.INDEXED:
        raise PluginError(
            "Indexed images are not supported: convert the image with "
            "Image ▸ Mode ▸ RGB first (the mask needs more than a palette)."
        )
    if drawable.is_group():
        raise PluginError(
            f"“{drawable.get_name()}” is a layer group. Select one of its layers, or merge "
            "the group (Layer ▸ Merge Layer Group) first."
        )
    if drawable.is_text_layer():
        raise PluginError(
            f"“{drawable.get_name()}” is a text layer. Turn it into pixels first "
            "(Layer ▸ Discard Text Information)."
        )
    return drawable


# ----------------------------------------------------------------------------------------- the work


class Progress:
    """GIMP's progress bar with stage text; the daemon's stages map onto the middle of the bar."""

    def __init__(self):
        Gimp.progress_init(TITLE + "…")
        self.stage = None
        self.stages = []  # every stage shown, in order (the timings file records them)
        self.note = ""  # told to the user after a run that worked (e.g. a model fallback)

    def set(self, stage, fraction):
        if stage != self.stage:
            self.stages.append(maskd_client.stage_text(stage))
            Gimp.progress_set_text(f"{TITLE}: {maskd_client.stage_text(stage)}…")
            self.stage = stage
        Gimp.progress_update(max(0.0, min(1.0, fraction)))

    def daemon(self, stage, fraction):
        """Progress reported by the daemon (queued / loading model / model / refine …)."""
        if str(stage).lower().startswith(("starting engine", "loading model", "queued", "waiting")):
            self.set(stage, 0.05)
            Gimp.progress_pulse()
        else:
            self.set(stage, 0.15 + 0.75 * max(0.0, min(1.0, fraction)))


def read_pixels(layer, fmt, roi):
    x, y, w, h = roi or (0, 0, layer.get_width(), layer.get_height())
    buffer = layer.get_buffer()
    data = buffer.get(Gegl.Rectangle.new(x, y, w, h), 1.0, fmt.pixels, Gegl.AbyssPolicy.CLAMP)
    return bytes(data), (x, y, w, h)


def shadow_region(image, layer):
    """The layer's rectangle joined with the canvas, in layer coordinates: a cut-out layer's shadow
    falls outside its own tight bounds (under and beside the object), so with a shadow the daemon
    sees the layer on the transparent canvas around it."""
    ox, oy = _offsets(layer)
    w, h = layer.get_width(), layer.get_height()
    x0, y0 = min(0, -ox), min(0, -oy)
    x1, y1 = max(w, image.get_width() - ox), max(h, image.get_height() - oy)
    return x0, y0, x1 - x0, y1 - y0


def ask_daemon(pixels, rect, fmt, options, want_foreground, model, progress, shadow=None):
    """Segment ``pixels`` with the daemon (starting it if the config allows); returns the Result."""
    try:
        config = maskd_client.load_plugin_config(HERE)
        client = maskd_client.ensure_daemon(config, progress=progress.daemon)
    except maskd_client.MaskdClientError as exc:
        raise PluginError(_daemon_message(exc)) from None
    try:
        choose_model(client, model, progress)
        _x, _y, w, h = rect
        progress.set("sending pixels", 0.1)
        opts = dict(options)
        return client.segment(
            pixels,
            w,
            h,
            layout=fmt.layout,
            dtype=fmt.dtype,
            transfer=fmt.transfer,
            options=opts,
            alpha_dtype=fmt.alpha_dtype,
            foreground=want_foreground,
            progress=progress.daemon,
            shadow=shadow,
        )
    except maskd_client.MaskdClientError as exc:
        raise PluginError(_daemon_message(exc)) from None
    finally:
        client.close()


def choose_model(client, model, progress):
    """Make the daemon serve ``model`` when that preset is installed (a switch with "Loading
    model" progress). A remembered name that is not installed (from an older plug-in, typed by
    hand) runs with the served model, and GIMP shows a note: a run never fails for it."""
    if not model:
        return
    models = client.models()
    served = models.get("served") or ""
    installed = [m.get("name") for m in models.get("installed") or [] if isinstance(m, dict)]
    if model == served:
        return
    if model in installed:
        client.switch_model(model, progress=progress.daemon)
        return
    progress.note = maskd_client.MESSAGES["model_fallback"].format(wanted=model, served=served or "?")


def engine_models(config_folder):
    """(installed preset names, served name) from a running daemon, or ([], "") when none runs:
    the dialog never starts the engine (that waits for OK)."""
    try:
        config = maskd_client.load_plugin_config(config_folder)
        client = maskd_client.connect(config.get("connection_file") or None, timeout=3.0)
    except maskd_client.MaskdClientError:
        return [], ""
    try:
        models = client.models()
        names = [m.get("name") for m in models.get("installed") or [] if isinstance(m, dict)]
        return [n for n in names if isinstance(n, str) and n], str(models.get("served") or "")
    except maskd_client.MaskdClientError:
        return [], ""
    finally:
        client.close()


def _daemon_message(exc):
    """The client's message (written for a person) with what to do next where it helps."""
    hints = {
        "timeout": " The engine may be busy or stuck: try again, or restart it (“maskd stop”).",
        "out_of_memory": " Select a smaller part of the layer and try again.",
        "model_unavailable": " “maskd doctor” says which model files are missing.",
        "too_large": " Select a smaller part of the layer and try again.",
        "busy": " Another image is being processed; try again in a moment.",
    }
    text = exc.message[:1].upper() + exc.message[1:]
    return text + hints.get(exc.code, "")


def _write_rect(drawable, rect, fmt_name, data):
    x, y, w, h = rect
    buffer = drawable.get_buffer()
    buffer.set(Gegl.Rectangle.new(x, y, w, h), fmt_name, data)
    buffer.flush()
    drawable.update(x, y, w, h)


class TemporaryMatte:
    """The matte as a layer mask on a hidden scratch layer that has the layer's size and offsets.

    Plain channels are stored in the image's own transfer (``Y' u8`` in an 8-bit perceptual
    image), so selections and mask combinations made from one would apply the sRGB curve to the
    matte. Layer masks are stored linear, and a layer mask carries the layer's offsets, so
    ``select_item`` places it on the canvas and clips it there by itself. Used inside the undo group
    and removed again before it ends.
    """

    def __init__(self, image, layer, rect, fmt, alpha):
        w, h = layer.get_width(), layer.get_height()
        kind = Gimp.ImageType.GRAYA_IMAGE if fmt.gray else Gimp.ImageType.RGBA_IMAGE
        self.image = image
        self.selected = list(image.get_selected_layers())  # inserting a layer changes the active one
        self.layer = Gimp.Layer.new(
            image, "maskd matte (temporary)", w, h, kind, 100.0, Gimp.LayerMode.NORMAL
        )
        image.insert_layer(self.layer, None, 0)
        self.layer.set_visible(False)
        self.layer.set_offsets(*_offsets(layer))
        full = rect == (0, 0, w, h)
        self.mask = self.layer.create_mask(Gimp.AddMaskType.WHITE if full else Gimp.AddMaskType.BLACK)
        self.layer.add_mask(self.mask)
        _write_rect(self.mask, rect, fmt.mask, alpha)

    def __enter__(self):
        return self.mask

    def __exit__(self, *exc):
        self.image.remove_layer(self.layer)
        if self.selected:
            self.image.set_selected_layers(self.selected)


def add_matte_mask(image, layer, rect, fmt, alpha, existing):
    """Output "mask": a layer mask from the matte (black outside ``rect``)."""
    old = layer.get_mask()
    w, h = layer.get_width(), layer.get_height()
    if old is not None and existing == "intersect":
        with TemporaryMatte(image, layer, rect, fmt, alpha) as matte:
            old.combine_masks(matte, Gimp.ChannelOps.INTERSECT, 0, 0)
        old.update(0, 0, w, h)
        return old
    if old is not None:
        layer.remove_mask(Gimp.MaskApplyMode.DISCARD)
    full = rect == (0, 0, w, h)
    mask = layer.create_mask(Gimp.AddMaskType.WHITE if full else Gimp.AddMaskType.BLACK)
    layer.add_mask(mask)
    _write_rect(mask, rect, fmt.mask, alpha)
    return mask


def apply_to_alpha(image, layer, rect, fmt, alpha):
    """Output "alpha": the same as the mask output, applied (alpha × matte); GIMP does the maths.
    A layer that already has a mask was refused before any work (see ``remove_background``)."""
    if not layer.has_alpha():
        layer.add_alpha()
    add_matte_mask(image, layer, rect, fmt, alpha, "replace")
    layer.remove_mask(Gimp.MaskApplyMode.APPLY)


def add_cutout_layer(image, layer, rect, fmt, alpha, pixels, result):
    """Output "layer": a new layer above, colours (decontaminated when asked) with the matte as alpha."""
    x, y, w, h = rect
    off_x, off_y = _offsets(layer)
    kind = Gimp.ImageType.GRAYA_IMAGE if fmt.gray else Gimp.ImageType.RGBA_IMAGE
    new = Gimp.Layer.new(image, f"{layer.get_name()} (cut-out)", w, h, kind, 100.0, Gimp.LayerMode.NORMAL)
    parent = layer.get_parent()
    position = image.get_item_position(layer)
    image.insert_layer(new, parent, position)
    new.set_offsets(off_x + x, off_y + y)
    colours = pixels
    if result.foreground is not None:
        colours = with_colours(pixels, fmt, result.foreground, result.foreground_dtype)
    # The layer's own alpha first, then the matte as a mask applied to it: alpha = old alpha × matte
    # (what the mask output shows), whatever the sample type, with no per-pixel Python.
    _write_rect(new, (0, 0, w, h), fmt.pixels, colours)
    mask = new.create_mask(Gimp.AddMaskType.WHITE)
    new.add_mask(mask)
    _write_rect(mask, (0, 0, w, h), fmt.mask, alpha)
    new.remove_mask(Gimp.MaskApplyMode.APPLY)
    image.set_selected_layers([new])
    return new


def _fill(drawable, colour):
    """Fill ``drawable`` with ``colour`` (a Gegl.Color) without touching the user's colours."""
    Gimp.context_push()
    try:
        Gimp.context_set_foreground(colour)
        drawable.fill(Gimp.FillType.FOREGROUND)
    finally:
        Gimp.context_pop()


def _stack(image, parent):
    """The layers of ``parent`` (a group) or of the image's top level, top first."""
    return list(parent.get_children()) if parent is not None else list(image.get_layers())


def add_shadow_layer(image, layer, rect, fmt, shadow, colour, area=None):
    """Finishing: "NAME shadow" directly under ``layer`` — filled with the shadow's colour, the
    generated shadow's alpha (covering ``rect``) as its layer mask, black elsewhere. ``area`` is the
    new layer's rectangle (layer coordinates): the layer's own, or the layer joined with the canvas."""
    ax, ay, aw, ah = area or (0, 0, layer.get_width(), layer.get_height())
    kind = Gimp.ImageType.GRAYA_IMAGE if fmt.gray else Gimp.ImageType.RGBA_IMAGE
    new = Gimp.Layer.new(image, f"{layer.get_name()} shadow", aw, ah, kind, 100.0, Gimp.LayerMode.NORMAL)
    image.insert_layer(new, layer.get_parent(), image.get_item_position(layer) + 1)
    ox, oy = _offsets(layer)
    new.set_offsets(ox + ax, oy + ay)
    _fill(new, colour)
    x, y, w, h = rect
    local = (x - ax, y - ay, w, h)
    full = local == (0, 0, aw, ah)
    mask = new.create_mask(Gimp.AddMaskType.WHITE if full else Gimp.AddMaskType.BLACK)
    new.add_mask(mask)
    _write_rect(mask, local, fmt.mask, shadow)  # linear, exactly like the subject's mask
    return new


def add_background_layer(image, layer, fmt, colour):
    """Finishing: "NAME background", the canvas's size, filled with ``colour``, at the bottom of the
    stack ``layer`` is in (its group's bottom when it is inside a group)."""
    kind = Gimp.ImageType.GRAYA_IMAGE if fmt.gray else Gimp.ImageType.RGBA_IMAGE
    new = Gimp.Layer.new(
        image,
        f"{layer.get_name()} background",
        image.get_width(),
        image.get_height(),
        kind,
        100.0,
        Gimp.LayerMode.NORMAL,
    )
    parent = layer.get_parent()
    image.insert_layer(new, parent, len(_stack(image, parent)))
    new.set_offsets(0, 0)
    _fill(new, colour)
    return new


def shadow_request(settings):
    """The daemon's ``shadow`` field (``maskd remove --shadow`` syntax), or None without a shadow."""
    if not settings["add_shadow"]:
        return None
    extra = [settings["shadow_settings"].strip().strip(",")]
    colour = settings.get("shadow_color")
    if colour:
        extra.append("color=" + colour)
    extra = ",".join(e for e in extra if e)
    return settings["shadow_style"] + ("," + extra if extra else "")


def shadow_colour(result, expected_bytes, fmt):
    """The shadow's alpha and colour from the daemon's reply, checked before the image is touched."""
    info = result.shadow_info or {}
    shadow = result.shadow
    if shadow is None:
        raise PluginError(
            "maskd did not return a shadow: the running daemon is older than the plug-in. "
            "Restart it (`maskd stop`) after updating maskd, or turn “Add shadow layer” off."
        )
    if len(shadow) != expected_bytes:
        raise PluginError(
            f"maskd returned a shadow of {len(shadow)} bytes; expected {fmt.alpha_dtype} "
            f"with {expected_bytes} bytes. Update maskd and the plug-in together."
        )
    text = str(info.get("color") or "#000000")
    if len(text) != 7 or not text.startswith("#") or any(c not in "0123456789abcdefABCDEF" for c in text[1:]):
        raise PluginError(
            f"maskd returned the shadow colour {text!r}, not #rrggbb. Update maskd and the plug-in together."
        )
    return shadow, Gegl.Color.new(text)


def select_matte(image, layer, rect, fmt, alpha):
    """Output "selection": the matte, at the layer's position and clipped to the canvas."""
    with TemporaryMatte(image, layer, rect, fmt, alpha) as matte:
        image.select_item(Gimp.ChannelOps.REPLACE, matte)


def remove_background(image, drawables, settings, progress):
    """The whole operation; raises PluginError (image untouched) or returns a timing breakdown.

    Steps: the layer (refused before any work when it cannot take the output) → its pixels → the
    daemon's matte (of the canvas around the layer, with a shadow) → the reply checked → every
    change in one undo group: the output, then the shadow and background layers."""
    t0 = time.perf_counter()
    layer = target_layer(image, drawables)
    fmt = PixelFormat(image)
    output = settings["output"]
    if output == "alpha" and layer.get_mask() is not None:  # refuse before any work is done
        raise PluginError(
            f"“{layer.get_name()}” already has a layer mask. Apply or delete it first "
            "(Layer ▸ Mask), or choose the “Layer mask” output."
        )
    roi = selection_roi(image, layer, settings["use_selection"])
    progress.set("reading pixels", 0.02)
    pixels, rect = read_pixels(layer, fmt, roi)
    t_read = time.perf_counter()
    options = daemon_options(settings)
    shadow_text = shadow_request(settings)
    sent, sent_rect = pixels, rect
    if shadow_text and roi is None:  # a selection keeps everything, the shadow too, inside it
        sent, sent_rect = with_surroundings(image, layer, fmt, pixels, rect)
    result = ask_daemon(
        sent,
        sent_rect,
        fmt,
        options,
        options["decontaminate"],
        settings["model"],
        progress,
        shadow=shadow_text,
    )
    t_daemon = time.perf_counter()
    alpha, shadow = checked_reply(result, fmt, sent_rect, rect, shadow_text)
    progress.set("writing " + output, 0.92)
    selected = list(image.get_selected_layers())
    image.undo_group_start()
    try:
        selected = write_output(image, layer, rect, fmt, alpha, pixels, result, settings) or selected
        add_finishing_layers(image, layer, fmt, settings, shadow, sent_rect, rect)
        if (shadow is not None or settings["add_background"]) and selected:
            image.set_selected_layers(selected)  # inserting layers selects them; keep the user's
    finally:
        image.undo_group_end()
    Gimp.displays_flush()
    t_write = time.perf_counter()
    progress.set("done", 1.0)
    return {
        "read": t_read - t0,
        "daemon": t_daemon - t_read,
        "write": t_write - t_daemon,
        "total": t_write - t0,
        "daemon_timings": dict(result.info.get("timings") or {}),
        "model": result.info.get("model"),
        "stages": progress.stages,
        "note": progress.note,
    }


def daemon_options(settings):
    """The segment options. Decontaminated colours only matter to the cut-out layer; elsewhere
    they would cost ~0.7 s/16 MP."""
    want_foreground = settings["output"] == "layer" and settings["decontaminate"]
    return {"refine": settings["refine"], "decontaminate": want_foreground, "quality": settings["quality"]}


def with_surroundings(image, layer, fmt, pixels, rect):
    """``pixels`` placed on the transparent canvas around the layer (see ``shadow_region``):
    (the pixels to send, their rectangle in layer coordinates)."""
    region = shadow_region(image, layer)
    if region == rect:
        return pixels, rect
    return maskd_client.place_pixels(pixels, rect, region, fmt.channels * fmt.sample_bytes), region


def checked_reply(result, fmt, sent_rect, rect, shadow_text):
    """The reply checked before the image is touched, cut back to the layer's own ``rect``:
    (the alpha, (shadow alpha, shadow colour) or None). Crops ``result.foreground`` in place."""
    alpha = result.alpha
    expected = sent_rect[2] * sent_rect[3] * fmt.sample_bytes
    if result.alpha_dtype != fmt.alpha_dtype or len(alpha) != expected:
        raise PluginError(
            f"maskd returned a {result.alpha_dtype} matte of {len(alpha)} bytes; expected "
            f"{fmt.alpha_dtype} with {expected} bytes. Update maskd and the plug-in together."
        )
    shadow = shadow_colour(result, expected, fmt) if shadow_text else None
    if sent_rect != rect:  # the layer's own part of what came back
        alpha = maskd_client.crop_pixels(alpha, sent_rect, rect)
        if result.foreground is not None:
            result.foreground = maskd_client.crop_pixels(result.foreground, sent_rect, rect)
    return alpha, shadow


def write_output(image, layer, rect, fmt, alpha, pixels, result, settings):
    """The chosen output (inside the undo group); the new cut-out layer as the layers to keep
    selected, or None to keep the user's."""
    output = settings["output"]
    if output == "mask":
        add_matte_mask(image, layer, rect, fmt, alpha, settings["existing_mask"])
    elif output == "alpha":
        apply_to_alpha(image, layer, rect, fmt, alpha)
    elif output == "layer":
        return [add_cutout_layer(image, layer, rect, fmt, alpha, pixels, result)]
    else:
        select_matte(image, layer, rect, fmt, alpha)
    return None


def add_finishing_layers(image, layer, fmt, settings, shadow, sent_rect, rect):
    """The shadow layer (``shadow``: its alpha and colour, covering ``sent_rect``) and the
    background layer, inside the undo group."""
    if shadow is not None:
        shadow_alpha, shadow_rgb = shadow
        area = sent_rect if sent_rect != rect else None
        add_shadow_layer(image, layer, sent_rect, fmt, shadow_alpha, shadow_rgb, area=area)
    if settings["add_background"]:
        add_background_layer(image, layer, fmt, settings["background_color"])


# ----------------------------------------------------------------------------------------- registration


def _settings(config):
    return {
        "output": config.get_property("output"),
        "existing_mask": config.get_property("existing-mask"),
        "refine": bool(config.get_property("refine")),
        "decontaminate": bool(config.get_property("decontaminate")),
        "quality": config.get_property("quality"),
        "model": (config.get_property("model") or "").strip(),
        "use_selection": bool(config.get_property("use-selection")),
        "add_shadow": bool(config.get_property("add-shadow")),
        "shadow_style": config.get_property("shadow-style"),
        "shadow_settings": config.get_property("shadow-settings") or "",
        "shadow_color": shadow_colour_text(config.get_property("shadow-color")),
        "add_background": bool(config.get_property("add-background")),
        "background_color": background_colour(config.get_property("background-color")),
    }


def shadow_colour_text(colour):
    """``#rrggbb`` for the shadow's colour, or None for the style's own (black; also a transparent
    colour, which GIMP 3.0 hands scripts instead of the declared default)."""
    if colour is None:
        return None
    red, green, blue, alpha = colour.get_rgba()
    if alpha <= 0.0:
        return None
    text = "#" + "".join(f"{round(max(0.0, min(1.0, c)) * 255):02x}" for c in (red, green, blue))
    return None if text == "#000000" else text


def background_colour(colour):
    """The background layer's colour, opaque. A fully transparent (or missing) colour means "not
    given": GIMP 3.0 drops colour defaults from configs that scripts make with ``lookup_procedure``
    (they arrive as transparent black), and an invisible background layer would be of no use."""
    if colour is None:
        return Gegl.Color.new("#ffffff")
    red, green, blue, alpha = colour.get_rgba()
    if alpha <= 0.0:
        return Gegl.Color.new("#ffffff")
    opaque = Gegl.Color.new("#ffffff")
    opaque.set_rgba(red, green, blue, 1.0)
    return opaque


def _error(procedure, message):
    return procedure.new_return_values(
        Gimp.PDBStatusType.EXECUTION_ERROR,
        GLib.Error.new_literal(GLib.quark_from_string("maskd"), message, 0),
    )


def _has_mask(drawables):
    try:
        drawable = drawables[0] if len(drawables) == 1 else None
        if isinstance(drawable, Gimp.LayerMask):
            return True
        return isinstance(drawable, Gimp.Layer) and drawable.get_mask() is not None
    except Exception:
        return False


def _model_row(config, installed, served):
    """Model: the engine's installed presets in a list (never free text). A remembered name that
    is not installed stays listed, marked, and runs with the served model."""
    from gi.repository import Gtk

    wanted = (config.get_property("model") or "").strip()
    combo = Gtk.ComboBoxText()
    combo.append("", L["model.default"] + (f" ({served})" if served else ""))
    for name in installed:
        combo.append(name, name + (" (loaded)" if name == served else ""))
    if wanted and wanted not in installed:
        combo.append(wanted, f"{wanted} (not installed)" if installed else wanted)
    combo.set_active_id(wanted)
    combo.connect("changed", lambda box: config.set_property("model", box.get_active_id() or ""))
    if not installed:
        combo.set_tooltip_text("The engine is not running: the list fills when it runs")
    row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
    text = Gtk.Label(label=L["model"], xalign=0.0)
    row.pack_start(text, False, False, 0)
    row.pack_start(combo, True, True, 0)
    row.show_all()
    return row, combo


def _align_labels(box, row):
    """Give the Model row's label the width of GIMP's own labels in ``box`` (one column)."""
    from gi.repository import GimpUi, Gtk

    group = Gtk.SizeGroup(mode=Gtk.SizeGroupMode.HORIZONTAL)
    for child in box.get_children():
        if isinstance(child, GimpUi.Labeled):
            group.add_widget(child.get_label())
    group.add_widget(row.get_children()[0])
    row._size_group = group  # keep it alive as long as the row


def _only_when(dialog, prop, other, values):
    """Grey out ``prop`` unless ``other`` has one of ``values`` (GIMP's own sensitivity rule)."""
    try:
        array = Gimp.ValueArray.new(len(values))
        for value in values:
            gvalue = GObject.Value(GObject.TYPE_STRING, value)
            array.append(gvalue)
        dialog.set_sensitive_if_in(prop, None, other, array, True)
    except Exception:  # older bindings: the option stays available, and is ignored where useless
        pass


def _show_dialog(procedure, config, image, drawables):
    """GIMP's filter-dialog order: the common choices first (at most six), then groups, each
    option only where it does something (the existing-mask choice with a mask, the selection
    choice with a selection, colour cleaning for the cut-out layer)."""
    gi.require_version("GimpUi", "3.0")
    gi.require_version("Gtk", "3.0")
    from gi.repository import GimpUi

    GimpUi.init(PROC_NAME)
    colour = config.get_property("background-color")
    if colour is None or colour.get_rgba()[3] <= 0.0:  # show the white that will be used
        config.set_property("background-color", Gegl.Color.new("#ffffff"))
    dialog = GimpUi.ProcedureDialog.new(procedure, config, TITLE)
    first = ["output"]
    if _has_mask(drawables):
        first.append("existing-mask")
        _only_when(dialog, "existing-mask", "output", ["mask"])
    if not Gimp.Selection.is_empty(image):
        first.append("use-selection")
    first.append("quality")
    main = dialog.fill_box("main-box", first)
    installed, served = engine_models(HERE)
    row, combo = _model_row(config, installed, served)
    main.pack_start(row, False, False, 0)
    main.reorder_child(row, len(first) - 1)  # Model just above Quality
    try:
        _align_labels(main, row)
    except Exception:  # only looks: never let it stop the dialog
        pass
    dialog.get_label("edges-title", L["group.edges"], False, False)
    dialog.fill_box("edges-box", ["refine", "decontaminate"])
    dialog.fill_frame("edges-frame", "edges-title", False, "edges-box")
    _only_when(dialog, "decontaminate", "output", ["layer"])
    # the finishing options sit in frames whose title is their toggle (greyed out while it is off)
    dialog.fill_box("shadow-box", ["shadow-style", "shadow-color"])
    dialog.fill_frame("shadow-frame", "add-shadow", False, "shadow-box")
    dialog.fill_frame("background-frame", "add-background", False, "background-color")
    dialog.fill(["main-box", "edges-frame", "shadow-frame", "background-frame"])
    report = os.environ.get("MASKD_GIMP_DIALOG_REPORT")  # a folder
    if report:  # tests: what the dialog showed when OK was pressed, and a screenshot of it
        dialog.connect("response", lambda *_: _report_dialog(dialog, main, report, combo))
    try:
        return dialog.run()
    finally:
        dialog.destroy()


def _report_dialog(dialog, main, folder, combo):
    """Write the dialog's first group (visible controls) and a PNG of the dialog to ``folder``."""
    import json

    from gi.repository import Gdk

    def words(widget):
        texts = []
        if hasattr(widget, "get_label") and isinstance(widget.get_label(), str):
            texts.append(widget.get_label())
        if hasattr(widget, "get_children"):
            for child in widget.get_children():
                texts += words(child)
        return texts

    controls = [c for c in main.get_children() if c.get_visible()]
    info = {
        "first_group": [" ".join(t for t in words(c) if t) for c in controls],
        "first_group_count": len(controls),
        "title": dialog.get_title(),
        "models": [[row[1], row[0]] for row in combo.get_model()],  # (id, text)
    }
    n = len([f for f in os.listdir(folder) if f.startswith("gimp-dialog-") and f.endswith(".json")])
    window = dialog.get_window()
    if window is not None:
        pixbuf = Gdk.pixbuf_get_from_window(window, 0, 0, window.get_width(), window.get_height())
        if pixbuf is not None:
            pixbuf.savev(os.path.join(folder, f"gimp-dialog-{n}.png"), "png", [], [])
            info["screenshot"] = f"gimp-dialog-{n}.png"
    with open(os.path.join(folder, f"gimp-dialog-{n}.json"), "w", encoding="utf-8") as fh:
        json.dump(info, fh)
    return False


class RemoveBackground(Gimp.PlugIn):
    def do_query_procedures(self):
        return [PROC_NAME]

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        Gegl.init(None)  # the colour argument's default is a GeglColor: babl must be up at query time
        proc = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run, None)
        proc.set_image_types("RGB*, GRAY*")
        proc.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        proc.set_menu_label("Remove _Background…")
        proc.add_menu_path("<Image>/Layer/Transparency")
        proc.set_documentation(
            "Remove the background of the layer with BiRefNet (maskd)",
            "Computes a soft, full-resolution matte of the layer's subject with the local maskd daemon "
            "and makes a layer mask (default), applies it to the alpha channel, adds a cut-out layer or "
            "selects it. With a selection, only the selection's bounding box is processed and the rest of "
            "the mask is black. Optionally adds a shadow layer under the layer (fill colour + the "
            "generated shadow as its mask) and a background layer at the bottom, never flattening. "
            "The daemon is started from maskd_config.json when it is not running.",
            name,
        )
        proc.set_attribution("maskd", "maskd contributors (MIT)", "2026")
        _declare_arguments(proc)
        return proc

    def run(self, procedure, run_mode, image, drawables, config, run_data):
        if run_mode == Gimp.RunMode.INTERACTIVE:
            try:
                if not _show_dialog(procedure, config, image, drawables):
                    return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
            except Exception as exc:  # no display (batch) — run with the remembered values
                Gimp.message(f"{TITLE}: could not open the dialog ({exc}); using the last values.")
        try:
            settings = _settings(config)
            progress = Progress()
            timings = remove_background(image, drawables, settings, progress)
            if progress.note:
                Gimp.message(progress.note)
        except PluginError as exc:
            return _error(procedure, str(exc))
        except Exception as exc:  # a bug: say what, not a traceback wall; the log has the details
            import traceback

            traceback.print_exc()
            return _error(
                procedure,
                f"{TITLE} failed unexpectedly: {exc.__class__.__name__}: {exc}. "
                "Please report this with `maskd doctor` output.",
            )
        if os.environ.get("MASKD_GIMP_TIMINGS"):  # benchmarks: where the time went
            with open(os.environ["MASKD_GIMP_TIMINGS"], "a", encoding="utf-8") as fh:
                import json

                fh.write(json.dumps(timings) + "\n")
        return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, None)


if __name__ == "__main__":
    Gimp.main(RemoveBackground.__gtype__, sys.argv)
