"""One background-removal job: read the layer, ask the daemon off the GUI thread, write the result.

The split keeps Krita responsive and safe:

1. ``Job.start`` (GUI thread) resolves the document and layer, reads the pixels once with
   ``pixelData``/``projectionPixelData`` and hands plain ``bytes`` to a worker ``QThread``.
2. The worker (no Krita API at all) connects to — or starts — the daemon, sends the pixels,
   streams progress back through queued signals and turns the alpha into mask bytes.
3. ``Job._finish`` (GUI thread again) checks that the document is still open and the layer still
   where it was, writes every new node's pixels while the nodes are still detached, and only then
   makes the structural, undoable changes (``addChildNode``) — so one Ctrl+Z removes the mask and
   the layer's pixels are untouched. The optional shadow and background layers add one undo step
   per inserted node (Krita's scripting API cannot group them; ``Job.undo_steps`` counts them).

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
SHADOW_MASK_NAME = "Shadow"
FILL_STRIP_BYTES = 16 << 20  # solid layers are written in strips of at most this many bytes
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
        self.bounds = (0, 0, 0, 0)  # the layer's bounds (may reach beyond the canvas)
        self.region = (0, 0, 0, 0)  # image rectangle that was read: the bounds, or with a shadow
        # the bounds joined with the canvas
        self.roi = None  # selection bounding box relative to region
        self.fmt = None
        self.converted_from = None  # original "MODEL/DEPTH" when Krita converted for reading
        self.profile = ""
        self.pixels = b""
        self.output = "transparency-mask"
        self.shadow = None  # shadow style for the shadow layer ("soft", "drop,direction=135", ...)
        self.background = None  # "#rrggbb" for the background layer
        self.existing_mask = "intersect"  # a transparency mask the layer has: "intersect" | "replace"
        self.model = ""  # the preset the engine should serve ("" = whichever it serves)
        self.options = {}
        self.config = {}
        self.timings = {}


def take_snapshot(document, node, output: str, options: dict) -> Snapshot:
    """Resolve defaults, validate and read the pixels (GUI thread).

    Steps: the document and layer → the finishing options → the region to read (the layer, or
    with a shadow the canvas around it) → a pixel format maskd reads (an RGB copy of other colour
    spaces) → the pixels → the selection → the engine's config. Every refusal comes before the
    document could change."""
    t0 = time.perf_counter()
    if output not in cfg.OUTPUTS:
        raise JobError(f"unknown output {output!r}; choose one of: {', '.join(cfg.OUTPUTS)}", "bad_request")
    doc, node = _target(document, node)
    snap = Snapshot()
    snap.document, snap.output = doc, output
    snap.node_id, snap.node_name, snap.node_type = node.uniqueId(), node.name(), node.type()
    if node.parentNode() is None:
        raise JobError("Select a layer, not the image's root.", "no_layer")
    region = _rect(node.bounds())
    if region[2] <= 0 or region[3] <= 0:
        raise JobError(f"The layer '{snap.node_name}' is empty: there is nothing to cut out.", "empty")
    snap.bounds = region
    _take_finishing_options(snap, options)
    if snap.shadow or snap.background:
        _check_finishing_colour_space(doc)
    if snap.shadow:
        # the shadow falls outside a cut-out layer's tight bounds (under and beside the object):
        # process the whole canvas around it, the layer's transparent surroundings included
        region = px.union(region, (0, 0, doc.width(), doc.height()))
    snap.region = region
    if output == "apply" and snap.node_type not in _OWN_PIXELS:
        raise JobError(
            f"'Apply to the layer' changes a paint layer's pixels; '{snap.node_name}' is a "
            f"{snap.node_type}. Choose 'New layer with the cut-out' or a transparency mask.",
            "bad_request",
        )
    source, space = _readable_source(snap, node)
    _read_pixels(snap, source, space)
    snap.roi = _selection_roi(snap, doc.selection())
    snap.model = str(snap.options.pop("model", "") or "").strip()
    snap.config = cfg.daemon_config(load_config(), snap.model)
    snap.timings["read"] = time.perf_counter() - t0
    return snap


def _target(document, node):
    """The document (the active one by default) and the layer to process (the active node; a
    selected mask stands for its layer)."""
    doc = document or _krita().activeDocument()
    if doc is None:
        raise JobError("No image is open. Open an image and select the layer to cut out.", "no_document")
    node = node or doc.activeNode()
    if node is None:
        raise JobError("No layer is selected. Select the layer to cut out.", "no_layer")
    if node.type() in _MASK_TYPES:  # a mask is selected (e.g. after a previous run): use its layer
        node = node.parentNode()
        if node is None:
            raise JobError("The selected mask belongs to no layer.", "no_layer")
    return doc, node


def _take_finishing_options(snap: Snapshot, options: dict) -> None:
    """``snap.options`` without the plugin's own options (shadow, background, existing_mask),
    which go to their fields, checked."""
    snap.options = dict(options)
    snap.shadow = shadow_style(snap.options.pop("shadow", None))
    snap.background = background_colour(snap.options.pop("background", None))
    snap.existing_mask = str(snap.options.pop("existing_mask", "intersect") or "intersect")
    if snap.existing_mask not in cfg.EXISTING_MASK:
        raise JobError(
            f"existing_mask={snap.existing_mask!r}: choose one of {', '.join(cfg.EXISTING_MASK)}",
            "bad_request",
        )


def _check_finishing_colour_space(doc) -> None:
    """Shadow and background layers are new paint layers in the image's colour space: refused
    where maskd cannot write that space."""
    model, depth = doc.colorModel(), doc.colorDepth()
    try:
        px.PixelFormat(model, depth, doc.colorProfile())
    except px.UnsupportedLayer:
        raise JobError(
            f"Shadow and background layers are written in the image's colour space, and "
            f"maskd writes RGB and Grayscale only; this image is {model}/{depth}. Convert it "
            "(Image ▸ Convert Image Color Space) or turn the shadow/background layers off.",
            "colour_space",
        ) from None


def _readable_source(snap: Snapshot, node):
    """The node to read and its (model, depth): the layer itself, or for a colour space maskd
    cannot read (CMYK, Lab, …) a detached RGB copy. Sets ``snap.fmt``, ``snap.profile`` and
    ``snap.converted_from``."""
    model, depth, profile = node.colorModel(), node.colorDepth(), node.colorProfile()
    try:
        snap.fmt = px.PixelFormat(model, depth, profile)
    except px.UnsupportedLayer:
        snap.fmt = None
    if snap.fmt is not None:
        snap.profile = profile
        return node, (model, depth)
    if model not in px.CONVERTIBLE_MODELS or depth not in px.CONVERT_DEPTH:
        raise JobError(
            f"The layer '{snap.node_name}' uses the {model}/{depth} colour space, which "
            "maskd cannot read. Convert it to RGB or Grayscale (Layer ▸ Convert ▸ Convert "
            "Layer Color Space) and try again.",
            "colour_space",
        )
    if snap.output == "apply":
        raise JobError(
            f"'Apply to the layer' keeps the layer's colour space, and maskd reads "
            f"{model} layers through an RGB copy. Use the transparency mask (which works "
            f"for {model}) or convert the layer to RGB first.",
            "colour_space",
        )
    source = node.duplicate()  # a detached copy: the document is not touched
    new_depth = px.CONVERT_DEPTH[depth]
    if not source.setColorSpace("RGBA", new_depth, px.SRGB_PROFILE):
        raise JobError(
            f"Krita could not convert the {model}/{depth} layer '{snap.node_name}' to RGB "
            "for reading. Convert it yourself (Layer ▸ Convert) and try again.",
            "colour_space",
        )
    snap.converted_from = f"{model}/{depth}"
    snap.fmt = px.PixelFormat("RGBA", new_depth, px.SRGB_PROFILE)
    snap.profile = px.SRGB_PROFILE
    return source, ("RGBA", new_depth)


def _read_pixels(snap: Snapshot, source, space) -> None:
    """``snap.pixels``: the region of ``source`` (a paint layer's own pixels, other layers'
    projection), checked for size."""
    x, y, w, h = snap.region
    read = source.pixelData if snap.node_type in _OWN_PIXELS else source.projectionPixelData
    data = read(x, y, w, h)
    snap.pixels = data.data() if hasattr(data, "data") else bytes(data)
    if len(snap.pixels) != w * h * snap.fmt.pixel_bytes:
        model, depth = space
        raise JobError(
            f"Krita returned {len(snap.pixels)} bytes for the {w}x{h} layer '{snap.node_name}' "
            f"({model}/{depth}); expected {w * h * snap.fmt.pixel_bytes}.",
            "read_failed",
        )


def _selection_roi(snap: Snapshot, selection):
    """The selection's bounding box relative to the region, or None (no selection, or all of it)."""
    if selection is None or selection.width() <= 0 or selection.height() <= 0:
        return None
    sel = (selection.x(), selection.y(), selection.width(), selection.height())
    roi = px.relative_roi(snap.region, sel)
    if roi is None:
        raise JobError(
            f"The selection does not overlap the layer '{snap.node_name}'. Select the "
            "subject's area (or Select ▸ Deselect to use the whole layer).",
            "roi",
        )
    return None if roi == (0, 0, snap.region[2], snap.region[3]) else roi


def shadow_style(value):
    """The ``shadow`` option: None/False/"" (no shadow layer), True ("soft"), or a style name with
    optional ``key=value`` overrides (``maskd remove --shadow`` syntax; the daemon checks those)."""
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    if value is True:
        return "soft"
    if not isinstance(value, str):
        raise JobError(
            f"shadow={value!r}: give a style name ({', '.join(cfg.SHADOW_STYLES)}) or None", "bad_request"
        )
    style = value.strip()
    name = style.split(",", 1)[0].strip().lower()
    if name not in cfg.SHADOW_STYLES:
        raise JobError(
            f"unknown shadow style {name!r}; choose one of {', '.join(cfg.SHADOW_STYLES)} "
            "(with key=value overrides as in `maskd remove --shadow`, e.g. 'drop,opacity=0.3')",
            "bad_request",
        )
    return style


def background_colour(value):
    """The ``background`` option: None/False/"" (no background layer), True (white) or a colour."""
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    if value is True:
        return "#ffffff"
    try:
        return px.color_hex(px.parse_color(value))
    except ValueError as exc:
        raise JobError(f"background: {exc}", "bad_request") from None


class Outcome:
    """What the worker computed: bytes ready to hand to Krita, and the daemon's report."""

    def __init__(self):
        self.mask = None  # u8 bytes for a mask or selection
        self.cutout = None  # layer-format bytes for the cut-out outputs
        self.shadow = None  # u8 bytes: the shadow layer's mask (the daemon's shadow alpha)
        self.shadow_color = "#000000"
        self.note = ""  # something the user should know although the job worked (a model fallback)
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
        out.note = choose_model(client, snap.model, report)
        t1 = time.perf_counter()
        out.timings["connect"] = t1 - t0
        x, y, w, h = snap.region
        cutout = snap.output in ("new-layer", "apply")
        result = client.segment(
            snap.pixels,
            w,
            h,
            layout=snap.fmt.layout,
            dtype=snap.fmt.dtype,
            options=snap.options,
            roi=snap.roi,
            alpha_dtype="u8"
            if not cutout or snap.fmt.dtype == "u8"
            else ("u16" if snap.fmt.dtype == "u16" else "f32"),
            foreground=bool(cutout and snap.options.get("decontaminate")),
            progress=report,
            transfer=snap.fmt.transfer,
            shadow=snap.shadow,
        )
        t2 = time.perf_counter()
        out.timings["segment"] = t2 - t1
        out.info = dict(result.info or {})
        if cancelled is not None and cancelled():
            raise Cancelled()
        if snap.shadow:
            if result.shadow is None:
                raise JobError(
                    "The running maskd engine does not make shadows (it is older than this "
                    "plugin). Update maskd, then restart the engine with `maskd stop`.",
                    "unsupported",
                )
            out.shadow = (
                result.shadow
                if result.alpha_dtype == "u8"
                else px.convert_alpha(result.shadow, result.alpha_dtype, "u8")
            )
            out.shadow_color = (result.shadow_info or {}).get("color") or "#000000"
        if cutout:
            alpha = px.cutout_alpha(result.alpha, result.alpha_dtype, snap.pixels, snap.fmt)
            out.cutout = px.cutout_pixels(
                snap.pixels, snap.fmt, alpha, result.foreground, result.foreground_dtype
            )
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


def choose_model(client, wanted: str, report) -> str:
    """Make the engine serve ``wanted`` when it is installed (a switch, with "Loading model"
    progress); a name that is not installed (e.g. saved by an older plugin) runs with the served
    model instead. Returns a note for the user, or ""."""
    if not wanted:
        return ""
    mc = _client_module()
    models = client.models()
    served = models.get("served") or ""
    if wanted == served:
        return ""
    installed = [m.get("name") for m in models.get("installed") or [] if isinstance(m, dict)]
    if wanted not in installed:
        return mc.MESSAGES["model_fallback"].format(wanted=wanted, served=served or "?")
    client.switch_model(wanted, progress=report)
    return ""


class _Worker(QThread):
    progressed = pyqtSignal(str, float)
    succeeded = pyqtSignal(object)
    failed = pyqtSignal(object)

    def __init__(self, job):
        super().__init__()
        self._job = job

    def run(self):
        try:
            outcome = compute(
                self._job.snapshot,
                progress=self.progressed.emit,
                cancelled=self._job.is_cancelled,
                on_client=self._job._set_client,
            )
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
        self.extra_nodes = {}  # "shadow" / "background" -> the finishing layers made
        self.undo_steps = 0  # structural changes made (each is one Ctrl+Z in Krita 5.2)
        self.error = None  # JobError when it failed
        self.note = ""  # worked, but the user should know something (e.g. a model fallback)
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
        self.note = outcome.note
        self.timings.update(outcome.timings)
        try:
            applied = apply_outcome(self.snapshot, outcome)
            self.result_node, self.extra_nodes, self.undo_steps = applied.node, applied.extras, applied.steps
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


class Applied:
    """What ``apply_outcome`` did: the main node, the finishing layers, the undo steps it took."""

    def __init__(self):
        self.node = None
        self.extras = {}
        self.steps = 0


class _Changes:
    """The structural changes made so far, so that an error can take them back."""

    def __init__(self):
        self.done = []  # ("added", node) | ("replaced", original, parent, replacement)
        self.count = 0

    def add(self, parent, node, above, what: str) -> None:
        if not parent.addChildNode(node, above):
            raise JobError(f"Krita would not add the {what}.", "write_failed")
        self.done.append(("added", node))
        self.count += 1

    def rollback(self) -> None:
        for entry in reversed(self.done):
            try:
                if entry[0] == "added":
                    entry[1].remove()
                elif entry[0] == "replaced":
                    _, original, parent, replacement = entry
                    parent.addChildNode(original, replacement)
            except Exception:
                pass
        self.done = []


def _solid_layer(doc, name: str, colour: str, rect):
    """A detached paint layer in the image's colour space, ``rect`` filled with ``colour``."""
    layer = doc.createNode(name, "paintlayer")
    try:
        fmt = px.PixelFormat(layer.colorModel(), layer.colorDepth(), layer.colorProfile())
    except px.UnsupportedLayer:
        raise JobError(
            f"The image's colour space {layer.colorModel()}/{layer.colorDepth()} cannot hold the "
            f"{name!r} layer; convert the image to RGB.",
            "colour_space",
        ) from None
    pixel = px.solid_pixel(px.parse_color(colour), fmt)
    x, y, w, h = rect
    rows = max(1, min(h, FILL_STRIP_BYTES // max(1, w * len(pixel))))
    strip = QByteArray(pixel * (w * rows))
    for top in range(0, h, rows):
        n = min(rows, h - top)
        layer.setPixelData(strip if n == rows else QByteArray(pixel * (w * n)), x, y + top, w, n)
    return layer


def _bottom(parent):
    children = parent.childNodes()
    return children[0] if children else None


def _below(parent, node):
    """The sibling directly under ``node`` (None when it is the bottom one)."""
    lower = None
    for child in parent.childNodes():  # bottom first
        if child.uniqueId() == node.uniqueId():
            return lower
        lower = child
    return None


def _clone_sources(doc) -> set:
    """uniqueIds of layers that clone layers copy (removing those would turn the clones into
    paint layers)."""
    sources = set()

    def walk(node):
        for child in node.childNodes():
            if child.type() == "clonelayer":
                try:
                    source = child.sourceNode()
                    if source is not None:
                        sources.add(source.uniqueId())
                except Exception:
                    pass
            walk(child)

    walk(doc.rootNode())
    return sources


def _insert_at_bottom(parent, nodes, changes: _Changes) -> None:
    """Put ``nodes`` (bottom first) under the parent's bottom layer.

    Krita 5.2's ``addChildNode`` inserts above a given sibling or on top, never at the bottom, so
    the bottom layer is taken out and put back above the new ones: the same node (its id, pixels,
    masks and properties are kept), two more undo steps.
    """
    bottom = _bottom(parent)
    above = bottom
    for node, what in nodes:
        changes.add(parent, node, above, what)
        above = node
    bottom.remove()  # these two calls follow each other directly: the layer is never left out
    parent.addChildNode(bottom, above)
    changes.count += 2


def existing_transparency_mask(node):
    """The layer's top transparency mask (the one a new mask replaces or combines with), or None."""
    masks = [c for c in node.childNodes() if c.type() == "transparencymask"]
    return masks[-1] if masks else None


def apply_outcome(snap: Snapshot, outcome: Outcome) -> Applied:
    """Write the result into the document (GUI thread): pixels first, then the structural changes.

    With the shadow/background options, the shadow layer goes directly under the processed layer
    and the background layer at the bottom of the layer's parent; both are separate paint layers
    and nothing is flattened. Any error takes back what was inserted.

    Steps: the layer still as it was → every new node, detached, with its pixels (Krita records
    no undo for ``setPixelData``) → refusals that depend on the layer stack → the structural
    changes, each one undoable.
    """
    doc = snap.document
    node = _unchanged_layer(snap)
    parent = node.parentNode()
    done = Applied()
    mask_rect = snap.region
    if snap.output in ("transparency-mask", "selection") and snap.region != snap.bounds:
        # (the region was widened for the shadow): the mask covers the layer, as without one
        outcome.mask = _client_module().crop_pixels(outcome.mask, snap.region, snap.bounds)
        mask_rect = snap.bounds
    old_mask = existing_transparency_mask(node) if snap.output == "transparency-mask" else None
    created = _detached_result(snap, outcome, node, old_mask, mask_rect)
    shadow, background = _detached_finishing_layers(snap, outcome, done.extras)
    _refuse_moving_a_clone_source(doc, parent, node, snap.output, shadow, background)
    # The finishing layers go in first, so that the first Ctrl+Z takes back the mask (or cut-out)
    # and the next ones the shadow and background.
    changes = _Changes()
    try:
        if background is not None:
            _insert_at_bottom(parent, [(background, "background layer")], changes)
        if shadow is not None:  # directly under the layer
            lower = _below(parent, node)
            if lower is not None:
                changes.add(parent, shadow, lower, "shadow layer")
            else:
                _insert_at_bottom(parent, [(shadow, "shadow layer")], changes)
        created = _insert_result(snap, outcome, node, created, old_mask, mask_rect, changes)
    except Exception:
        changes.rollback()
        raise
    if snap.output != "selection":
        doc.setActiveNode(created)
    done.node, done.steps = created, changes.count
    return done


def _unchanged_layer(snap: Snapshot):
    """The processed layer, refused unless its document is open and it is where and as it was."""
    doc = snap.document
    if not document_is_open(doc):
        raise JobError(
            f"The image was closed while removing the background of '{snap.node_name}'; nothing was changed.",
            "document_closed",
        )
    node = doc.nodeByUniqueID(snap.node_id)
    if node is None or node.parentNode() is None:
        raise JobError(
            f"The layer '{snap.node_name}' was deleted while its background was being removed; "
            "nothing was changed.",
            "layer_gone",
        )
    if _rect(node.bounds()) != snap.bounds:
        raise JobError(
            f"The layer '{snap.node_name}' was moved or painted on while its background was "
            "being removed; nothing was changed. Run it again.",
            "layer_changed",
        )
    return node


def _detached_result(snap: Snapshot, outcome: Outcome, node, old_mask, mask_rect):
    """The output's new node with its pixels, not yet in the document (None for a selection)."""
    doc = snap.document
    x, y, w, h = snap.region
    if snap.output == "transparency-mask":
        data = outcome.mask
        if old_mask is not None and snap.existing_mask == "intersect":
            # the darker of the two: nothing the old mask hides comes back
            old = old_mask.pixelData(*mask_rect)
            old = old.data() if hasattr(old, "data") else bytes(old)
            if len(old) == len(data):
                data = bytes(map(min, old, data))
        created = doc.createTransparencyMask(MASK_NAME)
        created.setPixelData(QByteArray(bytes(data)), *mask_rect)
        return created
    if snap.output == "new-layer":
        created = doc.createNode(f"{snap.node_name} (cut-out)", "paintlayer")
        model, depth = snap.fmt.model, snap.fmt.depth
        space = (created.colorModel(), created.colorDepth(), created.colorProfile())
        if space != (model, depth, snap.profile):
            created.setColorSpace(model, depth, snap.profile)
        created.setPixelData(QByteArray(bytes(outcome.cutout)), x, y, w, h)
        return created
    if snap.output == "apply":
        # a copy of the layer (name, opacity, blending, masks) with the cut-out pixels replaces it
        created = node.duplicate()
        created.setPixelData(QByteArray(bytes(outcome.cutout)), x, y, w, h)
        return created
    return None


def _detached_finishing_layers(snap: Snapshot, outcome: Outcome, extras: dict):
    """(shadow layer, background layer), each with its pixels or None, not yet in the document;
    also named in ``extras``."""
    doc = snap.document
    shadow = background = None
    if snap.shadow:
        x, y, w, h = snap.region
        shadow = _solid_layer(doc, f"{snap.node_name} shadow", outcome.shadow_color, snap.region)
        shadow_mask = doc.createTransparencyMask(SHADOW_MASK_NAME)
        shadow_mask.setPixelData(QByteArray(outcome.shadow), x, y, w, h)
        shadow.setChildNodes([shadow_mask])  # detached: no undo step, inserted with its layer
        extras["shadow"] = shadow
    if snap.background:
        background = _solid_layer(
            doc, f"{snap.node_name} background", snap.background, (0, 0, doc.width(), doc.height())
        )
        extras["background"] = background
    return shadow, background


def _refuse_moving_a_clone_source(doc, parent, node, output: str, shadow, background) -> None:
    """The layer under which new layers go is taken out and put back (``_insert_at_bottom``):
    refused, before anything is changed, where that would turn clone layers into paint layers."""
    bottom = _bottom(parent)
    moves_bottom = background is not None or (shadow is not None and bottom.uniqueId() == node.uniqueId())
    replaced_bottom = output == "apply" and bottom.uniqueId() == node.uniqueId()
    if moves_bottom and not replaced_bottom and bottom.uniqueId() in _clone_sources(doc):
        where = "the image" if parent.parentNode() is None else f"the group '{parent.name()}'"
        raise JobError(
            f"'{bottom.name()}' (the bottom layer of {where}) is the source of clone layers, "
            "and putting layers under it would turn those clones into paint layers. Add an "
            "empty layer at the bottom first, or turn the shadow/background layers off.",
            "bad_request",
        )


def _insert_result(snap: Snapshot, outcome: Outcome, node, created, old_mask, mask_rect, changes: _Changes):
    """The output's structural change (recorded in ``changes``); returns the result node (the
    new Selection for the selection output)."""
    parent = node.parentNode()
    if snap.output == "transparency-mask":
        changes.add(node, created, old_mask, "transparency mask")
        if old_mask is not None:  # replaced (or combined into the new one): one mask, not two
            old_mask.remove()
            changes.count += 1
            changes.done.append(("replaced", old_mask, node, created))
    elif snap.output == "selection":
        from krita import Selection

        created = Selection()
        created.setPixelData(QByteArray(outcome.mask), *mask_rect)
        snap.document.setSelection(created)  # no undo step in Krita's scripting API
    elif snap.output == "new-layer":
        changes.add(parent, created, node, "cut-out layer")
    else:
        changes.add(parent, created, node, "cut-out layer")
        node.remove()
        changes.count += 1
        changes.done.append(("replaced", node, parent, created))
    return created
