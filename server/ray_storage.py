"""Object storage for ``maskd remove ... --ray``: inputs and outputs given as URIs.

Why: a catalogue on a cluster usually lives in a bucket (``s3://…``, ``gs://…``), not on a disk
every node mounts. Any filesystem ``pyarrow.fs.FileSystem.from_uri`` understands works (S3, GCS,
HDFS, ``file://``); options go in the URI's query (``s3://b/in?endpoint_override=host:9000&scheme=http``),
credentials come from the store's usual environment (``AWS_ACCESS_KEY_ID``, …).

The plan is the local one: the same files are picked (image suffixes, hidden names left out), the
outputs get the same names (``batch.plan_outputs``) and existing outputs are skipped (resumable).
Each stage works on a node-local copy: the object is downloaded to a temporary folder, the local
code runs unchanged (so the bytes are those of ``maskd remove`` without Ray), and the output (with
its side files) is uploaded to a temporary key next to the final one, then moved. On a filesystem
with renames that is atomic; on S3 and GCS a move is a server-side copy then a delete, and the
copy makes the final object appear whole or not at all (a crashed upload leaves only a hidden
``.maskd-tmp-…`` key, never a partial output).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from maskd.core.errors import MaskdError

_FILESYSTEMS: dict[str, tuple] = {}  # per process: one client per URI


def is_uri(text) -> bool:
    """``scheme://…`` (but not a Windows drive letter): a location for ``pyarrow.fs``."""
    text = str(text)
    return "://" in text and len(text.split("://", 1)[0]) > 1


def filesystem(uri: str):
    """(pyarrow filesystem, path inside it) for ``uri``; a clear error if it cannot be opened."""
    if uri not in _FILESYSTEMS:
        try:
            from pyarrow import fs
        except ImportError:
            raise MaskdError("object storage needs pyarrow: pip install 'maskd[ray]'") from None
        try:
            _FILESYSTEMS[uri] = fs.FileSystem.from_uri(uri)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, …
            raise MaskdError(f"{uri}: cannot open this location: {exc}") from None
    return _FILESYSTEMS[uri]


@dataclass(frozen=True)
class Stores:
    """The input URIs (a row's ``store`` indexes them) and the output URI."""

    inputs: tuple[str, ...]
    output: str

    def shown(self, index: int, path: str) -> str:
        """How a file is named in messages: the scheme and the path, without the URI's options."""
        uri = self.inputs[index] if index >= 0 else self.output
        return f"{uri.split('://', 1)[0]}://{path}"


def same_store(a: str, b: str) -> bool:
    """Whether two URIs name the same store (scheme and options alike), so paths compare."""
    return a.split("://", 1)[0] == b.split("://", 1)[0] and a.partition("?")[2] == b.partition("?")[2]


def plan(args, suffixes, keep_suffix=()) -> tuple[Stores, list[tuple[int, str, str]], int, list[str]]:
    """(stores, [(input store, input path, output path)] still to do, how many skipped, problems)."""
    from maskd.server import batch
    from pyarrow import fs as pafs

    suffixes = {s.lower() for s in suffixes}
    stores = Stores(tuple(str(i) for i in args.inputs), str(args.output))
    out_fs, out_root = filesystem(stores.output)
    files, origin, problems = [], {}, []
    for index, uri in enumerate(stores.inputs):
        in_fs, root = filesystem(uri)
        info = in_fs.get_file_info(root)
        if info.type == pafs.FileType.File:
            found = [(PurePosixPath(root), PurePosixPath(info.base_name))]
        elif info.type == pafs.FileType.Directory:
            listing = in_fs.get_file_info(pafs.FileSelector(root, recursive=True))
            found = []
            for item in sorted(listing, key=lambda i: i.path):
                rel = PurePosixPath(item.path).relative_to(root)
                hidden = any(part.startswith(".") for part in rel.parts)
                earlier_output = same_store(uri, stores.output) and item.path.startswith(f"{out_root}/")
                wanted = item.type == pafs.FileType.File and rel.suffix.lower() in suffixes
                if wanted and not hidden and not earlier_output:
                    found.append((PurePosixPath(item.path), rel))
            if not found:
                problems.append(f"{uri}: no image files here")
        else:
            problems.append(f"{uri}: no such object or prefix")
            found = []
        for src, _rel in found:
            origin[src] = index
        files += found
    jobs = batch.plan_outputs(files, PurePosixPath(out_root), args.format, False, keep_suffix)
    if not jobs:
        return stores, [], 0, problems
    exists = out_fs.get_file_info([str(d) for _, d in jobs])
    todo = [
        (origin[s], str(s), str(d))
        for (s, d), info in zip(jobs, exists)
        if args.overwrite or info.type == pafs.FileType.NotFound
    ]
    return stores, todo, len(jobs) - len(todo), problems


@contextmanager
def local_copy(stores: Stores, index: int, path: str):
    """A node-local copy of one input object (its file name kept: the reader goes by the suffix)."""
    in_fs, _ = filesystem(stores.inputs[index])
    folder = Path(tempfile.mkdtemp(prefix="maskd-ray-"))
    try:
        local = folder / PurePosixPath(path).name
        with in_fs.open_input_stream(path) as stream, open(local, "wb") as f:
            shutil.copyfileobj(stream, f, 1 << 20)
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def staged_output(stores: Stores, path: str):
    """A local path for the output ``path``; on success every file written in its folder (the
    output and its side files) is uploaded next to it: to a temporary key, then moved."""
    out_fs, _ = filesystem(stores.output)
    folder = Path(tempfile.mkdtemp(prefix="maskd-ray-out-"))
    try:
        yield folder / PurePosixPath(path).name
        parent = PurePosixPath(path).parent
        if out_fs.type_name not in ("s3", "gcs"):  # object stores have no folders to make
            out_fs.create_dir(str(parent), recursive=True)
        for local in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
            final = str(parent / local.name)
            temporary = str(parent / f".maskd-tmp-{uuid.uuid4().hex}-{local.name}")
            try:
                with open(local, "rb") as f, out_fs.open_output_stream(temporary) as stream:
                    shutil.copyfileobj(f, stream, 1 << 20)
                out_fs.move(temporary, final)
            except BaseException:
                _forget(out_fs, temporary)
                raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _forget(out_fs, path: str) -> None:
    """Remove a temporary key after a failed upload or move (best effort: it is hidden anyway)."""
    try:
        out_fs.delete_file(path)
    except Exception:
        pass


def scrub(message: str) -> str:
    """A worker's error without its node-local copy's folder (the row is already named by its URI)."""
    folder = re.escape(tempfile.gettempdir()) + r"/maskd-ray(?:-out)?-[^/\s'\"]+/"
    return re.sub(folder, "", message)
