"""The C allocator's settings for a gateway that holds no models (GATEWAY_INFERENCE_MODE=triton).

Such a gateway's large allocations are uploads and their copies: a 4 MB phone photo is copied four
times between the socket and Triton's request (the request body, the protobuf message, its
serialisation, gRPC's buffer). glibc serves allocations above its mmap threshold (128 KiB, rising
only as far as the largest freed block) with fresh mmap pages that the kernel zeroes and faults in
one page at a time, then unmaps them on free: 4,455 page faults and 25 ms of CPU per 12 MP image
search with decoding on the inference tier, measured (bench/tier_decode.py's set-up, 20 searches).
Keeping those blocks in the heap (mmap threshold 32 MiB, glibc's largest; freed memory handed back
only above 128 MiB at the heap's top) made it 219 faults and 14 ms. With in-process models the
default stays: their buffers are what the memory benchmark measured.
"""

from __future__ import annotations

import ctypes
import logging

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc refuses more on 64-bit systems
TRIM_THRESHOLD = 128 << 20

log = logging.getLogger("gateway")


def keep_freed_buffers() -> bool:
    """Buffers up to 32 MiB are reused from the heap instead of mapped and unmapped each time; False
    where the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not done:
        log.warning("mallopt refused the allocator settings; large uploads cost page faults")
    return done
