"""Benchmark body run by kritarunner (tests/bench/bench_krita.py drives it).

    QT_QPA_PLATFORM=offscreen kritarunner -s krita_bench -f main SPEC.json

Builds one SIZE×SIZE RGBA U8 document and runs the installed plugin's job (the code path of the
docker's button) several times, recording the job's own stage timings and the daemon's report.
"""

import json
import sys
import time
import traceback


def _pattern(size):
    """A subject-like picture without per-pixel Python: a few distinct rows repeated."""
    rows = []
    for band in range(16):
        row = bytearray()
        for x in range(0, size, 64):
            inside = abs(x - size // 2) < size // 4 and 4 <= band <= 12
            px = bytes((40, 120, 230, 255)) if inside else bytes(((x // 16) % 256, 90 + band * 4, 60, 255))
            row += px * min(64, size - x)
        rows.append(bytes(row))
    band_h = -(-size // 16)
    return b"".join(rows[min(15, y // band_h)] for y in range(size))


def main(args):
    with open(args[0], encoding="utf-8") as fh:
        spec = json.load(fh)
    out = {"runs": []}
    try:
        from krita import Krita
        from PyQt5.QtCore import QByteArray, QEventLoop, QTimer

        sys.path.insert(0, spec["pykrita"])
        import maskd

        app = Krita.instance()
        size = spec["size"]
        doc = app.createDocument(size, size, "bench", "RGBA", "U8", "", 72.0)
        doc.setBatchmode(True)
        layer = doc.createNode("photo", "paintlayer")
        doc.rootNode().addChildNode(layer, None)
        layer.setPixelData(QByteArray(_pattern(size)), 0, 0, size, size)
        doc.waitForDone()
        for _ in range(spec["repeats"]):
            t0 = time.perf_counter()
            job = maskd.start_job(doc, layer, "transparency-mask", spec["options"])
            if not job.done:
                loop = QEventLoop()
                job.finished.connect(loop.quit)
                QTimer.singleShot(600000, loop.quit)
                if not job.done:
                    loop.exec_()
            total = time.perf_counter() - t0
            if job.error is not None:
                out["runs"].append({"error": job.error.message})
                break
            doc.waitForDone()
            t1 = time.perf_counter()
            job.result_node.remove()  # back to the bare layer for the next run
            for extra in job.extra_nodes.values():  # shadow / background layers, when asked for
                extra.remove()
            doc.waitForDone()
            out["runs"].append(
                {
                    "total": total,
                    "timings": job.timings,
                    "daemon": job.info.get("timings", {}),
                    "cleanup": time.perf_counter() - t1,
                }
            )
        doc.close()
    except Exception:
        out["crash"] = traceback.format_exc()
    with open(spec["result"], "w", encoding="utf-8") as fh:
        json.dump(out, fh, indent=1)


__main__ = main
