"""A pytest run that holds a real tritonserver until it is stopped: tests/test_server_cleanup.py starts
it as its own pytest process (this file is not collected by a normal run: its name is not test_*),
stops it with SIGTERM or SIGKILL and checks that the server went with it."""

from __future__ import annotations

import os
import time
from pathlib import Path

from local_servers.tritonserver import TritonServer

PID_FILE = "IMAGE_SEARCH_TEST_HOLD_TRITON"  # where the run writes its server's pid


def test_holds_a_tritonserver(tmp_path):
    (tmp_path / "repository").mkdir()
    with TritonServer(tmp_path / "repository", tmp_path / "triton") as triton:
        assert triton.process is not None
        Path(os.environ[PID_FILE]).write_text(str(triton.process.pid))
        time.sleep(300)
