"""image-search: index folders and query, against the embedded stack or a running gateway.

    image-search index ./photos --with_captions            # embedded: ONNX in-process, Milvus Lite
    image-search --url http://gw:8000 index ./photos       # through a running gateway
    image-search --url grpc://gw:50051 index ./photos      # through its gRPC API (one stream per batch)
    image-search query "man in red jacket" --k 12          # prints a table, writes results.html
    image-search query --image ./photos/cat.jpg --k 5
    image-search query --similar-to 9f2c1e0d4b7a8c6e5f3a2b1c0d9e8f7a   # like a stored image
    image-search export-faiss --index_out index.faiss --meta_out meta.json
    image-search migrate      # rebuild a collection made by an earlier version (writers paused)
    image-search --tenant acme index ./photos     # act for a tenant (embedded; an operator key's X-Tenant)
    image-search tenants                          # every tenant with its count (operators)
    image-search delete-tenant acme --yes         # every image of one tenant (operators)

The starter kit's flags are accepted where they still mean something: --images_dir,
--with_captions, --query, --k (--index_out/--meta_out/--index/--meta are ignored by index and
query: Milvus holds the index; export-faiss writes those files for users who want them). Indexing
is resumable: files whose content is already indexed are skipped without upload.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from ..core.errors import ServiceError
from ..core.filters import parse_json
from ..core.metadata import parse_metadata
from ..settings import Settings
from .clients import Client, EmbeddedClient, HttpClient
from .gallery import print_table, results_html
from .grpc_client import GrpcClient
from .indexing import index_folder


class UsageError(Exception):
    pass


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="image-search", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", help="a running gateway, http://host:8000 or grpc://host:50051 (default: the embedded"
                        " stack, configured by GATEWAY_* settings)")
    parser.add_argument("--api-key", default=os.environ.get("IMAGE_SEARCH_API_KEY"),
                        help="the gateway's API key (default: $IMAGE_SEARCH_API_KEY); index needs the write scope")
    parser.add_argument("--tenant", default=os.environ.get("IMAGE_SEARCH_TENANT") or None,
                        help="the tenant to act for (default: $IMAGE_SEARCH_TENANT; the embedded stack's default tenant,"
                        " or a gateway key's own); through a gateway it is sent as X-Tenant, which operator keys need")
    commands = parser.add_subparsers(dest="command", required=True)
    index = commands.add_parser("index", help="index every image under a folder, recursively")
    index.add_argument("dir", nargs="?", type=Path)
    index.add_argument("--images_dir", type=Path, help="same as DIR (starter-kit flag)")
    captions = index.add_mutually_exclusive_group()
    captions.add_argument("--with_captions", "--with-captions", dest="captions", action="store_const", const=True,
                          help="caption with BLIP (default: GATEWAY_CAPTIONS, on unless disabled)")
    captions.add_argument("--no-captions", dest="captions", action="store_const", const=False,
                          help="skip BLIP for these images (much faster; their captions stay empty)")
    index.add_argument("--wait-for-captions", action="store_true",
                       help="each upload waits for its caption (default: images are searchable once embedded and"
                       " the caption queue captions them; the embedded stack waits for it at the end)")
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
    query.add_argument("--similar-to", metavar="ID", help="images most like a stored one (its id; no upload, no model)")
    query.add_argument("--k", type=int, default=12)
    query.add_argument("--min-score", type=float, help="only hits scoring at least this (image: CLIP cosine; text: fused score)")
    query.add_argument("--filter", default="[]", help='JSON list of conditions, e.g. [{"field": "metadata.album", "value": "x"}]')
    query.add_argument("--out", type=Path, default=Path("results.html"))
    query.add_argument("--index", "--meta", dest="ignored", help=argparse.SUPPRESS)
    export = commands.add_parser("export-faiss", help="write the index as a FAISS file + JSON metadata (embedded stack)")
    export.add_argument("--index_out", type=Path, default=Path("index.faiss"))
    export.add_argument("--meta_out", type=Path, default=Path("meta.json"))
    commands.add_parser("migrate", help="rebuild a collection made by an earlier version (caption queue, tenants,"
                        " GATEWAY_FILTER_FIELDS, BM25 keyword search) on Milvus directly; pause writers first")
    commands.add_parser("tenants", help="every tenant holding images, with its count (operators)")
    delete_tenant = commands.add_parser("delete-tenant", help="delete every image of one tenant (operators, admin scope)")
    delete_tenant.add_argument("name")
    delete_tenant.add_argument("--yes", action="store_true", help="needed: the deletion cannot be undone")
    return parser.parse_args(argv)


async def export_faiss(client: EmbeddedClient, index_out: Path, meta_out: Path) -> int:
    """The whole collection as a FAISS inner-product index (vectors are L2-normalised: cosine) plus a
    JSON list whose position i describes FAISS row i."""
    import faiss
    import numpy as np

    records = await client.all_records()
    index = faiss.IndexFlatIP(client.embedding_dim)
    if records:
        index.add(np.stack([r.vector for r in records if r.vector is not None]).astype(np.float32))
    faiss.write_index(index, str(index_out))
    meta = [{"row": i, "id": r.id, "tenant": r.tenant, "source": r.source, "caption": r.caption, "metadata": r.metadata,
             "created_at": r.created_at, "phash": r.phash} for i, r in enumerate(records)]
    meta_out.write_text(json.dumps(meta, ensure_ascii=False, indent=1))
    return len(records)


async def migrate(settings: Settings) -> int:
    """Bring the configured collection to the current schema (no model runs)."""
    from ..wiring import build_store_for_repository

    store = build_store_for_repository(settings)
    try:
        copied = await store.migrate()
        features = store.capabilities.keyword_search.describe()
        if copied is None:
            print(f"nothing to do: collection {settings.collection!r} has the current schema (keyword search {features})")
        else:
            print(f"copied {copied} records into collection {settings.collection!r} (keyword search {features})")
        return 0
    finally:
        await store.close()


async def embedded_client(settings: Settings, tenant: str | None) -> EmbeddedClient:
    from ..wiring import build_service

    service = build_service(settings)
    await service.start()
    service.start_worker()  # (GATEWAY_CAPTION_WORKER; only `index` has one: see run)
    return EmbeddedClient(service, tenant)


def remote_client(url: str, api_key: str | None, tenant: str | None) -> Client:
    if url.startswith("grpc://"):
        return GrpcClient(url.removeprefix("grpc://").rstrip("/"), api_key, tenant)
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--url takes http://, https:// or grpc:// addresses, not {url!r}")
    return HttpClient(url, api_key, tenant)


async def tenants_command(client: Client, args: argparse.Namespace) -> int:
    if args.command == "delete-tenant":
        if not args.yes:
            raise UsageError(f"deleting every image of tenant {args.name!r} cannot be undone: add --yes")
        print(f"deleted {await client.delete_tenant(args.name)} images of tenant {args.name!r}")
        return 0
    tenants = await client.tenants()
    width = max((len(name) for name in tenants), default=6)
    print(f"{'tenant':<{width}}  images")
    for name, count in tenants.items():
        print(f"{name:<{width}}  {count}")
    return 0


async def index_command(client: Client, args: argparse.Namespace, max_pixels: int) -> int:
    root = args.dir or args.images_dir
    if root is None or not root.is_dir():
        raise UsageError(f"not a folder: {root}")
    start = time.perf_counter()
    summary = await index_folder(client, root, parse_metadata(args.metadata), args.batch_size, args.near_duplicates,
                                 args.phash_distance, args.concurrency, args.captions, max_pixels,
                                 wait_for_caption=args.wait_for_captions)
    searchable = time.perf_counter() - start
    for name, reason in summary.failed:
        print(f"failed: {name}: {reason}", file=sys.stderr)
    for name, of, distance in summary.near_duplicates:
        print(f"near-duplicate: {name} ~ {of} ({distance} bits apart)"
              + (", skipped" if args.near_duplicates == "skip" else ""), file=sys.stderr)
    print(f"indexed {len(summary.indexed)}, already indexed {len(summary.skipped)}, near-duplicates "
          f"{len(summary.near_duplicates)}, failed {len(summary.failed)} in {searchable:.1f}s (searchable)")
    if summary.captions_pending:
        captioned = await client.finish_captions(progress=True)
        print(f"{captioned} in {time.perf_counter() - start:.1f}s in all" if captioned else
              f"{summary.captions_pending} captions queued: the gateway writes them (GET /readyz: features.captions)")
    return 1 if summary.failed and not summary.indexed and not summary.skipped else 0


FILTER_EXAMPLE = """--filter '[{"field": "metadata.album", "value": "holiday"}]'"""


async def query_command(client: Client, args: argparse.Namespace) -> int:
    try:
        conditions = parse_json(args.filter)
    except ServiceError as exc:
        raise ServiceError(exc.kind, f"--filter: {exc.message} (e.g. {FILTER_EXAMPLE})", exc.code) from None
    text = args.text or args.query_flag
    if args.similar_to:
        hits = await client.similar(args.similar_to, args.k, conditions, args.min_score)
        title = f"images like {args.similar_to}"
    elif args.image:
        hits = await client.search_image(args.image.read_bytes(), args.k, conditions, args.min_score)
        title = f"images like {args.image}"
    elif text:
        hits = list(await client.search_text(text, args.k, conditions, args.min_score))
        title = f"“{text}”"
    else:
        raise UsageError("give a query text, --image PATH or --similar-to ID")
    print_table(hits)
    thumbnails = {hit.record.id: await client.thumbnail(hit.record.id) for hit in hits}  # stored at index time
    args.out.write_text(results_html(title, hits, thumbnails))
    print(f"wrote {args.out}")
    return 0


async def run(args: argparse.Namespace) -> int:
    if args.url and args.command in ("export-faiss", "migrate"):
        raise UsageError(f"{args.command} works on Milvus directly: drop --url and set GATEWAY_MILVUS_URI instead")
    # embedded --no-captions does not even load BLIP; --with_captions loads it whatever GATEWAY_CAPTIONS says
    captions = getattr(args, "captions", None)
    settings = Settings(captions=captions) if captions is not None and not args.url else Settings()
    if args.command != "index":  # only indexing waits for the captions it queued
        settings = settings.model_copy(update={"caption_worker": False})
    if args.command == "migrate":
        return await migrate(settings)
    client = remote_client(args.url, args.api_key, args.tenant) if args.url else await embedded_client(settings, args.tenant)
    try:
        if args.command == "index":
            return await index_command(client, args, settings.max_pixels)
        if args.command in ("tenants", "delete-tenant"):
            return await tenants_command(client, args)
        if args.command == "export-faiss":
            assert isinstance(client, EmbeddedClient)
            count = await export_faiss(client, args.index_out, args.meta_out)
            print(f"wrote {count} vectors to {args.index_out} and their metadata to {args.meta_out}")
            return 0

        return await query_command(client, args)
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except ServiceError as exc:  # the service's refusal, with the code the HTTP and gRPC APIs give
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 2
    except (UsageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
