"""Quality and speed benchmark of full-resolution alpha refinement (issue 3's protocol).

Run: ``.venv/bin/python tests/bench/bench_refine.py [--evaldata DIR] [--skip-speed] [--size 4000]
[--device cuda]`` (``--device``: time the refinement on a GPU, ``core.refine_torch``, and check it
against the CPU path first; the target there is 100 ms for 4000²)

Protocol (the same runs elsewhere on photos not in the repository):
- For each alphamatting pair (photo, ground-truth alpha, trimap2), the coarse mask a model would
  give a big layer is the ground truth resized with INTER_AREA to a quarter of the image's size
  (as a 1024² matte is to a 4096² layer). Each method brings it back to full size.
- Alpha errors (``core.metrics``: SAD ÷1000, MSE ×1000, gradient ÷1000, connectivity ÷1000)
  inside the trimap's unknown band (trimap2 == 128) and over the whole image.
- Colour error: composites I = α·F + (1−α)·B with α the ground truth, F the pair's own photo,
  B the next photo of the set (resized); each method runs on I (8-bit) with the same coarse mask;
  error = α-weighted mean |F̂ − F| where α > 0 (``metrics.foreground_error``). "clean F" repeats
  it with F = the photo's opaque colours extended smoothly into the soft region (a foreground
  without the photo's own old background in its soft pixels).
- Rows: bilinear and Lanczos upsampling (rembg; raw pixels as colours), blur-fusion on Lanczos
  (BiRefNet's ``refine_foreground``), maskd fast/default/quality.
- Time and peak extra memory per image (peak RSS above the start, via /proc/self/clear_refs).
- Network mattes (issue 14): the 1024² matte a real network (ISNet) gave for each of the 18
  photos (``model-mattes/isnet-1024``), settings *native* (the matte as is) and *quarter*
  (INTER_AREA to a quarter of the photo's size first); baseline PIL Lanczos of the 8-bit matte.
  maskd runs through both entry points: ``refine()`` with the matte as the mask and ``cutout()``
  with a matte function returning it. Band = trimap2's unknown region (alphamatting) or the
  pixels within 10 px of the ground truth's 0.5 contour (ClearGrasp). Columns: band SAD and
  gradient (means, and ×Lanczos as the geometric mean of per-photo ratios), whole-image MSE (mean,
  and how many photos are worse than Lanczos by over 2 %), wrong isolated pixels (more than 60
  levels from their 3×3 median *and* from the truth; median per photo), colour error (composite
  protocol above, the network matte as the coarse mask; ×raw), seconds per image.
- Speed: ``refine`` of a SIZE² image from a 1024² matte (everything after the model).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from maskd.core import foreground as fgmod  # noqa: E402
from maskd.core import metrics, pipeline  # noqa: E402

# ----------------------------------------------------------------------------- measurement


def _rss_kib(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _reset_peak() -> int:
    """Reset the peak-RSS mark (Linux); returns the current RSS in KiB."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _rss_kib("VmRSS")


LAST_CPU = [0.0]  # process CPU seconds of the last ``measured`` call (contention-free cost)


def measured(fn):
    """Run ``fn()``; return (result, seconds, peak extra MiB); CPU seconds go to ``LAST_CPU``."""
    base = _reset_peak()
    cpu = time.process_time()
    t = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    LAST_CPU[0] = time.process_time() - cpu
    peak = max(0, _rss_kib("VmHWM") - base) / 1024.0
    return out, dt, peak


# ----------------------------------------------------------------------------- methods


def lanczos(coarse: np.ndarray, size_wh) -> np.ndarray:
    """rembg's upsampling: PIL Lanczos on the 8-bit mask."""
    from PIL import Image

    im = Image.fromarray(np.clip(coarse * 255 + 0.5, 0, 255).astype(np.uint8))
    return np.asarray(im.resize(size_wh, Image.LANCZOS)).astype(np.float32) / 255.0


def method_bilinear(img8, coarse):
    h, w = img8.shape[:2]
    return np.clip(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR), 0, 1), img8 / np.float32(255)


def method_lanczos(img8, coarse):
    h, w = img8.shape[:2]
    return lanczos(coarse, (w, h)), img8 / np.float32(255)


def method_blur_fusion(img8, coarse):
    """BiRefNet's ``refine_foreground``: blur-fusion with its fixed radii 90 and 6 px, on Lanczos alpha."""
    h, w = img8.shape[:2]
    alpha = lanczos(coarse, (w, h))
    return alpha, fgmod.blur_fusion(img8 / np.float32(255), alpha, 90, 6)


def method_maskd(quality):
    def run(img8, coarse):
        res = pipeline.refine(img8, coarse, pipeline.CutoutOptions(quality=quality))
        return res.alpha, res.foreground

    return run


METHODS = [
    ("bilinear", method_bilinear),
    ("Lanczos (rembg)", method_lanczos),
    ("blur-fusion on Lanczos", method_blur_fusion),
    ("maskd fast", method_maskd("fast")),
    ("maskd default", method_maskd("default")),
    ("maskd quality", method_maskd("quality")),
]

# ----------------------------------------------------------------------------- data


def load_pairs(folder: Path):
    pairs = []
    for image_path in sorted(folder.glob("*_image.png")):
        stem = image_path.name[: -len("_image.png")]
        alpha_path = folder / f"{stem}_alpha.png"
        if not alpha_path.exists():
            continue
        img = cv2.cvtColor(cv2.imread(str(image_path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        alpha = cv2.imread(str(alpha_path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
        tri_path = folder / f"{stem}_trimap2.png"
        trimap = cv2.imread(str(tri_path), cv2.IMREAD_GRAYSCALE) if tri_path.exists() else None
        pairs.append((stem, img, alpha, trimap))
    return pairs


def coarse_mask(alpha: np.ndarray) -> np.ndarray:
    h, w = alpha.shape
    return cv2.resize(alpha, (max(1, round(w / 4)), max(1, round(h / 4))), interpolation=cv2.INTER_AREA)


def clean_foreground(photo: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The photo's opaque colours (α ≥ 0.99) extended smoothly into the rest (normalised box blurs)."""
    weight = (alpha >= 0.99).astype(np.float32)
    out = photo.copy()
    done = weight > 0
    for radius in (2, 4, 8, 16, 32, 64, 128, 256, 512):
        size = (2 * radius + 1, 2 * radius + 1)
        den = cv2.blur(weight, size)
        num = cv2.blur(photo * weight[..., None], size)
        ok = (den > 0.05) & ~done
        out[ok] = num[ok] / den[ok][:, None]
        done |= ok
    return out


def composite(fg: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return np.clip((a * fg + (1 - a) * background) * 255 + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- benchmark


def quality_table(pairs):
    rows = {
        name: {"band": [], "whole": [], "colour": [], "colour_clean": [], "time": [], "mem": []}
        for name, _ in METHODS
    }
    for i, (stem, img, alpha, trimap) in enumerate(pairs):
        coarse = coarse_mask(alpha)
        h, w = alpha.shape
        other = pairs[(i + 1) % len(pairs)][1]
        background = cv2.resize(other, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
        photo = img.astype(np.float32) / 255
        clean = clean_foreground(photo, alpha)
        comp = composite(photo, alpha, background)
        comp_clean = composite(clean, alpha, background)
        band = trimap == 128 if trimap is not None else None
        for name, fn in METHODS:
            (pred, _), dt, mem = measured(lambda fn=fn, img=img, coarse=coarse: fn(img, coarse))
            regions = {"whole": None}
            if band is not None:
                regions["band"] = band
            errs = metrics.evaluate(pred, alpha, regions)
            r = rows[name]
            r["whole"].append(errs["whole"])
            if band is not None:
                r["band"].append(errs["band"])
            r["time"].append(dt)
            r["mem"].append(mem)
            _, fg = fn(comp, coarse)
            r["colour"].append(metrics.foreground_error(fg, photo, alpha))
            _, fg = fn(comp_clean, coarse)
            r["colour_clean"].append(metrics.foreground_error(fg, clean, alpha))
        print(f"  {stem} done", file=sys.stderr)
    return rows


def _mean(values, key=None):
    vals = [v[key] for v in values] if key else values
    return float(np.mean(vals)) if vals else float("nan")


def print_quality(rows, title):
    ref = rows["Lanczos (rembg)"]
    raw_colour = np.array(rows["Lanczos (rembg)"]["colour"])
    raw_clean = np.array(rows["Lanczos (rembg)"]["colour_clean"])
    print(f"\n### {title}\n")
    print(
        "| method | band SAD | ×Lanczos | band MSE×1e3 | band grad | band conn | whole SAD "
        "| whole MSE×1e3 | whole grad | whole conn | colour ×1e3 (×raw) | clean-F colour ×1e3 (×raw) "
        "| s/image | peak MiB |"
    )
    print("|---|" + "---:|" * 13)
    for name, _ in METHODS:
        r = rows[name]
        band_sad = np.array([e["sad"] for e in r["band"]])
        ref_sad = np.array([e["sad"] for e in ref["band"]])
        ratio = float(np.mean(band_sad / ref_sad)) if len(band_sad) else float("nan")
        colour = np.array(r["colour"])
        clean = np.array(r["colour_clean"])
        print(
            f"| {name} | {_mean(r['band'], 'sad'):.3f} | {ratio:.3f} | {1e3 * _mean(r['band'], 'mse'):.2f} "
            f"| {_mean(r['band'], 'grad'):.3f} | {_mean(r['band'], 'conn'):.3f} "
            f"| {_mean(r['whole'], 'sad'):.3f} | {1e3 * _mean(r['whole'], 'mse'):.3f} "
            f"| {_mean(r['whole'], 'grad'):.3f} | {_mean(r['whole'], 'conn'):.3f} "
            f"| {1e3 * colour.mean():.3f} ({np.mean(colour / raw_colour):.2f}) "
            f"| {1e3 * clean.mean():.3f} ({np.mean(clean / raw_clean):.2f}) "
            f"| {statistics.median(r['time']):.3f} | {max(r['mem']):.0f} |"
        )
    print(
        "\n(means over pairs; ×Lanczos and ×raw are means of per-pair ratios; raw = the image's own "
        "pixels as colours, the bilinear/Lanczos rows)"
    )


def binary_table(folder: Path) -> None:
    """Whole-image errors on photos with binary ground truth (ClearGrasp: glass and clear plastic)."""
    pairs = load_pairs(folder)
    if not pairs:
        return
    print(
        f"\n### {folder.name} ({len(pairs)} pairs, binary ground truth), "
        "coarse = GT at 1/4 size, whole image\n"
    )
    print("| method | SAD | MSE×1e3 | grad | conn |")
    print("|---|---:|---:|---:|---:|")
    for name, fn in METHODS:
        errs = [
            metrics.evaluate(fn(img, coarse_mask(alpha))[0], alpha, {"w": None})["w"]
            for _, img, alpha, _ in pairs
        ]
        print(
            f"| {name} | {_mean(errs, 'sad'):.3f} | {1e3 * _mean(errs, 'mse'):.3f} "
            f"| {_mean(errs, 'grad'):.3f} | {_mean(errs, 'conn'):.3f} |"
        )


def check_criteria(rows) -> list[str]:
    ref = np.array([e["sad"] for e in rows["Lanczos (rembg)"]["band"]])

    def ratio(name):
        return float(np.mean(np.array([e["sad"] for e in rows[name]["band"]]) / ref))

    grad = {name: _mean(rows[name]["band"], "grad") for name, _ in METHODS}
    raw = np.array(rows["Lanczos (rembg)"]["colour"])
    lines = []
    d = ratio("maskd default")
    lines.append(f"{'PASS' if d <= 0.65 else 'FAIL'} default band SAD {d:.3f}× Lanczos (≤ 0.65)")
    q = ratio("maskd quality")
    lines.append(f"{'PASS' if q <= 0.55 else 'FAIL'} quality band SAD {q:.3f}× Lanczos (≤ 0.55)")
    baselines = ["bilinear", "Lanczos (rembg)", "blur-fusion on Lanczos"]
    best = min(grad[b] for b in baselines)
    ok = grad["maskd default"] < best
    lines.append(
        f"{'PASS' if ok else 'FAIL'} default band gradient {grad['maskd default']:.3f} "
        f"< best baseline {best:.3f}"
    )
    c = float(np.mean(np.array(rows["maskd default"]["colour"]) / raw))
    lines.append(
        f"{'PASS' if c <= 0.5 else 'FAIL'} default colour error {c:.3f}× raw pixels (≤ 0.5; photo as F)"
    )
    raw_clean = np.array(rows["Lanczos (rembg)"]["colour_clean"])
    cc = float(np.mean(np.array(rows["maskd default"]["colour_clean"]) / raw_clean))
    lines.append(
        f"{'PASS' if cc <= 0.5 else 'FAIL'} default colour error {cc:.3f}× raw pixels (≤ 0.5; clean F)"
    )
    return lines


# ----------------------------------------------------------------------------- network mattes

NETWORK = "model-mattes/isnet-1024"
SETTINGS = ("native", "quarter")


def isolated_wrong(pred: np.ndarray, truth: np.ndarray) -> int:
    """Pixels more than 60 levels (of 255) from their 3×3 median *and* from the truth: holes, specks."""
    p = np.clip(pred * 255 + 0.5, 0, 255).astype(np.uint8)
    t = np.clip(truth * 255 + 0.5, 0, 255).astype(np.int16)
    med = cv2.medianBlur(p, 3).astype(np.int16)
    p16 = p.astype(np.int16)
    return int(((np.abs(p16 - med) > 60) & (np.abs(p16 - t) > 60)).sum())


def contour_band(truth: np.ndarray, reach: int = 10) -> np.ndarray:
    """Pixels within ``reach`` px of the ground truth's 0.5 contour (photos without a trimap)."""
    fg = (truth >= 0.5).astype(np.uint8)
    k = np.ones((3, 3), np.uint8)
    edge = cv2.dilate(fg, k) != cv2.erode(fg, k)
    dist = cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, 5)
    return dist <= reach


def load_network(evaldata: Path, only=None):
    """(stem, photo, truth, band, 1024² matte) for every photo that has a network matte."""
    out = []
    for folder in ("alphamatting", "cleargrasp"):
        for stem, img, alpha, trimap in load_pairs(evaldata / folder):
            path = evaldata / NETWORK / f"{stem}.png"
            if not path.exists() or (only and stem not in only):
                continue
            matte = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
            band = trimap == 128 if trimap is not None else contour_band(alpha)
            out.append((stem, img, alpha, band, matte))
    return out


def setting_matte(matte: np.ndarray, hw, setting: str) -> np.ndarray:
    if setting == "native":
        return matte
    h, w = hw
    return cv2.resize(matte, (max(1, round(w / 4)), max(1, round(h / 4))), interpolation=cv2.INTER_AREA)


def method_cutout(quality):
    def run(img8, coarse):
        res = pipeline.cutout(img8, lambda rgb: coarse, pipeline.CutoutOptions(quality=quality))
        return res.alpha, res.foreground

    return run


NETWORK_METHODS = [
    ("Lanczos (rembg)", method_lanczos),
    ("maskd fast (refine)", method_maskd("fast")),
    ("maskd default (refine)", method_maskd("default")),
    ("maskd quality (refine)", method_maskd("quality")),
    ("maskd default (cutout)", method_cutout("default")),
]


def network_rows(photos, setting, methods=NETWORK_METHODS, colour=True):
    """Per method, per photo: band SAD, band grad, whole MSE, isolated count, colour error, seconds."""
    rows = {name: [] for name, _ in methods}
    for i, (stem, img, alpha, band, matte) in enumerate(photos):
        coarse = setting_matte(matte, alpha.shape, setting)
        h, w = alpha.shape
        if colour:
            other = photos[(i + 1) % len(photos)][1]
            background = cv2.resize(other, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
            photo = img.astype(np.float32) / 255
            comp = composite(photo, alpha, background)
        for name, fn in methods:
            (pred, _), dt, _ = measured(lambda fn=fn, img=img, coarse=coarse: fn(img, coarse))
            d = np.abs(pred.astype(np.float64) - alpha)
            g = (metrics.gradient_magnitude(pred) - metrics.gradient_magnitude(alpha)) ** 2
            errs = {"sad": float(d[band].sum() / 1e3), "grad": float(g[band].sum() / 1e3)}
            errs["mse"] = float((d**2).mean())
            errs["iso"] = isolated_wrong(pred, alpha)
            errs["time"] = dt
            if colour:
                _, fg = fn(comp, coarse)
                errs["colour"] = metrics.foreground_error(fg, photo, alpha)
                errs["raw"] = metrics.foreground_error(comp / np.float32(255), photo, alpha)
            errs["stem"] = stem
            rows[name].append(errs)
    return rows


def _geo(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.exp(np.log(np.maximum(values, 1e-12)).mean())) if values.size else float("nan")


def network_summary(rows, name, ref="Lanczos (rembg)") -> dict:
    r, b = rows[name], rows[ref]
    mse = np.array([e["mse"] for e in r])
    ref_mse = np.array([e["mse"] for e in b])
    out = {
        "sad": float(np.mean([e["sad"] for e in r])),
        "sad_ratio": _geo([e["sad"] / f["sad"] for e, f in zip(r, b)]),
        "grad": float(np.mean([e["grad"] for e in r])),
        "grad_ratio": _geo([e["grad"] / f["grad"] for e, f in zip(r, b)]),
        "mse": float(mse.mean()),
        "mse_worse": int((mse > 1.02 * ref_mse).sum()),
        "iso": float(statistics.median([e["iso"] for e in r])),
        "time": float(statistics.median([e["time"] for e in r])),
    }
    if "colour" in r[0]:
        out["colour"] = float(np.mean([e["colour"] for e in r]))
        # ratio of means: a photo with binary truth has no soft pixel, so its raw error can be 0
        out["colour_ratio"] = out["colour"] / max(1e-12, float(np.mean([e["raw"] for e in r])))
    return out


def print_network(rows, title):
    print(f"\n### {title}\n")
    print(
        "| method | band SAD | ×Lanczos (geo) | band grad | ×Lanczos (geo) | whole MSE×1e3 "
        "| photos MSE > Lanczos +2 % | wrong isolated px (median) | colour ×1e3 (×raw mean) | s/image |"
    )
    print("|---|" + "---:|" * 9)
    for name in rows:
        s = network_summary(rows, name)
        colour = f"{1e3 * s['colour']:.2f} ({s['colour_ratio']:.2f})" if "colour" in s else "–"
        print(
            f"| {name} | {s['sad']:.3f} | {s['sad_ratio']:.3f} | {s['grad']:.3f} | {s['grad_ratio']:.3f} "
            f"| {1e3 * s['mse']:.3f} | {s['mse_worse']} | {s['iso']:.0f} | {colour} | {s['time']:.3f} |"
        )


def check_network(rows, setting) -> list[str]:
    """Issue 14's criteria for one setting, for every maskd default row (refine and cutout)."""
    ref = network_summary(rows, "Lanczos (rembg)")
    bound = 0.92 if setting == "native" else 0.80
    lines = []
    for name in rows:
        if "default" not in name:
            continue
        s = network_summary(rows, name)
        iso_bound = max(10, ref["iso"])
        checks = [
            (s["iso"] <= iso_bound, f"wrong isolated px median {s['iso']:.0f} ≤ {iso_bound:.0f}"),
            (s["mse"] <= ref["mse"], f"whole MSE {1e3 * s['mse']:.3f} ≤ Lanczos {1e3 * ref['mse']:.3f}"),
            (s["mse_worse"] <= 2, f"{s['mse_worse']} photos worse than Lanczos by > 2 % (≤ 2)"),
            (s["sad_ratio"] <= bound, f"band SAD {s['sad_ratio']:.3f}× Lanczos (≤ {bound})"),
            (s["grad_ratio"] < 1.0, f"band gradient {s['grad_ratio']:.3f}× Lanczos (< 1)"),
        ]
        for ok, text in checks:
            lines.append(f"{'PASS' if ok else 'FAIL'} {setting} {name}: {text}")
    return lines


def speed(size: int, repeats: int, folder: Path, quality: str, device: str = "cpu"):
    """refine() of a size² image from a 1024² matte: seconds (min, median) and peak extra MiB."""
    pairs = load_pairs(folder)
    stem, img, alpha, _ = max(pairs, key=lambda p: float(((p[2] > 0) & (p[2] < 1)).mean()))  # hairiest
    big = cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)
    big_alpha = np.clip(cv2.resize(alpha, (size, size), interpolation=cv2.INTER_CUBIC), 0, 1)
    matte = cv2.resize(big_alpha, (1024, 1024), interpolation=cv2.INTER_AREA)
    del big_alpha
    times, mems, cpus, stages = [], [], [], None
    opts = pipeline.CutoutOptions(quality=quality, device=device)
    for _ in range(repeats + 1):  # the first run is reported apart (a cold process pays page faults)
        res, dt, mem = measured(lambda: pipeline.refine(big, matte, opts))
        times.append(dt)
        mems.append(mem)
        cpus.append(LAST_CPU[0])
        stages = res.timings
        del res
    return (
        stem,
        times[0],
        min(times[1:]),
        statistics.median(times[1:]),
        statistics.median(cpus[1:]),
        max(mems),
        stages,
    )


def device_check(folder: Path, device: str) -> int:
    """The device path against the CPU path on every pair (alpha and colours); 1 when they differ."""
    worst_alpha = worst_colour = 0.0
    for _, img, alpha, _ in load_pairs(folder):
        coarse = coarse_mask(alpha)
        cpu = pipeline.refine(img, coarse)
        dev = pipeline.refine(img, coarse, pipeline.CutoutOptions(device=device))
        worst_alpha = max(worst_alpha, float(np.percentile(np.abs(dev.alpha - cpu.alpha), 99)))
        worst_colour = max(worst_colour, metrics.foreground_error(dev.foreground, cpu.foreground, cpu.alpha))
    ok = worst_alpha < 5e-3 and worst_colour < 1e-3
    print(
        f"\n{'PASS' if ok else 'FAIL'} {device} vs CPU path (worst pair): alpha p99 difference "
        f"{worst_alpha:.2e} (< 5e-3), colour difference {worst_colour:.2e} (< 1e-3)"
    )
    return 0 if ok else 1


def main(argv=None) -> int:
    default_shared = Path(os.environ.get("MASKD_SHARED", REPO.parent / "shared"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evaldata", type=Path, default=default_shared / "evaldata")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--size", type=int, default=4000)
    ap.add_argument("--device", default="cpu", help="cpu (OpenCV tiles) or a torch device: cuda, cuda:1, mps")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-shrunk", action="store_true", help="skip the shrunk-ground-truth tables")
    ap.add_argument("--skip-network", action="store_true", help="skip the network-matte tables")
    ap.add_argument("--photos", nargs="*", help="network mattes: only these photos (e.g. GT01 cg_000000080)")
    args = ap.parse_args(argv)
    folder = args.evaldata / "alphamatting"
    if not folder.is_dir():
        print(f"evaluation photos not found at {folder} (set MASKD_SHARED or --evaldata)", file=sys.stderr)
        return 2
    status = 0
    if not args.skip_quality and not args.skip_shrunk:
        rows = quality_table(load_pairs(folder))
        count = len(rows["maskd default"]["time"])
        print_quality(rows, f"alphamatting ({count} pairs), coarse = GT at 1/4 size")
        print()
        for line in check_criteria(rows):
            print(line)
            status |= line.startswith("FAIL")
        if (args.evaldata / "cleargrasp").is_dir():
            binary_table(args.evaldata / "cleargrasp")
    if not args.skip_quality and not args.skip_network and (args.evaldata / NETWORK).is_dir():
        photos = load_network(args.evaldata, args.photos)
        lines = []
        for setting in SETTINGS:
            rows = network_rows(photos, setting)
            print_network(rows, f"network mattes ({NETWORK}, {len(photos)} photos), setting {setting}")
            lines += check_network(rows, setting)
        print()
        for line in lines:
            print(line)
            status |= line.startswith("FAIL")
    if not args.skip_speed and args.device != "cpu":
        status |= device_check(folder, args.device)
    if not args.skip_speed:
        print(
            f"\n### speed: refine() of a {args.size}² image from a 1024² matte (after the model), "
            f"device {args.device}, {os.cpu_count()} CPUs ({cv2.getNumThreads()} OpenCV threads: the band's "
            f"tiles run on them), load {os.getloadavg()[0]:.1f}\n"
        )
        print(
            "| mode | image | first s | best s | median s | median CPU s | peak extra MiB "
            "| stages (last run, s) |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---|")
        for quality in ("fast", "default", "quality"):
            stem, first, best, med, cpu, mem, stages = speed(
                args.size, args.repeats, folder, quality, args.device
            )
            st = ", ".join(f"{k} {v:.3f}" for k, v in stages.items())
            print(
                f"| {quality} | {stem} ×{args.size} | {first:.3f} | {best:.3f} | {med:.3f} | {cpu:.3f} "
                f"| {mem:.0f} "
                f"| {st} |"
            )
            if quality == "default" and args.device != "cpu":
                verdict = (
                    f"{'PASS' if med <= 0.1 else 'FAIL'} default {args.size}² on {args.device}: "
                    f"median {med:.3f} s (≤ 0.1)"
                )
            elif quality == "default":
                ok = med <= 1.5 and mem < 3072
                verdict = (
                    f"{'PASS' if ok else 'FAIL'} default {args.size}²: median {med:.2f} s (≤ 1.5; CPU "
                    f"{cpu:.2f} s, load {os.getloadavg()[0]:.1f}), peak {mem:.0f} MiB (< 3072)"
                )
        print()
        print(verdict)
    return status


if __name__ == "__main__":
    sys.exit(main())
