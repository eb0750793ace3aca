from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Image(_message.Message):
    __slots__ = ("id", "caption", "source", "metadata", "created_at", "phash", "embedding", "caption_state", "caption_error")
    ID_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    PHASH_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    CAPTION_STATE_FIELD_NUMBER: _ClassVar[int]
    CAPTION_ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    caption: str
    source: str
    metadata: _struct_pb2.Struct
    created_at: int
    phash: str
    embedding: _containers.RepeatedScalarFieldContainer[float]
    caption_state: str
    caption_error: str
    def __init__(self, id: _Optional[str] = ..., caption: _Optional[str] = ..., source: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., created_at: _Optional[int] = ..., phash: _Optional[str] = ..., embedding: _Optional[_Iterable[float]] = ..., caption_state: _Optional[str] = ..., caption_error: _Optional[str] = ...) -> None: ...

class EmbedImageRequest(_message.Message):
    __slots__ = ("image",)
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    def __init__(self, image: _Optional[bytes] = ...) -> None: ...

class EmbedImageResponse(_message.Message):
    __slots__ = ("description", "embedding")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    description: str
    embedding: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, description: _Optional[str] = ..., embedding: _Optional[_Iterable[float]] = ...) -> None: ...

class IndexImagesRequest(_message.Message):
    __slots__ = ("image", "name", "metadata_struct", "metadata_json", "captions", "wait_for_caption")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_STRUCT_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    CAPTIONS_FIELD_NUMBER: _ClassVar[int]
    WAIT_FOR_CAPTION_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    name: str
    metadata_struct: _struct_pb2.Struct
    metadata_json: str
    captions: bool
    wait_for_caption: bool
    def __init__(self, image: _Optional[bytes] = ..., name: _Optional[str] = ..., metadata_struct: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., metadata_json: _Optional[str] = ..., captions: _Optional[bool] = ..., wait_for_caption: _Optional[bool] = ...) -> None: ...

class IndexedImage(_message.Message):
    __slots__ = ("image", "created")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    image: Image
    created: bool
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class IndexImagesResponse(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[IndexedImage]
    def __init__(self, images: _Optional[_Iterable[_Union[IndexedImage, _Mapping]]] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("field", "op", "value")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    field: str
    op: str
    value: _struct_pb2.Value
    def __init__(self, field: _Optional[str] = ..., op: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class SearchImageRequest(_message.Message):
    __slots__ = ("image", "k", "filters", "min_score")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    k: int
    filters: _containers.RepeatedCompositeFieldContainer[Condition]
    min_score: float
    def __init__(self, image: _Optional[bytes] = ..., k: _Optional[int] = ..., filters: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., min_score: _Optional[float] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("image", "score")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    image: Image
    score: float
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., score: _Optional[float] = ...) -> None: ...

class SearchImageResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Hit]
    def __init__(self, results: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ...) -> None: ...

class SearchSimilarRequest(_message.Message):
    __slots__ = ("id", "k", "filters", "min_score")
    ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    id: str
    k: int
    filters: _containers.RepeatedCompositeFieldContainer[Condition]
    min_score: float
    def __init__(self, id: _Optional[str] = ..., k: _Optional[int] = ..., filters: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., min_score: _Optional[float] = ...) -> None: ...

class SearchTextRequest(_message.Message):
    __slots__ = ("query", "k", "filters", "min_score")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    query: str
    k: int
    filters: _containers.RepeatedCompositeFieldContainer[Condition]
    min_score: float
    def __init__(self, query: _Optional[str] = ..., k: _Optional[int] = ..., filters: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., min_score: _Optional[float] = ...) -> None: ...

class TextHit(_message.Message):
    __slots__ = ("image", "score", "clip_score", "caption_match", "keyword_score", "rank_score")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CLIP_SCORE_FIELD_NUMBER: _ClassVar[int]
    CAPTION_MATCH_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_SCORE_FIELD_NUMBER: _ClassVar[int]
    RANK_SCORE_FIELD_NUMBER: _ClassVar[int]
    image: Image
    score: float
    clip_score: float
    caption_match: float
    keyword_score: float
    rank_score: float
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., score: _Optional[float] = ..., clip_score: _Optional[float] = ..., caption_match: _Optional[float] = ..., keyword_score: _Optional[float] = ..., rank_score: _Optional[float] = ...) -> None: ...

class SearchTextResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[TextHit]
    def __init__(self, results: _Optional[_Iterable[_Union[TextHit, _Mapping]]] = ...) -> None: ...

class GetImageRequest(_message.Message):
    __slots__ = ("id", "include_embedding")
    ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    id: str
    include_embedding: bool
    def __init__(self, id: _Optional[str] = ..., include_embedding: _Optional[bool] = ...) -> None: ...

class GetThumbnailRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class Thumbnail(_message.Message):
    __slots__ = ("jpeg",)
    JPEG_FIELD_NUMBER: _ClassVar[int]
    jpeg: bytes
    def __init__(self, jpeg: _Optional[bytes] = ...) -> None: ...

class DeleteImageRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListImagesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListImagesResponse(_message.Message):
    __slots__ = ("images", "next_page_token", "total_size")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    next_page_token: str
    total_size: int
    def __init__(self, images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class ListTenantsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Tenant(_message.Message):
    __slots__ = ("tenant", "images")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    images: int
    def __init__(self, tenant: _Optional[str] = ..., images: _Optional[int] = ...) -> None: ...

class ListTenantsResponse(_message.Message):
    __slots__ = ("tenants",)
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[Tenant]
    def __init__(self, tenants: _Optional[_Iterable[_Union[Tenant, _Mapping]]] = ...) -> None: ...

class GetTenantRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class DeleteTenantRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class DeleteTenantResponse(_message.Message):
    __slots__ = ("tenant", "deleted")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    deleted: int
    def __init__(self, tenant: _Optional[str] = ..., deleted: _Optional[int] = ...) -> None: ...
