"""What a benchmark ran on, for its results file, and writing that file."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path


def machine() -> dict:
    import psutil

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "avx_vnni")
    return {"cpu": model, "cpu_flags": [f for f in wanted if f in flags], "cores": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2 ** 30), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d")}


def write_results(out: Path | None, name: str, result: dict, markdown: str) -> None:
    """Print the Markdown table; with ``out``, write <name>.json and <name>.md there."""
    print(markdown)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps(result, indent=1))
        (out / f"{name}.md").write_text(markdown)
