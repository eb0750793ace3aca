"""Where a checkpoint comes from, and a fingerprint that says whether it changed since the last export."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .triton_repo import file_sha256

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")


def fingerprint(source: str, config) -> str:
    """A hub checkpoint is fingerprinted by its commit; a local folder by the hashes of its files."""
    folder = Path(source)
    if not folder.is_dir():
        commit = getattr(config, "_commit_hash", None)
        return f"hub:{source}@{commit}" if commit else f"hub:{source}"
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file()):
        digest.update(f"{path.name}:{file_sha256(path)}\n".encode())
    return f"folder:{digest.hexdigest()}"
