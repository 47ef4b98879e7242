"""Runs inside Krita 5.2 (kritarunner): make layered test files, and describe files for the tests.

    QT_QPA_PLATFORM=offscreen PYTHONPATH=<this dir> kritarunner -s krita_layered -f make OUTDIR
    ... -f inspect OUTDIR FILE...

kritarunner always exits 0, so every function writes ``result.json`` in OUTDIR (``error`` holds a
traceback when something failed). Standard library + Krita only (Krita's Python has no numpy).
"""

import json
import os
import sys
import traceback

W, H = 96, 64


def _bgra(width, height, fn):
    out = bytearray(width * height * 4)
    i = 0
    for y in range(height):
        for x in range(width):
            r, g, b, a = fn(x, y)
            out[i : i + 4] = bytes((b, g, r, a))
            i += 4
    return bytes(out)


def _subject(x, y):
    """An opaque photo-like layer: a warm disc on a cool gradient (the default target)."""
    if (x - 48) ** 2 + (y - 32) ** 2 < 20**2:
        return (230, 120 + y, 40, 255)
    return (20 + x // 2, 60 + y, 160, 255)


def make(args):
    """Build one document (several layers, offsets, opacity, blend modes, a group), save .kra and .ora."""
    out = args[0]
    res = {}
    try:
        from krita import Krita
        from PyQt5.QtCore import QByteArray

        app = Krita.instance()
        doc = app.createDocument(W, H, "layered", "RGBA", "U8", "", 72.0)
        doc.setBatchmode(True)
        root = doc.rootNode()
        bg = doc.createNode("background", "paintlayer")
        root.addChildNode(bg, None)
        bg.setPixelData(QByteArray(_bgra(W, H, _subject)), 0, 0, W, H)

        shadow = doc.createNode("shadow", "paintlayer")
        root.addChildNode(shadow, bg)
        shadow.setPixelData(QByteArray(_bgra(40, 30, lambda x, y: (10, 10, 10, 200))), 10, 12, 40, 30)
        shadow.setOpacity(153)
        shadow.setBlendingMode("multiply")

        group = doc.createNode("decor", "grouplayer")
        root.addChildNode(group, shadow)
        stripe = doc.createNode("stripe", "paintlayer")
        group.addChildNode(stripe, None)
        stripe.setPixelData(QByteArray(_bgra(W, 8, lambda x, y: (250, 250, 90, 255))), 0, 40, W, 8)
        stripe.setOpacity(204)
        stripe.setBlendingMode("screen")
        note = doc.createNode("note", "paintlayer")
        group.addChildNode(note, stripe)
        note.setPixelData(QByteArray(_bgra(16, 16, lambda x, y: (255, 0, 0, 255))), 70, 4, 16, 16)
        note.setVisible(False)

        hidden = doc.createNode("hidden top", "paintlayer")
        root.addChildNode(hidden, group)
        hidden.setPixelData(QByteArray(_bgra(W, H, lambda x, y: (0, 255, 0, 128))), 0, 0, W, H)
        hidden.setVisible(False)
        doc.refreshProjection()
        doc.waitForDone()
        for name in ("made.kra", "made.ora"):
            path = os.path.join(out, name)
            res[name] = (
                bool(doc.exportImage(path, _export_config()))
                if name.endswith(".ora")
                else bool(doc.saveAs(path))
            )
        # the subject layer's own pixels, for comparing with the daemon's alpha (BGRA)
        with open(os.path.join(out, "background.bgra"), "wb") as f:
            f.write(bytes(bg.pixelData(0, 0, W, H)))
        doc.close()
    except Exception:
        res["error"] = traceback.format_exc()
    _write(out, res)


def _export_config():
    from krita import InfoObject

    return InfoObject()


def _describe(node, out, prefix, dumps):
    item = {
        "name": node.name(),
        "type": node.type(),
        "visible": bool(node.visible()),
        "opacity": node.opacity(),
        "mode": node.blendingMode(),
        "bounds": [node.bounds().x(), node.bounds().y(), node.bounds().width(), node.bounds().height()],
        "children": [],
    }
    if node.type() in ("transparencymask", "selectionmask"):
        key = f"{prefix}{len(dumps)}"
        path = os.path.join(out, key + ".mask")
        with open(path, "wb") as f:
            f.write(bytes(node.pixelData(0, 0, W, H)))
        dumps.append(key)
        item["dump"] = key + ".mask"
    elif node.type() == "paintlayer":
        key = f"{prefix}{len(dumps)}"
        with open(os.path.join(out, key + ".bgra"), "wb") as f:
            f.write(bytes(node.pixelData(0, 0, W, H)))
        dumps.append(key)
        item["dump"] = key + ".bgra"
    for child in node.childNodes():
        item["children"].append(_describe(child, out, prefix, dumps))
    return item


def inspect(args):
    """Open each file and describe its layer tree; dump paint layers (BGRA) and masks (1 byte/pixel)."""
    out, files = args[0], args[1:]
    res = {"files": {}}
    try:
        from krita import Krita

        app = Krita.instance()
        for i, path in enumerate(files):
            doc = app.openDocument(path)
            if doc is None:
                res["files"][path] = {"error": "Krita could not open the file"}
                continue
            doc.setBatchmode(True)
            doc.waitForDone()
            dumps = []
            tree = _describe(doc.rootNode(), out, f"f{i}_", dumps)
            res["files"][path] = {"size": [doc.width(), doc.height()], "tree": tree}
            doc.close()
    except Exception:
        res["error"] = traceback.format_exc()
    _write(out, res)


def _write(out, res):
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(res, f, indent=1)
    print("RESULT", json.dumps(res)[:2000], file=sys.stderr, flush=True)
