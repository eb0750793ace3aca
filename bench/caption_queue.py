"""Bulk indexing through the CLI, today's synchronous path (every upload waits for its caption,
`--wait-for-captions`) against the caption queue (uploads answer once embedded; the gateway's worker
captions afterwards), one after the other on fresh gateways over the same camera-size photos, nothing
else running; then, on two more fresh gateways over fewer photos, image searches (one a second) while
the queue drains with the captioner at nice 10 (shipped) and at nice 0, and the same searches idle.

Measured: seconds until every photo is searchable and until every one is captioned; the gateway's
CPU seconds per image in each phase (process tree, Milvus Lite included); search latency.

    python -m bench.caption_queue --repository .cache/clip-repo --photos 300 --out bench/results/caption-queue-cpu-2core
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.machine import machine, write_results
from bench.photos import payloads, source
from local_servers.service_process import ServiceProcess, gateway_process


def camera_photos(folder: Path, count: int) -> None:
    """``count`` distinct camera-size JPEGs: the 5 MP photo shifted and tinted a little per index."""
    import io

    from PIL import Image, ImageEnhance

    base = Image.open(io.BytesIO(payloads()["camera-5mp"])).convert("RGB")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        shifted = base.rotate(0, translate=(i % 17 - 8, i % 13 - 6))
        ImageEnhance.Brightness(shifted).enhance(0.9 + (i % 21) / 100).save(folder / f"{i:04d}.jpg", quality=90)


def pending(url: str) -> int:
    """Records still pending, read from the listing (exact; /readyz's count is up to 5 s old)."""
    count, offset = 0, 0
    while page := httpx.get(f"{url}/v1/images", params={"limit": 1000, "offset": offset}, timeout=60).json()["images"]:
        count += sum(r["caption_state"] == "pending" for r in page)
        offset += len(page)
    return count


def index(url: str, folder: Path, wait: bool) -> None:
    command = [sys.executable, "-m", "gateway.cli.main", "--url", url, "index", str(folder), "--batch-size", "8",
               "--concurrency", "2", *(["--wait-for-captions"] if wait else [])]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def search_latencies(url: str, query: bytes, stop: threading.Event, out: list[float], every_s: float = 1.0) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        httpx.post(f"{url}/v1/search/image", files={"file": ("q.jpg", query, "image/jpeg")}, data={"k": "10"}, timeout=120)
        out.append(time.perf_counter() - started)
        stop.wait(every_s)


def idle_latencies(url: str, query: bytes, count: int = 20) -> list[float]:
    out: list[float] = []
    for _ in range(count):
        started = time.perf_counter()
        httpx.post(f"{url}/v1/search/image", files={"file": ("q.jpg", query, "image/jpeg")}, data={"k": "10"}, timeout=120)
        out.append(time.perf_counter() - started)
    return out


def synchronous(repository: Path, folder: Path, workdir: Path, photos: int) -> dict:
    with gateway_process(repository, workdir / "sync", caption_worker="false") as gateway:
        cpu, started = gateway.cpu_seconds(), time.perf_counter()
        index(gateway.url, folder, wait=True)
        seconds, used = time.perf_counter() - started, gateway.cpu_seconds() - cpu
    return {"searchable_s": round(seconds, 1), "captioned_s": round(seconds, 1),
            "cpu_s_per_image_until_searchable": round(used / photos, 3), "cpu_s_per_image_captioning": None}


def drain(gateway: ServiceProcess) -> None:
    while pending(gateway.url):
        time.sleep(1)


def queued(repository: Path, folder: Path, workdir: Path, photos: int) -> dict:
    with gateway_process(repository, workdir / "queue") as gateway:
        cpu, started = gateway.cpu_seconds(), time.perf_counter()
        index(gateway.url, folder, wait=False)
        searchable, cpu_embed = time.perf_counter() - started, gateway.cpu_seconds() - cpu
        drain(gateway)
        captioned, cpu_caption = time.perf_counter() - started, gateway.cpu_seconds() - cpu - cpu_embed
    return {"searchable_s": round(searchable, 1), "captioned_s": round(captioned, 1),
            "cpu_s_per_image_until_searchable": round(cpu_embed / photos, 3),
            "cpu_s_per_image_captioning": round(cpu_caption / photos, 3)}


def searches_while_draining(repository: Path, folder: Path, workdir: Path, query: bytes, nice: int) -> dict:
    """Image search latency (ms) while the queue of ``folder``'s photos drains, then idle."""
    with gateway_process(repository, workdir / f"nice{nice}", caption_nice=str(nice)) as gateway:
        index(gateway.url, folder, wait=False)
        stop, during = threading.Event(), []  # type: ignore[var-annotated]  # (filled by the probe thread)
        probe = threading.Thread(target=search_latencies, args=(gateway.url, query, stop, during))
        probe.start()
        try:
            drain(gateway)
        finally:
            stop.set()
            probe.join()
        idle = idle_latencies(gateway.url, query)
    return {"draining": [round(v * 1000) for v in during], "idle": [round(v * 1000) for v in idle]}


def p50(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def run(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="caption-queue-"))
    folder, few = workdir / "photos", workdir / "few"
    camera_photos(folder, args.photos)
    camera_photos(few, args.nice_photos)
    query = payloads()["web-2mp"]
    sync = synchronous(args.repository, folder, workdir, args.photos)
    queue = queued(args.repository, folder, workdir, args.photos)
    searches = {nice: searches_while_draining(args.repository, few, workdir, query, nice) for nice in (10, 0)}
    return {"machine": machine(), "photos": args.photos, "photo": "camera-5mp (2560x1920 JPEG, quality 90)", "source": source(),
            "repository": str(args.repository), "captions": "3 beams, 20 new tokens (the defaults)",
            "synchronous": sync, "queue": queue,
            "searchable_sooner": round(sync["searchable_s"] / queue["searchable_s"], 2),
            "captioned_queue_over_synchronous": round(queue["captioned_s"] / sync["captioned_s"], 3),
            "search_photos": args.nice_photos, "search_ms": searches,
            "search_ms_p50": {"idle": p50(searches[10]["idle"] + searches[0]["idle"]),
                              "draining, nice 10": p50(searches[10]["draining"]),
                              "draining, nice 0": p50(searches[0]["draining"])}}


def markdown(result: dict) -> str:
    sync, queue, m = result["synchronous"], result["queue"], result["machine"]
    lines = [f"# Bulk indexing: synchronous captions vs the caption queue ({result['photos']} photos, {m['cpu']},"
             f" {m['cores']} cores, {m['date']})", "",
             "| path | all searchable (s) | all captioned (s) | gateway CPU s/image until searchable | CPU s/image captioning |",
             "|---|---|---|---|---|",
             f"| synchronous (`--wait-for-captions`) | {sync['searchable_s']} | {sync['captioned_s']} |"
             f" {sync['cpu_s_per_image_until_searchable']} | (included) |",
             f"| caption queue | {queue['searchable_s']} | {queue['captioned_s']} | {queue['cpu_s_per_image_until_searchable']} |"
             f" {queue['cpu_s_per_image_captioning']} |", "",
             f"Searchable {result['searchable_sooner']}x sooner; all captioned in {result['captioned_queue_over_synchronous']}x"
             " the synchronous time.", "",
             f"| image search p50 (ms), {result['search_photos']} photos draining | idle | queue draining, captioner nice 10 |"
             " queue draining, nice 0 |", "|---|---|---|---|",
             "| " + " | ".join(str(v) for v in ["web-2mp query, 1/s", *result["search_ms_p50"].values()]) + " |"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, required=True, help="full-size CLIP + BLIP exports (python flavour)")
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--nice-photos", type=int, default=40, help="photos of the nice-0 drain")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = run(args)
    write_results(args.out, "caption-queue", result, markdown(result))


if __name__ == "__main__":
    main()
