"""The per-file loop both editor batch scripts run inside GIMP / Krita (``server/editor_job.py``),
exercised here with plain Python callables in place of the editors' open/mask/save calls. The
real editors run it in tests/editors/test_layered_roundtrip_batch.py."""

from __future__ import annotations

import json
import os

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
