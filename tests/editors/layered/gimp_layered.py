# Runs inside GIMP 3 (batch mode, python-fu-eval), driven by environment variables because
# `-b 'exec(...)'` passes no arguments:
#   LAYERED_ACTION=make     LAYERED_OUT=DIR              -> made.xcf, made16.xcf, made.ora
#   LAYERED_ACTION=inspect  LAYERED_OUT=DIR LAYERED_FILES="a.xcf b.ora"
# Every action writes DIR/result.json ("error" holds a traceback when something failed). Layer
# pixels are dumped as raw "R'G'B'A u8" and masks as raw "Y u8" (linear: values stored 1:1).
import json
import os
import traceback

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio  # noqa: E402

W, H = 96, 64
OUT = os.environ["LAYERED_OUT"]
result = {}


def _rgba(width, height, fn):
    out = bytearray(width * height * 4)
    i = 0
    for y in range(height):
        for x in range(width):
            out[i : i + 4] = bytes(fn(x, y))
            i += 4
    return bytes(out)


def _subject(x, y):
    if (x - 48) ** 2 + (y - 32) ** 2 < 20**2:
        return (230, 120 + y, 40, 255)
    return (20 + x // 2, 60 + y, 160, 255)


def _layer(
    img, parent, position, name, w, h, x, y, fn, opacity=100.0, mode=Gimp.LayerMode.NORMAL, visible=True
):
    layer = Gimp.Layer.new(img, name, w, h, Gimp.ImageType.RGBA_IMAGE, opacity, mode)
    img.insert_layer(layer, parent, position)
    layer.set_offsets(x, y)
    buf = layer.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, w, h), "R'G'B'A u8", _rgba(w, h, fn))
    buf.flush()
    layer.set_visible(visible)
    return layer


def make():
    img = Gimp.Image.new(W, H, Gimp.ImageBaseType.RGB)
    # bottom to top: a plain white "Background" (what GIMP and Krita start with), the photo,
    # an offset multiply shadow, a group with a screen stripe and a hidden note, a hidden top layer
    _layer(img, None, 0, "Background", W, H, 0, 0, lambda x, y: (255, 255, 255, 255))
    bg = _layer(img, None, 0, "background", W, H, 0, 0, _subject)
    _layer(
        img, None, 0, "shadow", 40, 30, 10, 12, lambda x, y: (10, 10, 10, 200), 60.0, Gimp.LayerMode.MULTIPLY
    )
    group = Gimp.GroupLayer.new(img, "decor")
    img.insert_layer(group, None, 0)
    _layer(
        img, group, 0, "stripe", W, 8, 0, 40, lambda x, y: (250, 250, 90, 255), 80.0, Gimp.LayerMode.SCREEN
    )
    _layer(img, group, 0, "note", 16, 16, 70, 4, lambda x, y: (255, 0, 0, 255), visible=False)
    _layer(img, None, 0, "hidden top", W, H, 0, 0, lambda x, y: (0, 255, 0, 128), visible=False)
    with open(os.path.join(OUT, "background.rgba"), "wb") as f:
        f.write(
            bytes(
                bg.get_buffer().get(Gegl.Rectangle.new(0, 0, W, H), 1.0, "R'G'B'A u8", Gegl.AbyssPolicy.CLAMP)
            )
        )
    for name in ("made.xcf", "made.ora"):
        result[name] = bool(
            Gimp.file_save(
                Gimp.RunMode.NONINTERACTIVE, img, Gio.File.new_for_path(os.path.join(OUT, name)), None
            )
        )
    img.convert_precision(Gimp.Precision.U16_NON_LINEAR)
    result["made16.xcf"] = bool(
        Gimp.file_save(
            Gimp.RunMode.NONINTERACTIVE, img, Gio.File.new_for_path(os.path.join(OUT, "made16.xcf")), None
        )
    )
    img.delete()


def _describe(layer, prefix, dumps):
    ok, x, y = (
        layer.get_offsets()[-3:] if len(layer.get_offsets()) == 3 else (True,) + tuple(layer.get_offsets())
    )
    w, h = layer.get_width(), layer.get_height()
    item = {
        "name": layer.get_name(),
        "group": bool(layer.is_group()),
        "visible": bool(layer.get_visible()),
        "opacity": round(layer.get_opacity(), 3),
        "mode": int(layer.get_mode()),
        "offsets": [x, y],
        "size": [w, h],
        "children": [],
    }
    rect = Gegl.Rectangle.new(0, 0, w, h)
    if layer.is_group():
        item["children"] = [_describe(child, prefix, dumps) for child in layer.get_children()]
    else:
        key = f"{prefix}{len(dumps)}"
        dumps.append(key)
        with open(os.path.join(OUT, key + ".rgba"), "wb") as f:
            f.write(bytes(layer.get_buffer().get(rect, 1.0, "R'G'B'A u8", Gegl.AbyssPolicy.CLAMP)))
        item["dump"] = key + ".rgba"
    mask = layer.get_mask()
    if mask is not None:
        key = f"{prefix}{len(dumps)}"
        dumps.append(key)
        with open(os.path.join(OUT, key + ".mask"), "wb") as f:
            f.write(bytes(mask.get_buffer().get(rect, 1.0, "Y u8", Gegl.AbyssPolicy.CLAMP)))
        item["mask"] = key + ".mask"
        item["apply_mask"] = bool(layer.get_apply_mask())
    return item


def inspect():
    result["files"] = {}
    for i, path in enumerate(os.environ["LAYERED_FILES"].split()):
        try:
            img = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(path))
        except Exception as exc:  # GIMP reports unreadable files as a GLib.Error
            result["files"][path] = {"error": str(exc)}
            continue
        dumps = []
        result["files"][path] = {
            "size": [img.get_width(), img.get_height()],
            "precision": int(img.get_precision()),
            "layers": [_describe(layer, f"f{i}_", dumps) for layer in img.get_layers()],
        }
        img.delete()


try:
    {"make": make, "inspect": inspect}[os.environ["LAYERED_ACTION"]]()
except Exception:
    result["error"] = traceback.format_exc()
with open(os.path.join(OUT, "result.json"), "w") as f:
    json.dump(result, f, indent=1)
