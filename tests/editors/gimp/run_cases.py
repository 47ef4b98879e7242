# Runs inside GIMP 3's batch interpreter (python-fu-eval), started by tests/editors/test_gimp.py:
#   gimp-console-3.0 -i -d -f --batch-interpreter=python-fu-eval \
#       -b 'exec(open("/maskd/tests/editors/gimp/run_cases.py").read())' --quit
# It reads a plan (JSON, $MASKD_PLAN): a list of cases, each an image to build from raw pixel files
# written by the host, the plug-in's arguments and what to read back. For every case it builds the
# image, calls plug-in-maskd-remove-background through the PDB, and writes what GIMP then holds
# (status, error text, masks, layers, selection, as raw float32 files) into $OUT_DIR, plus an XCF.
# One GIMP start serves every case: GIMP takes seconds to start, a case takes milliseconds.
import json
import os
import sys
import threading
import time
import traceback

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio  # noqa: E402

sys.path.insert(0, "/maskd-gimp-tests")
import xkeys  # noqa: E402

PROC = "plug-in-maskd-remove-background"
PLAN = json.load(open(os.environ["MASKD_PLAN"]))
OUT = os.environ["OUT_DIR"]
DATA = os.path.dirname(os.environ["MASKD_PLAN"])


def rect(x, y, w, h):
    return Gegl.Rectangle.new(x, y, w, h)


def dump(drawable, fmt, name):
    """Write the drawable's whole buffer in ``fmt`` to OUT/name; returns its geometry."""
    w, h = drawable.get_width(), drawable.get_height()
    data = drawable.get_buffer().get(rect(0, 0, w, h), 1.0, fmt, Gegl.AbyssPolicy.CLAMP)
    with open(os.path.join(OUT, name), "wb") as fh:
        fh.write(bytes(data))
    return {"file": name, "format": fmt, "width": w, "height": h}


def offsets(item):
    r = item.get_offsets()
    return [int(r[-2]), int(r[-1])]


def describe(img, layer, case, tag):
    """Everything the host checks, about the image as it is now."""
    name = case["name"]
    gray = img.get_base_type() == Gimp.ImageBaseType.GRAY
    layer_fmt = "Y'A float" if gray else "R'G'B'A float"
    state = {
        "layers": [l.get_name() for l in img.get_layers()],
        "selected": [l.get_name() for l in img.get_selected_layers()],
    }
    state["layer"] = dict(
        dump(layer, layer_fmt, f"{name}.{tag}.layer.f32"), offsets=offsets(layer), has_alpha=layer.has_alpha()
    )
    mask = layer.get_mask()
    state["mask"] = dump(mask, "Y float", f"{name}.{tag}.mask.f32") if mask else None
    sel = Gimp.Selection.bounds(img)
    state["selection_bounds"] = [bool(sel[1])] + [int(v) for v in sel[2:]]
    if not Gimp.Selection.is_empty(img):
        state["selection"] = dump(img.get_selection(), "Y float", f"{name}.{tag}.selection.f32")
    # the layers beside the processed one (its group's, or the image's) and the finishing layers
    parent = layer.get_parent()
    stack = list(parent.get_children()) if parent is not None else list(img.get_layers())
    state["stack"] = [item.get_name() for item in stack]
    state["finishing"] = {}
    for item in stack:
        item_name = item.get_name()
        if item_name.endswith(" shadow") or item_name.endswith(" background"):
            key = item_name.rsplit(" ", 1)[1]
            info = dict(
                dump(item, layer_fmt, f"{name}.{tag}.{key}.f32"), offsets=offsets(item), name=item_name
            )
            item_mask = item.get_mask()
            info["mask"] = dump(item_mask, "Y float", f"{name}.{tag}.{key}.mask.f32") if item_mask else None
            state["finishing"][key] = info
    layers = img.get_layers()
    if len(layers) > 1 and layers[0].get_name() != layer.get_name():
        top = layers[0]
        state["new_layer"] = dict(
            dump(top, layer_fmt, f"{name}.{tag}.new.f32"),
            offsets=offsets(top),
            name=top.get_name(),
            has_mask=top.get_mask() is not None,
        )
    return state


def build(case):
    img = Gimp.Image.new_with_precision(
        case["width"],
        case["height"],
        getattr(Gimp.ImageBaseType, case["base"]),
        getattr(Gimp.Precision, case["precision"]),
    )
    spec = case["layer"]
    parent = None
    if case.get("group"):
        parent = Gimp.GroupLayer.new(img, "group")
        img.insert_layer(parent, None, 0)
    layer = Gimp.Layer.new(
        img,
        "photo",
        spec["width"],
        spec["height"],
        getattr(Gimp.ImageType, spec["type"]),
        100.0,
        Gimp.LayerMode.NORMAL,
    )
    img.insert_layer(layer, parent, 0)
    layer.set_offsets(*spec["offsets"])
    for below in case.get("below", []):  # more layers under the photo (e.g. a floor)
        extra = Gimp.Layer.new(
            img,
            below,
            case["width"],
            case["height"],
            getattr(Gimp.ImageType, spec["type"]),
            100.0,
            Gimp.LayerMode.NORMAL,
        )
        img.insert_layer(extra, parent, len(img.get_layers()))
        img.set_selected_layers([layer])
    data = open(os.path.join(DATA, spec["pixels"]), "rb").read()
    buf = layer.get_buffer()
    buf.set(rect(0, 0, spec["width"], spec["height"]), spec["format"], data)
    buf.flush()
    if case.get("existing_mask"):
        m = case["existing_mask"]
        mask = layer.create_mask(Gimp.AddMaskType.WHITE)
        layer.add_mask(mask)
        mb = mask.get_buffer()
        mb.set(
            rect(0, 0, spec["width"], spec["height"]),
            m["format"],
            open(os.path.join(DATA, m["pixels"]), "rb").read(),
        )
        mb.flush()
    if case.get("selection"):
        img.select_rectangle(Gimp.ChannelOps.REPLACE, *case["selection"])
    target = {"group": parent, "mask": layer.get_mask()}.get(case.get("target"), layer)
    return img, layer, target


def accept_dialog(found):
    """Wait for the plug-in's dialog and press Return in it (OK with the values shown)."""
    xid = xkeys.find_window("Remove Background")
    if xid is None:
        return
    found.append(xid)
    for _ in range(20):  # a key sent before GTK is ready is lost: press again while it is still open
        time.sleep(0.5)
        xkeys.press(xid, xkeys.XK_RETURN)
        time.sleep(1.0)
        if xkeys.find_window("Remove Background", timeout=0) is None:
            return


def call(img, drawables, args, interactive=False):
    proc = Gimp.get_pdb().lookup_procedure(PROC)
    cfg = proc.create_config()
    mode = Gimp.RunMode.INTERACTIVE if interactive else Gimp.RunMode.NONINTERACTIVE
    cfg.set_property("run-mode", mode)
    cfg.set_property("image", img)
    cfg.set_core_object_array("drawables", drawables)
    for key, value in args.items():
        if key.endswith("-color"):  # colours travel through JSON as "#rrggbb"
            value = Gegl.Color.new(value)
        cfg.set_property(key, value)
    found = []
    if interactive:
        threading.Thread(target=accept_dialog, args=(found,), daemon=True).start()
    rv = proc.run(cfg)
    status = rv.index(0)
    error = None
    if status != Gimp.PDBStatusType.SUCCESS:
        error = Gimp.get_pdb().get_last_error()
    if interactive and not found:
        error = "the dialog did not appear"
    return status.value_nick, None if error is None else str(error)


def registration():
    proc = Gimp.get_pdb().lookup_procedure(PROC)
    if proc is None:
        return {"found": False}
    return {
        "found": True,
        "menu_paths": list(proc.get_menu_paths()),
        "menu_label": proc.get_menu_label(),
        "image_types": proc.get_image_types(),
        "sensitivity": int(proc.get_sensitivity_mask()),
        "sensitivity_drawable": int(Gimp.ProcedureSensitivityMask.DRAWABLE),
        "arguments": [p.get_name() for p in proc.get_arguments()],
        "nicks": {p.get_name(): p.get_nick() for p in proc.get_arguments()},
    }


def undo_once(img, display):
    """One Ctrl+Z in the image window (GIMP has no undo procedure in its PDB); waits until GIMP
    has undone (the image is clean again) or 10 s have passed."""
    time.sleep(0.3)  # let GIMP map the window before the key arrives
    xkeys.press(xkeys.display_xid(display), xkeys.XK_Z, xkeys.CONTROL_MASK)
    deadline = time.time() + 10
    while img.is_dirty() and time.time() < deadline:
        time.sleep(0.05)
    return not img.is_dirty()


def run_case(case):
    result = {"name": case["name"]}
    config_path = case.get("plugin_config")
    saved_config = None
    try:
        img, layer, target = build(case)
        result["before"] = describe(img, layer, case, "before")
        display = Gimp.Display.new(img) if case.get("undo") or case.get("interactive") else None
        img.clean_all()
        if config_path:  # e.g. the daemon-absent case: point the plug-in elsewhere for this one call
            saved_config = open(config_path["path"]).read()
            with open(config_path["path"], "w") as fh:
                json.dump(config_path["config"], fh)
        result["status"], result["error"] = call(
            img, [target], case.get("args", {}), interactive=case.get("interactive", False)
        )
        result["after"] = describe(img, layer, case, "after")
        if case.get("save"):
            path = os.path.join(OUT, case["name"] + ".xcf")
            result["saved"] = bool(
                Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, img, Gio.File.new_for_path(path), None)
            )
        if display is not None:
            if case.get("undo"):
                result["undo_clean"] = undo_once(img, display)
                result["undone"] = describe(img, layer, case, "undone")
            display.delete()
            try:
                img.delete()
            except Exception:
                pass  # deleting the last display already freed it
        else:
            img.delete()
    except Exception:
        result["exception"] = traceback.format_exc()
    finally:
        if saved_config is not None:
            with open(config_path["path"], "w") as fh:
                fh.write(saved_config)
    return result


results = {"registration": registration(), "cases": [run_case(c) for c in PLAN["cases"]]}
with open(os.path.join(OUT, "results.json"), "w") as fh:
    json.dump(results, fh, indent=1)
print(
    "maskd gimp cases:",
    [(c["name"], c.get("status"), bool(c.get("exception"))) for c in results["cases"]],
    flush=True,
)
