"""Failing dependencies and shutdown, with real processes: Triton killed under load and started
again; the gateway process stopped with SIGTERM while requests are in flight. (Milvus hung and
killed: test_milvus_outage.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest

from gateway.api import image_search_pb2 as pb
from gateway.api import image_search_pb2_grpc as pb_grpc
from gateway.server.http.app import create_app
from local_servers.processes import free_ports
from local_servers.tritonserver import TritonServer
from local_servers.uvicorn_server import LiveServer
from tests.support.images import PHOTO_JPEGS as PHOTOS
from tests.support.images import unique_image
from tests.support.references import settings_for

pytestmark = [pytest.mark.integration, pytest.mark.triton]


class Load:
    """Threads sending a mix of searches, embeds and uploads of new images until stopped."""

    def __init__(self, url: str, threads: int = 3):
        self.url, self.results, self.stopped = url, [], threading.Event()
        self.pool = ThreadPoolExecutor(threads)
        self.futures = [self.pool.submit(self.run, n) for n in range(threads)]

    def run(self, worker: int) -> None:
        with httpx.Client(timeout=60) as client:
            n = 0
            while not self.stopped.is_set():
                n += 1
                kind = ("text", "embed", "index")[n % 3]
                start = time.monotonic()
                if kind == "text":
                    response = client.get(f"{self.url}/v1/search/text", params={"q": f"photo {n}"})
                elif kind == "embed":
                    response = client.post(f"{self.url}/embed-image/", files={"file": ("a.jpg", PHOTOS["coffee"], "image/jpeg")})
                else:
                    response = client.post(f"{self.url}/v1/images", files={"files": ("n.png", unique_image(worker * 100_000 + n),
                                                                                     "image/png")})
                self.results.append((start, time.monotonic() - start, kind, response.status_code, response.json()))

    def stop(self) -> list[tuple]:
        self.stopped.set()
        for future in self.futures:
            future.result()  # a client-side exception (a hang past 60 s, a reset) fails the test here
        self.pool.shutdown()
        return self.results


def wait_until(predicate, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"{what} did not happen within {timeout}s"
        time.sleep(0.5)
    return time.monotonic() - start


def test_triton_killed_under_load_fails_fast_then_recovers_by_itself(model_repository, tmp_path):
    triton = TritonServer(model_repository, tmp_path / "triton").start()
    settings = settings_for(model_repository, str(tmp_path / "images.db"), inference_mode="triton",
                            triton_url=triton.grpc_url, triton_timeout_s=5, triton_retries=1)
    try:
        with LiveServer(create_app(settings)) as gateway:
            ready = lambda: httpx.get(f"{gateway.url}/readyz", timeout=30).status_code == 200
            load = Load(gateway.url)
            wait_until(lambda: sum(r[3] == 200 for r in load.results) >= 6, 120, "six successes before the kill")
            os.killpg(triton.process.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            wait_until(lambda: not ready(), 30, "/readyz turning red")
            wait_until(lambda: sum(r[0] > killed_at + 1 and r[3] == 503 for r in load.results) >= 6, 60, "six 503s")
            triton.process.wait(10)
            triton.start()  # same ports
            restarted_at = time.monotonic()
            recovery = wait_until(ready, 60, "/readyz turning green again")
            wait_until(lambda: sum(r[0] > restarted_at + recovery and r[3] == 200 for r in load.results) >= 6, 60,
                       "six successes after the restart")
            results = load.stop()
            total = httpx.get(f"{gateway.url}/v1/images").json()["total"]
    finally:
        triton.stop()
    assert {r[3] for r in results} <= {200, 503}, {(r[2], r[3], str(r[4])[:100]) for r in results if r[3] not in (200, 503)}
    outage = [r for r in results if r[3] == 503]
    assert all(r[4]["error"]["code"] == "dependency_unavailable" for r in outage)
    assert max(r[1] for r in outage) < 8, "a request during the outage took longer than the Triton deadline"
    created = {r[4]["images"][0]["id"] for r in results if r[2] == "index" and r[3] == 200}
    assert total == len(created), "an upload that failed left a record behind"


def test_sigterm_drains_in_flight_requests_then_exits(model_repository, tmp_path):
    """HTTP requests and gRPC calls held 3 s in the micro-batcher are in flight when SIGTERM arrives:
    each completes (200, OK), no new connection or call is accepted on either port, the models and the
    store are closed, and the process ends as terminated by SIGTERM (uvicorn re-raises the signal after
    draining; Kubernetes reads 143)."""
    port, grpc_port = free_ports(2)
    env = {**os.environ, "GATEWAY_MODEL_REPOSITORY": str(model_repository), "GATEWAY_MILVUS_URI": str(tmp_path / "images.db"),
           "GATEWAY_PORT": str(port), "GATEWAY_GRPC_PORT": str(grpc_port), "GATEWAY_HOST": "127.0.0.1",
           "GATEWAY_LOCAL_MAX_DELAY_MS": "3000", "GATEWAY_CAPTION_BEAMS": "1", "GATEWAY_CAPTION_MAX_NEW_TOKENS": "4",
           "GATEWAY_SHUTDOWN_GRACE_S": "20"}
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "gateway"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    stub = pb_grpc.ImageSearchStub(channel)
    try:
        wait_until(lambda: _answers(f"{url}/readyz"), 120, "the gateway starting")
        with ThreadPoolExecutor(6) as pool:
            calls = [pool.submit(httpx.get, f"{url}/v1/search/text", params={"q": f"dog {n}"}, timeout=60) for n in range(2)]
            calls += [pool.submit(httpx.post, f"{url}/embed-image/", files={"file": ("a.jpg", PHOTOS["coins"], "image/jpeg")},
                                  timeout=60) for _ in range(2)]
            rpcs = [pool.submit(stub.SearchText, pb.SearchTextRequest(query=f"cat {n}"), timeout=60) for n in range(2)]
            time.sleep(1.0)
            server.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"{url}/healthz", timeout=5)
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as fresh, pytest.raises(grpc.RpcError) as refused:
                pb_grpc.ImageSearchStub(fresh).SearchText(pb.SearchTextRequest(query="too late"), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert [c.result().status_code for c in calls] == [200] * 4
            assert [len(r.result().results) for r in rpcs] == [0, 0]  # answered (an empty collection)
        assert server.wait(30) == -signal.SIGTERM
    finally:
        channel.close()
        if server.poll() is None:
            server.kill()
            server.wait()
    log = server.stderr.read()
    assert b'"message": "gateway stopped"' in log and b"Traceback" not in log


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False
