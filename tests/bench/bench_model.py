"""Benchmark: BiRefNet forward time, peak memory and achieved GFLOP/s at the native resolution.

    python tests/bench/bench_model.py                       # lite and general, every device here
    python tests/bench/bench_model.py --models lite --devices cpu --repeat 3
    python tests/bench/bench_model.py --weights-dir DIR     # real weights: DIR/{lite,general}.safetensors

Each (model, device) runs in its own process so peak memory is its own. CPU peak memory is the
process's resident set sampled every 2 ms during the forward; "plain" is the same network with the
deformable convolutions replaced by ordinary convolutions of the same weights (what the model
would need without any DCN overhead), and the ratio says how close the chunked DCN stays to it.
On CUDA, peak memory is ``torch.cuda.max_memory_allocated``; fp16/bf16 are compared with fp32 by
the max |Δ sigmoid| over the deterministic golden test image. FLOPs come from
``torch.utils.flop_counter.FlopCounterMode``; the DCN's matrix products are ordinary ``mm``/``addmm``
calls here and are counted (its bilinear sampling is not, as for any FLOP counter).
Generated weights (tests/conftest.py) are used unless --weights-dir is given: speed does not
depend on the values.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def _weights(variant: str, weights_dir: str | None) -> Path:
    if weights_dir:
        return Path(weights_dir) / f"{variant}.safetensors"
    from tests.helpers import generated_weights_path

    return generated_weights_path(variant)


class _RssPeak:
    """Samples the resident set size in a thread; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.002):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _plain_dcn(model) -> None:
    """Replace every deformable convolution by an ordinary one with the same (folded) weights."""
    import torch.nn.functional as F
    from maskd.core.deform_conv import DeformableConv2d

    for module in model.modules():
        if isinstance(module, DeformableConv2d):
            module.forward = (lambda m: lambda x: F.conv2d(x, m._weight, m._bias, m.stride, m.padding))(
                module
            )


def child(args) -> dict:
    import numpy as np
    import torch
    from maskd.core import device as devices
    from maskd.core.birefnet import load_model
    from torch.utils.flop_counter import FlopCounterMode

    from tests.helpers import golden_module as _golden_module

    golden = _golden_module()
    device = devices.pick_device(args.device)
    dtype = devices.pick_dtype(device, args.dtype)
    path = _weights(args.model, args.weights_dir)
    model = load_model(str(path), variant=args.model, device=str(device), dtype=dtype)
    h, w = model.preset.resolution if not args.size else (args.size, args.size)
    image = golden.make_image(h, w)
    x = torch.from_numpy(golden.normalise(image)).to(device)
    weights_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    result = {
        "model": args.model,
        "device": str(device),
        "dtype": devices.dtype_name(dtype),
        "size": f"{w}x{h}",
        "threads": torch.get_num_threads(),
        "weights_mb": weights_bytes / 2**20,
    }
    with torch.inference_mode():
        if args.plain:
            _plain_dcn(model)
        # first full-size forward in a fresh process: peak memory above the loaded model, and FLOPs
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        if device.type == "cuda":
            base = torch.cuda.memory_allocated(device)
        else:
            base = _RssPeak().proc.memory_info().rss
        counter = FlopCounterMode(display=False)
        with _RssPeak() as rss, counter:
            logits = model(x)
            _sync(device)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.peak
        result["gflop"] = counter.get_total_flops() / 1e9
        if device.type in ("cuda", "cpu"):
            result["base_mb"], result["peak_mb"] = base / 2**20, peak / 2**20
        if args.plain:
            return result
        times, cpu_times = [], []
        for _ in range(args.repeat):
            start, cpu_start = time.perf_counter(), time.process_time()
            logits = model(x)
            _sync(device)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        result["seconds"] = min(times)
        result["cpu_seconds"] = min(cpu_times)
        result["seconds_all"] = times
        result["gflops_per_s"] = result["gflop"] / result["seconds"]
        prob = torch.sigmoid(logits.float()).cpu().numpy()
        np.save(Path(args.out).with_suffix(".npy"), prob)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="lite,general")
    p.add_argument("--devices", default=None, help="comma list (default: cpu plus cuda/mps when present)")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--size", type=int, default=None, help="square input size instead of the native one")
    p.add_argument("--weights-dir", default=None)
    p.add_argument("--no-plain", action="store_true", help="skip the plain-convolution memory reference")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--device", help=argparse.SUPPRESS)
    p.add_argument("--dtype", help=argparse.SUPPRESS)
    p.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        Path(args.out).write_text(json.dumps(child(args)))
        return 0

    import tempfile

    import numpy as np
    import torch
    from maskd.core.device import mps_available

    devices = (
        args.devices.split(",")
        if args.devices
        else (
            ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (["mps"] if mps_available() else [])
        )
    )
    runs = []
    for model in args.models.split(","):
        for device in devices:
            dtypes = ["fp32"] if device == "cpu" else ["fp32", "fp16", "bf16"]
            for dtype in dtypes:
                runs.append((model, device, dtype))
    results = []
    with tempfile.TemporaryDirectory() as tmp:

        def run_child(model, device, dtype, plain=False):
            out = Path(tmp) / f"{model}-{device}-{dtype}{'-plain' if plain else ''}.json"
            cmd = [
                sys.executable,
                __file__,
                "--child",
                "--model",
                model,
                "--device",
                device,
                "--dtype",
                dtype,
                "--repeat",
                str(args.repeat),
                "--out",
                str(out),
            ]
            cmd += ["--size", str(args.size)] if args.size else []
            cmd += ["--weights-dir", args.weights_dir] if args.weights_dir else []
            cmd += ["--plain"] if plain else []
            what = "plain-convolution reference" if plain else dtype
            print(f"running {model} on {device} ({what}) ...", file=sys.stderr, flush=True)
            proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ))
            if proc.returncode != 0 or not out.exists():
                print(f"  failed ({proc.returncode})", file=sys.stderr)
                return None
            return json.loads(out.read_text()), out

        for model, device, dtype in runs:
            done = run_child(model, device, dtype)
            if done is None:
                continue
            res, out = done
            ref_path = Path(tmp) / f"{model}-{device}-fp32.npy"
            if dtype != "fp32" and ref_path.exists():
                prob = np.load(out.with_suffix(".npy"))
                res["max_dsigmoid"] = float(np.abs(prob - np.load(ref_path)).max())
            if dtype == "fp32" and device in ("cpu", "cuda") and not args.no_plain:
                plain = run_child(model, device, dtype, plain=True)
                if plain is not None:
                    res["plain"] = plain[0]
            results.append(res)
    heads = [
        "model",
        "device",
        "dtype",
        "size",
        "thr",
        "forward s",
        "CPU s",
        "img/s",
        "GFLOP",
        "GFLOP/s",
        "weights MB",
        "peak MB",
        "act MB",
        "plain act MB",
        "peak/plain",
        "max|Δσ|",
    ]
    table = []
    for r in results:
        plain = r.get("plain")
        act = r["peak_mb"] - r["base_mb"] if "peak_mb" in r else None
        plain_act = plain["peak_mb"] - plain["base_mb"] if plain and "peak_mb" in plain else None
        ratio = ((r["weights_mb"] + act) / (r["weights_mb"] + plain_act)) if act and plain_act else None
        table.append(
            [
                r["model"],
                r["device"],
                r["dtype"],
                r["size"],
                str(r["threads"]),
                f"{r['seconds']:.2f}",
                f"{r['cpu_seconds']:.2f}",
                f"{1 / r['seconds']:.2f}",
                f"{r['gflop']:.0f}",
                f"{r['gflops_per_s']:.1f}",
                f"{r['weights_mb']:.0f}",
                f"{r['peak_mb']:.0f}" if "peak_mb" in r else "-",
                f"{act:.0f}" if act is not None else "-",
                f"{plain_act:.0f}" if plain_act is not None else "-",
                f"{ratio:.2f}" if ratio else "-",
                f"{r['max_dsigmoid']:.4f}" if "max_dsigmoid" in r else "-",
            ]
        )
    widths = [max(len(x) for x in col) for col in zip(heads, *table)]
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths)))
    for row in table:
        print("  ".join(x.ljust(w) for x, w in zip(row, widths)))
    print(
        "forward s = wall time (best run); CPU s = process CPU time of that forward, all threads: on a "
        "machine shared with other work, CPU s / thr is what the forward costs when it has its cores"
    )
    print(
        "act = peak minus memory before the first full-size forward (CPU: resident set; CUDA: "
        "allocated); plain = DCNs replaced by plain convolutions; "
        "peak/plain = (weights + act) / (weights + plain act)"
    )
    for r in results:
        print(
            f"{r['model']}/{r['device']}/{r['dtype']}: timed runs "
            f"{', '.join(f'{s:.2f}' for s in r['seconds_all'])} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
