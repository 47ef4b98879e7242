"""A cancel really cancels (issue 17): the worker is free within 2 s of the client's ``cancel``,
whether the job is in a model forward, in the refinement, or in a long option such as ``grow``.

A real daemon serves the ``lite`` architecture (generated weights, CPU) through the real
pipeline; the client's ``cancel`` (what the CLI's Ctrl-C and the plugins' Cancel use) is sent
from another thread as soon as the job reports the stage under test.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from maskd.plugins import maskd_client as mc

from tests.daemon_fixtures import short_tmp, start_daemon
from tests.helpers import lite_model_args


@pytest.fixture(scope="module")
def lite(tmp_path_factory, lite_weights):
    folder = short_tmp(tmp_path_factory, "cancel")
    d = start_daemon(folder, *lite_model_args(lite_weights, 1024), worker="pipeline", model=None)
    yield d
    d.stop()


def _image(width: int, height: int) -> bytes:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    img[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = (200, 40, 40)
    return img.tobytes()


CASES = {
    # the stage whose start triggers the cancel, the image, the options
    "model-forward": ("model", 640, 480, {"refine": False}),
    "refinement": ("upsample", 4000, 3000, {"quality": "quality"}),
    # grow at its bound (core/limits.py: 100 px) on 12 MP: seconds of interruptible passes
    "grow": ("model", 4000, 3000, {"refine": False, "grow": 100, "decontaminate": False}),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_cancel_frees_the_worker_within_two_seconds(lite, case):
    stage, width, height, options = CASES[case]
    pixels = _image(width, height)
    seen = threading.Event()
    outcome = {}
    job_id = f"cancel-{case}-{time.time_ns()}"

    def progress(name, fraction):
        if name == stage and (case != "grow" or fraction >= 1.0):  # grow: the model is done
            seen.set()

    def run():
        try:
            with lite.client(timeout=60) as c:
                c.segment(
                    pixels, width, height, layout="RGB", options=options, progress=progress, job_id=job_id
                )
            outcome["result"] = "finished"
        except mc.MaskdClientError as exc:
            outcome["result"] = exc.code
        outcome["end"] = time.monotonic()

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 300
    while not seen.wait(0.1):  # a refused or failed job ends the wait at once, with its reason
        assert t.is_alive() and time.monotonic() < deadline, f"the job never reached {stage}: {outcome}"
    with lite.client() as c:
        start = time.monotonic()
        assert c.cancel(job_id) is True
        t.join(30)
        assert outcome.get("result") == "cancelled", outcome
        assert outcome["end"] - start < 2.0, f"the client waited {outcome['end'] - start:.1f} s"
        deadline = start + 2.0
        while c.status()["current_job"] is not None:
            assert time.monotonic() < deadline, "the worker was still busy 2 s after the cancel"
            time.sleep(0.02)
        assert c.status()["counters"]["jobs_cancelled"] >= 1
        r = c.segment(_image(64, 48), 64, 48, layout="RGB", options={"quality": "fast"})
        assert len(r.alpha) == 64 * 48  # the worker is free for the next job


@pytest.mark.parametrize("backend", ["pyzmq", "zmtp"])
def test_ctrl_c_in_a_client_cancels_its_job(tmp_path_factory, backend):
    """KeyboardInterrupt while a client waits for its result (what Ctrl-C in `maskd remove` does)
    cancels the job in the daemon: the worker is free again, nothing runs on for the dead caller."""
    import signal

    d = start_daemon(short_tmp(tmp_path_factory, "ctrlc"))
    try:

        def interrupt(*_):
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGALRM, interrupt)
        try:
            with d.client(backend) as c:
                signal.setitimer(signal.ITIMER_REAL, 0.5)
                with pytest.raises(KeyboardInterrupt):
                    c.segment(b"\0" * 64 * 4, 8, 8, options={"null_delay_s": 120})
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        with d.client() as c:
            deadline = time.monotonic() + 2.0
            while c.status()["current_job"] is not None:
                assert time.monotonic() < deadline, "the job ran on after Ctrl-C"
                time.sleep(0.02)
            assert c.status()["counters"]["jobs_cancelled"] == 1
    finally:
        d.stop()
