"""What a benchmark ran on, for its results file."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def machine() -> dict:
    import psutil

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2 ** 30),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}
