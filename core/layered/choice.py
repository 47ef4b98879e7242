"""Which layers of a layered file get a mask: the one rule, for ``maskd remove`` and the editor batches.

``choose(layers, spec, is_flat)`` works on plain ``Layer`` descriptions, top of the stack first:
``core.layered.select_layers`` builds them from maskd's own parsers, and ``maskd gimp-batch`` /
``maskd krita-batch`` from the editors' layer trees (this file is copied beside the in-editor
script, so it uses the standard library only).

- ``None``/``"default"``: the bottom-most visible paint layer that is not one flat colour (else the
  bottom-most visible paint layer);
- ``"all"``/``"visible"``: every (visible) paint layer;
- names: each layer whose name or path (``group/name``) matches.

Groups, other layer kinds, layers with a reason not to touch them (``note``), empty layers and
layers that already have a mask are left alone, with a note saying why.
"""

from __future__ import annotations

from dataclasses import dataclass


class ChoiceError(ValueError):
    """No layer fits the request (the message says what the file has)."""


@dataclass
class Layer:
    path: str  # "group/name"
    name: str
    kind: str  # "paint" | "group" | another kind (text, vector, filter, …)
    shown: bool  # visible, with every group above it
    has_mask: bool = False
    note: str | None = None  # a reason to leave the layer alone (e.g. an unsupported pixel format)
    empty: bool = False


def choose(layers: list[Layer], spec, is_flat) -> tuple[list[int], list[str]]:
    """(indices of the layers to mask, notes on requested layers left alone). ``is_flat(i)`` says
    whether layer ``i`` is one colour everywhere it is visible (called only for the default)."""
    if isinstance(spec, (list, tuple)) and len(spec) == 1 and spec[0] in ("all", "visible", "default"):
        spec = spec[0]
    if spec in (None, "default") or spec == []:
        paint = [i for i, ly in enumerate(layers) if ly.kind == "paint" and ly.shown and not ly.note]
        if not paint:  # say why the paint layers there are were left alone (e.g. over the pixel limit)
            notes = "; ".join(f"{ly.path!r} {ly.note}" for ly in layers if ly.kind == "paint" and ly.note)
            raise ChoiceError(
                "no visible paint layer to mask"
                + (f" (layers left alone: {notes})" if notes else "; name one with --layers")
            )
        candidates = [next((i for i in reversed(paint) if not is_flat(i)), paint[-1])]
    elif spec in ("all", "visible"):
        candidates = [i for i, ly in enumerate(layers) if ly.kind == "paint" and (spec == "all" or ly.shown)]
    else:
        candidates = []
        for name in [spec] if isinstance(spec, str) else list(spec):
            found = [i for i, ly in enumerate(layers) if name in (ly.name, ly.path)]
            if not found:
                known = ", ".join(repr(ly.path) for ly in layers)
                raise ChoiceError(f"no layer named {name!r} (layers: {known})")
            candidates += [i for i in found if i not in candidates]
    chosen, notes = [], []
    for i in candidates:
        ly = layers[i]
        if ly.kind == "group":
            notes.append(f"{ly.path}: is a group (groups are not masked; name a layer inside it)")
        elif ly.kind != "paint":
            notes.append(f"{ly.path}: is a {ly.kind}, not a paint layer")
        elif ly.note:
            notes.append(f"{ly.path}: {ly.note}")
        elif ly.empty:
            notes.append(f"{ly.path}: is empty (no pixels)")
        elif ly.has_mask:
            notes.append(f"{ly.path}: already has a mask (left as it is)")
        else:
            chosen.append(i)
    return chosen, notes
