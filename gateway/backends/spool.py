"""BLIP's input for pending captions, in a folder, by record key (gateway.core.records.record_key):
`<root>/<key[:2]>/<key>.npy` (BLIP's uint8 pixels as the gateway prepared them at upload: 384x384x3 =
442,496 bytes + a 128-byte header for the base models), and `<root>/deleted/<key>`, the mark a delete
leaves. The embedded default keeps it beside the Milvus Lite file; several gateways and captioners
share one volume (Kubernetes: a ReadWriteMany claim). Writes are atomic (a temporary file renamed
into place), so a reader never sees half a file.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ..core.errors import unavailable


class FolderSpool:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.deleted = self.root / "deleted"

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def put(self, key: str, pixels: np.ndarray) -> None:
        target = self.path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".tmp", delete=False) as out:
                np.save(out, np.ascontiguousarray(pixels, np.uint8), allow_pickle=False)
            os.replace(out.name, target)
            (self.deleted / key).unlink(missing_ok=True)  # indexed again after a delete
        except OSError as exc:
            raise unavailable(f"the caption spool {self.root} cannot be written ({exc.strerror or exc})") from exc

    def get(self, key: str) -> np.ndarray | None:
        try:
            return np.load(self.path(key), allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise unavailable(f"the caption spool {self.root} cannot be read ({exc})") from exc

    def discard(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def forget(self, key: str) -> None:
        try:
            self.deleted.mkdir(parents=True, exist_ok=True)
            (self.deleted / key).touch()
        except OSError as exc:
            raise unavailable(f"the caption spool {self.root} cannot be written ({exc.strerror or exc})") from exc
        self.discard(key)

    def was_deleted(self, key: str) -> bool:
        return (self.deleted / key).exists()

    def sweep(self, older_than_s: float) -> int:
        cutoff, removed = time.time() - older_than_s, 0
        for mark in self.deleted.glob("*") if self.deleted.exists() else ():
            try:
                if mark.stat().st_mtime < cutoff:
                    mark.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed
