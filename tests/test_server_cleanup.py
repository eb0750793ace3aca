"""Servers the tests start die with the run, however it ends: a run stopped with SIGTERM (a timeout,
a cancelled CI job) tears its fixtures down; one killed with SIGKILL takes its servers with it
(PR_SET_PDEATHSIG). Checked with a real pytest run holding a real tritonserver (tests/support/held_run.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import held_run

pytestmark = [pytest.mark.integration, pytest.mark.triton]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_stopped_test_run_leaves_no_server_behind(tmp_path, stop):
    pid_file = tmp_path / "server.pid"
    run = subprocess.Popen([sys.executable, "-m", "pytest", f"{held_run.__file__}::test_holds_a_tritonserver", "-q",
                            "-p", "no:cacheprovider"], env={**os.environ, held_run.PID_FILE: str(pid_file)},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() or not pid_file.read_text():
            assert run.poll() is None and time.monotonic() < deadline, "the held run did not start its server"
            time.sleep(0.2)
        server = int(pid_file.read_text())
        assert alive(server)
        run.send_signal(stop)
        run.wait(60)
        deadline = time.monotonic() + 30
        while alive(server):
            assert time.monotonic() < deadline, f"tritonserver {server} outlived the run stopped by {stop.name}"
            time.sleep(0.2)
    finally:
        if run.poll() is None:
            run.kill()
