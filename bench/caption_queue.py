"""Bulk indexing through the CLI, today's synchronous path (every upload waits for its caption,
`--wait-for-captions`) against the caption queue (uploads answer once embedded; the gateway's worker
captions afterwards), one after the other on fresh gateways over the same camera-size photos, nothing
else running; then, on fresh gateways over fewer photos, an image search and an upload (without a
caption, so as not to feed the queue) each second while the queue drains, with the captioner at nice
10 (shipped) and at nice 0, and the same on an idle gateway.

Measured: seconds until every photo is searchable and until every one is captioned; the gateway's
CPU seconds per image in each phase (process tree, Milvus Lite included); search latency.

    python -m bench.caption_queue --repository .cache/clip-repo --photos 1000 --out bench/results/caption-queue-cpu-2core
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
from bench.payloads import never_sent
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


def probe_once(url: str, query: bytes, out: dict[str, list[float]]) -> None:
    """One image search and one upload of a new photo, each timed (ms). The upload skips captions, so that
    the probes do not feed the queue they measure (the queue's own upload cost, spooling BLIP's input, is in
    the indexing rows)."""
    for name, call in (("search", lambda: httpx.post(f"{url}/v1/search/image", data={"k": "10"}, timeout=120,
                                                     files={"file": ("q.jpg", query, "image/jpeg")})),
                       ("upload", lambda: httpx.post(f"{url}/v1/images", timeout=120, data={"captions": "false"}, files=[
                           ("files", ("new.jpg", never_sent(payloads()["small-0.3mp"]), "image/jpeg"))]))):
        started = time.perf_counter()
        call().raise_for_status()
        out[name].append(round((time.perf_counter() - started) * 1000, 1))


def probes(url: str, query: bytes, stop: threading.Event, out: dict[str, list[float]], every_s: float = 1.0) -> None:
    while not stop.is_set():
        probe_once(url, query, out)
        stop.wait(every_s)


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


def while_draining(repository: Path, folder: Path, workdir: Path, query: bytes, nice: int) -> dict:
    """Search and upload latencies (ms) while the queue of ``folder``'s photos drains, then on an idle gateway."""
    with gateway_process(repository, workdir / f"nice{nice}", caption_nice=str(nice)) as gateway:
        index(gateway.url, folder, wait=False)
        stop, during = threading.Event(), {"search": [], "upload": []}  # type: ignore[var-annotated]
        probe = threading.Thread(target=probes, args=(gateway.url, query, stop, during))
        probe.start()
        try:
            drain(gateway)
        finally:
            stop.set()
            probe.join()
    with gateway_process(repository, workdir / f"idle{nice}") as gateway:
        idle = {"search": [], "upload": []}  # type: ignore[var-annotated]
        for _ in range(20):
            probe_once(gateway.url, query, idle)
    return {"draining": during, "idle": idle}


PROBES = {"search": "image search (web-2mp query)", "upload": "upload (new 0.3 MP photo, no caption)"}


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
    probed = {nice: while_draining(args.repository, few, workdir, query, nice) for nice in (10, 0)}
    return {"machine": machine(), "photos": args.photos, "photo": "camera-5mp (2560x1920 JPEG, quality 90)", "source": source(),
            "repository": str(args.repository), "captions": "3 beams, 20 new tokens (the defaults)",
            "synchronous": sync, "queue": queue,
            "searchable_sooner": round(sync["searchable_s"] / queue["searchable_s"], 2),
            "captioned_queue_over_synchronous": round(queue["captioned_s"] / sync["captioned_s"], 3),
            "probe_photos": args.nice_photos, "probes_ms": probed,
            "p50_ms": {kind: {"idle": p50(probed[10]["idle"][kind] + probed[0]["idle"][kind]),
                              "draining, nice 10": p50(probed[10]["draining"][kind]),
                              "draining, nice 0": p50(probed[0]["draining"][kind])} for kind in ("search", "upload")}}


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
             f"| p50 (ms), {result['probe_photos']} photos' captions draining | idle | queue draining, captioner nice 10 |"
             " queue draining, nice 0 |", "|---|---|---|---|",
             *("| " + " | ".join(str(v) for v in [what, *result["p50_ms"][kind].values()]) + " |"
               for kind, what in PROBES.items())]
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
