"""The batch pipeline behind ``maskd remove`` and ``maskd finish``, written out once.

    collect inputs → plan outputs → check the plan → alpha source → finishing → atomic write

- **collect**: files, folders (recursive) and globs; a folder or a glob keeps its sub-folders
  under the output (a glob relative to its fixed prefix: ``shots/**/*.jpg`` → ``a/b.png``);
- **plan**: one output per input (``a.jpg`` and ``a.png`` never share one), existing outputs
  skipped unless ``--overwrite``;
- **check**, before any model call or daemon start: no planned output (nor its sidecar or layer
  files) is an input, the background image or another output; every output folder can be
  created and written. A bad plan fails with one line and nothing is computed;
- **alpha source**: per command (the daemon for ``remove``, the file's own alpha for ``finish``,
  ``server.layered_batch`` for layered files);
- **finishing and write**: ``finishing.finish_item`` then ``imageio.write_image`` (temporary file
  renamed into place, so an interrupted batch leaves no half-written file).

``run_files`` drives the per-file loop: one bad file never stops the batch (failures are listed
at the end, exit code 1); Ctrl-C stops it, says how many files were finished and exits 130.
``daemon_for_batch`` gives the client: the running daemon, or one started for the batch, stopped
afterwards — also after Ctrl-C, once the job in flight is cancelled.
"""

from __future__ import annotations

import contextlib
import glob
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from maskd.core.errors import MaskdError
from maskd.server.options import OPAQUE_SUFFIXES, OUTPUT_FORMATS

RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".tif", ".tiff", ".bmp"}


class Interrupted(Exception):
    """Ctrl-C during a batch, after the files finished so far (``done``) were written."""

    def __init__(self, done: int, total: int):
        super().__init__(f"interrupted: {done} of {total} file(s) finished")
        self.done, self.total = done, total


# ---------------------------------------------------------------------------------- collect


def glob_root(pattern: str) -> Path:
    """The fixed prefix of a glob: the folders before the first part with a wildcard."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def collect_inputs(
    inputs: list[str], output: Path | None, suffixes=RASTER_SUFFIXES
) -> tuple[list[tuple[Path, Path]], list[str]]:
    """[(file, its path relative to its input root)], [problems]. Folders are searched recursively,
    leaving out hidden files and an earlier run's outputs inside them (``output``); globs keep what
    they match (``check_plan`` refuses an output that is an input); a file named twice is kept once."""
    suffixes = {s.lower() for s in suffixes}
    found: list[tuple[Path, Path]] = []
    problems = []
    out_resolved = output.resolve() if output is not None else None

    def inside_output(p: Path) -> bool:
        if out_resolved is None or not (out_resolved.is_dir() or out_resolved.suffix == ""):
            return False
        return out_resolved in p.resolve().parents

    def wanted(f: Path, root: Path) -> bool:
        hidden = any(part.startswith(".") for part in f.relative_to(root).parts)
        return f.is_file() and f.suffix.lower() in suffixes and not hidden

    for text in inputs:
        path = Path(text)
        if glob.has_magic(text) and not path.exists():
            root = glob_root(text)
            files = [m for m in sorted(Path(m) for m in glob.glob(text, recursive=True)) if wanted(m, root)]
            if not files:
                problems.append(f"{text}: no matching image files")
            found += [(m, m.relative_to(root)) for m in files]
        elif path.is_dir():
            files = sorted(f for f in path.rglob("*") if wanted(f, path) and not inside_output(f))
            if not files:
                problems.append(f"{text}: no image files in this folder")
            found += [(f, f.relative_to(path)) for f in files]
        elif path.is_file():
            if path.suffix.lower() in suffixes:
                found.append((path, Path(path.name)))
            else:
                problems.append(f"{text}: not a supported image type ({', '.join(sorted(suffixes))})")
        else:
            problems.append(f"{text}: no such file or folder")
    seen = set()
    unique = []
    for f, rel in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((f, rel))
    return unique, problems


def collect_or_say(command: str, inputs: list[str], output: Path, suffixes=RASTER_SUFFIXES):
    """``collect_inputs`` for ``maskd COMMAND``: each problem printed as a warning (the batch goes
    on with the rest, and exits 1); no files: said too (nothing to do; the command exits 2)."""
    files, problems = collect_inputs(inputs, output, suffixes)
    for problem in problems:
        print(f"maskd {command}: {problem}", file=sys.stderr)
    if not files:
        print(f"maskd {command}: nothing to do (no input images found)", file=sys.stderr)
    return files, problems


# ---------------------------------------------------------------------------------- plan


def single_file_output(inputs: list[str], files: list, output: Path) -> bool:
    """``-o`` names the one output file (one input file, and ``-o`` has a suffix, not a folder)."""
    return (
        len(files) == 1
        and len(inputs) == 1
        and Path(inputs[0]).is_file()
        and bool(output.suffix)
        and not output.is_dir()
    )


def plan_outputs(
    files: list[tuple[Path, Path]], output: Path, fmt: str, single: bool, keep_suffix=()
) -> list[tuple[Path, Path]]:
    """[(input, output)]. ``a.jpg`` and ``a.png`` in one folder would both become ``a.png``: they
    are named ``a-jpg.png`` and ``a-png.png`` instead (what still collides is numbered)."""
    keep = {s.lower() for s in keep_suffix}
    jobs = []
    for src, rel in files:
        if single:
            dst = output
        else:
            suffix = src.suffix if src.suffix.lower() in keep else OUTPUT_FORMATS[fmt]
            dst = output / rel.with_suffix(suffix)
        jobs.append((src, dst))
    counts = Counter(d for _, d in jobs)
    out, used = [], set()
    for src, dst in jobs:
        if counts[dst] > 1:
            dst = dst.with_name(f"{dst.stem}-{src.suffix[1:].lower()}{dst.suffix}")
        base, n = dst, 2
        while dst in used:
            dst = base.with_name(f"{base.stem}-{n}{base.suffix}")
            n += 1
        used.add(dst)
        out.append((src, dst))
    return out


# ---------------------------------------------------------------------------------- check


def _identity(path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_plan(jobs: list[tuple[Path, Path]], *, protected=(), extras=lambda dst: []) -> None:
    """Refuse a plan that would replace an input (or ``protected`` files such as the background
    picture), or write two results to one file — before anything is computed.

    Every planned output and its side files (``extras(dst)``: sidecar, layers) is compared with
    every input by resolved real path and, where the output exists, by device and inode (hard
    links, bind mounts)."""
    sources = [src for src, _ in jobs] + [Path(p) for p in protected]
    by_path = {os.path.realpath(src): src for src in sources}
    by_inode = {}
    written: dict[str, Path] = {}
    for src, dst in jobs:
        for out in [dst, *extras(dst)]:
            out = Path(out)
            key = os.path.realpath(out)
            clash = by_path.get(key)
            if clash is None and os.path.lexists(out):
                if not by_inode:
                    by_inode = {i: s for s in sources if (i := _identity(s)) is not None}
                clash = by_inode.get(_identity(out))
            if clash is not None:
                raise MaskdError(
                    f"{out} would replace the input {clash}: maskd never overwrites its inputs; "
                    "choose another -o (a different folder or file name)"
                )
            if key in written and written[key] != src:
                raise MaskdError(f"{written[key]} and {src} would both be written to {out}")
            written[key] = src


def prepare_folders(jobs: list[tuple[Path, Path]]) -> None:
    """Create every output folder and check it can be written, before any model call: a folder that
    cannot be created or written fails the whole batch at once, with one line."""
    for folder in sorted({dst.parent for _, dst in jobs}, key=lambda p: len(p.parts)):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise MaskdError(f"cannot create the output folder {folder}: a file has that name") from None
        except OSError as exc:
            blocker = next((p for p in [folder, *folder.parents] if p.exists()), folder)
            reason = f"{blocker} is not a folder" if not blocker.is_dir() else (exc.strerror or str(exc))
            raise MaskdError(f"cannot create the output folder {folder}: {reason}") from None
        try:
            fd, probe = tempfile.mkstemp(prefix=".maskd-probe-", dir=folder)
        except OSError as exc:
            raise MaskdError(f"cannot write into the output folder {folder}: {exc.strerror or exc}") from None
        os.close(fd)
        os.unlink(probe)


def check_opaque_outputs(jobs, opaque: bool, hint: str) -> None:
    """A JPEG/BMP output needs an opaque result (or the mask alone): refused before the model runs."""
    if opaque:
        return
    bad = next((dst for _, dst in jobs if dst.suffix.lower() in OPAQUE_SUFFIXES), None)
    if bad is not None:
        raise MaskdError(f"{bad.suffix} cannot hold transparency ({bad}): {hint}")


# ---------------------------------------------------------------------------------- write


@dataclass
class Item:
    """One file's result on its way to disk: what finishing sees and may change."""

    src: Path
    dst: Path
    image: np.ndarray  # as read (H×W[×C], uint8/uint16/float32)
    alpha: np.ndarray  # float32 H×W in [0, 1]
    foreground: np.ndarray | None  # float32 H×W×3 decontaminated colours in [0, 1]
    output: np.ndarray | None = None  # float32 H×W×{1,3,4} in [0, 1]: what gets written
    bit_depth: int = 8
    notes: list = field(default_factory=list)


def bit_depth(image: np.ndarray) -> int:
    return 16 if image.dtype in (np.uint16, np.float32) else 8


def to_file_dtype(arr: np.ndarray, depth: int, dst: Path) -> np.ndarray:
    from maskd.core import imageio

    if depth == 16 and dst.suffix.lower() in (".png", ".tif", ".tiff"):
        return imageio.to_uint16(arr)
    return imageio.to_uint8(arr)


def finish_and_write(args, item: Item, hint: str) -> str | None:
    """Finishing (``server.finishing``) on ``item.output``, then the atomic write; returns the notes."""
    from maskd.core import imageio
    from maskd.server import finishing

    finishing.finish_item(args, item)
    out = item.output
    if out.shape[2] in (2, 4) and item.dst.suffix.lower() in OPAQUE_SUFFIXES:
        raise MaskdError(f"{item.dst.suffix} cannot hold transparency: {hint}")
    imageio.write_image(item.dst, to_file_dtype(out, item.bit_depth, item.dst))
    return "; ".join(item.notes) or None


# ---------------------------------------------------------------------------------- run


@dataclass
class Outcome:
    done: int = 0
    failures: list = field(default_factory=list)  # [(src, message)]
    notes: list = field(default_factory=list)  # [(src, note)]
    seconds: float = 0.0


def run_files(todo: list[tuple[Path, Path]], work, *, quiet: bool, errors=()) -> Outcome:
    """``work(src, dst) -> note|None`` for each job, with a progress bar. A file that fails is
    recorded and the batch goes on; Ctrl-C raises ``Interrupted`` (how many were finished)."""
    from tqdm import tqdm

    outcome = Outcome()
    t0 = time.perf_counter()
    bar = tqdm(todo, unit="file", disable=quiet or None, dynamic_ncols=True, file=sys.stderr)
    try:
        for src, dst in bar:
            bar.set_postfix_str(src.name[-40:], refresh=False)
            try:
                note = work(src, dst)
            except (MaskdError, OSError, ValueError, *errors) as exc:
                outcome.failures.append((src, str(exc)))
                continue
            except Exception as exc:  # one bad file never stops the batch
                outcome.failures.append((src, f"{type(exc).__name__}: {exc}"))
                continue
            outcome.done += 1
            if note:
                outcome.notes.append((src, note))
    except KeyboardInterrupt:
        raise Interrupted(outcome.done, len(todo)) from None
    finally:
        bar.close()
        outcome.seconds = time.perf_counter() - t0
    return outcome


def report(command: str, outcome: Outcome, skipped: int, out: Path) -> None:
    print(
        f"maskd {command}: {outcome.done} written, {skipped} skipped (exist; --overwrite replaces), "
        f"{len(outcome.failures)} failed in {outcome.seconds:.1f} s → {out}"
    )
    for src, note in outcome.notes:
        print(f"  note: {src}: {note}")
    if outcome.failures:
        print("failures:")
        for src, message in outcome.failures:
            print(f"  {src}: {message}")


def say_interrupted(command: str, exc: Interrupted, stopped_daemon: bool) -> None:
    print(
        f"maskd {command}: interrupted: {exc.done} of {exc.total} file(s) finished; a re-run skips "
        "them and does the rest"
        + ("; the daemon started for this batch was stopped" if stopped_daemon else ""),
        file=sys.stderr,
    )


@contextlib.contextmanager
def daemon_for_batch(connection_file=None, serve_args: list[str] | None = None, say=print):
    """(client, started): a client to the running daemon, or to one started now (``maskd serve`` +
    ``serve_args``) and stopped when the block ends.

    On Ctrl-C inside the block the job in flight is cancelled (``cancel`` on its own connection)
    and a daemon started here is stopped and waited for, so the next run finds no busy daemon."""
    import subprocess

    from maskd.plugins import maskd_client as mc
    from maskd.server.client import DaemonClient

    started = False
    client = None
    try:
        client = DaemonClient.connect(connection_file)
    except mc.MaskdClientError as exc:
        if exc.code != "unavailable":
            raise MaskdError(f"cannot use the running maskd: {exc}") from None
    if client is None:
        say("maskd is not running: starting it for this batch (it stops afterwards)…")
        # --owner-pid: the daemon stops by itself if this command dies (kill -9 skips every `finally`)
        cmd = [
            sys.executable,
            "-m",
            "maskd.server",
            "serve",
            *(serve_args or []),
            "--owner-pid",
            str(os.getpid()),
        ]
        if connection_file:
            cmd += ["--connection-file", str(connection_file)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise MaskdError("could not start maskd for the batch:\n" + (r.stderr or r.stdout).strip())
        started = True
        client = DaemonClient.connect(connection_file)
    interrupted = False
    try:
        yield client, started
    except (KeyboardInterrupt, Interrupted):
        interrupted = True
        with contextlib.suppress(mc.MaskdClientError, OSError):
            client.client.cancel()
        raise
    finally:
        client.close()
        if started:
            from maskd.server.commands.stop import stop

            stop(connection_file, timeout=5.0 if interrupted else 30.0)
