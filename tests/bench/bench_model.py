"""Benchmark: BiRefNet forward time against the machine's own matmul rate, per-module time, peak memory.

    python tests/bench/bench_model.py                       # lite and general, every device here
    python tests/bench/bench_model.py --models lite --devices cpu --repeat 5
    python tests/bench/bench_model.py --weights-dir DIR     # real weights: DIR/{lite,general}.safetensors
    python tests/bench/bench_model.py --compare             # also the previous DCN (grid_sample), alternating

Why a share of the matmul rate: on a shared machine the absolute forward time moves with the load,
but the rate of a plain fp32 GEMM measured in the same run moves with it. The forward's share
``FROZEN_GFLOP / forward_seconds / matmul_rate`` says how close the forward is to a purely
matmul-bound one. The FLOP counts are frozen (``lite`` 611 GFLOP, ``general`` 2,391 GFLOP at
1024², what ``FlopCounterMode`` counted before the fast DCN landed), so extra arithmetic cannot
raise the share; the measured count is printed beside it.

Matmul rate: a fixed 4096² fp32 GEMM with 2 threads (and bf16 where the CPU has native bf16,
AVX512_BF16 or AMX), median of 5, measured before and after the model runs; the table uses their
mean. Forward: the median of ``--repeat`` (≥ 5) runs; with ``--compare`` the previous deformable
convolution (``grid_sample`` per channel, the implementation before this benchmark's rewrite, kept
here only for the comparison) and the current one alternate run by run in one process. Per-module
time comes from forward hooks: backbone (both passes), decoder (squeeze + decoder, everything after
the backbone), and within it the deformable-convolution modules (offset/mask convolution included)
and ``deform_conv2d`` alone (sampling + its matmul); "DCN mm" is what that matmul alone would take
at the run's matmul rate (its FLOPs as counted), and DCN/mm the ratio.

Each child process tunes glibc's malloc as the daemon does at startup (the batch CLI runs a daemon
too), so the forward is timed as users get it; ``MASKD_MALLOC_TUNING=0`` times glibc's defaults.

Peak memory: each (model, device, dtype) also runs in its own fresh process so its peak is its own.
CPU peak is the resident set sampled every 2 ms during the first forward; "plain" is the same network
with the deformable convolutions replaced by ordinary convolutions of the same weights (what the
model needs without any DCN overhead). On CUDA, peak is ``torch.cuda.max_memory_allocated`` and
fp16/bf16 are compared with fp32 by the max |Δ sigmoid| over the golden test image. On a CPU with
native bf16, ``--cpu-bf16`` adds a bf16 forward (opt-in in maskd: ``--precision bf16``; its accuracy
on real weights is unverified here, generated weights magnify rounding through the random decoder).
Generated weights (tests/conftest.py) are used unless --weights-dir is given: speed does not
depend on the values.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

FROZEN_GFLOP = {"lite": 611.0, "general": 2391.0}  # FlopCounterMode at 1024², before the fast DCN
GEMM_SIZE = 4096
GEMM_THREADS = 2


def _weights(variant: str, weights_dir: str | None) -> Path:
    if weights_dir:
        return Path(weights_dir) / f"{variant}.safetensors"
    from tests.helpers import generated_weights_path

    return generated_weights_path(variant)


def native_bf16() -> bool:
    """Whether the CPU multiplies bf16 natively (AVX512_BF16 or AMX): only then is bf16 worth timing."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def matmul_rate(dtype_name: str = "fp32", repeat: int = 5) -> float:
    """GFLOP/s of a fixed 4096² GEMM with 2 threads (median of ``repeat``)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    threads = torch.get_num_threads()
    torch.set_num_threads(GEMM_THREADS)
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(GEMM_SIZE, GEMM_SIZE, generator=gen).to(dtype)
        b = torch.randn(GEMM_SIZE, GEMM_SIZE, generator=gen).to(dtype)
        out = torch.empty(GEMM_SIZE, GEMM_SIZE, dtype=dtype)
        torch.mm(a, b, out=out)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return 2 * GEMM_SIZE**3 / statistics.median(times) / 1e9


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


# --------------------------------------------------------------------------------------------
# the previous deformable convolution (per-channel grid_sample on NCHW), for --compare only

_GRIDS: dict = {}


def _grid_sample_base(device, geometry, out_size, sample_size):
    key = (str(device), geometry, out_size, sample_size)
    if key in _GRIDS:
        return _GRIDS[key]
    import torch

    kh, kw, sh, sw, ph, pw, dh, dw = geometry
    (out_h, out_w), (sample_h, sample_w) = out_size, sample_size
    scale_y, scale_x = 2.0 / (sample_h - 1), 2.0 / (sample_w - 1)
    tap_y = (torch.arange(kh) * dh).repeat_interleave(kw).double()
    tap_x = (torch.arange(kw) * dw).repeat(kh).double()
    base_y = (torch.arange(out_h) * sh - ph).double()
    base_x = (torch.arange(out_w) * sw - pw).double()
    grid_y = (tap_y.view(-1, 1, 1) + base_y.view(1, -1, 1)) * scale_y - 1.0
    grid_x = (tap_x.view(-1, 1, 1) + base_x.view(1, 1, -1)) * scale_x - 1.0
    base = torch.stack(torch.broadcast_tensors(grid_x, grid_y), -1).float().to(device)
    scale = torch.tensor([scale_x, scale_y], dtype=torch.float32).to(device)
    _GRIDS[key] = (base, scale)
    return base, scale


def grid_sample_deform_conv2d(
    x, offset, mask, weight, bias=None, stride=1, padding=0, dilation=1, max_chunk_bytes=48 * 2**20
):
    """maskd's DCNv2 before the channels-last sampling (same semantics, same chunking)."""
    import torch
    import torch.nn.functional as F

    def pair(v):
        return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))

    batch, channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    taps = kh * kw
    out_h, out_w = offset.shape[-2:]
    out_dtype = x.dtype
    sample = x.float()
    if height == 1 or width == 1:
        sample = F.pad(sample, (0, int(width == 1), 0, int(height == 1)))
    sample_h, sample_w = sample.shape[-2:]
    device = x.device
    geometry = (kh, kw, sh, sw, ph, pw, dh, dw)
    base, scale = _grid_sample_base(device, geometry, (out_h, out_w), (sample_h, sample_w))
    offset_xy = offset.float().view(batch, taps, 2, out_h, out_w).flip(2).permute(0, 1, 3, 4, 2)
    w2d = weight.reshape(out_channels, channels * taps)
    result = torch.empty(batch, out_h, out_w, out_channels, device=device, dtype=out_dtype)
    col_bytes_per_row = channels * taps * out_w * 4
    rows_per_chunk = (
        out_h if max_chunk_bytes is None else max(1, min(out_h, max_chunk_bytes // col_bytes_per_row))
    )
    if mask is not None:
        mask = mask.view(batch, taps, out_h, out_w)
    for b in range(batch):
        image = sample[b : b + 1]
        for r0 in range(0, out_h, rows_per_chunk):
            r1 = min(out_h, r0 + rows_per_chunk)
            rows = r1 - r0
            grid = torch.addcmul(base[:, r0:r1], offset_xy[b, :, r0:r1], scale)
            cols = F.grid_sample(
                image, grid.view(1, taps * rows, out_w, 2), "bilinear", "zeros", align_corners=True
            )
            cols = cols.view(channels, taps, rows * out_w)
            if mask is not None:
                cols.mul_(mask[b, :, r0:r1].reshape(1, taps, rows * out_w).float())
            cols = cols.view(channels * taps, rows * out_w).to(out_dtype)
            target = result[b, r0:r1].view(rows * out_w, out_channels)
            if bias is not None:
                torch.addmm(bias.to(out_dtype), cols.t(), w2d.t(), out=target)
            else:
                torch.mm(cols.t(), w2d.t(), out=target)
    return result.permute(0, 3, 1, 2)


# --------------------------------------------------------------------------------------------
# per-module timing


class _ModuleClock:
    """Wall time spent in groups of modules and in ``deform_conv2d``, by forward hooks (CPU: exact;
    GPU: synchronised at each boundary, so only a breakdown, not the forward's own time)."""

    def __init__(self, model, device):
        from maskd.core import deform_conv
        from maskd.core.deform_conv import DeformableConv2d

        self.device = device
        self.totals: dict[str, float] = {}
        self._open: dict[int, float] = {}
        groups = {"backbone": [model.bb], "decoder": [model.squeeze_module, model.decoder]}
        groups["DCN modules"] = [m for m in model.modules() if isinstance(m, DeformableConv2d)]
        for name, modules in groups.items():
            for module in modules:
                module.register_forward_pre_hook(self._pre)
                module.register_forward_hook(self._post(name))
        self.impls = {"channels-last": deform_conv.deform_conv2d, "grid_sample": grid_sample_deform_conv2d}
        self.impl = "channels-last"
        deform_conv.deform_conv2d = self._timed_dcn

    def _pre(self, module, _args):
        _sync(self.device)
        self._open[id(module)] = time.perf_counter()

    def _post(self, name):
        def hook(module, _args, _out):
            _sync(self.device)
            self.add(name, time.perf_counter() - self._open.pop(id(module)))

        return hook

    def add(self, name, seconds):
        self.totals[name] = self.totals.get(name, 0.0) + seconds

    def _timed_dcn(self, *args, **kwargs):
        _sync(self.device)
        start = time.perf_counter()
        if self.impl == "grid_sample":
            # "before" as it shipped: its own 48 MB bands, not the current module's band size
            kwargs = {**kwargs, "max_chunk_bytes": 48 * 2**20}
        out = self.impls[self.impl](*args, **kwargs)
        _sync(self.device)
        self.add("deform_conv2d", time.perf_counter() - start)
        return out

    def reset(self):
        self.totals = {}


def child(args) -> dict:
    # the forward as the daemon runs it (batch CLI included): glibc malloc tuned at startup, so large
    # tensors come from one reused heap instead of fresh zeroed pages per allocation (without it, page
    # faults were ~10 % of lite's CPU forward here); MASKD_MALLOC_TUNING=0 measures glibc's defaults
    malloc_tuned = False
    if os.environ.get("MASKD_MALLOC_TUNING", "1") != "0":
        from maskd.server.daemon import tune_malloc

        malloc_tuned = tune_malloc()
    import numpy as np
    import torch
    from maskd.core import device as devices
    from maskd.core.birefnet import load_model
    from maskd.core.deform_conv import DeformableConv2d
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
        "malloc_tuned": malloc_tuned,
        "weights_mb": weights_bytes / 2**20,
    }
    with torch.inference_mode():
        if args.plain:
            _plain_dcn(model)
        if args.impl == "grid_sample":
            from maskd.core import deform_conv

            deform_conv.deform_conv2d = grid_sample_deform_conv2d
        if args.mode == "peak":
            # first full-size forward in a fresh process: peak memory above the loaded model, FLOPs
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            else:
                base = _RssPeak().proc.memory_info().rss
            counter = FlopCounterMode(display=False)
            with _RssPeak() as rss, counter:
                logits = model(x)
                _sync(device)
            peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.peak
            flops = counter.get_flop_counts()
            result["gflop"] = counter.get_total_flops() / 1e9
            dcn_names = {name for name, m in model.named_modules() if isinstance(m, DeformableConv2d)}
            result["dcn_module_gflop"] = (
                sum(sum(v.values()) for k, v in flops.items() if k.removeprefix("BiRefNet.") in dcn_names)
                / 1e9
            )
            if device.type in ("cuda", "cpu"):
                result["base_mb"], result["peak_mb"] = base / 2**20, peak / 2**20
            prob = torch.sigmoid(logits.float()).cpu().numpy()
            np.save(Path(args.out).with_suffix(".npy"), prob)
            return result
        # timing: warm-up, then the implementations alternate run by run
        clock = _ModuleClock(model, device)
        impls = ["grid_sample", "channels-last"] if args.compare else ["channels-last"]
        dcn_mm_flop = _dcn_matmul_flop(model, x)
        for impl in impls:
            clock.impl = impl
            model(x)
            _sync(device)
        runs = {impl: [] for impl in impls}
        for _ in range(args.repeat):
            for impl in impls:
                clock.impl = impl
                clock.reset()
                start, cpu_start = time.perf_counter(), time.process_time()
                model(x)
                _sync(device)
                seconds = time.perf_counter() - start
                runs[impl].append({"s": seconds, "cpu": time.process_time() - cpu_start, **clock.totals})
        result["runs"] = runs
        result["dcn_mm_gflop"] = dcn_mm_flop / 1e9
    return result


def _dcn_matmul_flop(model, x) -> float:
    """FLOPs of the matmuls inside ``deform_conv2d`` alone (one forward at the input size)."""
    from maskd.core import deform_conv

    total = 0.0
    inner = deform_conv.deform_conv2d

    def counting(xx, offset, mask, weight, *args, **kwargs):
        nonlocal total
        out_h, out_w = offset.shape[-2:]
        total += 2.0 * xx.shape[0] * out_h * out_w * weight.numel()
        return inner(xx, offset, mask, weight, *args, **kwargs)

    deform_conv.deform_conv2d = counting
    try:
        model(x)
    finally:
        deform_conv.deform_conv2d = inner
    return total


def _median(runs, key):
    values = [r.get(key, 0.0) for r in runs]
    return statistics.median(values)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="lite,general")
    p.add_argument("--devices", default=None, help="comma list (default: cpu plus cuda/mps when present)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per implementation (≥ 5 for the table)")
    p.add_argument("--size", type=int, default=None, help="square input size instead of the native one")
    p.add_argument("--weights-dir", default=None)
    p.add_argument("--compare", action="store_true", help="alternate with the previous (grid_sample) DCN")
    p.add_argument(
        "--cpu-bf16",
        choices=("auto", "yes", "no"),
        default="no",
        help="also time a bf16 forward on the CPU (auto: where the CPU has native bf16)",
    )
    p.add_argument("--no-plain", action="store_true", help="skip the plain-convolution memory reference")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="time", help=argparse.SUPPRESS)
    p.add_argument("--impl", default="channels-last", help=argparse.SUPPRESS)
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
    bf16 = args.cpu_bf16 == "yes" or (args.cpu_bf16 == "auto" and native_bf16())
    rates = {"fp32": [matmul_rate("fp32")]}
    if native_bf16():
        rates["bf16"] = [matmul_rate("bf16")]
    print(
        f"matmul {GEMM_SIZE}² ({GEMM_THREADS} threads): "
        + ", ".join(f"{k} {v[0]:.0f} GFLOP/s" for k, v in rates.items()),
        file=sys.stderr,
        flush=True,
    )

    runs = []
    for model in args.models.split(","):
        for device in devices:
            dtypes = (["fp32"] + (["bf16"] if bf16 else [])) if device == "cpu" else ["fp32", "fp16", "bf16"]
            for dtype in dtypes:
                runs.append((model, device, dtype))
    results = []
    with tempfile.TemporaryDirectory() as tmp:

        def run_child(model, device, dtype, mode, impl="channels-last", plain=False):
            tag = f"{model}-{device}-{dtype}-{mode}-{impl}{'-plain' if plain else ''}"
            out = Path(tmp) / f"{tag}.json"
            cmd = [sys.executable, __file__, "--child", "--mode", mode, "--impl", impl, "--model", model]
            cmd += ["--device", device, "--dtype", dtype, "--repeat", str(args.repeat), "--out", str(out)]
            cmd += ["--size", str(args.size)] if args.size else []
            cmd += ["--weights-dir", args.weights_dir] if args.weights_dir else []
            cmd += ["--plain"] if plain else []
            cmd += ["--compare"] if args.compare and mode == "time" and dtype == "fp32" else []
            print(f"running {tag} ...", file=sys.stderr, flush=True)
            proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ))
            if proc.returncode != 0 or not out.exists():
                print(f"  failed ({proc.returncode})", file=sys.stderr)
                return None
            return json.loads(out.read_text()), out

        for model, device, dtype in runs:
            done = run_child(model, device, dtype, "peak")
            if done is None:
                continue
            res, out = done
            ref_path = Path(tmp) / f"{model}-{device}-fp32-peak-channels-last.npy"
            if dtype != "fp32" and ref_path.exists():
                res["max_dsigmoid"] = float(
                    np.abs(np.load(out.with_suffix(".npy")) - np.load(ref_path)).max()
                )
            if dtype == "fp32" and device in ("cpu", "cuda") and not args.no_plain:
                plain = run_child(model, device, dtype, "peak", plain=True)
                res["plain"] = plain[0] if plain else None
            if dtype == "fp32" and args.compare and device == "cpu":
                old = run_child(model, device, dtype, "peak", impl="grid_sample")
                res["old_peak"] = old[0] if old else None
            timed = run_child(model, device, dtype, "time")
            if timed is None:
                continue
            res.update({k: v for k, v in timed[0].items() if k in ("runs", "dcn_mm_gflop")})
            results.append(res)
    rates["fp32"].append(matmul_rate("fp32"))
    if "bf16" in rates:
        rates["bf16"].append(matmul_rate("bf16"))
    rate = {k: statistics.mean(v) for k, v in rates.items()}
    _print_tables(results, rates, rate, args)
    return 0


def _print_tables(results, rates, rate, args):
    print(
        f"matmul {GEMM_SIZE}² with {GEMM_THREADS} threads, before / after the models: "
        + "; ".join(f"{k} {v[0]:.0f} / {v[1]:.0f} GFLOP/s" for k, v in rates.items())
    )
    heads = [
        "model",
        "device",
        "dtype",
        "DCN",
        "forward s",
        "CPU s",
        "GFLOP/s",
        "share of mm",
        "backbone s",
        "decoder s",
        "DCN modules s",
        "deform_conv2d s",
        "DCN mm s",
        "DCN/mm",
    ]
    table = []
    for r in results:
        share_rate = rate.get(r["dtype"], rate["fp32"]) if r["device"] == "cpu" else None
        frozen = FROZEN_GFLOP.get(r["model"]) if r["size"] == "1024x1024" else None
        gflop = frozen or r["gflop"]
        for impl, runs in r["runs"].items():
            fwd = _median(runs, "s")
            dcn = _median(runs, "deform_conv2d")
            dcn_mm = r["dcn_mm_gflop"] / share_rate if share_rate else None
            table.append(
                [
                    r["model"],
                    r["device"],
                    r["dtype"],
                    impl,
                    f"{fwd:.2f}",
                    f"{_median(runs, 'cpu'):.2f}",
                    f"{gflop / fwd:.0f}",
                    f"{gflop / fwd / share_rate:.0%}" if share_rate else "-",
                    f"{_median(runs, 'backbone'):.2f}",
                    f"{_median(runs, 'decoder'):.2f}",
                    f"{_median(runs, 'DCN modules'):.2f}",
                    f"{dcn:.2f}",
                    f"{dcn_mm:.2f}" if dcn_mm else "-",
                    f"{dcn / dcn_mm:.2f}" if dcn_mm else "-",
                ]
            )
    _print_table(heads, table)
    print(
        f"median of {args.repeat} runs per row{' (implementations alternating)' if args.compare else ''}; "
        "GFLOP/s and share of mm use the frozen FLOP counts at 1024² (lite 611, general 2,391; the "
        "measured count otherwise); share of mm = GFLOP/s ÷ the run's matmul rate (same dtype on the CPU); "
        "decoder = squeeze + decoder (DCN modules included); DCN mm = deform_conv2d's matmul FLOPs at "
        "the matmul rate; CPU s = process CPU time, all threads; malloc "
        + (
            "tuned as in the daemon (MASKD_MALLOC_TUNING=0: glibc's defaults)"
            if all(r.get("malloc_tuned") for r in results)
            else "NOT tuned as in the daemon (glibc's defaults, or not glibc)"
        )
    )
    heads = [
        "model",
        "device",
        "dtype",
        "GFLOP counted",
        "DCN module GFLOP",
        "weights MB",
        "peak MB",
        "act MB",
        "plain act MB",
        "peak/plain",
        "old DCN peak/plain",
        "max|Δσ|",
    ]
    table = []
    for r in results:
        plain = r.get("plain") or {}
        table.append(
            [
                r["model"],
                r["device"],
                r["dtype"],
                f"{r['gflop']:.0f}",
                f"{r['dcn_module_gflop']:.0f}",
                f"{r['weights_mb']:.0f}",
                f"{r['peak_mb']:.0f}" if "peak_mb" in r else "-",
                f"{r['peak_mb'] - r['base_mb']:.0f}" if "peak_mb" in r else "-",
                f"{plain['peak_mb'] - plain['base_mb']:.0f}" if "peak_mb" in plain else "-",
                _peak_ratio(r, r),
                _peak_ratio(r, r.get("old_peak")),
                f"{r['max_dsigmoid']:.4f}" if "max_dsigmoid" in r else "-",
            ]
        )
    _print_table(heads, table)
    print(
        "act = peak minus memory before the first full-size forward (CPU: resident set; CUDA: allocated); "
        "plain = DCNs replaced by plain convolutions; peak/plain = (weights + act) / (weights + plain act)"
    )
    for r in results:
        for impl, runs in r["runs"].items():
            print(
                f"{r['model']}/{r['device']}/{r['dtype']}/{impl}: runs "
                + ", ".join(f"{x['s']:.2f}" for x in runs)
                + " s"
            )


def _peak_ratio(r, other) -> str:
    """(weights + act) / (weights + plain act) of ``other`` (a peak result) against r's plain model."""
    plain = r.get("plain")
    if not other or not plain or "peak_mb" not in other or "peak_mb" not in plain:
        return "-"
    act = other["peak_mb"] - other["base_mb"]
    plain_act = plain["peak_mb"] - plain["base_mb"]
    return f"{(r['weights_mb'] + act) / (r['weights_mb'] + plain_act):.2f}"


def _print_table(heads, table):
    widths = [max(len(x) for x in col) for col in zip(heads, *table)]
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths)))
    for row in table:
        print("  ".join(x.ljust(w) for x, w in zip(row, widths)))


if __name__ == "__main__":
    sys.exit(main())
