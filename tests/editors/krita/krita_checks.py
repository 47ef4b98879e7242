"""Checks run inside real Krita by kritarunner: the INSTALLED plugin's own code path.

    QT_QPA_PLATFORM=offscreen kritarunner -s krita_checks -f main SPEC.json

kritarunner always exits 0, so everything is reported in the result file named by the spec.
The host test (tests/editors/test_krita.py) writes the spec and each case's pixel bytes, then
compares the masks written here with what the daemon returns for the same bytes.
Every check runs in one Krita process: Krita takes seconds to start.
"""

import hashlib
import json
import os
import sys
import time
import traceback


def _sha(data) -> str:
    return hashlib.sha256(bytes(data)).hexdigest()


def _wait(job, seconds=120.0):
    from PyQt5.QtCore import QEventLoop, QTimer

    if job.done:
        return
    loop = QEventLoop()
    job.finished.connect(loop.quit)
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    if not job.done:
        loop.exec_()


def _guarded(call, seconds=150.0):
    """Run ``call`` with a watchdog that cancels the plugin's job if the daemon never answers,
    so one stuck request fails its own check instead of hanging the whole Krita run."""
    from maskd import runner
    from PyQt5.QtCore import QTimer

    timer = QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(lambda: runner.active_job() and runner.active_job().cancel())
    timer.start(int(seconds * 1000))
    try:
        return call()
    finally:
        timer.stop()


def _doc_state(doc):
    """Node tree (type, name, bounds) and pixel hashes: what "unchanged" is compared on."""
    state = []

    def walk(node, depth):
        for child in node.childNodes():
            b = child.bounds()
            entry = [depth, child.type(), child.name(), [b.x(), b.y(), b.width(), b.height()]]
            if b.width() > 0 and child.type() == "paintlayer":
                entry.append(_sha(child.pixelData(b.x(), b.y(), b.width(), b.height())))
            state.append(entry)
            walk(child, depth + 1)

    walk(doc.rootNode(), 0)
    sel = doc.selection()
    state.append(["selection", None if sel is None else [sel.x(), sel.y(), sel.width(), sel.height()]])
    return state


def _tree(node):
    """[name, type, children] for each child, bottom first (what "nothing extra" is checked on)."""
    return [[c.name(), c.type(), _tree(c)] for c in node.childNodes()]


def _find(node, name):
    for child in node.childNodes():
        if child.name() == name:
            return child
    return None


def _make_case_document(app, case, work):
    from PyQt5.QtCore import QByteArray

    doc = app.createDocument(
        case["doc_w"], case["doc_h"], case["name"], case["model"], case["depth"], "", 72.0
    )
    doc.setBatchmode(True)
    root = doc.rootNode()
    for child in root.childNodes():  # drop the default background so only our layer is there
        child.remove()
    x, y, w, h = case["rect"]
    with open(os.path.join(work, case["name"] + ".pixels"), "rb") as fh:
        data = fh.read()
    if case.get("under"):  # a layer under the subject: the shadow goes between the two
        paper = doc.createNode("paper", "paintlayer")
        root.addChildNode(paper, None)
        paper.setPixelData(
            QByteArray(bytes([200, 210, 220, 255]) * (case["doc_w"] * case["doc_h"])),
            0,
            0,
            case["doc_w"],
            case["doc_h"],
        )
    layer = doc.createNode("subject", "paintlayer")
    target = layer
    if case.get("group"):
        group = doc.createGroupLayer("group")
        root.addChildNode(group, None)
        group.addChildNode(layer, None)
        target = group
    else:
        root.addChildNode(layer, None)
    layer.setPixelData(QByteArray(data), 0, 0, w, h)
    if x or y:
        layer.move(x, y)
    doc.waitForDone()
    if case.get("selection"):
        from krita import Selection

        sx, sy, sw, sh = case["selection"]
        sel = Selection()
        sel.select(sx, sy, sw, sh, 255)
        doc.setSelection(sel)
    doc.setActiveNode(target)
    return doc, layer, target


def run_case(app, maskd, case, work):
    res = {"name": case["name"]}
    doc, layer, target = _make_case_document(app, case, work)
    b = target.bounds()
    res["bounds"] = [b.x(), b.y(), b.width(), b.height()]
    res["color"] = [target.colorModel(), target.colorDepth(), target.colorProfile()]
    before = _doc_state(doc)
    layer_before = _sha(layer.pixelData(b.x(), b.y(), b.width(), b.height()))
    paper = _find(doc.rootNode(), "paper")
    paper_before = None if paper is None else _sha(paper.pixelData(0, 0, case["doc_w"], case["doc_h"]))
    output = case.get("output", "transparency-mask")
    t0 = time.perf_counter()
    try:
        options = case.get("options", {})
        node = _guarded(lambda: maskd.remove_background(doc, target, output=output, **options))
    except maskd.JobError as exc:
        res["error"] = [exc.code, exc.message]
        res["unchanged"] = _doc_state(doc) == before
        doc.close()
        return res
    res["seconds"] = time.perf_counter() - t0
    doc.waitForDone()
    x, y, w, h = res["bounds"]
    res["tree"] = _tree(doc.rootNode())
    if paper is not None:
        paper_now = _sha(paper.pixelData(0, 0, case["doc_w"], case["doc_h"]))
        res["paper_pixels_unchanged"] = paper_now == paper_before
    parent = target.parentNode() or doc.rootNode()  # ("apply" replaced the target)
    shadow = _find(parent, target.name() + " shadow")
    if shadow is not None:  # its own pixels (colour), its mask, and what it shows (layer x mask),
        # over the layer's bounds joined with the canvas (where a shadow may fall)
        sx, sy = min(x, 0), min(y, 0)
        sw, sh = max(x + w, case["doc_w"]) - sx, max(y + h, case["doc_h"]) - sy
        res["shadow_region"] = [sx, sy, sw, sh]
        sb = shadow.bounds()
        res["shadow_bounds"] = [sb.x(), sb.y(), sb.width(), sb.height()]
        for suffix, data in (
            ("shadow-layer", shadow.pixelData(sx, sy, sw, sh)),
            ("shadow-mask", shadow.childNodes()[0].pixelData(sx, sy, sw, sh)),
            ("shadow-shown", shadow.projectionPixelData(sx, sy, sw, sh)),
        ):
            with open(os.path.join(work, f"{case['name']}.{suffix}"), "wb") as fh:
                fh.write(bytes(data))
    background = _find(parent, target.name() + " background")
    if background is not None:
        with open(os.path.join(work, case["name"] + ".background"), "wb") as fh:
            fh.write(bytes(background.pixelData(0, 0, case["doc_w"], case["doc_h"])))
        bb = background.bounds()
        res["background_bounds"] = [bb.x(), bb.y(), bb.width(), bb.height()]
    if output == "transparency-mask":
        res["node_type"] = node.type()
        res["node_parent"] = node.parentNode().name()
        mb = node.bounds()
        res["mask_bounds"] = [mb.x(), mb.y(), mb.width(), mb.height()]
        with open(os.path.join(work, case["name"] + ".mask"), "wb") as fh:
            fh.write(bytes(node.pixelData(x, y, w, h)))
        res["layer_pixels_unchanged"] = _sha(layer.pixelData(x, y, w, h)) == layer_before
        res["masks_on_target"] = [n.type() for n in target.childNodes()].count("transparencymask")
    elif output == "selection":
        sel = doc.selection()
        res["node_type"] = "selection"
        with open(os.path.join(work, case["name"] + ".mask"), "wb") as fh:
            fh.write(bytes(sel.pixelData(x, y, w, h)))
        res["layer_pixels_unchanged"] = _sha(layer.pixelData(x, y, w, h)) == layer_before
    else:
        res["node_type"] = node.type()
        res["node_name"] = node.name()
        res["top_level"] = [n.name() for n in doc.rootNode().childNodes()]
        with open(os.path.join(work, case["name"] + ".cutout"), "wb") as fh:
            fh.write(bytes(node.pixelData(x, y, w, h)))
        if output == "new-layer":
            res["layer_pixels_unchanged"] = _sha(layer.pixelData(x, y, w, h)) == layer_before
    doc.close()
    return res


def run_lifecycle_checks(app, maskd, spec, work):
    """Daemon absent, failing autostart, closing the image and cancelling mid-job, busy."""
    from maskd import runner

    out = {}
    case = dict(spec["cases"][0])
    config_path = os.path.join(os.path.dirname(maskd.__file__), "maskd_config.json")
    with open(config_path, encoding="utf-8") as fh:
        good_config = fh.read()

    def with_config(config, name):
        with open(config_path, "w", encoding="utf-8") as fh:
            json.dump(config, fh)
        doc, layer, target = _make_case_document(app, case, work)
        before = _doc_state(doc)
        t0 = time.perf_counter()
        try:
            node = _guarded(lambda: maskd.remove_background(doc, target))
            out[name] = {"error": None, "node_type": node.type()}
        except maskd.JobError as exc:
            out[name] = {"error": [exc.code, exc.message]}
        out[name]["seconds"] = time.perf_counter() - t0
        out[name]["unchanged"] = _doc_state(doc) == before
        doc.close()

    try:
        missing = os.path.join(work, "no-daemon", "connection.json")
        with_config({"connection_file": missing, "autostart": False, "daemon_command": []}, "daemon_absent")
        with_config(
            {"connection_file": missing, "autostart": True, "daemon_command": ["/bin/false"]},
            "autostart_fails",
        )
        if spec.get("autostart"):  # no daemon there: the plugin runs the configured `maskd serve`
            with_config(dict(spec["autostart"], autostart=True), "autostarted")
    finally:
        with open(config_path, "w", encoding="utf-8") as fh:
            fh.write(good_config)

    # close the image while the job runs: the result must be dropped, nothing may crash
    doc, layer, target = _make_case_document(app, case, work)
    job = maskd.start_job(doc, target, "transparency-mask", {})
    busy = maskd.start_job(doc, target, "transparency-mask", {})
    out["busy"] = {"error": None if busy.error is None else [busy.error.code, busy.error.message]}
    doc.close()
    _wait(job)
    out["closed_mid_job"] = {
        "done": job.done,
        "error": None if job.error is None else [job.error.code, job.error.message],
    }
    # cancel mid-job: document unchanged, the next job works again
    doc, layer, target = _make_case_document(app, case, work)
    before = _doc_state(doc)
    job = maskd.start_job(doc, target, "transparency-mask", {})
    job.cancel()
    _wait(job)
    out["cancelled"] = {
        "done": job.done,
        "error": None if job.error is None else job.error.code,
        "unchanged": _doc_state(doc) == before,
    }
    try:
        node = _guarded(lambda: maskd.remove_background(doc, target))
        out["after_cancel"] = {"node_type": node.type()}
    except maskd.JobError as exc:
        out["after_cancel"] = {"error": [exc.code, exc.message]}
    doc.close()
    # a layer deleted mid-job
    doc, layer, target = _make_case_document(app, case, work)
    job = maskd.start_job(doc, target, "transparency-mask", {})
    target.remove()
    doc.waitForDone()
    _wait(job)
    out["layer_deleted_mid_job"] = {
        "error": None if job.error is None else job.error.code,
        "nodes": [n.name() for n in doc.rootNode().childNodes()],
    }
    doc.close()
    # finishing options refused: a bad style (before the daemon is asked), and a bottom layer that
    # clone layers copy (after it answered): the document stays as it was either way
    doc, layer, target = _make_case_document(app, case, work)
    clone = doc.createCloneLayer("subject clone", target)
    doc.rootNode().addChildNode(clone, None)
    doc.waitForDone()
    before = _doc_state(doc)
    for name, options in (
        ("bad_shadow_style", {"shadow": "sparkle"}),
        ("clone_source_at_bottom", {"shadow": "soft", "background": "#ffffff"}),
    ):
        try:
            _guarded(lambda options=options: maskd.remove_background(doc, target, **options))
            out[name] = {"error": None}
        except maskd.JobError as exc:
            out[name] = {"error": [exc.code, exc.message]}
        out[name]["unchanged"] = _doc_state(doc) == before
    doc.close()
    out["active_job_left"] = runner.active_job() is not None
    return out


def main(args):
    spec_path = args[0]
    with open(spec_path, encoding="utf-8") as fh:
        spec = json.load(fh)
    work = spec["work"]
    result = {"python": sys.version.split()[0], "cases": [], "started": time.time()}
    try:
        from krita import Krita

        app = Krita.instance()
        result["krita"] = app.version()
        sys.path.insert(0, spec["pykrita"])
        import maskd

        result["maskd_file"] = maskd.__file__
        result["client_backend"] = maskd.runner._client_module()._pick_backend(None)
        if spec.get("lifecycle", True):
            try:
                result["lifecycle"] = run_lifecycle_checks(app, maskd, spec, work)
            except Exception:
                result["lifecycle"] = {"crash": traceback.format_exc()}
        for case in spec["cases"]:
            try:
                result["cases"].append(run_case(app, maskd, case, work))
            except Exception:
                result["cases"].append({"name": case["name"], "crash": traceback.format_exc()})
    except Exception:
        result["crash"] = traceback.format_exc()
    result["finished"] = time.time()
    with open(spec["result"], "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)
    print("maskd krita checks done", flush=True)


__main__ = main
