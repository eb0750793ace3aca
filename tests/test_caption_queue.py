"""The caption queue on real parts. On the session's Milvus server: a gateway process and `python -m
gateway.captioner` processes sharing a spool folder; uploads answer pending and are found by image at
once; a captioner SIGKILLed while it holds a batch loses nothing and leaves nothing stuck (its lease
expires, two captioners at once take the rest); every record is captioned once (their counts add up to
what was left), with the caption PyTorch's reference decode gives; a lost input fails its record with
the reason; a record deleted while pending never comes back; the queue is in /readyz and /metrics. On
Milvus Lite: the gateway, its worker inside, SIGKILLed mid-queue and restarted; then keyword search
finds a caption's word. (Named to run before test_milvus_outage, which ends the session's Milvus server.)"""

from __future__ import annotations

import re
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


def outcomes(metrics: str) -> dict[str, float]:
    """gateway_captions_total by outcome, from a /metrics text."""
    found = re.findall(r'^gateway_captions_total\{outcome="(\w+)"\} ([0-9.e+]+)$', metrics, re.M)
    return {outcome: float(value) for outcome, value in found}


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
        before = states(gateway.url, list(ids.values()))  # final for the killed captioner: it is dead
        left = [i for i, s in before.items() if s["caption_state"] == "pending"]
        assert left, "the killed captioner finished everything: nothing was cut short"
        lost_input = left[-1]  # a caption failure: its BLIP input gone from the spool
        (tmp_path / "spool" / lost_input[:2] / f"{lost_input}.npy").unlink()

        # two captioners at once take what is left, the killed one's batch once its lease has expired
        with captioner_process(model_repository, tmp_path / "second", **shared) as second, \
                captioner_process(model_repository, tmp_path / "third", **shared) as third:
            def all_done() -> dict[str, dict] | None:
                now = states(gateway.url, list(ids.values()))
                return now if all(v["caption_state"] != "pending" for v in now.values()) else None

            done = wait_for(all_done, 180, "every record captioned or failed")
            counts = [outcomes(httpx.get(f"{worker.url}/metrics", timeout=30).text) for worker in (second, third)]
        failed = done[lost_input]
        assert failed["caption_state"] == "failed" and "missing from the caption spool" in failed["caption_error"]
        for seed, image_id in ids.items():
            if image_id != lost_input:
                assert done[image_id]["caption"] == expected_caption(model_repository, images[seed], "index"), seed
        # captioned once each: what the two wrote is exactly what the killed one had left
        assert sum(c["captioned"] for c in counts) == len(left) - 1 and sum(c["failed"] for c in counts) == 1
        assert httpx.get(f"{gateway.url}/v1/images/{deleted}", timeout=30).status_code == 404  # never written back
        wait_for(lambda: captions().startswith("queued: 0 pending, 1 failed; no worker here"), 30, "0 pending in /readyz")
        assert 'gateway_caption_queue_records{state="pending"} 0.0' in httpx.get(f"{gateway.url}/metrics", timeout=30).text
        assert not list((tmp_path / "spool").glob("??/*.npy"))  # every input removed once captioned


def test_a_gateway_killed_mid_queue_on_milvus_lite_captions_everything_after_its_restart(model_repository, tmp_path):
    """The embedded default: the worker inside the gateway, Milvus Lite, the spool beside the Lite file.
    SIGKILL while captions are queued, restart on the same file: all captioned, none stuck, and keyword
    search finds a caption's word once its caption is written."""
    settings = {"caption_beams": str(CAPTION.num_beams), "caption_max_new_tokens": str(CAPTION.max_new_tokens),
                "caption_batch": "2", "caption_lease_s": "8", "caption_settle_s": "1"}
    images = {seed: unique_image(seed) for seed in range(4100, 4110)}
    first = gateway_process(model_repository, tmp_path, caption_spool=str(tmp_path / "spool"), **settings).start()
    try:
        files = [("files", (f"{seed}.png", data, "image/png")) for seed, data in images.items()]
        indexed = httpx.post(f"{first.url}/v1/images", files=files, timeout=120).json()["images"]
        ids = {seed: image["id"] for seed, image in zip(images, indexed)}
        wait_for(lambda: any(s["caption_state"] == "done" for s in states(first.url, list(ids.values())).values()),
                 120, "a first batch captioned")
    finally:
        first.kill()
    with gateway_process(model_repository, tmp_path, caption_spool=str(tmp_path / "spool"), **settings) as again:
        def all_done() -> dict[str, dict] | None:
            now = states(again.url, list(ids.values()))
            return now if all(v["caption_state"] == "done" for v in now.values()) else None

        done = wait_for(all_done, 180, "every record captioned after the restart")
        for seed, image_id in ids.items():
            assert done[image_id]["caption"] == expected_caption(model_repository, images[seed], "index"), seed
        record = done[ids[4100]]
        word = max(record["caption"].split(), key=len)
        hits = httpx.get(f"{again.url}/v1/search/text", params={"q": word, "k": 10}, timeout=60).json()["results"]
        assert any(h["id"] == record["id"] and h["keyword_score"] > 0 for h in hits), (word, hits)
    assert not list((tmp_path / "spool").glob("??/*.npy"))
