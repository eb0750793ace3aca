"""image-search: index folders and query, against the embedded stack or a running gateway.

    image-search index ./photos --with_captions            # embedded: ONNX in-process, Milvus Lite
    image-search index ./photos --url http://gw:8000       # through a running gateway
    image-search query "man in red jacket" --k 12          # prints a table, writes results.html
    image-search query --image ./photos/cat.jpg --k 5
    image-search export-faiss --index_out index.faiss --meta_out meta.json

The starter kit's flags are accepted where they still mean something: --images_dir,
--with_captions, --query, --k (--index_out/--meta_out/--index/--meta are ignored by index and
query: Milvus holds the index; export-faiss writes those files for users who want them). Indexing is resumable: files whose content is already indexed are skipped without upload.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import html
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .settings import Settings
from .store import content_id

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}


def image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class CliError(Exception):
    pass


class HttpBackend:
    """The gateway's HTTP API."""

    def __init__(self, url: str, api_key: str | None = None):
        headers = {"X-API-Key": api_key} if api_key else None
        self.client = httpx.AsyncClient(base_url=url.rstrip("/"), timeout=600, headers=headers)

    async def exists(self, image_id: str) -> bool:
        return (await self.client.get(f"/v1/images/{image_id}")).status_code == 200

    async def index(self, files: list[tuple[str, bytes]], metadata: dict) -> list[dict]:
        response = await self.client.post("/v1/images", files=[("files", (n, d, "application/octet-stream")) for n, d in files],
                                          data={"metadata": json.dumps(metadata)})
        if response.status_code >= 400:
            raise CliError(response.json().get("error", {}).get("message", response.text))
        return response.json()["images"]

    async def search_image(self, data: bytes, k: int, conditions: list) -> list[dict]:
        response = await self.client.post("/v1/search/image", files={"file": ("query", data, "application/octet-stream")},
                                          data={"k": str(k), "filter": json.dumps(conditions)})
        if response.status_code >= 400:
            raise CliError(response.json().get("error", {}).get("message", response.text))
        return response.json()["results"]

    async def search_text(self, query: str, k: int, conditions: list) -> list[dict]:
        response = await self.client.post("/v1/search/text", json={"query": query, "k": k, "filters": conditions})
        if response.status_code >= 400:
            raise CliError(response.json().get("error", {}).get("message", response.text))
        return response.json()["results"]

    async def close(self) -> None:
        await self.client.aclose()


class EmbeddedBackend:
    """The same service functions the gateway runs, in this process (in-process ONNX Runtime + Milvus)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.inference = self.store = None

    async def start(self) -> None:
        from .inference import create_inference
        from .store import VectorStore

        self.inference = create_inference(self.settings)
        self.store = VectorStore(self.settings, self.inference.info.embedding_dim)
        await self.store.start()

    async def exists(self, image_id: str) -> bool:
        return bool(await self.store.get([image_id]))

    async def index(self, files: list[tuple[str, bytes]], metadata: dict) -> list[dict]:
        from . import service
        from .api import ImageOut
        from .errors import GatewayError
        from .preprocess import ImageError

        try:
            done = await service.index_images(files, metadata, self.inference, self.store, self.settings.max_pixels,
                                              self.settings.captions)
        except (ImageError, GatewayError) as exc:
            raise CliError(str(exc)) from exc
        return [{**ImageOut.of(d.record).model_dump(), "created": d.created} for d in done]

    async def search_image(self, data: bytes, k: int, conditions: list) -> list[dict]:
        from . import service
        from .api import hit
        from .filters import CONDITIONS, render

        from .preprocess import ImageError

        try:
            hits = await service.search_image(data, k, render(CONDITIONS.validate_python(conditions)), self.inference,
                                              self.store, self.settings.max_pixels)
        except ImageError as exc:
            raise CliError(str(exc)) from exc
        return [hit(r, s).model_dump() for r, s in hits]

    async def search_text(self, query: str, k: int, conditions: list) -> list[dict]:
        from . import service
        from .filters import CONDITIONS, render

        hits = await service.search_text(query, k, render(CONDITIONS.validate_python(conditions)), self.inference,
                                         self.store, self.settings.caption_weight, self.settings.max_k)
        return [{"id": h.record.id, "score": h.score, "caption": h.record.caption, "source": h.record.source,
                 "metadata": h.record.metadata, "clip_score": h.clip_score, "caption_match": h.caption_match}
                for h in hits]

    async def export_faiss(self, index_out: Path, meta_out: Path) -> int:
        """The whole collection as a FAISS inner-product index (vectors are L2-normalised: cosine)
        plus a JSON list whose position i describes FAISS row i."""
        import faiss
        import numpy as np

        records = await self.store.all_records()
        vectors = np.stack([r.vector for r in records]).astype(np.float32) if records else np.zeros((0, 1), np.float32)
        index = faiss.IndexFlatIP(self.inference.info.embedding_dim)
        if records:
            index.add(vectors)
        faiss.write_index(index, str(index_out))
        meta = [{"row": i, "id": r.id, "source": r.source, "caption": r.caption, "metadata": r.metadata,
                 "created_at": r.created_at, "phash": r.phash} for i, r in enumerate(records)]
        meta_out.write_text(json.dumps(meta, ensure_ascii=False, indent=1))
        return len(records)

    async def close(self) -> None:
        if self.inference is not None:
            await self.inference.close()
        if self.store is not None:
            await self.store.close()


@dataclass
class IndexSummary:
    indexed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already indexed (same bytes)
    near_duplicates: list[tuple[str, str, int]] = field(default_factory=list)  # file, of, pHash distance
    failed: list[tuple[str, str]] = field(default_factory=list)  # file, reason


async def find_near_duplicate(backend, data: bytes, max_distance: int) -> tuple[str, int] | None:
    """(source, pHash distance) of an indexed near-duplicate: CLIP proposes the 10 most similar
    images, the perceptual hash decides (resized or recompressed copies: 0 bits; small crops: a
    few; different photos: 20+ of 64)."""
    import imagehash

    from .preprocess import ImageError, decode_image

    try:
        own = imagehash.phash(decode_image(data))
    except ImageError as exc:
        raise CliError(str(exc)) from exc
    candidates = [(own - imagehash.hex_to_hash(hit["phash"]), hit["source"])
                  for hit in await backend.search_image(data, 10, []) if hit.get("phash")]
    best = min(candidates, default=None)
    return (best[1], best[0]) if best and best[0] <= max_distance else None


async def index_folder(backend, root: Path, metadata: dict, batch_size: int, near_duplicates: str | None,
                       phash_distance: int = 10, concurrency: int = 2, progress: bool = True) -> IndexSummary:
    """Index every image under ``root``: up to ``concurrency`` batches in flight (one when looking for
    near-duplicates, so that copies within one run are compared with what was just indexed)."""
    from tqdm import tqdm

    summary = IndexSummary()
    paths = image_files(root)
    bar = tqdm(total=len(paths), unit="img", disable=not progress, file=sys.stderr)
    slots = asyncio.Semaphore(1 if near_duplicates else max(1, concurrency))
    in_flight: set[asyncio.Task] = set()

    async def send(batch: list[tuple[str, bytes]]) -> None:
        try:
            try:
                results = await backend.index(batch, metadata)
                summary.indexed += [r["source"] for r in results if r["created"]]
                summary.skipped += [r["source"] for r in results if not r["created"]]
            except CliError:  # one bad file fails a batch: retry one by one to name it
                for name, data in batch:
                    try:
                        result = (await backend.index([(name, data)], metadata))[0]
                        (summary.indexed if result["created"] else summary.skipped).append(result["source"])
                    except CliError as exc:
                        summary.failed.append((name, str(exc)))
            bar.update(len(batch))
        finally:
            slots.release()

    async def flush(batch: list[tuple[str, bytes]]) -> None:
        if batch:
            await slots.acquire()  # bounds the files held in memory, too
            task = asyncio.create_task(send(batch))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            if near_duplicates:
                await task

    pending: list[tuple[str, bytes]] = []
    for path in paths:
        name = str(path.resolve())
        try:
            data = path.read_bytes()
        except OSError as exc:
            summary.failed.append((name, str(exc)))
            bar.update(1)
            continue
        if await backend.exists(content_id(data)):
            summary.skipped.append(name)
            bar.update(1)
            continue
        if near_duplicates:
            try:
                match = await find_near_duplicate(backend, data, phash_distance)
            except CliError as exc:
                summary.failed.append((name, str(exc)))
                bar.update(1)
                continue
            if match:
                summary.near_duplicates.append((name, *match))
                if near_duplicates == "skip":
                    bar.update(1)
                    continue
        pending.append((name, data))
        if len(pending) >= batch_size:
            await flush(pending)
            pending = []
    await flush(pending)
    await asyncio.gather(*in_flight)
    bar.close()
    return summary


def thumbnail_uri(source: str, size: int = 192) -> str | None:
    from PIL import Image

    try:
        with Image.open(source) as image:
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, "JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
    except (OSError, ValueError):
        return None


def results_html(title: str, results: list[dict]) -> str:
    """A self-contained gallery (thumbnails inlined): opens from disk, no server needed."""
    cards = []
    for rank, r in enumerate(results, 1):
        uri = thumbnail_uri(r["source"])
        image = f'<img src="{uri}" alt="">' if uri else '<div class="missing">no local file</div>'
        cards.append(f'<figure>{image}<figcaption><b>#{rank}</b> score {r["score"]:.4f}<br>{html.escape(r["caption"])}'
                     f'<br><small>{html.escape(r["source"])}</small></figcaption></figure>')
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body{{font-family:system-ui,sans-serif;margin:1.5rem}} main{{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:1rem}}
figure{{margin:0;border:1px solid #ddd;border-radius:8px;padding:.5rem}} img{{width:100%;height:192px;object-fit:contain;background:#f4f4f4}}
.missing{{height:192px;display:flex;align-items:center;justify-content:center;background:#f4f4f4;color:#888}}
figcaption{{font-size:.85rem;margin-top:.4rem;word-break:break-word}}</style></head>
<body><h1>{html.escape(title)}</h1><main>{''.join(cards)}</main></body></html>"""


def print_table(results: list[dict]) -> None:
    print(f"{'#':>3}  {'score':>7}  {'caption':<50}  source")
    for rank, r in enumerate(results, 1):
        print(f"{rank:>3}  {r['score']:>7.4f}  {r['caption'][:50]:<50}  {r['source']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="image-search", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running gateway (default: the embedded stack, configured by GATEWAY_* settings)")
    parser.add_argument("--api-key", default=os.environ.get("IMAGE_SEARCH_API_KEY"),
                        help="the gateway's API key (default: $IMAGE_SEARCH_API_KEY); index needs the write scope")
    commands = parser.add_subparsers(dest="command", required=True)
    index = commands.add_parser("index", help="index every image under a folder, recursively")
    index.add_argument("dir", nargs="?", type=Path)
    index.add_argument("--images_dir", type=Path, help="same as DIR (starter-kit flag)")
    index.add_argument("--with_captions", action="store_true", help="caption with BLIP (the default unless --no-captions)")
    index.add_argument("--no-captions", action="store_true", help="embedded mode: skip BLIP (much faster)")
    index.add_argument("--metadata", default="{}", help="JSON object stored with every image")
    index.add_argument("--batch-size", type=int, default=8)
    index.add_argument("--concurrency", type=int, default=2, help="batches in flight at once")
    index.add_argument("--near-duplicates", choices=["report", "skip"],
                       help="find near-duplicates of indexed images (CLIP candidates, perceptual hash decides)")
    index.add_argument("--phash-distance", type=int, default=10, help="near-duplicate: at most this many of 64 bits differ")
    index.add_argument("--index_out", "--meta_out", dest="ignored", help=argparse.SUPPRESS)
    query = commands.add_parser("query", help="text or image query: prints a table and writes results.html")
    query.add_argument("text", nargs="?")
    query.add_argument("--query", dest="query_flag", help="same as TEXT (starter-kit flag)")
    query.add_argument("--image", type=Path, help="query by image instead of text")
    query.add_argument("--k", type=int, default=12)
    query.add_argument("--filter", default="[]", help='JSON list of conditions, e.g. [{"field": "metadata.album", "value": "x"}]')
    query.add_argument("--out", type=Path, default=Path("results.html"))
    query.add_argument("--index", "--meta", dest="ignored", help=argparse.SUPPRESS)
    export = commands.add_parser("export-faiss", help="write the index as a FAISS file + JSON metadata (embedded stack)")
    export.add_argument("--index_out", type=Path, default=Path("index.faiss"))
    export.add_argument("--meta_out", type=Path, default=Path("meta.json"))
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    if args.url and args.command == "export-faiss":
        raise CliError("export-faiss reads Milvus directly: drop --url and set GATEWAY_MILVUS_URI instead")
    if args.url:
        backend = HttpBackend(args.url, args.api_key)
    else:
        settings = Settings(captions=not getattr(args, "no_captions", False))
        backend = EmbeddedBackend(settings)
        await backend.start()
    try:
        if args.command == "index":
            root = args.dir or args.images_dir
            if root is None or not root.is_dir():
                raise CliError(f"not a folder: {root}")
            start = time.perf_counter()
            summary = await index_folder(backend, root, json.loads(args.metadata), args.batch_size, args.near_duplicates,
                                         args.phash_distance, args.concurrency)
            for name, reason in summary.failed:
                print(f"failed: {name}: {reason}", file=sys.stderr)
            for name, of, distance in summary.near_duplicates:
                print(f"near-duplicate: {name} ~ {of} ({distance} bits apart)"
                      + (", skipped" if args.near_duplicates == "skip" else ""), file=sys.stderr)
            print(f"indexed {len(summary.indexed)}, already indexed {len(summary.skipped)}, near-duplicates "
                  f"{len(summary.near_duplicates)}, failed {len(summary.failed)} in {time.perf_counter() - start:.1f}s")
            return 1 if summary.failed and not summary.indexed and not summary.skipped else 0
        if args.command == "export-faiss":
            count = await backend.export_faiss(args.index_out, args.meta_out)
            print(f"wrote {count} vectors to {args.index_out} and their metadata to {args.meta_out}")
            return 0
        conditions = json.loads(args.filter)
        text = args.text or args.query_flag
        if args.image:
            results = await backend.search_image(args.image.read_bytes(), args.k, conditions)
            title = f"images like {args.image}"
        elif text:
            results = await backend.search_text(text, args.k, conditions)
            title = f"“{text}”"
        else:
            raise CliError("give a query text or --image PATH")
        print_table(results)
        args.out.write_text(results_html(title, results))
        print(f"wrote {args.out}")
        return 0
    finally:
        await backend.close()


def main(argv: list[str] | None = None) -> int:
    from .errors import GatewayError

    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except (CliError, GatewayError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
