"""``maskd remove`` for layered files (XCF, OpenRaster, KRA): add masks, keep the layers.

``server.commands.remove`` hands every ``.xcf``/``.ora``/``.kra`` input to ``mask_file``; the
alpha comes from the same daemon as for flat images (the alpha alone: no colours). Per file:

- the chosen layers (``--layers``, default: the bottom-most visible paint layer that is not one
  flat colour) get a mask; everything else in the file is carried over unchanged;
- the output keeps the input's format and name under ``-o FOLDER`` (or is ``-o FILE.ext`` for one
  input); the input is never overwritten unless ``--in-place`` (then ``-o`` is not needed);
- every file is written to a temporary file beside its destination and renamed into place only
  when complete: a crash or a full disk never leaves half a file;
- a file that cannot be parsed is reported and skipped; the batch goes on (exit code 1 at the end);
- a layer that already has a mask is left alone (running twice never stacks masks).

``process_layered`` is the same batch as a function (used by ``--in-place`` and the benchmark).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from maskd.core.errors import InputError, MaskdError
from maskd.core.layered import LAYERED_SUFFIXES, AlphaFn, MaskResult, add_masks, is_layered
from maskd.server.editor_job import PROGRESS_TAG  # the line prefix the in-editor scripts print once per file

OUTPUT_SUFFIX = "-masked"


def _daemon_alpha(client, options: dict) -> AlphaFn:
    """``alpha_fn`` on top of ``server.client.DaemonClient``: the alpha alone (no colours asked for)."""
    options = dict(options, decontaminate=False)

    def alpha_fn(rgba: np.ndarray) -> np.ndarray:
        return client.segment(rgba, options, foreground=False).alpha

    return alpha_fn


def _note(result: MaskResult) -> str | None:
    parts = []
    if result.masked:
        parts.append("masked " + ", ".join(repr(p) for p in result.masked))
    else:
        parts.append("nothing to do, no file written")
    parts += ["left alone " + s for s in result.skipped]
    return "; ".join(parts)


def mask_file(args, client, options: dict, src: Path, dst: Path) -> str | None:
    """``maskd remove``'s step for one layered file (raises ``MaskdError`` to fail it): the chosen
    layers get the daemon's alpha as a mask, written beside ``dst`` and renamed into place."""
    if dst.suffix.lower() != src.suffix.lower():
        raise InputError(
            f"{dst}: a layered file keeps its format ({src.suffix}); name the output "
            f"{dst.with_suffix(src.suffix).name}, or give a folder"
        )
    result = add_masks(src, dst, _daemon_alpha(client, options), layers=getattr(args, "layers", None))
    return _note(result)


def run_in_place(args) -> int:
    """``maskd remove --in-place INPUT...``: layered inputs only, each replaced by its masked version."""
    from maskd.server import batch, options

    if args.output:
        raise InputError("--in-place replaces the inputs: leave out -o/--output (or drop --in-place)")
    files, problems = batch.collect_inputs(args.inputs, None, batch.RASTER_SUFFIXES | set(LAYERED_SUFFIXES))
    for problem in problems:
        print(f"maskd remove: {problem}", file=sys.stderr)
    flat = [f for f, _ in files if not is_layered(f)]
    if flat:
        raise InputError(
            f"--in-place is for layered files ({', '.join(LAYERED_SUFFIXES)}); "
            f"{flat[0]} is an image: give -o for images"
        )
    paths = [f for f, _ in files]
    if not paths:
        print("maskd remove: nothing to do (no layered files found)", file=sys.stderr)
        return 2
    say = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    opts = options.matte_options(args, colours=False)
    with batch.daemon_for_batch(args.connection_file, options.serve_args(args), say=say) as (client, _):
        summary = process_layered(
            paths,
            _daemon_alpha(client, opts),
            layers=args.layers,
            in_place=True,
            progress=False if args.quiet else None,
        )
    return 1 if summary.failed or problems else 0


def output_path(source: Path, output: str | None, in_place: bool, single: bool) -> Path:
    """Where the masked copy of ``source`` goes (see the module docstring)."""
    if in_place:
        return source
    if output:
        target = Path(output)
        if output.endswith(("/", os.sep)) or target.is_dir() or not single:
            target.mkdir(parents=True, exist_ok=True)
            return target / source.name
        if target.suffix.lower() != source.suffix.lower():
            raise InputError(
                f"-o {output}: the output of {source.name} must keep its format "
                f"({source.suffix}); layered files are not converted"
            )
        return target
    return source.with_name(source.stem + OUTPUT_SUFFIX + source.suffix)


@dataclass
class BatchSummary:
    results: list[MaskResult] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def masked_files(self) -> int:
        return sum(1 for r in self.results if r.output is not None)

    def overhead_per_file(self) -> float:
        """Mean seconds per processed file spent outside the model (reading, writing, transport excluded)."""
        done = [r for r in self.results if r.masked]
        if not done:
            return 0.0
        return sum(r.seconds_total - r.seconds_alpha for r in done) / len(done)

    def line(self) -> str:
        layers = sum(len(r.masked) for r in self.results)
        unchanged = sum(1 for r in self.results if r.output is None)
        parts = [f"{self.masked_files} file(s) masked ({layers} layer(s))"]
        if unchanged:
            parts.append(f"{unchanged} unchanged")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        text = ", ".join(parts) + f" in {self.seconds:.1f} s"
        if self.masked_files:
            text += f"; {self.overhead_per_file():.2f} s per file beyond the model"
        return text


def process_layered(
    paths: list[Path],
    alpha_fn: AlphaFn,
    *,
    layers=None,
    output: str | None = None,
    in_place: bool = False,
    progress: bool | None = None,
    stream=None,
) -> BatchSummary:
    """Mask every layered file in ``paths``; failures are reported per file and do not stop the batch."""
    stream = stream or sys.stderr
    paths = [Path(p) for p in paths]
    if in_place and output:
        raise InputError("--in-place and -o/--output exclude each other: choose one")
    single = len(paths) == 1
    planned: list[tuple[Path, Path]] = []
    for source in paths:
        if not is_layered(source):
            raise InputError(f"{source}: not a layered file ({', '.join(LAYERED_SUFFIXES)})")
        target = output_path(source, output, in_place, single)
        if not in_place and target.exists() and target.resolve() == source.resolve():
            raise InputError(
                f"{source}: the output would overwrite the input; pass --in-place to "
                "replace it, or choose another -o"
            )
        planned.append((source, target))
    summary = BatchSummary()
    t0 = time.perf_counter()
    bar = None
    if progress if progress is not None else len(planned) > 1:
        from tqdm import tqdm

        bar = tqdm(total=len(planned), unit="file", file=stream, dynamic_ncols=True, desc="maskd remove")
    for source, target in planned:
        try:
            result = add_masks(source, target, alpha_fn, layers=layers)
        except MaskdError as exc:
            summary.failed.append((source, str(exc)))
            message = str(exc)
            _say(bar, stream, "skipped: " + (message if str(source) in message else f"{source}: {message}"))
        else:
            summary.results.append(result)
            if result.output is not None:
                _say(bar, stream, f"{source} -> {result.output}: masked {', '.join(result.masked)}")
            for note in result.skipped:
                _say(bar, stream, f"{source}: left alone: {note}")
            if result.output is None:
                _say(bar, stream, f"{source}: nothing to do (no file written)")
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    summary.seconds = time.perf_counter() - t0
    print("maskd remove: " + summary.line(), file=stream)
    return summary


def _say(bar, stream, text: str) -> None:
    if bar is not None:
        bar.write(text, file=stream)
    else:
        print(text, file=stream)


# ---- editor batch recipes (maskd gimp-batch / maskd krita-batch) --------------------------------


def add_editor_batch_arguments(p, suffix: str, editor: str) -> None:
    """Options shared by ``maskd gimp-batch`` and ``maskd krita-batch``."""
    from maskd.server import options

    p.add_argument("folder", metavar="FOLDER", help=f"folder with {suffix} files (searched recursively)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--output", metavar="FOLDER", help="write the masked files here (same names)")
    where.add_argument("--in-place", action="store_true", help="replace each file with its masked version")
    options.add_layers(p, in_place=False)
    options.add_quality(p)
    options.add_overwrite_quiet(p)
    options.add_daemon(p, serve_options=False)
    p.add_argument(
        f"--{editor}",
        metavar="COMMAND",
        dest="editor_command",
        help=f"how to run {editor} (a command line; default: found on PATH and in the usual install folders)",
    )


def plan_editor_batch(
    folder: str, suffix: str, output: str | None, in_place: bool, overwrite: bool
) -> tuple[list[tuple[Path, Path]], int]:
    """[(input, output)] for every ``suffix`` file under ``folder`` and how many were skipped (exist)."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{folder}: not a folder")
    out_root = None if in_place else Path(output).resolve()
    files = []
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root)
        if not f.is_file() or f.suffix.lower() != suffix or any(p.startswith(".") for p in rel.parts):
            continue
        if out_root is not None and out_root in f.resolve().parents and out_root != root.resolve():
            continue  # an earlier run's outputs inside the input folder
        files.append((f, rel))
    if not files:
        raise InputError(f"{folder}: no {suffix} files in this folder")
    plan, skipped = [], 0
    for f, rel in files:
        dst = f if in_place else Path(output) / rel
        if not in_place and dst.resolve() == f.resolve():
            raise InputError(
                f"-o {output} is the input folder: that would overwrite the inputs; "
                "use --in-place, or another folder"
            )
        if not in_place and dst.exists() and not overwrite:
            skipped += 1
            continue
        plan.append((f, dst))
    return plan, skipped


def check_before_editor(plan: list[tuple[Path, Path]]) -> tuple[list[tuple[Path, Path]], list[dict]]:
    """Files the editor may open, and failure entries for the damaged ones.

    Editors salvage damaged files quietly (GIMP loads a truncated XCF with layers missing) and the
    batch would then save the loss; maskd's own parser reads every byte first instead.
    """
    from maskd.core.layered import check_layered

    good, bad = [], []
    for src, dst in plan:
        try:
            check_layered(src)
        except MaskdError as exc:
            bad.append({"src": str(src), "dst": str(dst), "error": str(exc)})
        else:
            good.append((src, dst))
    return good, bad


def run_editor_batch(
    editor: str,
    command: list[str],
    plan: list[tuple[Path, Path]],
    job: dict,
    job_dir: Path,
    *,
    quiet: bool,
    env: dict | None = None,
    timeout: float | None = None,
) -> int:
    """Check the files, run ``command`` (the editor, already told to load ``job_dir/job.json``) on
    the good ones, show its per-file progress lines, print a summary; 0 when every file went through."""
    import json
    import subprocess

    plan, rejected = check_before_editor(plan)
    for entry in rejected:
        message = entry["error"]
        print(
            "skipped: " + (message if entry["src"] in message else f"{entry['src']}: {message}"),
            file=sys.stderr,
        )

    job_file = job_dir / "job.json"
    job = dict(
        job,
        files=[{"src": str(s.resolve()), "dst": str(d.resolve())} for s, d in plan],
        result=str((job_dir / "result.json").resolve()),
    )
    job_file.write_text(json.dumps(job, indent=1))
    for _, dst in plan:
        dst.parent.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    bar = tqdm(
        total=len(plan), unit="file", disable=quiet or None, dynamic_ncols=True, file=sys.stderr, desc=editor
    )
    t0 = time.perf_counter()
    if not plan:
        bar.close()
        print(f"maskd {editor}-batch: 0 file(s) masked, {len(rejected)} failed", file=sys.stderr)
        return 1
    try:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env
        )
    except OSError as exc:
        bar.close()
        raise MaskdError(f"could not start {editor} ({' '.join(command[:3])}…): {exc.strerror}") from None
    try:
        entries, tail = _follow(proc, bar, timeout)
    finally:
        bar.close()
    result = {}
    try:
        result = json.loads((job_dir / "result.json").read_text())
    except (OSError, ValueError):
        pass
    if result.get("error"):
        raise MaskdError(f"{editor}: {result['error']}")
    return _summarise(editor, entries, rejected, len(plan), time.perf_counter() - t0, proc.returncode, tail)


def _follow(proc, bar, timeout) -> tuple[list[dict], list[str]]:
    """Read the editor's output: its per-file progress lines (the entries), and its last 40 other lines."""
    import json

    entries: list[dict] = []
    tail: list[str] = []
    try:
        for line in proc.stdout:
            if line.startswith(PROGRESS_TAG):
                entry = json.loads(line[len(PROGRESS_TAG) :])
                entries.append(entry)
                bar.update(1)
                if entry.get("error"):
                    bar.write(f"skipped: {entry['src']}: {entry['error']}", file=sys.stderr)
                for note in entry.get("skipped", []):
                    bar.write(f"{entry['src']}: left alone: {note}", file=sys.stderr)
            else:
                tail = (tail + [line.rstrip()])[-40:]
        proc.wait(timeout=timeout)
    except KeyboardInterrupt:
        proc.kill()
        raise
    return entries, tail


def _summarise(editor, entries, rejected, planned, seconds, returncode, tail) -> int:
    """Print the batch's summary line (and the editor's last words if it stopped early); the exit code."""
    done = [e for e in entries if not e.get("error")]
    failed = [e for e in entries if e.get("error")] + rejected
    missing = planned - len(entries)
    masked_files = sum(1 for e in done if e.get("masked"))
    layers = sum(len(e.get("masked", [])) for e in done)
    text = f"maskd {editor}-batch: {masked_files} file(s) masked ({layers} layer(s)), {len(failed)} failed"
    if missing:
        text += f", {missing} not reached"
    print(text + f" in {seconds:.1f} s", file=sys.stderr)
    if missing:
        log = "\n".join(tail[-15:])
        print(
            f"{editor} stopped before the end (exit code {returncode}); its last output:\n{log}",
            file=sys.stderr,
        )
    return 1 if failed or missing else 0


def run_editor(args, editor: str, suffix: str, script: str, find, launch) -> int:
    """``maskd gimp-batch`` / ``maskd krita-batch``, once: plan the files; copy the editor-side
    ``script``, the layer-choice rule (``core.layered.choice``) and the per-file loop
    (``server.editor_job``) into a private job folder; make
    sure a daemon runs (started for the batch if none); run ``launch(command, job_dir) -> (argv,
    env)``, the editor told to load ``job.json``."""
    import shlex
    import shutil
    import tempfile

    from maskd.server import batch

    plan, skipped = plan_editor_batch(args.folder, suffix, args.output, args.in_place, args.overwrite)
    if skipped:
        print(
            f"maskd {editor}-batch: {skipped} file(s) skipped: the output exists (--overwrite replaces)",
            file=sys.stderr,
        )
    if not plan:
        return 0
    command = shlex.split(args.editor_command) if args.editor_command else find()
    home = Path(args.folder if args.in_place else args.output)
    batch.prepare_folders([(src, home / src.name) for src, _ in plan[:1]])
    job_dir = Path(tempfile.mkdtemp(prefix=f".maskd-{editor}-batch-", dir=home)).resolve()
    try:
        shutil.copyfile(script, job_dir / f"maskd_{editor}_batch.py")
        from maskd.core.layered import choice  # the layer-choice rule, beside the script

        shutil.copyfile(choice.__file__, job_dir / "maskd_layer_choice.py")
        from maskd.server import editor_job  # the per-file loop both editor scripts run

        shutil.copyfile(editor_job.__file__, job_dir / "maskd_editor_job.py")
        argv, env = launch(command, job_dir)
        if args.connection_file:
            env["MASKD_CONNECTION_FILE"] = str(Path(args.connection_file).resolve())
        job = {"layers": args.layers, "options": {"quality": args.quality, "refine": not args.no_refine}}
        say = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
        with batch.daemon_for_batch(args.connection_file, [], say=say):
            return run_editor_batch(editor, argv, plan, job, job_dir, quiet=args.quiet, env=env)
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)
