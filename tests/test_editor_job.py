"""The per-file loop both editor batch scripts run inside GIMP / Krita (``server/editor_job.py``),
exercised here with plain Python callables in place of the editors' open/mask/save calls. The
real editors run it in tests/editors/test_layered_roundtrip_batch.py."""

from __future__ import annotations

import json
import os
import sys

import pytest
from maskd.server import editor_job, layered_batch


def _job(tmp_path, names):
    files = [{"src": str(tmp_path / n), "dst": str(tmp_path / "out" / n)} for n in names]
    (tmp_path / "out").mkdir()
    return {"files": files, "result": str(tmp_path / "result.json")}


def test_one_failing_file_does_not_stop_the_batch(tmp_path, capsys):
    job = _job(tmp_path, ["a.kra", "b.kra", "c.kra"])

    def process(item, entry):
        if item["src"].endswith("b.kra"):
            raise RuntimeError("  the layer\nis   locked ")
        entry["masked"] = ["Layer 1"]

    outcome = {"files": []}
    editor_job.run_job(job, outcome, job["result"], process)
    written = json.loads((tmp_path / "result.json").read_text())
    assert written == outcome
    assert [e.get("error") for e in written["files"]] == [None, "the layer is locked", None]
    assert written["files"][2]["masked"] == ["Layer 1"]
    # the progress lines maskd reads while the editor runs: one per file, in order
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(layered_batch.PROGRESS_TAG)]
    entries = [json.loads(ln[len(layered_batch.PROGRESS_TAG) :]) for ln in lines]
    assert entries == written["files"]


def test_an_outcome_error_skips_every_file(tmp_path):
    job = _job(tmp_path, ["a.xcf"])
    outcome = {"files": [], "error": "the maskd plug-in is not installed"}
    editor_job.run_job(job, outcome, job["result"], lambda item, entry: pytest.fail("ran a file"))
    assert json.loads((tmp_path / "result.json").read_text()) == outcome


@pytest.mark.parametrize(
    "exc, expected",
    [(RuntimeError(""), "RuntimeError"), (ValueError("bad  value"), "bad value")],
)
def test_error_message_is_one_nonempty_line(exc, expected):
    assert editor_job.error_message(exc) == expected


def test_error_message_prefers_a_glib_style_message():
    exc = RuntimeError("gimp-error-quark: 3")
    exc.message = "Could not open\n'x.xcf'"
    assert editor_job.error_message(exc) == "Could not open 'x.xcf'"


def test_save_atomically_replaces_the_output_and_leaves_no_temporary_folder(tmp_path):
    dst = tmp_path / "out.kra"
    dst.write_bytes(b"old")
    seen = []

    def save(tmp):
        seen.append(tmp)
        assert tmp.endswith(os.sep + "part.kra") and os.path.dirname(os.path.dirname(tmp)) == str(tmp_path)
        with open(tmp, "wb") as f:
            f.write(b"new")
        return True

    editor_job.save_atomically(str(dst), ".kra", save, "Krita")
    assert dst.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.kra"]


def test_a_failed_save_keeps_the_old_output_and_says_which_editor(tmp_path):
    dst = tmp_path / "out.xcf"
    dst.write_bytes(b"old")

    def save(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        return False

    with pytest.raises(RuntimeError, match="GIMP could not save the file"):
        editor_job.save_atomically(str(dst), ".xcf", save, "GIMP")
    assert dst.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.xcf"]


def test_the_krita_script_runs_its_job_through_the_shared_loop(tmp_path, monkeypatch, capsys):
    """``inside_krita`` against a fake ``krita`` module and plugin: the masked file is saved to its
    output, a file Krita cannot open is that file's error, each document is closed."""
    import types

    from maskd.core.layered import choice
    from maskd.server.commands import krita_batch

    class Node:
        def __init__(self, name, kind, children=()):
            self._name, self._kind, self._children = name, kind, list(children)

        def name(self):
            return self._name

        def type(self):
            return self._kind

        def visible(self):
            return True

        def childNodes(self):
            return self._children

        def pixelData(self, x, y, w, h):
            return bytes(range(256)) * (w * h // 64)  # not one flat colour

    class Doc:
        closed = False

        def __init__(self):
            self.root = Node("", "grouplayer", [Node("Layer 1", "paintlayer")])

        def rootNode(self):
            return self.root

        def width(self):
            return 8

        def height(self):
            return 8

        def setBatchmode(self, on):
            pass

        def waitForDone(self):
            pass

        def saveAs(self, path):
            with open(path, "wb") as f:
                f.write(b"kra")
            return True

        def close(self):
            self.closed = True

    docs = []

    def open_document(path):
        if path.endswith("bad.kra"):
            return None
        docs.append(Doc())
        return docs[-1]

    app = types.SimpleNamespace(openDocument=open_document)
    masked = []
    plugin = types.SimpleNamespace(remove_background=lambda doc, node, **kw: masked.append((node.name(), kw)))
    monkeypatch.setitem(
        sys.modules, "krita", types.SimpleNamespace(Krita=types.SimpleNamespace(instance=lambda: app))
    )
    monkeypatch.setitem(sys.modules, "maskd_layer_choice", choice)  # as copied beside the script
    monkeypatch.setitem(sys.modules, "maskd_editor_job", editor_job)
    monkeypatch.setattr(krita_batch, "_import_plugin", lambda job: plugin)
    job = _job(tmp_path, ["good.kra", "bad.kra"])
    job["options"] = {"quality": "fast"}
    (tmp_path / "job.json").write_text(json.dumps(job))

    krita_batch.inside_krita([str(tmp_path / "job.json")])
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["files"][0]["masked"] == ["Layer 1"] and "error" not in result["files"][0]
    assert result["files"][1]["error"] == "Krita could not open the file (damaged, or not a Krita document)"
    assert (tmp_path / "out" / "good.kra").read_bytes() == b"kra"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.kra"]
    assert masked == [("Layer 1", {"output": "transparency-mask", "quality": "fast", "decontaminate": False})]
    assert [d.closed for d in docs] == [True]
    assert capsys.readouterr().out.count(layered_batch.PROGRESS_TAG) == 2
