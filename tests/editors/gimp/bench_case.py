# Runs inside GIMP 3's batch interpreter for tests/bench/bench_gimp.py: builds one large RGBA layer
# (a subject on a flat background, drawn with GIMP's own fill so building it costs nothing) and runs
# plug-in-maskd-remove-background on it a few times. The plug-in appends its own timing breakdown
# (read pixels / daemon round trip / write output, plus the daemon's stage timings) as one JSON
# line per run to $MASKD_GIMP_TIMINGS; this script adds the wall time GIMP's PDB call took.
import json
import os
import time

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp  # noqa: E402

SIZE = int(os.environ.get("MASKD_BENCH_SIZE", "4000"))
RUNS = json.loads(os.environ.get("MASKD_BENCH_RUNS", '[{"refine": false}, {"refine": false}]'))
OUT = os.environ["MASKD_BENCH_OUT"]

img = Gimp.Image.new(SIZE, SIZE, Gimp.ImageBaseType.RGB)
layer = Gimp.Layer.new(img, "photo", SIZE, SIZE, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
img.insert_layer(layer, None, 0)
Gimp.context_set_foreground(Gegl.Color.new("#3a7d44"))
layer.edit_fill(Gimp.FillType.FOREGROUND)
img.select_ellipse(Gimp.ChannelOps.REPLACE, SIZE * 0.2, SIZE * 0.15, SIZE * 0.55, SIZE * 0.7)
Gimp.context_set_foreground(Gegl.Color.new("#d8563a"))
layer.edit_fill(Gimp.FillType.FOREGROUND)
Gimp.Selection.none(img)

proc = Gimp.get_pdb().lookup_procedure("plug-in-maskd-remove-background")
walls = []
for args in RUNS:
    if layer.get_mask() is not None:
        layer.remove_mask(Gimp.MaskApplyMode.DISCARD)
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    cfg.set_property("image", img)
    cfg.set_core_object_array("drawables", [layer])
    for key, value in args.items():
        cfg.set_property(key, value)
    t0 = time.perf_counter()
    rv = proc.run(cfg)
    wall = time.perf_counter() - t0
    status = rv.index(0).value_nick
    walls.append(
        {
            "args": args,
            "status": status,
            "pdb_wall": wall,
            "error": None if status == "success" else Gimp.get_pdb().get_last_error(),
        }
    )
with open(OUT, "w") as fh:
    json.dump(walls, fh)
img.delete()
