"""The GIMP plug-in's own logic against fake GIMP objects (fast tier; tests/editors/ runs real GIMP).

The plug-in file is imported with fake ``gi.repository`` modules; ``remove_background`` runs
whole, with the daemon call replaced by a reply object, for every output and the finishing
layers; the layer choice, the selection, the pixel formats and the reply checks on their own.
"""

from __future__ import annotations

import types

import pytest

from tests.fake_editors import Channel, Image, load_gimp_plugin

plugin = load_gimp_plugin()
PluginError = plugin.PluginError


def _settings(**changes):
    base = {
        "output": "mask",
        "existing_mask": "intersect",
        "refine": True,
        "decontaminate": True,
        "quality": "default",
        "model": "",
        "use_selection": True,
        "add_shadow": False,
        "shadow_style": "soft",
        "shadow_settings": "",
        "add_background": False,
        "background_color": plugin.Gegl.Color.new("#ffffff"),
    }
    base.update(changes)
    return base


class _Progress:
    def __init__(self):
        self.stages = []
        self.note = ""  # what the plug-in tells the user after a run (e.g. a model fallback)

    def set(self, stage, fraction):
        self.stages.append(stage)

    def daemon(self, stage, fraction):
        pass


@pytest.fixture
def daemon(monkeypatch):
    """``ask_daemon`` replaced: records the request, answers alpha = 200 everywhere (+ a shadow)."""
    calls = []

    def ask(pixels, rect, fmt, options, want_foreground, model, progress, shadow=None):
        calls.append(
            dict(rect=rect, options=options, foreground=want_foreground, shadow=shadow, size=len(pixels))
        )
        n = rect[2] * rect[3]
        return types.SimpleNamespace(
            alpha=bytes([200]) * n,
            alpha_dtype=fmt.alpha_dtype,
            foreground=bytes([10, 20, 30]) * n if want_foreground else None,
            foreground_dtype=fmt.dtype,
            shadow=bytes([90]) * n if shadow else None,
            shadow_info={"color": "#102030"} if shadow else None,
            info={"timings": {"model": 0.1}},
        )

    monkeypatch.setattr(plugin, "ask_daemon", ask)
    return calls


def _image():
    image = Image(40, 30)
    image.add_layer("Background")
    photo = image.add_layer("Photo")
    image.selected = [photo]
    return image, photo


# ------------------------------------------------------------------------------ the outputs


def test_mask_output_writes_the_matte_as_a_layer_mask_in_one_undo_group(daemon):
    image, photo = _image()
    timings = plugin.remove_background(image, [photo], _settings(), _Progress())
    assert photo.mask is not None and photo.mask.kind == "WHITE"
    assert photo.mask.writes == [((0, 0, 40, 30), "Y u8", bytes([200]) * 1200)]
    assert image.undo_groups == 1 and image.undo_depth == 0 and timings["daemon_timings"] == {"model": 0.1}
    assert daemon[0]["options"]["decontaminate"] is False  # colours are only asked for the cut-out layer


def test_mask_output_with_a_selection_processes_its_box_only(daemon):
    image, photo = _image()
    image.selection = (5, 6, 10, 4)
    plugin.remove_background(image, [photo], _settings(), _Progress())
    assert daemon[0]["rect"] == (5, 6, 10, 4)
    assert photo.mask.kind == "BLACK" and photo.mask.writes[0][0] == (5, 6, 10, 4)


def test_an_existing_mask_is_intersected_or_replaced(daemon):
    image, photo = _image()
    old = photo.create_mask("WHITE")
    photo.add_mask(old)
    plugin.remove_background(image, [photo], _settings(), _Progress())
    assert photo.mask is old and old.combined[0][0] == "INTERSECT"
    assert [layer.name for layer in image.layers] == ["Photo", "Background"]  # the scratch layer is gone
    plugin.remove_background(image, [photo], _settings(existing_mask="replace"), _Progress())
    assert photo.mask is not old and photo.applied == ["DISCARD"]


def test_alpha_output_applies_the_mask_and_refuses_a_layer_with_one(daemon):
    image, photo = _image()
    plugin.remove_background(image, [photo], _settings(output="alpha"), _Progress())
    assert photo.applied == ["APPLY"] and photo.mask is None
    photo.add_mask(photo.create_mask("WHITE"))
    with pytest.raises(PluginError, match="already has a layer mask"):
        plugin.remove_background(image, [photo], _settings(output="alpha"), _Progress())
    assert len(daemon) == 1  # refused before asking the daemon


def test_layer_output_adds_a_cut_out_layer_with_decontaminated_colours(daemon):
    image, photo = _image()
    plugin.remove_background(image, [photo], _settings(output="layer"), _Progress())
    new = image.layers[0]
    assert new.name == "Photo (cut-out)" and image.selected == [new] and daemon[0]["foreground"]
    ((rect, fmt, data),) = new.writes
    assert fmt == "R'G'B'A u8" and data[:4] == bytes([10, 20, 30, 0])  # colours in, the layer's alpha kept
    assert new.applied == ["APPLY"]


def test_selection_output_selects_the_matte(daemon):
    image, photo = _image()
    plugin.remove_background(image, [photo], _settings(output="selection"), _Progress())
    op, matte = image.selected_item
    assert op == "REPLACE" and matte.writes[0][2] == bytes([200]) * 1200
    assert [layer.name for layer in image.layers] == ["Photo", "Background"]


# ------------------------------------------------------------------------------ finishing layers


def test_shadow_layer_goes_under_the_layer_over_the_whole_canvas(daemon):
    image = Image(40, 30)
    image.add_layer("Background")
    photo = image.add_layer("Photo", 10, 8)
    photo.offsets = (5, 5)
    image.selected = [photo]
    plugin.remove_background(
        image, [photo], _settings(add_shadow=True, shadow_settings="opacity=0.3,"), _Progress()
    )
    assert daemon[0]["shadow"] == "soft,opacity=0.3" and daemon[0]["rect"] == (-5, -5, 40, 30)
    assert [layer.name for layer in image.layers] == ["Photo", "Photo shadow", "Background"]
    shadow = image.layers[1]
    assert shadow.offsets == (0, 0) and (shadow.width, shadow.height) == (40, 30)
    assert shadow.fills[0].get_rgba()[:3] == pytest.approx((0x10 / 255, 0x20 / 255, 0x30 / 255))
    assert photo.mask.writes[0][0] == (0, 0, 10, 8) and len(photo.mask.writes[0][2]) == 80
    assert image.selected == [photo]  # the user's selection of layers is kept


def test_background_layer_goes_to_the_bottom(daemon):
    image, photo = _image()
    colour = plugin.Gegl.Color.new("#ff0000")
    plugin.remove_background(
        image, [photo], _settings(add_background=True, background_color=colour), _Progress()
    )
    assert [layer.name for layer in image.layers] == ["Photo", "Background", "Photo background"]
    assert image.layers[-1].fills == [colour]


def test_transparent_background_colour_means_white():
    clear = plugin.Gegl.Color.new("#123456")
    clear.set_rgba(0.1, 0.2, 0.3, 0.0)
    assert plugin.background_colour(clear).get_rgba() == (1.0, 1.0, 1.0, 1.0)
    half = plugin.Gegl.Color.new("#123456")
    half.set_rgba(0.1, 0.2, 0.3, 0.5)
    assert plugin.background_colour(half).get_rgba() == (0.1, 0.2, 0.3, 1.0)


# ------------------------------------------------------------------------------ checks


def test_the_layer_choice_refuses_what_it_cannot_process():
    image, photo = _image()
    with pytest.raises(PluginError, match="exactly one layer"):
        plugin.target_layer(image, [photo, photo])
    with pytest.raises(PluginError, match="channel"):
        plugin.target_layer(image, [Channel(image, "Alpha", 40, 30)])
    assert plugin.target_layer(image, [photo.create_mask("WHITE")]) is photo
    image.base = "INDEXED"
    with pytest.raises(PluginError, match="Indexed"):
        plugin.target_layer(image, [photo])
    image.base = "RGB"
    photo.group = True
    with pytest.raises(PluginError, match="layer group"):
        plugin.target_layer(image, [photo])
    photo.group, photo.text = False, True
    with pytest.raises(PluginError, match="text layer"):
        plugin.target_layer(image, [photo])


def test_selection_outside_the_layer_is_refused_and_a_full_one_ignored():
    image, photo = _image()
    assert plugin.selection_roi(image, photo, True) is None
    image.selection = (0, 0, 40, 30)
    assert plugin.selection_roi(image, photo, True) is None
    image.selection = (100, 100, 5, 5)
    with pytest.raises(PluginError, match="does not overlap"):
        plugin.selection_roi(image, photo, True)
    assert plugin.selection_roi(image, photo, False) is None


@pytest.mark.parametrize(
    "precision, base, dtype, transfer, pixels, mask",
    [
        ("GIMP_PRECISION_U8_NON_LINEAR", "RGB", "u8", "srgb", "R'G'B'A u8", "Y u8"),
        ("GIMP_PRECISION_U16_LINEAR", "RGB", "u16", "srgb", "R'G'B'A u16", "Y u16"),
        ("GIMP_PRECISION_FLOAT_LINEAR", "RGB", "f32", "linear", "RGBA float", "Y float"),
        ("GIMP_PRECISION_HALF_NON_LINEAR", "GRAY", "f32", "srgb", "Y'A float", "Y float"),
    ],
)
def test_pixel_formats(precision, base, dtype, transfer, pixels, mask):
    fmt = plugin.PixelFormat(Image(precision=precision, base=base))
    assert (fmt.dtype, fmt.transfer, fmt.pixels, fmt.mask) == (dtype, transfer, pixels, mask)


def test_replies_that_do_not_fit_are_refused_before_the_image_is_touched(daemon, monkeypatch):
    image, photo = _image()
    fmt = plugin.PixelFormat(image)
    reply = types.SimpleNamespace(shadow=None, shadow_info=None)
    with pytest.raises(PluginError, match="did not return a shadow"):
        plugin.shadow_colour(reply, 10, fmt)
    reply.shadow = bytes(9)
    with pytest.raises(PluginError, match="9 bytes"):
        plugin.shadow_colour(reply, 10, fmt)
    reply.shadow, reply.shadow_info = bytes(10), {"color": "red"}
    with pytest.raises(PluginError, match="not #rrggbb"):
        plugin.shadow_colour(reply, 10, fmt)
    short = types.SimpleNamespace(alpha=b"", alpha_dtype="u8", foreground=None, info={})
    monkeypatch.setattr(plugin, "ask_daemon", lambda *a, **k: short)
    with pytest.raises(PluginError, match="expected u8 with 1200 bytes"):
        plugin.remove_background(image, [photo], _settings(), _Progress())
    assert photo.mask is None and image.undo_groups == 0


def test_with_colours_replaces_colour_and_keeps_alpha():
    rgba = plugin.PixelFormat(Image())
    out = plugin.with_colours(bytes([1, 2, 3, 4, 5, 6, 7, 8]), rgba, bytes([9, 9, 9, 8, 8, 8]), "u8")
    assert out == bytes([9, 9, 9, 4, 8, 8, 8, 8])
    gray = plugin.PixelFormat(Image(base="GRAY"))
    assert plugin.with_colours(bytes([1, 2, 3, 4]), gray, bytes([7, 7, 7, 6, 6, 6]), "u8") == bytes(
        [7, 2, 6, 4]
    )
    with pytest.raises(PluginError, match="update maskd"):
        plugin.with_colours(bytes(4), rgba, bytes(3), "f32")


# ------------------------------------------------------------------------------ the procedure


def test_the_procedure_declares_its_arguments_by_the_names_gimp_remembers():
    """GIMP keeps the last values (and scripts pass them) by argument name: the names, their order,
    their types and defaults are the plug-in's interface and must not drift."""
    proc = plugin.RemoveBackground().do_create_procedure(plugin.PROC_NAME)
    declared = [
        (kind, name, default, [e[0] for e in extra] if kind == "choice" else extra)
        for kind, name, _label, _help, default, extra in proc.arguments
    ]
    assert declared == [
        ("choice", "output", "mask", ["mask", "alpha", "layer", "selection"]),
        ("choice", "existing-mask", "intersect", ["intersect", "replace"]),
        ("boolean", "refine", True, None),
        ("boolean", "decontaminate", True, None),
        ("choice", "quality", "default", ["default", "fast", "quality"]),
        ("string", "model", "", None),
        ("boolean", "use-selection", True, None),
        ("boolean", "add-shadow", False, None),
        ("choice", "shadow-style", "soft", ["soft", "contact", "drop", "front"]),
        ("string", "shadow-settings", "", None),
        ("color", "shadow-color", (0.0, 0.0, 0.0, 1.0), False),
        ("boolean", "add-background", False, None),
        ("color", "background-color", (1.0, 1.0, 1.0, 1.0), False),
    ]
    assert all(label and help_text for _kind, _name, label, help_text, _d, _e in proc.arguments)
    menu = dict(proc.declared)
    assert menu["set_menu_label"] == ("Remove _Background…",)
    assert menu["add_menu_path"] == ("<Image>/Layer/Transparency",)
    assert menu["set_image_types"] == ("RGB*, GRAY*",)
