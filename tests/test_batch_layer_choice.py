"""The layer-choice rule is one function (``core.layered.choice``): the Krita batch script, run
against small fake Krita nodes, picks what ``core.layered.select_layers`` picks from the parsed file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from maskd.core.layered import choice, open_layered, select_layers

FIXTURES = Path(__file__).parent / "editors" / "layered" / "fixtures"


class FakeNode:
    """What ``maskd_krita_batch`` reads of a Krita node."""

    def __init__(self, layer, children=(), flat=False):
        self._layer, self._children, self._flat = layer, list(children), flat

    def name(self):
        return self._layer.name

    def type(self):
        return {"paint": "paintlayer", "group": "grouplayer"}.get(self._layer.kind, self._layer.kind)

    def visible(self):
        return self._layer.visible

    def childNodes(self):
        masks = [MaskNode()] if self._layer.has_mask else []
        return masks + list(reversed(self._children))  # Krita lists bottom first

    def pixelData(self, x, y, w, h):
        return b"\xff\xff\xff\xff" * (w * h) if self._flat else bytes(range(256)) * (w * h // 64)


class MaskNode:
    def type(self):
        return "transparencymask"


class FakeDoc:
    def __init__(self, root):
        self._root = root

    def rootNode(self):
        return self._root

    def width(self):
        return 8

    def height(self):
        return 8


def fake_tree(doc, flat_paths):
    """Rebuild ``doc``'s layer tree (top first, groups by path) as fake Krita nodes."""

    def children(prefix):
        out = []
        for ly in doc.layers:
            parent = ly.path.rsplit("/", 1)[0] if "/" in ly.path else ""
            if parent == prefix:
                out.append(
                    FakeNode(ly, children(ly.path) if ly.kind == "group" else (), ly.path in flat_paths)
                )
        return out

    root = FakeNode(type("Root", (), {"name": "", "kind": "group", "visible": True, "has_mask": False})())
    root._children = children("")
    return FakeDoc(root)


@pytest.mark.parametrize("spec", [None, ["all"], ["visible"], ["decor"], ["shadow", "background"]])
def test_krita_batch_choice_equals_the_parsers(monkeypatch, spec):
    from maskd.server.commands import krita_batch

    monkeypatch.setitem(sys.modules, "maskd_layer_choice", choice)  # as copied beside the script
    doc = open_layered(FIXTURES / "gimp3.xcf")
    indices, notes = select_layers(doc, spec)
    from maskd.core.layered import _is_flat

    flat = {ly.path for ly in doc.layers if ly.kind == "paint" and _is_flat(doc.read_rgba(ly))}
    chosen, krita_notes = krita_batch._choose(fake_tree(doc, flat), spec)
    assert [p for _, p in chosen] == [doc.layers[i].path for i in indices]
    assert krita_notes == notes
