"""The short soak in CI: 45 s of bench/locustfile.py's Mix on the embedded stack (a real gateway
process, Milvus Lite) through bench/soak.py: no request fails and memory grows less than 10% after
the warm-up. The 10-minute version: `python -m bench.soak` (README, docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_short_soak_has_no_errors_and_flat_memory(model_repository, tmp_path):
    out = tmp_path / "soak.json"
    done = subprocess.run([sys.executable, "-m", "bench.soak", "--repository", str(model_repository), "--duration", "45",
                           "--warmup", "15", "--users", "3", "--sample-every", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert out.exists(), done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["failures"] == 0, report["errors"]
    assert report["rss_growth"] < 0.10, report["rss_mb"]
    assert {"POST /embed-image/", "POST /v1/images", "POST /v1/search/image", "GET /v1/search/text", "GET /v1/images/{id}",
            "DELETE /v1/images/{id}"} <= set(report["routes"])
    assert all(r["requests"] > 0 for r in report["routes"].values())
    assert done.returncode == 0, done.stdout + done.stderr
