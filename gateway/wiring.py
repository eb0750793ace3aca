"""Settings -> backends -> the service: the one place that reads Settings to build things, for the
servers and the CLI alike."""

from __future__ import annotations

from .backends.local import LocalInference
from .backends.milvus import MilvusStore
from .backends.triton import TritonInference
from .core.protocols import Inference
from .core.service import ImageSearchService, Limits
from .runtime.blip_decode import GenerationSettings
from .settings import Settings


def build_inference(settings: Settings) -> Inference:
    caption = GenerationSettings(max_new_tokens=settings.caption_max_new_tokens, num_beams=settings.caption_beams)
    if settings.inference_mode == "triton":
        return TritonInference(settings.triton_url, settings.model_repository, settings.captions, caption,
                               settings.triton_timeout_s, settings.triton_retries)
    return LocalInference(settings.model_repository, settings.captions, caption, settings.local_max_batch,
                          settings.local_max_delay_ms / 1000, settings.local_threads, settings.caption_memory_mb)


def build_store(settings: Settings, dim: int) -> MilvusStore:
    return MilvusStore(settings.milvus_uri, dim, settings.collection, settings.milvus_token, settings.index_type,
                       settings.store_timeout_s, settings.hnsw_ef, settings.read_consistency, settings.flush_after_rows,
                       settings.flush_idle_s)


def limits(settings: Settings) -> Limits:
    return Limits(max_upload_bytes=settings.max_upload_bytes, max_request_bytes=settings.max_request_bytes,
                  max_pixels=settings.max_pixels,
                  max_files_per_request=settings.max_files_per_request, max_k=settings.max_k,
                  max_embedding_inputs=settings.max_embedding_inputs)


def build_service(settings: Settings) -> ImageSearchService:
    """The service with its backends, not yet started (``await service.start()`` connects the store)."""
    inference = build_inference(settings)
    return ImageSearchService(inference, build_store(settings, inference.info.embedding_dim), limits(settings),
                              settings.caption_weight, settings.exact_decode, settings.keyword_search)
