"""A small workaround that lets ``gimpformats`` 2025 read XCF files saved by GIMP 3.

gimpformats knows the XCF properties up to id 39 (GIMP 2.10). GIMP 3.0 writes newer ones on
every layer (for example 42, ``PROP_LOCK_VISIBILITY``), and gimpformats then fails with
``IndexError: list index out of range`` (or ``RuntimeError: Unknown property id N``) inside
``GimpIOBase._propertyDecode``. Every XCF property record carries its payload length and the
caller has already cut the payload out, so an unknown property can be skipped safely: that is
all this patch does. Known properties decode exactly as before. The ids skipped are recorded on
the object as ``unknown_properties`` (id -> payload bytes) for whoever wants them.

Upstream note (to report to gimpformats): ``_propertyDecode`` should ignore property ids it does
not know instead of raising, as GIMP's own reader does for forward compatibility.
"""

from __future__ import annotations

_PATCHED_FLAG = "_maskd_skips_unknown_properties"


def install() -> None:
    """Patch ``GimpIOBase._propertyDecode`` once (idempotent, process-wide, behaviour-preserving)."""
    from gimpformats import GimpIOBase as base_module

    cls = base_module.GimpIOBase
    if getattr(cls, _PATCHED_FLAG, False):
        return
    props = base_module.ImageProperties
    known = {p.value for p in props} - {props.PROP_NUM_PROPS.value}
    original = cls._propertyDecode

    def _property_decode(self, prop, data):
        if prop not in known:
            unknown = self.__dict__.setdefault("unknown_properties", {})
            unknown[int(prop)] = bytes(data)
            return len(data)
        return original(self, prop, data)

    cls._propertyDecode = _property_decode
    setattr(cls, _PATCHED_FLAG, True)
