"""The option definitions of ``server.options`` are the one source: enums equal to core's tables,
and every command that has a group gets the same options with the same defaults."""

from __future__ import annotations

import argparse

from maskd.core import pipeline, shadow
from maskd.server import options
from maskd.server.cli import build_parser


def test_enums_hold_the_cores_choice_sets():
    assert options.values(options.Quality) == list(pipeline.QUALITIES)
    assert options.values(options.ShadowStyle) == [*shadow.SHADOW_PRESETS, "none"]
    assert [m for m in options.Mode if m.needs_colours] == [options.Mode.CUTOUT]


def _options(command: str) -> dict:
    parser = build_parser(only=command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {a.dest: (a.option_strings, a.default, a.choices) for a in sub._actions if a.option_strings}


def test_shared_groups_are_the_same_everywhere():
    remove, refine, finish = _options("remove"), _options("refine"), _options("finish")
    gimp, krita = _options("gimp-batch"), _options("krita-batch")
    matte = ["quality", "no_refine", "threshold", "grow", "feather", "fill_holes", "invert"]
    assert {k: remove[k] for k in matte} == {k: refine[k] for k in matte}
    finishing = ["background", "shadow", "crop", "margin", "canvas", "scale", "align", "preset", "sidecar"]
    assert {k: remove[k] for k in finishing} == {k: finish[k] for k in finishing}
    editor = ["layers", "quality", "no_refine", "overwrite", "quiet", "connection_file"]
    assert {k: gimp[k] for k in editor} == {k: krita[k] for k in editor} == {k: remove[k] for k in editor}
