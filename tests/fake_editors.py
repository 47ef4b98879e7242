"""Small fake editor objects, so that the plugins' own logic runs in the fast test tier.

As krita-ai-diffusion tests its plugin: the plugin modules are imported outside the editor with
the editor's API replaced by plain Python objects that record what was done to them. The fakes
model only what the plugins call (documents, nodes and their stacking, pixel writes, undo steps;
GIMP's layers, masks, buffers and undo group); the real-editor suites (tests/editors/) check the
same code against real Krita and GIMP.

``load_krita_plugin()`` imports ``plugins/krita/maskd`` as a package with the client beside it
(where the installer copies it); ``load_gimp_plugin()`` imports the GIMP plug-in file with fake
``gi.repository`` modules.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import sys
import types
from pathlib import Path

from maskd.plugins import maskd_client

REPO = Path(__file__).resolve().parent.parent
KRITA_PLUGIN = REPO / "plugins" / "krita" / "maskd"
GIMP_PLUGIN = REPO / "plugins" / "gimp" / "maskd-remove-background" / "maskd-remove-background.py"
KRITA_PACKAGE = "maskd_krita_under_test"
GIMP_MODULE = "maskd_gimp_under_test"


@contextlib.contextmanager
def _modules(**modules):
    """``sys.modules`` entries for the duration of an import (earlier entries come back after)."""
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


# =============================================================================== Krita


class QByteArray(bytes):
    def data(self) -> bytes:
        return bytes(self)


class _Signal:
    def __init__(self, *types_):
        self.slots = []

    def connect(self, slot):
        self.slots.append(slot)

    def emit(self, *args):
        for slot in self.slots:
            slot(*args)


class QObject:
    def __init__(self, *args, **kwargs):
        pass


class QThread(QObject):
    def start(self):
        self.run()

    def wait(self, *args):
        return True

    def isRunning(self):
        return False


def pyqtSignal(*types_):
    return _Signal(*types_)


class QEventLoop(QObject):
    def exec_(self):
        return 0

    def quit(self):
        pass


class Rect:
    def __init__(self, x, y, w, h):
        self._r = (x, y, w, h)

    def x(self):
        return self._r[0]

    def y(self):
        return self._r[1]

    def width(self):
        return self._r[2]

    def height(self):
        return self._r[3]


_ids = itertools.count(1)


class _ColourSpace:
    """``space`` = (model, depth, profile) as Krita's getters hand them out."""

    space: tuple

    def colorModel(self):
        return self.space[0]

    def colorDepth(self):
        return self.space[1]

    def colorProfile(self):
        return self.space[2]


class Node(_ColourSpace):
    """A Krita node: its children bottom first (as ``childNodes`` lists them), pixel writes recorded."""

    def __init__(self, doc, name, kind="paintlayer", bounds=(0, 0, 0, 0), space=None, pixels=None):
        self.doc = doc
        self._name, self._type, self._bounds = name, kind, tuple(bounds)
        self._id = next(_ids)
        self._parent = None
        self._children = []
        self.space = tuple(space or doc.space)
        self.pixels = pixels  # what pixelData returns; None: one grey pixel repeated over the rectangle
        self.writes = []  # ((x, y, w, h), bytes)
        self.source = None  # clone layers: the node they copy
        self.refuse_children = False  # addChildNode fails (to test the rollback)

    # identity and structure
    def name(self):
        return self._name

    def type(self):
        return self._type

    def uniqueId(self):
        return self._id

    def parentNode(self):
        return self._parent

    def childNodes(self):
        return list(self._children)

    def addChildNode(self, node, above):
        if self.refuse_children:
            return False
        index = len(self._children) if above is None else self._children.index(above) + 1
        self._children.insert(index, node)
        node._parent = self
        self.doc.undo_steps += 1
        return True

    def remove(self):
        self._parent._children.remove(self)
        self._parent = None
        self.doc.undo_steps += 1
        return True

    def setChildNodes(self, nodes):
        self._children = list(nodes)
        for node in nodes:
            node._parent = self

    def duplicate(self):
        copy = Node(self.doc, self._name, self._type, self._bounds, self.space, self.pixels)
        copy.setChildNodes([Node(self.doc, c._name, c._type, c._bounds) for c in self._children])
        return copy

    def sourceNode(self):
        return self.source

    # pixels and colour space
    def bounds(self):
        return Rect(*self._bounds)

    def pixelData(self, x, y, w, h):
        if self.pixels is not None:
            return QByteArray(self.pixels)
        return QByteArray(bytes([128, 128, 128, 255]) * (w * h))

    projectionPixelData = pixelData

    def setPixelData(self, data, x, y, w, h):
        self.writes.append(((x, y, w, h), bytes(data)))
        return True

    def setColorSpace(self, model, depth, profile):
        self.space = (model, depth, profile)
        return True

    def __repr__(self):
        return f"<Node {self._name!r} {self._type}>"


class Selection(Rect):
    def __init__(self, rect=(0, 0, 0, 0)):
        super().__init__(*rect)
        self.writes = []

    def setPixelData(self, data, x, y, w, h):
        self.writes.append(((x, y, w, h), bytes(data)))


class Document(_ColourSpace):
    """A Krita document: a root node, the active node, the selection, a count of undo steps."""

    def __init__(self, width=40, height=30, space=("RGBA", "U8", "sRGB-elle-V2-srgbtrc.icc")):
        self._size = (width, height)
        self.space = space
        self.undo_steps = 0
        self.root = Node(self, "root", "grouplayer", (0, 0, width, height))
        self.active = None
        self._selection = None

    def add_layer(self, name, bounds=None, kind="paintlayer", parent=None, pixels=None):
        """A layer on top of ``parent`` (default: the root), set up before the test (no undo step)."""
        bounds = tuple(bounds or (0, 0) + self._size)
        node = Node(self, name, kind, bounds, pixels=pixels)
        (parent or self.root)._children.append(node)
        node._parent = parent or self.root
        return node

    def rootNode(self):
        return self.root

    def width(self):
        return self._size[0]

    def height(self):
        return self._size[1]

    def nodeByUniqueID(self, uid):
        def walk(node):
            for child in node._children:
                if child._id == uid:
                    return child
                found = walk(child)
                if found is not None:
                    return found
            return None

        return walk(self.root)

    def createNode(self, name, kind):
        return Node(self, name, kind)

    def createTransparencyMask(self, name):
        return Node(self, name, "transparencymask")

    def activeNode(self):
        return self.active

    def setActiveNode(self, node):
        self.active = node

    def selection(self):
        return self._selection

    def setSelection(self, selection):
        self._selection = selection


class KritaApp:
    def __init__(self):
        self.docs = []
        self.settings = {}

    def documents(self):
        return list(self.docs)

    def activeDocument(self):
        return self.docs[-1] if self.docs else None

    def readSetting(self, group, key, default):
        return self.settings.get((group, key), default)

    def writeSetting(self, group, key, value):
        self.settings[(group, key)] = value


def fake_krita_module(app: KritaApp) -> types.ModuleType:
    """A ``krita`` module whose ``Krita.instance()`` is ``app``."""
    module = types.ModuleType("krita")
    module.Krita = types.SimpleNamespace(instance=lambda: app)
    module.Selection = Selection
    return module


def _fake_pyqt() -> dict:
    qtcore = types.ModuleType("PyQt5.QtCore")
    for name, value in dict(
        QByteArray=QByteArray, QObject=QObject, QThread=QThread, pyqtSignal=pyqtSignal, QEventLoop=QEventLoop
    ).items():
        setattr(qtcore, name, value)
    pyqt = types.ModuleType("PyQt5")
    pyqt.QtCore = qtcore
    return {"PyQt5": pyqt, "PyQt5.QtCore": qtcore}


def load_krita_plugin() -> types.ModuleType:
    """``plugins/krita/maskd`` imported as a package outside Krita, with the client beside it (as
    the installer puts it) and PyQt5 faked; ``krita`` itself is looked up when used (see
    ``fake_krita_module``)."""
    if KRITA_PACKAGE in sys.modules:
        return sys.modules[KRITA_PACKAGE]
    spec = importlib.util.spec_from_file_location(
        KRITA_PACKAGE, KRITA_PLUGIN / "__init__.py", submodule_search_locations=[str(KRITA_PLUGIN)]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules[KRITA_PACKAGE] = package
    sys.modules[KRITA_PACKAGE + ".maskd_client"] = maskd_client
    with _modules(**_fake_pyqt()):
        spec.loader.exec_module(package)
    return package


def load_krita_module(name: str) -> types.ModuleType:
    """One module of the Krita plugin (``"pixels"``, ``"runner"``, …; ``"__init__"``: the package)."""
    package = load_krita_plugin()
    if name == "__init__":
        return package
    with _modules(**_fake_pyqt()):
        return importlib.import_module(f"{KRITA_PACKAGE}.{name}")


# =============================================================================== GIMP


_CONTEXT = {"foreground": None}  # GIMP's context: the foreground colour a fill uses


class _Enum:
    def __init__(self, *names):
        for name in names:
            setattr(self, name, name)


class Color:
    def __init__(self, text="#000000"):
        text = text.lstrip("#")
        self.rgba = tuple(int(text[i : i + 2], 16) / 255 for i in (0, 2, 4)) + (1.0,)

    @classmethod
    def new(cls, text):
        return cls(text)

    def get_rgba(self):
        return self.rgba

    def set_rgba(self, r, g, b, a):
        self.rgba = (r, g, b, a)


class Buffer:
    def __init__(self, drawable):
        self.drawable = drawable

    def get(self, rect, scale, fmt, abyss):
        x, y, w, h = rect
        return self.drawable.image.pixel_source(self.drawable, (x, y, w, h), fmt)

    def set(self, rect, fmt, data):
        self.drawable.writes.append((tuple(rect), fmt, bytes(data)))

    def flush(self):
        pass


class Drawable:
    def __init__(self, image, name, width, height):
        self.image, self.name = image, name
        self.width, self.height = width, height
        self.writes = []  # ((x, y, w, h), babl format, bytes)
        self.offsets = (0, 0)
        self.updates = []

    def get_name(self):
        return self.name

    def get_width(self):
        return self.width

    def get_height(self):
        return self.height

    def get_buffer(self):
        return Buffer(self)

    def update(self, *rect):
        self.updates.append(rect)

    def get_offsets(self):
        return (True, *self.offsets)


class LayerMask(Drawable):
    def __init__(self, layer, kind):
        super().__init__(layer.image, layer.name + " mask", layer.width, layer.height)
        self.layer, self.kind = layer, kind
        self.combined = []

    def combine_masks(self, other, op, x, y):
        self.combined.append((op, other))
        return True


class Layer(Drawable):
    def __init__(self, image, name, width, height, kind="RGBA_IMAGE", group=False, text=False):
        super().__init__(image, name, width, height)
        self.kind, self.group, self.text = kind, group, text
        self.mask = None
        self.parent = None
        self.alpha = True
        self.visible = True
        self.applied = []  # mask apply modes, in order
        self.fills = []

    @classmethod
    def new(cls, image, name, width, height, kind, opacity, mode):
        return cls(image, name, width, height, kind)

    @classmethod
    def from_mask(cls, mask):
        return mask.layer

    def get_parent(self):
        return self.parent

    def get_children(self):
        return [] if not self.group else list(self.image.stacks.get(self, []))

    def get_mask(self):
        return self.mask

    def create_mask(self, kind):
        return LayerMask(self, kind)

    def add_mask(self, mask):
        self.mask = mask

    def remove_mask(self, mode):
        self.applied.append(mode)
        self.mask = None

    def has_alpha(self):
        return self.alpha

    def add_alpha(self):
        self.alpha = True

    def is_group(self):
        return self.group

    def is_text_layer(self):
        return self.text

    def set_offsets(self, x, y):
        self.offsets = (x, y)

    def set_visible(self, visible):
        self.visible = visible

    def fill(self, kind):
        self.fills.append(_CONTEXT["foreground"])

    def mask_intersect(self):
        sel = self.image.selection
        if sel is None:
            return (False, 0, 0, 0, 0)
        ox, oy = self.offsets
        x0, y0 = max(sel[0] - ox, 0), max(sel[1] - oy, 0)
        x1, y1 = min(sel[0] + sel[2] - ox, self.width), min(sel[1] + sel[3] - oy, self.height)
        return (x1 > x0 and y1 > y0, x0, y0, max(0, x1 - x0), max(0, y1 - y0))


class Channel(Drawable):
    pass


class Image:
    """A GIMP image: the top-level stack (top first), selection, precision, undo group."""

    def __init__(self, width=40, height=30, precision="GIMP_PRECISION_U8_NON_LINEAR", base="RGB"):
        self.width, self.height = width, height
        self.precision, self.base = precision, base
        self.layers = []  # top first
        self.stacks = {}
        self.selection = None  # (x, y, w, h) on the canvas
        self.selected = []
        self.undo_depth = 0
        self.undo_groups = 0
        self.selected_item = None
        self.pixel_source = lambda drawable, rect, fmt: bytes(
            rect[2] * rect[3] * (4 if fmt.startswith("R") else 2) * _sample_bytes(fmt)
        )

    def add_layer(self, name, width=None, height=None, **kw):
        layer = Layer(self, name, width or self.width, height or self.height, **kw)
        self.layers.insert(0, layer)
        return layer

    def get_precision(self):
        return types.SimpleNamespace(value_name=self.precision)

    def get_base_type(self):
        return self.base

    def get_width(self):
        return self.width

    def get_height(self):
        return self.height

    def get_layers(self):
        return list(self.layers)

    def get_selected_layers(self):
        return list(self.selected)

    def set_selected_layers(self, layers):
        self.selected = list(layers)

    def _stack(self, parent):
        return self.layers if parent is None else self.stacks.setdefault(parent, [])

    def insert_layer(self, layer, parent, position):
        layer.parent = parent
        self._stack(parent).insert(position, layer)
        self.selected = [layer]

    def get_item_position(self, layer):
        return self._stack(layer.parent).index(layer)

    def remove_layer(self, layer):
        self._stack(layer.parent).remove(layer)

    def undo_group_start(self):
        self.undo_depth += 1

    def undo_group_end(self):
        self.undo_depth -= 1
        self.undo_groups += 1

    def select_item(self, op, item):
        self.selected_item = (op, item)


class Choice:
    """``Gimp.Choice``: the (nick, index, label, help) entries in the order they were added."""

    def __init__(self):
        self.entries = []

    @classmethod
    def new(cls):
        return cls()

    def add(self, nick, index, label, help_text):
        self.entries.append((nick, index, label, help_text))


class ImageProcedure:
    """``Gimp.ImageProcedure``: records the declaration (menu, documentation, arguments in order)."""

    def __init__(self, plugin, name, proc_type, run, run_data):
        self.name, self.run = name, run
        self.declared = []  # (call, args) for everything but the arguments
        self.arguments = []  # (kind, name, label, help, default, extra) in declaration order

    def __getattr__(self, attr):
        if attr.startswith("add_") and attr.endswith("_argument"):
            kind = attr[len("add_") : -len("_argument")]
            return lambda *args: self.arguments.append(_argument(kind, args))
        if attr.startswith("set_") or attr.startswith("add_"):
            return lambda *args: self.declared.append((attr, args))
        raise AttributeError(attr)

    @classmethod
    def new(cls, *args):
        return cls(*args)


def _argument(kind, args):
    """One ``add_*_argument`` call as plain values: a choice's nicks, a colour's rgba."""
    name, label, help_text, *rest = args
    rest = rest[:-1]  # the flags
    if kind == "choice":
        choice, default = rest
        return (kind, name, label, help_text, default, tuple(choice.entries))
    if kind == "color":
        has_alpha, default = rest
        return (kind, name, label, help_text, default.get_rgba(), has_alpha)
    (default,) = rest
    return (kind, name, label, help_text, default, None)


def _sample_bytes(fmt: str) -> int:
    return {"u8": 1, "u16": 2, "float": 4}[fmt.split()[-1]]


def fake_gi() -> dict:
    """``gi`` and ``gi.repository`` modules with the GIMP 3 names the plug-in uses."""
    gimp = types.SimpleNamespace(
        PlugIn=object,
        Layer=Layer,
        LayerMask=LayerMask,
        ImageBaseType=_Enum("RGB", "GRAY", "INDEXED"),
        ImageType=_Enum("RGBA_IMAGE", "GRAYA_IMAGE"),
        LayerMode=_Enum("NORMAL"),
        AddMaskType=_Enum("WHITE", "BLACK"),
        MaskApplyMode=_Enum("DISCARD", "APPLY"),
        ChannelOps=_Enum("INTERSECT", "REPLACE"),
        FillType=_Enum("FOREGROUND"),
        Selection=types.SimpleNamespace(is_empty=lambda image: image.selection is None),
        Choice=Choice,
        ImageProcedure=ImageProcedure,
        PDBProcType=_Enum("PLUGIN"),
        ProcedureSensitivityMask=_Enum("DRAWABLE"),
        progress_init=lambda *a: None,
        progress_set_text=lambda *a: None,
        progress_update=lambda *a: None,
        progress_pulse=lambda *a: None,
        displays_flush=lambda *a: None,
        context_push=lambda *a: None,
        context_pop=lambda *a: None,
        context_set_foreground=lambda colour: _CONTEXT.__setitem__("foreground", colour),
    )
    gegl = types.SimpleNamespace(
        Rectangle=types.SimpleNamespace(new=lambda x, y, w, h: (x, y, w, h)),
        AbyssPolicy=_Enum("CLAMP"),
        Color=Color,
        init=lambda *a: None,
    )
    repository = types.ModuleType("gi.repository")
    repository.Gimp, repository.Gegl = gimp, gegl
    repository.GLib = types.SimpleNamespace()
    repository.GObject = types.SimpleNamespace(ParamFlags=_Enum("READWRITE"))
    gi = types.ModuleType("gi")
    gi.require_version = lambda name, version: None
    gi.repository = repository
    return {"gi": gi, "gi.repository": repository}


def load_gimp_plugin() -> types.ModuleType:
    """The GIMP plug-in file imported outside GIMP, ``gi`` faked and the client beside it."""
    if GIMP_MODULE in sys.modules:
        return sys.modules[GIMP_MODULE]
    spec = importlib.util.spec_from_file_location(GIMP_MODULE, GIMP_PLUGIN)
    module = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    with _modules(**fake_gi(), maskd_client=maskd_client):
        spec.loader.exec_module(module)
    sys.path[:] = path  # the plug-in puts its own folder first
    sys.modules[GIMP_MODULE] = module
    return module
