"""Reading uploaded images: multipart files (content type checked, never more than one byte past the
upload limit read: the service refuses what is over it) and base64 data URIs."""

from __future__ import annotations

import base64
import binascii
import re

from fastapi import UploadFile

from ...core.errors import ErrorKind, ServiceError, invalid

ACCEPTED_TYPES = ("image/", "application/octet-stream")


DATA_URI = re.compile(r"data:(image/[A-Za-z0-9.+-]+)?((?:;[A-Za-z0-9=._+-]+)*);base64,", re.I)


def image_in_data_uri(text: str, name: str) -> bytes | None:
    """The image of a ``data:image/...;base64,`` URI (None: the text is not one); INVALID_ARGUMENT
    when it is one that does not decode. (The request body limit bounds what is decoded.)"""
    match = DATA_URI.match(text)
    if match is None or match.group(1) is None:
        return None
    payload = text[match.end():]
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid(f"{name} is not valid base64: {exc}", "invalid_data_uri") from None


async def read_upload(upload: UploadFile, limit: int) -> bytes:
    """At most ``limit`` + 1 bytes of an upload whose content type may be an image."""
    content_type = (upload.content_type or "application/octet-stream").lower()
    if not content_type.startswith(ACCEPTED_TYPES):
        name = upload.filename or "upload"
        raise ServiceError(ErrorKind.UNSUPPORTED_MEDIA_TYPE, f"{name}: {content_type} is not an image type")
    return await upload.read(limit + 1)
