"""``maskd remove`` for layered files (XCF, OpenRaster, KRA): add masks, keep the layers.

``maskd remove`` hands every ``.xcf``/``.ora``/``.kra`` path to ``process_layered``; the alpha comes
from the daemon (``daemon_alpha_fn``) like for flat images. Per file:

- the chosen layers (``--layers``, default: the bottom-most visible paint layer that is not one
  flat colour) get a mask; everything else in the file is carried over unchanged;
- the input is never overwritten unless ``--in-place``; the output is written to a temporary file
  beside it and renamed into place only when complete (a crash leaves no half-written file);
- a file that cannot be parsed is reported and skipped; the batch goes on;
- a layer that already has a mask is left alone (running twice never stacks masks).

Where results go: ``--in-place`` replaces each input; ``-o FOLDER`` (or a path ending in ``/``, or
an existing folder) writes ``FOLDER/NAME.ext``; ``-o FILE.ext`` names the output of a single
input; otherwise ``NAME-masked.ext`` beside the input. A progress bar runs on stderr for more than
one file, and a summary line ends the run. Exit code: 0 when every file was processed (or had
nothing to do), 1 when any file failed.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import InputError, MaskdError
from core.layered import LAYERED_SUFFIXES, AlphaFn, MaskResult, add_masks, is_layered

OUTPUT_SUFFIX = "-masked"


def add_layered_arguments(parser) -> None:
    """The options ``maskd remove`` gains for layered files (skips any the parser already has)."""
    have = {opt for action in parser._actions for opt in action.option_strings}
    if "--layers" not in have:
        parser.add_argument(
            "--layers", nargs="+", metavar="NAME", default=None,
            help="layered files (XCF/ORA/KRA): which layers get a mask: 'all', 'visible', or layer names "
                 "('group/name' also works). Default: the bottom-most visible paint layer that is not one "
                 "flat colour")
    if "--in-place" not in have:
        parser.add_argument("--in-place", action="store_true",
                            help="layered files: replace each input with its masked version (atomically)")


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
            raise InputError(f"-o {output}: the output of {source.name} must keep its format "
                             f"({source.suffix}); layered files are not converted")
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


def process_layered(paths: list[Path], alpha_fn: AlphaFn, *, layers=None, output: str | None = None,
                    in_place: bool = False, progress: bool | None = None, stream=None) -> BatchSummary:
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
            raise InputError(f"{source}: the output would overwrite the input; pass --in-place to "
                             "replace it, or choose another -o")
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


def daemon_alpha_fn(connection_file: str | None = None, options: dict | None = None,
                    timeout: float = 60.0) -> tuple[AlphaFn, object]:
    """An ``alpha_fn`` backed by the running daemon; returns (fn, client) — close the client after."""
    from plugins import maskd_client as mc

    try:
        client = mc.connect(connection_file, timeout=timeout)
    except mc.MaskdClientError as exc:
        raise MaskdError(f"{exc.message} (needed to compute the masks)") from None

    def alpha_fn(rgba: np.ndarray) -> np.ndarray:
        h, w = rgba.shape[:2]
        try:
            result = client.segment(np.ascontiguousarray(rgba, np.uint8).tobytes(), w, h, layout="RGBA",
                                    dtype="u8", options=dict(options or {}), alpha_dtype="f32")
        except mc.MaskdClientError as exc:
            raise MaskdError(f"the daemon could not compute a mask: {exc.message}") from None
        return np.frombuffer(result.alpha, "<f4").reshape(h, w)

    return alpha_fn, client


def run_from_args(args, paths: list[Path], alpha_fn: AlphaFn | None = None,
                  options: dict | None = None) -> int:
    """The hook ``maskd remove`` calls with its parsed ``args`` and the layered paths it was given."""
    client = None
    if alpha_fn is None:
        alpha_fn, client = daemon_alpha_fn(getattr(args, "connection_file", None), options)
    try:
        summary = process_layered(paths, alpha_fn, layers=getattr(args, "layers", None),
                                  output=getattr(args, "output", None),
                                  in_place=getattr(args, "in_place", False))
    finally:
        if client is not None:
            client.close()
    return 1 if summary.failed else 0
