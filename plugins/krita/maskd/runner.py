"""One background-removal job: read the layer, ask the daemon off the GUI thread, write the result.

The split keeps Krita responsive and safe:

1. ``Job.start`` (GUI thread) resolves the document and layer, reads the pixels once with
   ``pixelData``/``projectionPixelData`` and hands plain ``bytes`` to a worker ``QThread``.
2. The worker (no Krita API at all) connects to — or starts — the daemon, sends the pixels,
   streams progress back through queued signals and turns the alpha into mask bytes.
3. ``Job._finish`` (GUI thread again) checks that the document is still open and the layer still
   where it was, then makes exactly one structural, undoable change (``addChildNode``) after the
   new node's pixels are written — so one Ctrl+Z removes it and the layer's pixels are untouched.

Errors at any point leave the document as it was and come back as a ``JobError`` message.
"""

from __future__ import annotations

import threading
import time
import uuid

from PyQt5.QtCore import QByteArray, QObject, QThread, pyqtSignal

from . import pixels as px
from . import settings as cfg

MASK_NAME = "Background Removal"
_MASK_TYPES = ("transparencymask", "selectionmask", "filtermask", "transformmask", "colorizemask")
_OWN_PIXELS = ("paintlayer",)  # layers whose own pixels are read; others use their projection


class JobError(Exception):
    """A message for the user; ``code`` is the daemon client's code or a local one."""

    def __init__(self, message: str, code: str = "error"):
        super().__init__(message)
        self.code = code
        self.message = message


class Cancelled(Exception):
    pass


def _client_module():
    from . import maskd_client  # copied next to the plugin by the installer

    return maskd_client


def load_config() -> dict:
    """The installer's ``maskd_config.json``, re-read for every job (an update needs no restart)."""
    mc = _client_module()
    try:
        return mc.load_plugin_config(cfg.PLUGIN_DIR)
    except mc.MaskdClientError as exc:
        raise JobError(str(exc), exc.code) from None


def _krita():
    from krita import Krita

    return Krita.instance()


def _rect(qrect):
    return (qrect.x(), qrect.y(), qrect.width(), qrect.height())


def _same_document(a, b) -> bool:
    try:
        return a == b
    except Exception:
        return a is b


def document_is_open(doc) -> bool:
    return any(_same_document(doc, d) for d in _krita().documents())


class Snapshot:
    """Everything the worker needs, read on the GUI thread (plain Python values only)."""

    def __init__(self):
        self.document = None
        self.node_id = None
        self.node_name = ""
        self.node_type = ""
        self.region = (0, 0, 0, 0)  # image rectangle that was read (may reach beyond the canvas)
        self.roi = None  # selection bounding box relative to region
        self.fmt = None
        self.converted_from = None  # original "MODEL/DEPTH" when Krita converted for reading
        self.profile = ""
        self.pixels = b""
        self.output = "transparency-mask"
        self.options = {}
        self.config = {}
        self.timings = {}


def take_snapshot(document, node, output: str, options: dict) -> Snapshot:
    """Resolve defaults, validate and read the pixels (GUI thread)."""
    t0 = time.perf_counter()
    if output not in cfg.OUTPUTS:
        raise JobError(f"unknown output {output!r}; choose one of: {', '.join(cfg.OUTPUTS)}", "bad_request")
    app = _krita()
    doc = document or app.activeDocument()
    if doc is None:
        raise JobError("No image is open. Open an image and select the layer to cut out.", "no_document")
    node = node or doc.activeNode()
    if node is None:
        raise JobError("No layer is selected. Select the layer to cut out.", "no_layer")
    if node.type() in _MASK_TYPES:  # a mask is selected (e.g. after a previous run): use its layer
        node = node.parentNode()
        if node is None:
            raise JobError("The selected mask belongs to no layer.", "no_layer")
    snap = Snapshot()
    snap.document, snap.output = doc, output
    snap.node_id, snap.node_name, snap.node_type = node.uniqueId(), node.name(), node.type()
    if node.parentNode() is None:
        raise JobError("Select a layer, not the image's root.", "no_layer")
    region = _rect(node.bounds())
    if region[2] <= 0 or region[3] <= 0:
        raise JobError(f"The layer '{snap.node_name}' is empty: there is nothing to cut out.", "empty")
    snap.region = region
    if output == "apply" and snap.node_type not in _OWN_PIXELS:
        raise JobError(f"'Apply to the layer' changes a paint layer's pixels; '{snap.node_name}' is a "
                       f"{snap.node_type}. Choose 'New layer with the cut-out' or a transparency mask.",
                       "bad_request")
    source = node
    model, depth, profile = node.colorModel(), node.colorDepth(), node.colorProfile()
    try:
        snap.fmt = px.PixelFormat(model, depth, profile)
    except px.UnsupportedLayer:
        snap.fmt = None
    if snap.fmt is None:
        if model not in px.CONVERTIBLE_MODELS or depth not in px.CONVERT_DEPTH:
            raise JobError(f"The layer '{snap.node_name}' uses the {model}/{depth} colour space, which "
                           "maskd cannot read. Convert it to RGB or Grayscale (Layer ▸ Convert ▸ Convert "
                           "Layer Color Space) and try again.", "colour_space")
        if output == "apply":
            raise JobError(f"'Apply to the layer' keeps the layer's colour space, and maskd reads "
                           f"{model} layers through an RGB copy. Use the transparency mask (which works "
                           f"for {model}) or convert the layer to RGB first.", "colour_space")
        source = node.duplicate()  # a detached copy: the document is not touched
        new_depth = px.CONVERT_DEPTH[depth]
        if not source.setColorSpace("RGBA", new_depth, px.SRGB_PROFILE):
            raise JobError(f"Krita could not convert the {model}/{depth} layer '{snap.node_name}' to RGB "
                           "for reading. Convert it yourself (Layer ▸ Convert) and try again.",
                           "colour_space")
        snap.converted_from = f"{model}/{depth}"
        model, depth, profile = "RGBA", new_depth, px.SRGB_PROFILE
        snap.fmt = px.PixelFormat(model, depth, profile)
    snap.profile = profile
    x, y, w, h = region
    read = source.pixelData if snap.node_type in _OWN_PIXELS else source.projectionPixelData
    data = read(x, y, w, h)
    snap.pixels = data.data() if hasattr(data, "data") else bytes(data)
    if len(snap.pixels) != w * h * snap.fmt.pixel_bytes:
        raise JobError(f"Krita returned {len(snap.pixels)} bytes for the {w}x{h} layer '{snap.node_name}' "
                       f"({model}/{depth}); expected {w * h * snap.fmt.pixel_bytes}.", "read_failed")
    selection = doc.selection()
    if selection is not None and selection.width() > 0 and selection.height() > 0:
        sel = (selection.x(), selection.y(), selection.width(), selection.height())
        snap.roi = px.relative_roi(region, sel)
        if snap.roi is None:
            raise JobError(f"The selection does not overlap the layer '{snap.node_name}'. Select the "
                           "subject's area (or Select ▸ Deselect to use the whole layer).", "roi")
        if snap.roi == (0, 0, w, h):
            snap.roi = None
    snap.options = dict(options)
    snap.config = cfg.daemon_config(load_config(), str(snap.options.pop("model", "") or ""))
    snap.timings["read"] = time.perf_counter() - t0
    return snap


class Outcome:
    """What the worker computed: bytes ready to hand to Krita, and the daemon's report."""

    def __init__(self):
        self.mask = None  # u8 bytes for a mask or selection
        self.cutout = None  # layer-format bytes for the cut-out outputs
        self.info = {}
        self.timings = {}


def compute(snap: Snapshot, progress=None, cancelled=None, on_client=None) -> Outcome:
    """The worker's part (no Krita API): connect or start the daemon, segment, build the bytes."""
    mc = _client_module()
    out = Outcome()

    def report(stage, fraction):
        if cancelled is not None and cancelled():
            raise Cancelled()
        if progress is not None:
            progress(stage, fraction)

    t0 = time.perf_counter()
    client = None
    try:
        report("connecting to engine", 0.0)
        client = mc.ensure_daemon(snap.config, progress=report)
        if on_client is not None:
            on_client(client)
        t1 = time.perf_counter()
        out.timings["connect"] = t1 - t0
        x, y, w, h = snap.region
        cutout = snap.output in ("new-layer", "apply")
        result = client.segment(
            snap.pixels, w, h, layout=snap.fmt.layout, dtype=snap.fmt.dtype, options=snap.options,
            roi=snap.roi, alpha_dtype="u8" if not cutout or snap.fmt.dtype == "u8" else
            ("u16" if snap.fmt.dtype == "u16" else "f32"),
            foreground=bool(cutout and snap.options.get("decontaminate")), progress=report,
            transfer=snap.fmt.transfer)
        t2 = time.perf_counter()
        out.timings["segment"] = t2 - t1
        out.info = dict(result.info or {})
        if cancelled is not None and cancelled():
            raise Cancelled()
        if cutout:
            alpha = px.cutout_alpha(result.alpha, result.alpha_dtype, snap.pixels, snap.fmt)
            out.cutout = px.cutout_pixels(snap.pixels, snap.fmt, alpha, result.foreground,
                                          result.foreground_dtype)
        else:
            # Krita shows layer alpha × mask, and the daemon's alpha is the subject's coverage
            # (already-transparent pixels come back 0): the mask is that alpha as is.
            out.mask = result.alpha
        out.timings["convert"] = time.perf_counter() - t2
        return out
    except Cancelled:
        raise JobError("Cancelled.", "cancelled") from None
    except mc.MaskdClientError as exc:
        if exc.code == "cancelled":
            raise JobError("Cancelled.", "cancelled") from None
        raise JobError(str(exc), exc.code) from None
    finally:
        if client is not None:
            client.close()


class _Worker(QThread):
    progressed = pyqtSignal(str, float)
    succeeded = pyqtSignal(object)
    failed = pyqtSignal(object)

    def __init__(self, job):
        super().__init__()
        self._job = job

    def run(self):
        try:
            outcome = compute(self._job.snapshot, progress=self.progressed.emit,
                              cancelled=self._job.is_cancelled, on_client=self._job._set_client)
        except JobError as exc:
            self.failed.emit(exc)
        except Exception as exc:  # a bug: still report it in the docker, never leave a job hanging
            self.failed.emit(JobError(f"maskd plugin error: {type(exc).__name__}: {exc}", "internal"))
        else:
            self.succeeded.emit(outcome)


_active = None  # the job in flight (one at a time: the daemon queues, Krita users wait anyway)
_running_workers = set()  # a QThread must outlive its run(), even when its job was cancelled


def active_job():
    return _active


class Job(QObject):
    """A running job. Signals: ``progressed(stage, fraction)``, ``finished(job)`` (check ``error``)."""

    progressed = pyqtSignal(str, float)
    finished = pyqtSignal(object)

    def __init__(self, document=None, node=None, output="transparency-mask", options=None):
        super().__init__()
        self.id = uuid.uuid4().hex
        self._args = (document, node, output, dict(options or {}))
        self.snapshot = None
        self.result_node = None  # the created mask / layer, or a Selection
        self.error = None  # JobError when it failed
        self.info = {}
        self.timings = {}
        self.done = False
        self._cancel = threading.Event()
        self._client = None
        self._worker = None

    # called from the worker thread
    def _set_client(self, client):
        self._client = client

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def start(self) -> Job:
        global _active
        if _active is not None and not _active.done:
            self._fail(JobError("A background removal is already running; wait for it or cancel it.", "busy"))
            return self
        try:
            self.snapshot = take_snapshot(*self._args)
        except JobError as exc:
            self._fail(exc)
            return self
        self.timings.update(self.snapshot.timings)
        _active = self
        self._worker = _Worker(self)
        self._worker.progressed.connect(self.progressed)
        self._worker.succeeded.connect(self._finish)
        self._worker.failed.connect(self._fail)
        worker = self._worker
        _running_workers.add(worker)
        worker.finished.connect(lambda: _running_workers.discard(worker))
        worker.start()
        return self

    def cancel(self) -> None:
        """Stop waiting now; tell the daemon in the background (never blocks the GUI)."""
        if self.done or self._cancel.is_set():
            return
        self._cancel.set()
        client = self._client
        if client is not None:
            threading.Thread(target=_quiet_cancel, args=(client,), daemon=True).start()
        self._fail(JobError("Cancelled.", "cancelled"))

    def _fail(self, error) -> None:
        if self.done:
            return
        self.error = error
        self._end()

    def _end(self) -> None:
        global _active
        self.done = True
        if _active is self:
            _active = None
        self.finished.emit(self)

    def _finish(self, outcome: Outcome) -> None:
        if self.done:  # cancelled meanwhile
            return
        t0 = time.perf_counter()
        self.info = outcome.info
        self.timings.update(outcome.timings)
        try:
            self.result_node = apply_outcome(self.snapshot, outcome)
        except JobError as exc:
            self._fail(exc)
            return
        except Exception as exc:
            self._fail(JobError(f"Krita refused the result: {type(exc).__name__}: {exc}", "internal"))
            return
        self.timings["write"] = time.perf_counter() - t0
        self.snapshot.pixels = b""  # free the copy early
        self._end()


def shutdown(wait_ms: int = 3000) -> None:
    """Krita is quitting: cancel the job and let worker threads end (a running QThread must not
    be destroyed)."""
    job = _active
    if job is not None:
        job.cancel()
    for worker in list(_running_workers):
        worker.wait(wait_ms)


def _quiet_cancel(client) -> None:
    try:
        client.cancel()
    except Exception:
        pass


def apply_outcome(snap: Snapshot, outcome: Outcome):
    """Write the result into the document (GUI thread): one structural change, pixels first."""
    doc = snap.document
    if not document_is_open(doc):
        raise JobError(f"The image was closed while removing the background of '{snap.node_name}'; "
                       "nothing was changed.", "document_closed")
    node = doc.nodeByUniqueID(snap.node_id)
    if node is None or node.parentNode() is None:
        raise JobError(f"The layer '{snap.node_name}' was deleted while its background was being removed; "
                       "nothing was changed.", "layer_gone")
    if _rect(node.bounds()) != snap.region:
        raise JobError(f"The layer '{snap.node_name}' was moved or painted on while its background was "
                       "being removed; nothing was changed. Run it again.", "layer_changed")
    x, y, w, h = snap.region
    if snap.output == "transparency-mask":
        mask = doc.createTransparencyMask(MASK_NAME)
        mask.setPixelData(QByteArray(outcome.mask), x, y, w, h)  # before insertion: one undo step
        if not node.addChildNode(mask, None):
            raise JobError(f"Krita would not add a transparency mask to '{snap.node_name}'.", "write_failed")
        doc.setActiveNode(mask)
        return mask
    if snap.output == "selection":
        from krita import Selection

        selection = Selection()
        selection.setPixelData(QByteArray(outcome.mask), x, y, w, h)
        doc.setSelection(selection)
        return selection
    parent = node.parentNode()
    if snap.output == "new-layer":
        layer = doc.createNode(f"{snap.node_name} (cut-out)", "paintlayer")
        model, depth = snap.fmt.model, snap.fmt.depth
        if (layer.colorModel(), layer.colorDepth(), layer.colorProfile()) != (model, depth, snap.profile):
            layer.setColorSpace(model, depth, snap.profile)
        layer.setPixelData(QByteArray(bytes(outcome.cutout)), x, y, w, h)
        if not parent.addChildNode(layer, node):
            raise JobError("Krita would not add the cut-out layer.", "write_failed")
        doc.setActiveNode(layer)
        return layer
    # apply: a copy of the layer (name, opacity, blending, masks) with the cut-out pixels replaces it
    replacement = node.duplicate()
    replacement.setPixelData(QByteArray(bytes(outcome.cutout)), x, y, w, h)
    if not parent.addChildNode(replacement, node):
        raise JobError("Krita would not add the cut-out layer.", "write_failed")
    node.remove()
    doc.setActiveNode(replacement)
    return replacement
