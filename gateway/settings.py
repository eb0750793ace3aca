"""Every setting of the gateway, typed, from the environment (prefix GATEWAY_) or a .env file.

Read by the server and the CLI; gateway.wiring turns them into backends and the service (backends
themselves take plain arguments). The original service's names CLIP_MODEL and BLIP_MODEL are
honoured as they are (no prefix).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, TypeAdapter, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .core.declared import FieldType, check_declarations
from .core.records import TENANT_PATTERN
from .runtime.blip_decode import DECODE_MEMORY_MB
from .runtime.checkpoints import DEFAULT_BLIP_MODEL, DEFAULT_CLIP_MODEL
from .runtime.preprocess import DEFAULT_MAX_PIXELS

ScopeName = Literal["search", "write", "admin"]
SCOPES = ("search", "write", "admin")


class ApiKey(BaseModel):
    """One API key as configured: its SHA-256, never the key (see gateway.server.access)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="shown in logs instead of the key")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: list[ScopeName] = Field(min_length=1)
    rate_per_s: float | None = Field(None, ge=0, description="this key's rate limit (None: rate_limit_per_s; 0: none)")
    burst: int | None = Field(None, ge=1)
    tenant: str | None = Field(None, pattern=TENANT_PATTERN, description="the tenant whose records the key sees and"
                               " changes (None: the default tenant, or, for an operator key, the one each request names)")
    operator: bool = Field(False, description="acts for the tenant each request names (X-Tenant) and may list, count and"
                           " delete tenants")

    @model_validator(mode="after")
    def _bound_or_operator(self) -> ApiKey:
        if self.operator and self.tenant is not None:
            raise ValueError("an operator key acts for the tenant each request names: give it no tenant")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_file=".env", extra="ignore")

    # models: what `make serve` exports into the repository; the gateway serves the repository and
    # warns at start-up when it was exported from other models than these
    clip_model: str = Field(DEFAULT_CLIP_MODEL, validation_alias=AliasChoices("CLIP_MODEL", "GATEWAY_CLIP_MODEL"))
    blip_model: str = Field(DEFAULT_BLIP_MODEL, validation_alias=AliasChoices("BLIP_MODEL", "GATEWAY_BLIP_MODEL"))
    # CLIP_MODEL's own text tower when unset; else a sentence-transformers tower in its space (export --text-model)
    text_model: str | None = Field(None, validation_alias=AliasChoices("TEXT_MODEL", "GATEWAY_TEXT_MODEL"))
    model_repository: Path = Path("model_repository")

    # inference
    inference_mode: Literal["local", "triton"] = "local"
    triton_url: str = "localhost:8001"
    triton_timeout_s: float = Field(30.0, gt=0, description="deadline of one Triton call")
    triton_retries: int = Field(2, ge=0, description="retries of a Triton call that failed UNAVAILABLE")
    local_max_batch: int = Field(16, ge=1, description="in-process micro-batcher: largest batch")
    local_max_delay_ms: float = Field(5.0, ge=0, description="in-process micro-batcher: longest wait for a batch")
    local_threads: int = Field(0, ge=0, description="onnxruntime intra-op threads (0 = all cores)")
    captions: bool = Field(True, description="caption images with BLIP when indexing and in /embed-image/")
    caption_beams: int = Field(3, ge=1, le=16)
    caption_max_new_tokens: int = Field(20, ge=1, le=128)
    caption_memory_mb: int = Field(DECODE_MEMORY_MB, ge=64, description="in-process BLIP: keys/values one decode loop may hold"
                                   " (larger batches decode in several loops)")
    caption_nice: int = Field(10, ge=0, le=19, description="in-process BLIP's threads run at this nice level, so that"
                              " queued captions yield the CPU to uploads and searches (0: same as everything else)")

    # the caption queue (gateway.core.caption_queue): uploads answer once embedded, captions follow
    caption_worker: bool = Field(True, description="a caption worker runs in this gateway (false: only"
                                 " `python -m gateway.captioner` processes caption)")
    caption_spool: Path | None = Field(None, description="where BLIP's input waits for its caption, shared by every"
                                       " gateway and captioner (None: caption-spool/ beside the Milvus Lite file, or"
                                       " data/caption-spool with a server)")
    caption_batch: int = Field(8, ge=1, le=256, description="records a worker claims and captions at a time (the next"
                               " batch is claimed while one is captioned: raise it where a batch captions faster than"
                               " GATEWAY_CAPTION_SETTLE_S, e.g. on a GPU)")
    caption_lease_s: float = Field(600, gt=0, description="how long a claim holds: a killed worker's records are"
                                   " due again after this; it must exceed a batch's captioning time")
    caption_settle_s: float = Field(3, gt=0, description="the wait between claiming records and checking the claim;"
                                    " must exceed a claim's read + write time (slower claims are dropped)")
    caption_max_attempts: int = Field(5, ge=1, description="caption attempts before a record is marked failed")
    caption_retry_s: float = Field(10, ge=0, description="wait after a failed attempt; x3 after each further one")
    caption_poll_s: float = Field(1, gt=0, description="an idle worker's wait between looks at the queue")

    # vector store
    milvus_uri: str = Field("data/images.db", description="a Milvus Lite file, or http://host:19530 for a server")
    milvus_token: str = ""
    collection: str = "images"
    index_type: Literal["auto", "FLAT", "IVF_FLAT", "HNSW"] = "auto"  # auto: FLAT on Lite, HNSW on servers
    store_timeout_s: float = Field(10.0, gt=0)
    hnsw_ef: int = Field(512, ge=1, le=32768, description="HNSW search breadth (at least k): every search of a tenant is a"
                         " filtered one, which needs a wider search than an unfiltered one: at 1M, the largest tenant's"
                         " recall@10 is 0.94 at 256, 0.97 at 512 (bench/vector_tier.py)")
    flush_after_rows: int = Field(10_000, ge=0, description="flush once this many rows were written and writes paused"
                                  " (bulk loads: sealed segments get indexed now, not after Milvus's idle timeout); 0: never")
    flush_idle_s: float = Field(5.0, gt=0, description="the pause in writes that counts as the end of a bulk load")
    tenant_partitions: int = Field(16, ge=1, le=1024, description="on a Milvus server, the partitions the tenant partition"
                                   " key spreads tenants over (a tenant's search reads one); fixed when a collection is made")
    filter_fields: dict[str, FieldType] = Field(default_factory=dict, description='declared filter fields, e.g. {"album":'
                                                ' "keyword", "year": "integer"}: metadata keys kept as typed, indexed fields'
                                                " (keyword, integer, float, boolean, keyword_list) for fast filters")
    read_consistency: Literal["Session", "Strong"] = Field(
        "Session", description="Session: each replica reads its own writes at once (3 ms a search on a server); Strong: every"
        " replica sees every acknowledged write, at the cost of a server time tick per read (~200 ms)")

    # HTTP (and the address gRPC listens on)
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    forwarded_allow_ips: str = Field("127.0.0.1", description="proxies whose X-Forwarded-For gives the client address")
    shutdown_grace_s: int = Field(30, ge=0, description="how long shutdown waits for in-flight requests")
    log_level: str = "INFO"

    # gRPC (gateway.server.grpc): the same API, keys and limits as HTTP, served by the same process
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC API port (0: no gRPC server)")

    # access (gateway.server.access): keys as JSON lists of ApiKey, inline or in a file (a mounted Secret)
    api_keys: list[ApiKey] = Field(default_factory=list)
    api_keys_file: Path | None = None
    anonymous_scopes: list[ScopeName] | None = Field(
        None, description="scopes of callers without a key (None: every scope when no key is configured, else none)")
    rate_limit_per_s: float = Field(0, ge=0, description="requests/s per key (0: unlimited)")
    anonymous_rate_limit_per_s: float = Field(0, ge=0, description="requests/s per anonymous client address (0: unlimited)")
    rate_limit_burst: int = Field(20, ge=1, description="requests a client may make at once before the rate applies")
    cors_origins: list[str] = Field(default_factory=list, description='origins allowed to call from browsers, or ["*"]')
    max_request_bytes: int = Field(64 * 1024 * 1024, ge=1, description="largest request body, checked before parsing")

    # requests
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1)
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)
    decode: Literal["gateway", "inference"] = Field(
        "gateway", description="where uploads are decoded and resized: here, or (inference) on Triton, which decodes"
        " JPEGs with nvImageCodec (the GPU's JPEG decoder) after python -m export decode; other formats and JPEGs with a"
        " colour profile to apply stay here. Needs GATEWAY_INFERENCE_MODE=triton")
    exact_decode: bool = Field(False, description="decode uploads at full size (as the export's parity gate does)"
                               " instead of at the smallest scale that gives each model twice its input size")
    max_files_per_request: int = Field(64, ge=1)
    max_embedding_inputs: int = Field(256, ge=1, description="texts and images in one POST /v1/embeddings")
    max_k: int = Field(1000, ge=1)
    max_list_limit: int = Field(1000, ge=1, description="largest page of GET /v1/images (limit) and ListImages (page_size)")
    max_query_chars: int = Field(1000, ge=1, description="longest text search query, or text to embed")
    caption_weight: float = Field(0.1, ge=0, description="text search: weight of caption word overlap in the score")
    keyword_search: bool = Field(True, description="text search also finds captions by their words (BM25, fused with"
                                 " CLIP by reciprocal rank) where Milvus has full-text search (2.5+, Milvus Lite)")

    @field_validator("filter_fields")
    @classmethod
    def _declarations(cls, value: dict[str, str]) -> dict[str, str]:
        return check_declarations(value)

    def all_api_keys(self) -> list[ApiKey]:
        from_file = (TypeAdapter(list[ApiKey]).validate_json(self.api_keys_file.read_bytes())
                     if self.api_keys_file else [])
        return self.api_keys + from_file
