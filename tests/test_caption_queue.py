"""The caption queue on real parts: a gateway process and `python -m gateway.captioner` processes on the
session's Milvus server, sharing a spool folder. Uploads answer pending and are found by image at once;
a captioner SIGKILLed while it holds a batch loses nothing and leaves nothing stuck (its lease expires,
another captioner takes the records); every record is captioned once, with the caption PyTorch's
reference decode gives; a record deleted while pending never comes back; the queue is in /readyz and
/metrics. With Milvus Lite, the worker inside the gateway drains the queue (tests/test_gateway.py, CLI).
(Named to run before test_milvus_outage, which ends the session's Milvus server.)"""

from __future__ import annotations

import time

import httpx
import pytest

from local_servers.service_process import captioner_process, gateway_process
from tests.support.images import unique_image
from tests.support.references import CAPTION, expected_caption

pytestmark = [pytest.mark.integration, pytest.mark.milvus_server]


def states(url: str, ids: list[str]) -> dict[str, dict]:
    return {i: httpx.get(f"{url}/v1/images/{i}", timeout=30).json() for i in ids}


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.25)
    return result


def test_captions_come_from_the_queue_exactly_once_though_a_captioner_is_killed_mid_batch(model_repository, milvus_server,
                                                                                         tmp_path):
    shared = {"milvus_uri": milvus_server.uri, "collection": "caption_queue", "caption_spool": str(tmp_path / "spool"),
              "caption_beams": str(CAPTION.num_beams), "caption_max_new_tokens": str(CAPTION.max_new_tokens),
              "caption_batch": "4", "caption_lease_s": "15", "caption_settle_s": "2"}
    images = {seed: unique_image(seed) for seed in range(4000, 4012)}
    with gateway_process(model_repository, tmp_path / "gateway", caption_worker="false", **shared) as gateway:
        ids = {}
        for seed, data in images.items():
            reply = httpx.post(f"{gateway.url}/v1/images", files=[("files", (f"{seed}.png", data, "image/png"))], timeout=60)
            (image,) = reply.json()["images"]
            assert image["caption_state"] == "pending" and image["caption"] == ""
            ids[seed] = image["id"]
        first = next(iter(images))
        hits = httpx.post(f"{gateway.url}/v1/search/image", files={"file": ("q.png", images[first], "image/png")},
                          data={"k": "1"}, timeout=30).json()["results"]
        assert [h["id"] for h in hits] == [ids[first]] and hits[0]["caption_state"] == "pending"  # searchable at once
        deleted = ids.pop(4011)
        assert httpx.delete(f"{gateway.url}/v1/images/{deleted}", timeout=30).status_code == 204
        def captions() -> str:
            return httpx.get(f"{gateway.url}/readyz", timeout=30).json()["features"]["captions"]

        wait_for(lambda: captions().startswith("queued: 11 pending, oldest "), 30, "11 pending in /readyz")  # (counted every 5 s)

        killed = captioner_process(model_repository, tmp_path / "killed", **shared).start()
        try:
            # SIGKILL once the first batch is written: the next one is then claimed (its lease held) or captioning
            wait_for(lambda: any(s["caption_state"] == "done" for s in states(gateway.url, list(ids.values())).values()),
                     120, "a first batch captioned")
        finally:
            killed.kill()
        left = [i for i, s in states(gateway.url, list(ids.values())).items() if s["caption_state"] == "pending"]
        assert left, "the killed captioner finished everything: nothing was cut short"

        with captioner_process(model_repository, tmp_path / "second", **shared) as second:
            def all_done() -> dict[str, dict] | None:
                now = states(gateway.url, list(ids.values()))
                return now if all(v["caption_state"] == "done" for v in now.values()) else None

            done = wait_for(all_done, 180, "every record captioned")
            metrics = httpx.get(f"{second.url}/metrics", timeout=30).text
        for seed, image_id in ids.items():
            assert done[image_id]["caption"] == expected_caption(model_repository, images[seed], "index"), seed
        assert httpx.get(f"{gateway.url}/v1/images/{deleted}", timeout=30).status_code == 404  # never written back
        assert 'gateway_captions_total{outcome="captioned"}' in metrics
        wait_for(lambda: captions().startswith("queued: 0 pending, 0 failed; no worker here"), 30, "0 pending in /readyz")
        assert 'gateway_caption_queue_records{state="pending"} 0.0' in httpx.get(f"{gateway.url}/metrics", timeout=30).text
        assert not list((tmp_path / "spool").glob("??/*.npy"))  # every input removed once captioned
