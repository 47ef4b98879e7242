"""The daemon's ``models`` and ``switch_model`` requests, as the editor plugins use them.

A Hugging Face cache with two installed presets (``lite`` and ``lite-2k``, both the generated
official-layout lite weights) and a real ``maskd serve``: the model list comes from what is
installed, a switch loads the other preset with "Loading model" progress, names that are not
installed presets (paths included) are refused, and a switch asked while another client's job is
queued waits for that job, whose client hears about it.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from maskd.plugins import maskd_client as mc

from tests.daemon_fixtures import RunningDaemon, make_image, short_tmp
from tests.helpers import INSTALLED_PRESETS as INSTALLED
from tests.helpers import hf_cache_with


def serve(folder: Path, cache: Path, *args: str) -> RunningDaemon:
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    d = RunningDaemon(folder, folder / "connection.json")
    r = d.cli("serve", *args, HF_HUB_CACHE=cache, HF_HUB_OFFLINE="1", timeout=300)
    if r.returncode != 0:
        pytest.fail(f"maskd serve failed: {r.stdout}{r.stderr}\n{d.log()[-3000:]}")
    return d


@pytest.fixture(scope="module")
def cache(tmp_path_factory, lite_weights):
    return hf_cache_with(tmp_path_factory.mktemp("hf"), lite_weights)


def test_models_lists_installed_presets_and_a_switch_loads_another(tmp_path_factory, cache):
    d = serve(
        short_tmp(tmp_path_factory, "sw"), cache, "--model", "lite", "--device", "cpu", "--resolution", "64"
    )
    try:
        with d.client(timeout=60) as client:
            models = client.models()
            assert sorted(m["name"] for m in models["installed"]) == sorted(INSTALLED)
            assert models["served"] == "lite" and models["model_state"] == "ready"
            stages = []
            after = client.switch_model("lite-2k", progress=lambda s, f: stages.append(s))
            assert "Loading model" in stages, stages
            assert after["served"] == "lite-2k" and after["model_state"] == "ready"
            assert client.status()["model"]["name"] == "lite-2k"
            w, h = 32, 24
            result = client.segment(make_image(w, h)[0], w, h)
            assert result.info["model"] == "lite-2k" and len(result.alpha) == w * h
            for bad in ("general", "/etc/passwd", "../lite", str(cache)):
                with pytest.raises(mc.MaskdClientError) as err:
                    client.switch_model(bad)
                assert err.value.code == "model_unavailable"
                assert "not installed" in err.value.message and "lite" in err.value.message
            assert client.models()["served"] == "lite-2k", "a refused switch keeps the served model"
    finally:
        d.stop()


def test_a_switch_waits_for_another_clients_queued_job_and_it_is_told(tmp_path_factory, cache):
    d = serve(short_tmp(tmp_path_factory, "swq"), cache, "--worker", "null", "--model", "stand-in")
    try:
        results, other_stages, running = [], [], threading.Event()

        def other_client():
            def progress(stage, fraction):
                other_stages.append(stage)
                if stage == "null work":
                    running.set()

            with d.client(timeout=60) as client:
                results.append(
                    client.segment(
                        make_image(8, 8)[0], 8, 8, options={"null_delay_s": 2.0}, progress=progress
                    )
                )

        thread = threading.Thread(target=other_client)
        thread.start()
        assert running.wait(60), other_stages
        stages = []
        with d.client(timeout=60) as client:
            after = client.switch_model("lite", progress=lambda s, f: stages.append(s))
        thread.join(60)
        assert len(results) == 1 and len(results[0].alpha) == 64 and after["model_state"] == "ready"
        # The daemon's log says which finished first (the order in which two client threads wake up
        # after their replies does not: that is the scheduler's).
        log = d.log()
        job_done, switched = log.find("segment 8x8: ok"), log.find("switched the model to lite")
        assert 0 <= job_done < switched, log[-3000:]
        assert any(s.startswith("Waiting for 1 job") for s in stages), stages
        assert any("the model changes to lite after this job" in s for s in other_stages), other_stages
    finally:
        d.stop()
