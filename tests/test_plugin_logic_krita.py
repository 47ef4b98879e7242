"""The Krita plugin's own logic against fake Krita objects (fast tier; tests/editors/ runs real Krita).

``runner.apply_outcome`` writes a finished job into the document: every output (transparency
mask, new layer, apply, selection), the shadow and background layers and where they go, the
refusals (document closed, layer gone or changed, clone sources) and the rollback when Krita
refuses a change. ``take_snapshot`` reads the layer and the selection; ``compute`` builds what
goes back from a daemon reply.
"""

from __future__ import annotations

import pytest

from tests.fake_editors import Document, KritaApp, Node, Selection, fake_krita_module, load_krita_module

runner = load_krita_module("runner")
JobError = runner.JobError


@pytest.fixture
def krita(monkeypatch):
    app = KritaApp()
    monkeypatch.setitem(__import__("sys").modules, "krita", fake_krita_module(app))
    return app


def _scene(app, *, layers=("Background", "Photo"), bounds=None):
    """A document with paint layers (bottom first); the last one is processed."""
    doc = Document()
    app.docs.append(doc)
    nodes = [doc.add_layer(name) for name in layers[:-1]]
    nodes.append(doc.add_layer(layers[-1], bounds=bounds))
    return doc, nodes


def _snapshot(doc, node, output="transparency-mask", shadow=None, background=None, region=None):
    from tests.fake_editors import QByteArray  # noqa: F401  (what Krita hands back)

    snap = runner.Snapshot()
    snap.document, snap.output = doc, output
    snap.node_id, snap.node_name, snap.node_type = node.uniqueId(), node.name(), node.type()
    snap.bounds = runner._rect(node.bounds())
    snap.region = region or snap.bounds
    snap.fmt = load_krita_module("pixels").PixelFormat(*node.space)
    snap.profile = node.space[2]
    snap.shadow, snap.background = shadow, background
    return snap


def _outcome(snap, shadow=False):
    x, y, w, h = snap.region
    out = runner.Outcome()
    out.mask = bytes(range(256)) * (w * h // 256) + bytes(w * h % 256)
    out.cutout = bytes(4 * w * h)
    if shadow:
        out.shadow = bytes([100]) * (w * h)
        out.shadow_color = "#203040"
    return out


def _names(parent):
    return [n.name() for n in parent.childNodes()]  # bottom first


# ------------------------------------------------------------------------------ the outputs


def test_transparency_mask_goes_on_the_layer_in_one_undo_step(krita):
    doc, (_bg, photo) = _scene(krita)
    snap = _snapshot(doc, photo)
    done = runner.apply_outcome(snap, _outcome(snap))
    mask = photo.childNodes()[0]
    assert mask.type() == "transparencymask" and mask.name() == runner.MASK_NAME
    assert mask.writes == [(snap.bounds, _outcome(snap).mask)]
    assert done.node is mask and done.steps == 1 == doc.undo_steps and doc.active is mask


def test_a_mask_widened_for_the_shadow_is_cropped_to_the_layer(krita):
    doc, (_bg, photo) = _scene(krita, bounds=(10, 5, 8, 6))
    snap = _snapshot(doc, photo, region=(0, 0, 40, 30))
    outcome = _outcome(snap)
    runner.apply_outcome(snap, outcome)
    ((rect, data),) = photo.childNodes()[0].writes
    assert rect == (10, 5, 8, 6) and len(data) == 8 * 6
    assert data[:8] == _outcome(snap).mask[5 * 40 + 10 : 5 * 40 + 18]  # row 5, columns 10..17


def test_new_layer_goes_above_the_layer_in_the_layers_colour_space(krita):
    doc, (_bg, photo) = _scene(krita)
    photo.space = ("RGBA", "U16", "sRGB-elle-V2-srgbtrc.icc")
    snap = _snapshot(doc, photo, output="new-layer")
    done = runner.apply_outcome(snap, _outcome(snap))
    assert _names(doc.root) == ["Background", "Photo", "Photo (cut-out)"]
    assert done.node.space == photo.space and done.node.writes[0][0] == snap.region
    assert done.steps == 1 and doc.active is done.node


def test_apply_replaces_the_layer_with_a_copy_holding_the_cut_out(krita):
    doc, (_bg, photo) = _scene(krita)
    snap = _snapshot(doc, photo, output="apply")
    done = runner.apply_outcome(snap, _outcome(snap))
    assert _names(doc.root) == ["Background", "Photo"] and doc.root.childNodes()[1] is done.node
    assert done.node is not photo and photo.parentNode() is None
    assert done.steps == 2 == doc.undo_steps  # add the copy, remove the original


def test_selection_replaces_the_selection_without_an_undo_step(krita):
    doc, (_bg, photo) = _scene(krita)
    snap = _snapshot(doc, photo, output="selection")
    done = runner.apply_outcome(snap, _outcome(snap))
    assert isinstance(doc.selection(), Selection) and doc.selection().writes[0][0] == snap.bounds
    assert done.steps == 0 and doc.active is None and _names(photo) == []


# ------------------------------------------------------------------------------ shadow and background


def test_shadow_goes_directly_under_the_layer_with_its_mask(krita):
    doc, (_bg, photo) = _scene(krita)
    snap = _snapshot(doc, photo, shadow="soft")
    done = runner.apply_outcome(snap, _outcome(snap, shadow=True))
    assert _names(doc.root) == ["Background", "Photo shadow", "Photo"]
    shadow = done.extras["shadow"]
    (mask,) = shadow.childNodes()
    assert mask.type() == "transparencymask" and mask.writes[0][1] == bytes([100]) * (40 * 30)
    (rect, fill), *_ = shadow.writes
    assert rect[:3] == (0, 0, 40) and fill[:4] == bytes([0x40, 0x30, 0x20, 255])  # BGRA of #203040
    assert done.steps == 2  # the shadow layer, then the mask: the first Ctrl+Z takes the mask back


def test_shadow_under_the_bottom_layer_moves_that_layer_up_keeping_it(krita):
    doc, (photo,) = _scene(krita, layers=("Photo",))
    snap = _snapshot(doc, photo, shadow="soft")
    done = runner.apply_outcome(snap, _outcome(snap, shadow=True))
    assert _names(doc.root) == ["Photo shadow", "Photo"] and doc.root.childNodes()[1] is photo
    assert done.steps == 1 + 2 + 1  # the shadow, the bottom layer out and back, the mask


def test_background_goes_to_the_bottom_of_the_layers_parent(krita):
    doc, (_bg, photo) = _scene(krita)
    snap = _snapshot(doc, photo, background="#ff0000")
    done = runner.apply_outcome(snap, _outcome(snap))
    assert _names(doc.root) == ["Photo background", "Background", "Photo"]
    background = done.extras["background"]
    assert background.writes[0][0] == (0, 0, 40, 30)
    assert background.writes[0][1][:4] == bytes([0, 0, 255, 255])  # BGRA red


def test_shadow_and_background_in_a_group(krita):
    doc = Document()
    krita.docs.append(doc)
    group = doc.add_layer("Group", kind="grouplayer")
    photo = doc.add_layer("Photo", parent=group)
    snap = _snapshot(doc, photo, shadow="soft", background="white")
    runner.apply_outcome(snap, _outcome(snap, shadow=True))
    assert _names(group) == ["Photo background", "Photo shadow", "Photo"] and _names(doc.root) == ["Group"]


def test_bottom_layers_that_clones_copy_are_not_moved(krita):
    doc, (base, photo) = _scene(krita)
    clone = doc.add_layer("Clone", kind="clonelayer")
    clone.source = base
    snap = _snapshot(doc, photo, background="#ffffff")
    with pytest.raises(JobError) as err:
        runner.apply_outcome(snap, _outcome(snap))
    assert err.value.code == "bad_request" and "source of clone layers" in err.value.message
    assert _names(doc.root) == ["Background", "Photo", "Clone"] and doc.undo_steps == 0


# ------------------------------------------------------------------------------ refusals and rollback


@pytest.mark.parametrize(
    "change, code",
    [
        (lambda app, doc, photo: app.docs.remove(doc), "document_closed"),
        (lambda app, doc, photo: photo.remove(), "layer_gone"),
        (lambda app, doc, photo: setattr(photo, "_bounds", (1, 0, 40, 30)), "layer_changed"),
    ],
    ids=["closed document", "deleted layer", "moved layer"],
)
def test_a_layer_that_is_not_as_it_was_changes_nothing(krita, change, code):
    doc, (_bg, photo) = _scene(krita)
    snap = _snapshot(doc, photo)
    change(krita, doc, photo)
    doc.undo_steps = 0
    with pytest.raises(JobError) as err:
        runner.apply_outcome(snap, _outcome(snap))
    assert err.value.code == code and doc.undo_steps == 0 and _names(photo) == []


def test_a_refused_change_takes_back_the_ones_before_it(krita):
    doc, (_bg, photo) = _scene(krita)
    photo.refuse_children = True  # the mask cannot be added, after shadow and background went in
    snap = _snapshot(doc, photo, shadow="soft", background="#ffffff")
    with pytest.raises(JobError) as err:
        runner.apply_outcome(snap, _outcome(snap, shadow=True))
    assert err.value.code == "write_failed" and "transparency mask" in err.value.message
    assert _names(doc.root) == ["Background", "Photo"]


# ------------------------------------------------------------------------------ options and the snapshot


@pytest.mark.parametrize(
    "value, want",
    [(None, None), (False, None), ("", None), ("none", None), (True, "#ffffff"), ("green", "#008000")],
)
def test_background_option(value, want):
    assert runner.background_colour(value) == want


def test_background_option_refuses_what_is_no_colour():
    with pytest.raises(JobError) as err:
        runner.background_colour("nocolour")
    assert err.value.code == "bad_request" and "#rrggbb" in err.value.message


def test_shadow_option():
    assert runner.shadow_style(None) is None and runner.shadow_style(True) == "soft"
    assert runner.shadow_style("drop,direction=135") == "drop,direction=135"
    with pytest.raises(JobError):
        runner.shadow_style("sideways")


def test_snapshot_reads_the_layer_and_the_selection(krita, monkeypatch):
    monkeypatch.setattr(runner, "load_config", lambda: {})
    doc, (_bg, photo) = _scene(krita)
    doc.setSelection(Selection((5, 6, 10, 4)))
    snap = runner.take_snapshot(doc, photo, "transparency-mask", {"quality": "fast"})
    assert snap.region == snap.bounds == (0, 0, 40, 30) and snap.roi == (5, 6, 10, 4)
    assert len(snap.pixels) == 40 * 30 * 4 and snap.fmt.layout == "BGRA"
    assert snap.options == {"quality": "fast"}


def _refusal(document, node, output, options) -> JobError:
    """What ``take_snapshot`` refuses with (it must refuse)."""
    with pytest.raises(JobError) as err:
        runner.take_snapshot(document, node, output, options)
    return err.value


def test_snapshot_widens_the_region_for_a_shadow_and_refuses_what_it_cannot_do(krita, monkeypatch):
    monkeypatch.setattr(runner, "load_config", lambda: {})
    doc, (_bg, photo) = _scene(krita, bounds=(10, 5, 8, 6))
    snap = runner.take_snapshot(doc, photo, "transparency-mask", {"shadow": True})
    assert snap.bounds == (10, 5, 8, 6) and snap.region == (0, 0, 40, 30) and snap.shadow == "soft"
    err = _refusal(doc, photo, "sideways", {})
    assert err.code == "bad_request"
    doc.setSelection(Selection((30, 20, 5, 5)))  # outside the layer
    err = _refusal(doc, photo, "transparency-mask", {})
    assert err.code == "roi"
    group = doc.add_layer("Group", kind="grouplayer")
    err = _refusal(doc, group, "apply", {})
    assert err.code == "bad_request" and "paint layer" in err.message


def test_a_selected_mask_stands_for_its_layer(krita, monkeypatch):
    monkeypatch.setattr(runner, "load_config", lambda: {})
    doc, (_bg, photo) = _scene(krita)
    mask = Node(doc, "old mask", "transparencymask")
    photo.setChildNodes([mask])
    assert runner.take_snapshot(doc, mask, "transparency-mask", {}).node_id == photo.uniqueId()


def test_a_layer_in_another_colour_space_is_read_through_an_rgb_copy(krita, monkeypatch):
    monkeypatch.setattr(runner, "load_config", lambda: {})
    pixels = load_krita_module("pixels")
    doc, (_bg, photo) = _scene(krita)
    photo.space = ("CMYKA", "U8", "Chemical proof")
    snap = runner.take_snapshot(doc, photo, "transparency-mask", {})
    assert snap.converted_from == "CMYKA/U8" and (snap.fmt.model, snap.fmt.depth) == ("RGBA", "U8")
    assert snap.profile == pixels.SRGB_PROFILE and photo.space == ("CMYKA", "U8", "Chemical proof")
    assert len(snap.pixels) == 40 * 30 * 4
    err = _refusal(doc, photo, "apply", {})  # apply would write RGB pixels into a CMYK layer
    assert err.code == "colour_space" and "RGB copy" in err.message
    photo.space = ("UNKNOWNA", "U8", "")
    err = _refusal(doc, photo, "transparency-mask", {})
    assert err.code == "colour_space" and "cannot read" in err.message


def test_finishing_layers_need_an_image_colour_space_maskd_writes(krita, monkeypatch):
    monkeypatch.setattr(runner, "load_config", lambda: {})
    doc, (_bg, photo) = _scene(krita)
    doc.space = ("CMYKA", "U8", "Chemical proof")
    assert runner.take_snapshot(doc, photo, "transparency-mask", {}).shadow is None
    err = _refusal(doc, photo, "transparency-mask", {"background": True})
    assert err.code == "colour_space" and "CMYKA/U8" in err.message
    err = _refusal(doc, photo, "transparency-mask", {"existing_mask": "merge"})
    assert err.code == "bad_request"


def test_snapshot_refuses_without_a_document_or_a_layer(krita):
    err = _refusal(None, None, "transparency-mask", {})
    assert err.code == "no_document"
    doc, _nodes = _scene(krita)
    err = _refusal(None, None, "transparency-mask", {})
    assert err.code == "no_layer"
    err = _refusal(doc, doc.rootNode(), "transparency-mask", {})
    assert err.code == "no_layer" and "root" in err.message
    empty = doc.add_layer("Empty", bounds=(0, 0, 0, 0))
    err = _refusal(doc, empty, "transparency-mask", {})
    assert err.code == "empty"
