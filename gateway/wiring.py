"""Settings -> backends -> the service: the one place that reads Settings to build things, for the
servers and the CLI alike. Backends take no defaults of their own: every default is a Setting's."""

from __future__ import annotations

from pathlib import Path

from .backends.local import LocalInference
from .backends.milvus import MilvusOptions, MilvusStore
from .backends.milvus.connection import is_lite
from .backends.repository import read_model_info
from .backends.spool import FolderSpool
from .backends.triton import TritonInference
from .core.caption_queue import QueueOptions
from .core.errors import ErrorKind, ServiceError
from .core.protocols import EmbeddingModel, Inference, VectorStore
from .core.service import CaptionQueueing, ImageSearchService, Limits
from .runtime.blip_decode import GenerationSettings
from .settings import Settings


def build_inference(settings: Settings) -> Inference:
    caption = GenerationSettings(max_new_tokens=settings.caption_max_new_tokens, num_beams=settings.caption_beams)
    tier_decode = settings.decode == "inference"
    if tier_decode and settings.inference_mode != "triton":
        raise ServiceError(ErrorKind.MISCONFIGURED, "GATEWAY_DECODE=inference decodes uploads on Triton: it needs"
                           " GATEWAY_INFERENCE_MODE=triton (in-process inference decodes in the gateway)")
    if tier_decode and settings.exact_decode:
        raise ServiceError(ErrorKind.MISCONFIGURED, "GATEWAY_EXACT_DECODE applies to the gateway's own decoder:"
                           " unset it, or set GATEWAY_DECODE=gateway")
    if settings.inference_mode == "triton":
        return TritonInference(settings.triton_url, settings.model_repository, settings.captions, caption,
                               timeout_s=settings.triton_timeout_s, retries=settings.triton_retries,
                               tier_decode=tier_decode)
    return LocalInference(settings.model_repository, settings.captions, caption, max_batch=settings.local_max_batch,
                          max_delay_s=settings.local_max_delay_ms / 1000, threads=settings.local_threads,
                          caption_memory_mb=settings.caption_memory_mb, caption_nice=settings.caption_nice)


def build_store(settings: Settings, dim: int, model: EmbeddingModel | None = None) -> MilvusStore:
    """``model``: the checkpoint whose vectors the collection holds (checked against what it records)."""
    return MilvusStore(MilvusOptions(
        uri=settings.milvus_uri, token=settings.milvus_token, collection=settings.collection, index_type=settings.index_type,
        timeout_s=settings.store_timeout_s, hnsw_ef=settings.hnsw_ef, read_consistency=settings.read_consistency,
        flush_after_rows=settings.flush_after_rows, flush_idle_s=settings.flush_idle_s, declared=dict(settings.filter_fields),
        tenant_partitions=settings.tenant_partitions), dim, model)


def build_store_for_repository(settings: Settings) -> VectorStore:
    """The store, for the embedding dimension and model of the repository's CLIP, without loading the
    models (for admin operations such as `image-search migrate`)."""
    info = read_model_info(settings.model_repository, captions=False)
    return build_store(settings, info.embedding_dim, info.embedding_model)


def limits(settings: Settings) -> Limits:
    return Limits(max_upload_bytes=settings.max_upload_bytes, max_request_bytes=settings.max_request_bytes,
                  max_pixels=settings.max_pixels, max_files_per_request=settings.max_files_per_request,
                  max_k=settings.max_k, max_list_limit=settings.max_list_limit,
                  max_embedding_inputs=settings.max_embedding_inputs, max_query_chars=settings.max_query_chars)


def build_service(settings: Settings) -> ImageSearchService:
    """The service with its backends, not yet started (``await service.start()`` connects the store)."""
    inference = build_inference(settings)
    return service_over(settings, inference, build_store(settings, inference.info.embedding_dim, inference.info.embedding_model))


def queue_options(settings: Settings) -> QueueOptions:
    return QueueOptions(batch=settings.caption_batch, lease_s=settings.caption_lease_s, settle_s=settings.caption_settle_s,
                        max_attempts=settings.caption_max_attempts, retry_s=settings.caption_retry_s,
                        poll_s=settings.caption_poll_s)


def caption_inputs(settings: Settings) -> FolderSpool:
    """GATEWAY_CAPTION_SPOOL, or caption-spool/ beside the Milvus Lite file (data/ with a server)."""
    if settings.caption_spool is not None:
        return FolderSpool(settings.caption_spool)
    return FolderSpool((Path(settings.milvus_uri).parent if is_lite(settings.milvus_uri) else Path("data")) / "caption-spool")


def service_over(settings: Settings, inference: Inference, store: VectorStore, worker_here: bool | None = None
                 ) -> ImageSearchService:
    """The service over given backends, with the settings' limits and options; ``worker_here``
    overrides GATEWAY_CAPTION_WORKER."""
    queueing = (CaptionQueueing(caption_inputs(settings), queue_options(settings),
                                settings.caption_worker if worker_here is None else worker_here)
                if settings.captions else None)
    tier = inference if settings.decode == "inference" and isinstance(inference, TritonInference) else None
    return ImageSearchService(inference, store, limits(settings), settings.caption_weight, settings.exact_decode,
                              settings.keyword_search, queueing, tier, settings.filter_fields)
