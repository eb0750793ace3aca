"""Metadata stored with images: a JSON object Milvus can store and filter on."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from .declared import check_declared_metadata
from .errors import invalid

MAX_METADATA_CHARS, MAX_METADATA_DEPTH = 16_384, 8


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _check_value(value, level: int = 1) -> None:
    if level > MAX_METADATA_DEPTH:
        raise invalid(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels")
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for child in value:
            _check_value(child, level + 1)
    elif isinstance(value, float) and not math.isfinite(value) or isinstance(value, int) and abs(value) >= 2 ** 63:
        raise invalid("metadata numbers must be finite and integers must fit in 64 bits")


def check_metadata(meta: object, declared: Mapping[str, str] | None = None) -> dict:
    """``meta`` when it is a JSON object of finite numbers, 64-bit integers, at most
    MAX_METADATA_DEPTH levels and MAX_METADATA_CHARS characters as JSON, whose ``declared`` keys
    (gateway.core.declared) hold values of their types; else INVALID_ARGUMENT."""
    if not isinstance(meta, dict):
        raise invalid("metadata must be a JSON object")
    _check_value(meta)
    try:
        size = len(json.dumps(meta, allow_nan=False))
    except (ValueError, TypeError, RecursionError) as exc:
        raise invalid(f"metadata is not a JSON object Milvus can store: {exc}") from exc
    if size > MAX_METADATA_CHARS:
        raise invalid(f"metadata is longer than {MAX_METADATA_CHARS:,} characters")
    check_declared_metadata(meta, declared or {})
    return meta


def parse_metadata(text: str | None) -> dict:
    """Metadata given as JSON text (a form field, a CLI flag, a gRPC string); '' or None is none."""
    if not text:
        return {}
    if len(text) > MAX_METADATA_CHARS:
        raise invalid(f"metadata is longer than {MAX_METADATA_CHARS:,} characters")
    try:
        meta = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise invalid(f"metadata is not valid JSON: {exc}") from exc
    return check_metadata(meta)
