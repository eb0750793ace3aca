"""Reading uploaded files: content type checked, never more than the limit read."""

from __future__ import annotations

from fastapi import UploadFile

from ...core.errors import ErrorKind, ServiceError

ACCEPTED_TYPES = ("image/", "application/octet-stream")


async def read_upload(upload: UploadFile, limit: int) -> bytes:
    name = upload.filename or "upload"
    content_type = (upload.content_type or "application/octet-stream").lower()
    if not content_type.startswith(ACCEPTED_TYPES):
        raise ServiceError(ErrorKind.UNSUPPORTED_MEDIA_TYPE, f"{name}: {content_type} is not an image type")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ServiceError(ErrorKind.TOO_LARGE, f"{name} is larger than {limit:,} bytes")
    return data
