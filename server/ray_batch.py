"""``maskd remove ... --ray [ADDRESS]``: the batch of ``server.batch`` as a Ray Data pipeline.

Why: a catalogue of 10^4–10^6 photos wants every GPU of several machines, retries when a worker
dies, and no home-made job queue. Ray Data streams the files through three stages:

1. **prepare** (CPU task per file): read the file (``core.imageio``, with its checks) and make
   the model's input (``core.pipeline`` does it the same way for the local daemon): 3 bytes per
   pixel go to the object store, not the 16-bit RGBA original;
2. **model** (an actor pool: one ``MatteSession`` per GPU, or per CPU worker, ``--ray-workers``):
   the coarse matte at the model's size (1024² floats, 4 MB);
3. **finish** (CPU task per file): read the file again, full-resolution refinement with that
   matte, the finishing and the atomic write — the same code as ``maskd remove`` without Ray
   (``commands.remove.process_raster``), so GPUs only run the model.

What is computed is what the local command computes: the plan (inputs, outputs, the clash and
folder checks, skipping existing outputs) is made by ``commands.remove`` before this module is
called; each worker pins torch's and OpenCV's thread counts to what a local daemon on that node
uses (Ray would set them to the task's CPU share), so CPU results are byte-identical.

Failures (an unreadable file, a layered file, a model error) come back as rows and are listed at
the end; they never stop the catalogue. A worker that dies is restarted by Ray and its file
retried (Ray Data's actor pool retries by default). Writes are atomic (temporary file renamed),
so a file written twice by a retry is still whole, and a re-run skips what exists.

Ray is optional (``pip install 'maskd[ray]'``) and imported only here.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from maskd.core.errors import MaskdError

INSTALL_HINT = "pip install 'maskd[ray]' (on every node of the cluster)"
LOCAL = "local"  # --ray without an address: start a Ray instance on this machine for the batch
WORKER_NAME = "MatteWorker"  # the actor class (process title ``ray::MatteWorker``)


def address(text: str) -> str:
    """An argparse type for ``--ray ADDRESS``: ``auto``, ``local``, ``HOST:PORT`` or ``ray://…``.

    ``--ray`` takes an optional value, so ``--ray photos/ -o out`` would read the folder as the
    address: such a value is refused with a hint instead of failing later in Ray."""
    host_port = ":" in text and "://" not in text and not os.path.exists(text)  # not s3://… either
    if text in ("auto", LOCAL) or text.startswith("ray://") or host_port:
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a Ray address (auto, HOST:PORT or ray://HOST:PORT); "
        "write --ray after the inputs, or --ray=ADDRESS"
    )


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MaskdError(f"--ray needs Ray: {INSTALL_HINT}") from None
    return ray


# ---------------------------------------------------------------------------------- threads


@dataclass(frozen=True)
class Threads:
    """Thread counts a local ``maskd serve`` would use on this node (``None``: library default).

    Ray sets ``OMP_NUM_THREADS`` to each task's CPU share, which changes torch's count; the
    driver's own environment (what a local daemon inherits) decides instead."""

    omp: str | None  # the driver's OMP_NUM_THREADS, if the user set one

    @classmethod
    def of_driver(cls) -> Threads:
        return cls(os.environ.get("OMP_NUM_THREADS"))

    def pin(self, torch: bool = False) -> None:
        """OpenCV (refinement, finishing) and, in the model worker, torch."""
        import cv2

        cv2.setNumThreads(-1)  # OpenCV's own default (all CPUs, pthreads)
        if torch:
            import psutil
            import torch as torch_module

            count = int(self.omp) if self.omp else (psutil.cpu_count(logical=False) or os.cpu_count() or 1)
            torch_module.set_num_threads(count)


# ---------------------------------------------------------------------------------- stages


@dataclass
class Job:
    """What every stage needs: the parsed command line (for finishing) and the daemon request."""

    args: argparse.Namespace
    opts: dict  # options.matte_options: the request a local daemon would get
    threads: Threads
    stores: object = None  # ray_storage.Stores when inputs and outputs are URIs, else None

    def message(self, exc: BaseException) -> str:
        """A file's failure, without node-local temporary paths for objects."""
        if self.stores is None:
            return _message(exc)
        from maskd.server import ray_storage

        return ray_storage.scrub(_message(exc))

    @contextmanager
    def source(self, row: dict):
        """A local path to read the row's input from (a node-local copy of an object)."""
        if self.stores is None:
            yield Path(row["src"])
        else:
            from maskd.server import ray_storage

            with ray_storage.local_copy(self.stores, row["store"], row["src"]) as local:
                yield local

    @contextmanager
    def target(self, row: dict):
        """A local path to write the row's output to (uploaded, then moved, for a URI)."""
        if self.stores is None:
            yield Path(row["dst"])
        else:
            from maskd.server import ray_storage

            with ray_storage.staged_output(self.stores, row["dst"]) as local:
                yield local


def _failed(row: dict, message: str) -> dict:
    return dict(row, error=message, rgb=np.zeros((0, 0, 3), np.uint8))


def prepare(row: dict, job: Job) -> dict:
    """Stage 1: the model's input for one file, or the reason there is none."""
    from maskd.core import imageio, pipeline
    from maskd.core.layered import LAYERED_SUFFIXES

    job.threads.pin()
    if Path(row["src"]).suffix.lower() in LAYERED_SUFFIXES:
        return _failed(row, "layered files are not processed with --ray yet: run maskd remove without --ray")
    try:
        with job.source(row) as src:
            image = _as_daemon_sees(imageio.read_image(src))
        rgb = pipeline._model_input(image, False)
    except Exception as exc:  # one bad file never stops the catalogue
        return _failed(row, job.message(exc))
    return dict(row, error="", rgb=rgb)


class MatteWorker:
    """Stage 2: one loaded model (``core.session``, as ``maskd serve`` opens it)."""

    def __init__(self, spec, threads: Threads):
        from maskd.core.session import open_session

        threads.pin(torch=True)
        self.session = open_session(spec)
        self.session.load()

    def __call__(self, row: dict) -> dict:
        matte = np.zeros((0, 0), np.float32)
        error = row["error"]
        if not error:
            try:
                matte = np.ascontiguousarray(self.session.matte(row["rgb"]), dtype=np.float32)
            except Exception as exc:
                error = _message(exc)
        return {k: v for k, v in row.items() if k != "rgb"} | {"error": error, "matte": matte}


def finish(row: dict, job: Job) -> dict:
    """Stage 3: refinement with the model's matte, finishing, atomic write (``process_raster``)."""
    from maskd.server.commands.remove import process_raster

    job.threads.pin()
    result = {k: row[k] for k in ("src", "dst", "store", "error")} | {"note": ""}
    if result["error"]:
        return result
    try:
        with job.source(row) as src, job.target(row) as dst:
            note = process_raster(job.args, _MatteClient(row["matte"]), job.opts, src, dst)
        result["note"] = note or ""
    except Exception as exc:
        result["error"] = job.message(exc)
    return result


def _message(exc: BaseException) -> str:
    from maskd.core.errors import InputError

    if isinstance(exc, (MaskdError, InputError, OSError, ValueError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _as_daemon_sees(image: np.ndarray) -> np.ndarray:
    """The image as a local daemon decodes it from the wire (H×W×C, float64 → float32)."""
    from maskd.server.client import wire_format

    return wire_format(image)[0]


@dataclass
class _Answer:
    alpha: np.ndarray
    foreground: np.ndarray | None


class _MatteClient:
    """Stands where ``process_raster`` expects a daemon client: the daemon's work on one image
    (``pipeline.cutout`` with the options the daemon would build), the model's matte given."""

    def __init__(self, matte: np.ndarray):
        self.matte = matte

    def segment(self, image: np.ndarray, options: dict, *, foreground: bool = False) -> _Answer:
        from maskd.core import pipeline

        opts = pipeline.CutoutOptions(
            **dict(options, decontaminate=bool(foreground) and options["decontaminate"])
        )
        res = pipeline.cutout(_as_daemon_sees(image), lambda rgb: self.matte, opts)
        return _Answer(res.alpha, res.foreground if foreground else None)


# ---------------------------------------------------------------------------------- driver


def connect(ray, where: str, quiet: bool, say) -> None:
    """Join the cluster at ``where`` (``auto``: the running one) or start a local instance."""
    import logging

    kwargs = {"logging_level": logging.ERROR, "log_to_driver": False, "configure_logging": True}
    from maskd.core import extensions

    if extensions.modules():  # the job's workers resolve the same model names as this process
        kwargs["runtime_env"] = {"env_vars": {extensions.ENV: os.environ[extensions.ENV]}}
    try:
        if where == LOCAL:
            say("starting a local Ray instance for this batch…")
            ray.init(include_dashboard=False, **kwargs)
        else:
            ray.init(address=where, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        hint = ""
        if where != LOCAL and not os.environ.get("RAY_AUTH_MODE"):
            hint = (
                " (a cluster with token authentication also needs RAY_AUTH_MODE=token and its token: "
                "RAY_AUTH_TOKEN, or ~/.ray/auth_token)"
            )
        raise MaskdError(f"cannot join the Ray cluster at {where}: {exc}{hint}") from None
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = not quiet
    ctx.execution_options.preserve_order = False
    ctx.print_on_execution_start = False


def worker_resources(ray, args) -> tuple[dict, int]:
    """(Ray resources of one model worker, how many): a GPU each where the cluster has GPUs
    (unless ``--device cpu``), else one per node (its torch uses the node's cores)."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    use_gpu = gpus > 0 and str(getattr(args, "device", None) or "auto") != "cpu"
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    count = args.ray_workers or (gpus if use_gpu else max(1, nodes))
    return ({"num_gpus": 1} if use_gpu else {"num_cpus": 1}), count


def session_spec(args):
    """The ``SessionSpec`` ``maskd serve`` would open for this command line (``options.serve_args``)."""
    from maskd.core.session import SessionSpec

    return SessionSpec(
        model=getattr(args, "model", None),
        weights=os.path.abspath(args.weights) if getattr(args, "weights", None) else None,
        variant=getattr(args, "variant", None),
        device=getattr(args, "device", None) or "auto",
        resolution=getattr(args, "resolution", None),
    )


def run(args, todo: list[tuple[Path, Path]], opts: dict, stores=None) -> object:
    """Process ``todo`` (the planned, not yet existing outputs) on Ray; a ``batch.Outcome``.

    With ``stores`` (``ray_storage.plan``), ``todo`` is [(input store, input path, output path)]
    inside object storage, and failures are named by their URIs."""
    from maskd.server import batch
    from tqdm import tqdm

    spec = session_spec(args)
    if spec.weights and not os.path.exists(spec.weights):  # every node reads the same path
        raise MaskdError(f"--weights {spec.weights}: no such file here (every node needs it at this path)")
    say = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    ray = import_ray()
    connect(ray, args.ray, args.quiet, say)
    outcome = batch.Outcome()
    t0 = time.perf_counter()
    try:
        resources, workers = worker_resources(ray, args)
        kind = "GPU" if "num_gpus" in resources else "CPU"
        say(f"Ray: {workers} model worker(s) ({kind}) for {len(todo)} file(s)")
        job = Job(args=args, opts=opts, threads=Threads.of_driver(), stores=stores)
        if stores is None:
            rows = [{"src": str(s), "dst": str(d), "store": -1} for s, d in todo]
        else:
            rows = [{"src": s, "dst": d, "store": i} for i, s, d in todo]
        ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
        ds = ds.map(prepare, fn_kwargs={"job": job}, num_cpus=1)
        ds = ds.map(
            MatteWorker,
            fn_constructor_args=(spec, job.threads),
            compute=ray.data.ActorPoolStrategy(size=workers),
            **resources,
        )
        ds = ds.map(finish, fn_kwargs={"job": job}, num_cpus=1)
        bar = tqdm(
            total=len(todo), unit="file", disable=args.quiet or None, dynamic_ncols=True, file=sys.stderr
        )
        try:
            for row in ds.iter_rows():
                name = Path(row["src"]) if stores is None else stores.shown(row["store"], row["src"])
                if row["error"]:
                    outcome.failures.append((name, row["error"]))
                else:
                    outcome.done += 1
                    if row["note"]:
                        outcome.notes.append((name, row["note"]))
                bar.update(1)
                bar.set_postfix_str(f"{outcome.done} written, {len(outcome.failures)} failed", refresh=False)
        finally:
            bar.close()
    except KeyboardInterrupt:
        raise batch.Interrupted(outcome.done, len(todo)) from None
    except ray.exceptions.RayError as exc:  # e.g. the model cannot be loaded on a worker
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise MaskdError(f"the Ray pipeline failed: {lines[-1] if lines else type(exc).__name__}") from None
    finally:
        outcome.seconds = time.perf_counter() - t0
        ray.shutdown()
    outcome.failures.sort(key=lambda f: str(f[0]))
    outcome.notes.sort(key=lambda f: str(f[0]))
    return outcome


def run_storage(args) -> int:
    """``maskd remove URI... -o URI --ray``: plan inside object storage (``ray_storage``), run, report."""
    from maskd.server import batch, finishing, options, ray_storage
    from maskd.server.commands.remove import wants_colours

    args.inputs = [t if ray_storage.is_uri(t) else os.path.abspath(t) for t in args.inputs]
    args.output = args.output if ray_storage.is_uri(args.output) else os.path.abspath(args.output)
    from maskd.core.layered import LAYERED_SUFFIXES

    suffixes = batch.RASTER_SUFFIXES | set(LAYERED_SUFFIXES)  # layered ones are listed as failures
    stores, todo, skipped, problems = ray_storage.plan(args, suffixes, LAYERED_SUFFIXES)
    for problem in problems:
        print(f"maskd remove: {problem}", file=sys.stderr)
    if not todo and not skipped:
        print("maskd remove: nothing to do (no input images found)", file=sys.stderr)
        return 2
    batch.check_opaque_outputs(
        [(Path(s), Path(d)) for _, s, d in todo if Path(s).suffix.lower() not in LAYERED_SUFFIXES],
        args.mode == options.Mode.MASK or finishing.opaque_output(args),
        "add --background COLOUR, use --mode mask, or write a .png",
    )
    outcome = batch.Outcome()
    if todo:
        try:
            outcome = run(args, todo, options.matte_options(args, colours=wants_colours(args)), stores)
        except batch.Interrupted as exc:
            batch.say_interrupted("remove", exc, False)
            return 130
    batch.report("remove", outcome, skipped, stores.output)
    return 1 if outcome.failures or problems else 0
