"""``maskd remove s3://… -o s3://… --ray``: object storage in, object storage out.

A local S3-compatible server (moto, in this process) holds the inputs; a Ray head started here
runs the batch. The outputs read back from the bucket must be byte-identical to ``maskd remove``
on the same files on disk (real daemon, stand-in model), a re-run must write nothing, no temporary
key may be left, and without ``--ray`` a URI gets one clear line.
"""

from __future__ import annotations

import os

import cv2
import pytest

from tests.daemon_fixtures import short_tmp
from tests.helpers import run_maskd, standin_env
from tests.test_ray_batch import FINISH, MODEL, _disc, outputs

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def cli(*args, timeout=600):
    return run_maskd("remove", *args, env=standin_env(**CREDENTIALS), timeout=timeout)


@pytest.fixture(scope="module")
def s3():
    """(pyarrow S3 filesystem, URI query) of a moto S3 server on a free port, with bucket ``pics``."""
    from moto.server import ThreadedMotoServer
    from pyarrow import fs

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        query = f"?endpoint_override={host}:{port}&scheme=http&region=us-east-1"
        s3fs = fs.S3FileSystem(
            access_key="testing",
            secret_key="testing",
            region="us-east-1",
            endpoint_override=f"{host}:{port}",
            scheme="http",
            allow_bucket_creation=True,
        )
        s3fs.create_dir("pics")
        yield s3fs, query
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cluster():
    """A Ray head whose workers have the store's credentials (as a cluster's nodes would)."""
    import ray

    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    ray.init(num_cpus=4, include_dashboard=False, object_store_memory=200 * 2**20, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _bucket_files(s3fs, prefix):
    from pyarrow import fs

    infos = s3fs.get_file_info(fs.FileSelector(prefix, recursive=True, allow_not_found=True))
    return {i.path[len(prefix) + 1 :]: i for i in infos if i.type == fs.FileType.File}


def test_bucket_in_bucket_out_is_the_local_result_and_resumable(s3, cluster, tmp_path, tmp_path_factory):
    s3fs, query = s3
    local_in = tmp_path / "in"
    specs = {"a.png": (80, 100), "sub/b.png": (120, 90), "sub/c.jpg": (70, 70), "d.png": (64, 96)}
    for i, (rel, (h, w)) in enumerate(specs.items()):
        (local_in / rel).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(local_in / rel), _disc(h, w, seed=90 + i))
    (local_in / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really a png")
    (local_in / "notes.txt").write_text("not an image")  # left out, as on disk
    for p in local_in.rglob("*"):
        if p.is_file():
            with s3fs.open_output_stream(f"pics/in/{p.relative_to(local_in).as_posix()}") as f:
                f.write(p.read_bytes())
    folder = short_tmp(tmp_path_factory, "rays3")
    folder.chmod(0o700)
    r = cli(local_in, "-o", tmp_path / "local", *MODEL, *FINISH, "-q", "--connection-file", folder / "c.json")
    assert r.returncode == 1 and "4 written" in r.stdout, r.stdout + r.stderr  # broken.png fails
    expected = {k.as_posix(): v for k, v in outputs(tmp_path / "local").items()}
    assert len(expected) == 4

    src, dst = f"s3://pics/in{query}", f"s3://pics/in/out{query}"  # a re-run must not read it back
    r = cli(src, "-o", dst, *MODEL, *FINISH, "--ray", cluster, "--ray-workers", "1", "-q")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "4 written, 0 skipped" in r.stdout and "1 failed" in r.stdout, r.stdout + r.stderr
    assert "s3://pics/in/broken.png" in r.stdout.split("failures:")[1], r.stdout
    assert "maskd-ray-" not in r.stdout, "a worker's temporary copy is named in the failure"
    written = _bucket_files(s3fs, "pics/in/out")
    assert sorted(written) == sorted(expected), "no temporary key left, the local names"
    got = {}
    for rel in written:
        with s3fs.open_input_stream(f"pics/in/out/{rel}") as f:
            got[rel] = f.read()
    different = [k for k in expected if got[k] != expected[k]]
    assert not different, f"not byte-identical to maskd remove on disk: {different}"

    r = cli(src, "-o", dst, *MODEL, *FINISH, "--ray", cluster, "-q")
    assert r.returncode == 1 and "0 written, 4 skipped" in r.stdout, r.stdout + r.stderr
    again = _bucket_files(s3fs, "pics/in/out")
    assert {k: i.mtime for k, i in again.items()} == {k: i.mtime for k, i in written.items()}


def test_a_uri_without_ray_is_one_clear_line(tmp_path):
    r = cli("s3://pics/in", "-o", tmp_path / "out")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "object storage needs --ray" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = cli("--ray", "s3://pics/in", "-o", "s3://pics/out")  # a URI is never taken for the address
    assert r.returncode == 2 and "is not a Ray address" in r.stderr, r.stderr
