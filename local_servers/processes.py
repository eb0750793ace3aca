"""Server processes for tests and benchmarks: free ports, waiting until one is ready, stopping it
with everything it started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the parent dies (Linux PR_SET_PDEATHSIG), however the
    parent ends, SIGKILL included."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def start_server(command: list[str], log, env: dict[str, str] | None = None,
                 cwd: os.PathLike | None = None) -> subprocess.Popen:
    """A server process in its own process group (stop_group takes its children too) that dies with
    this process. Start servers from the main thread: the kernel counts the thread that forked as
    the parent."""
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True,
                            preexec_fn=_die_with_parent)


def tree_sum(pid: int, measure: Callable) -> float:
    """``measure(psutil.Process)`` summed over a process and its children (those gone meanwhile skipped)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += measure(proc)
        except psutil.NoSuchProcess:
            pass
    return total


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process and its children have used so far."""
    return tree_sum(pid, lambda proc: sum(proc.cpu_times()[:2]))


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def answers_200(url: str, timeout: float = 1.0) -> Callable[[], bool]:
    """A readiness probe: does GET url answer 200 within `timeout` seconds?"""
    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    return probe


def wait_until_ready(process: subprocess.Popen, ready: Callable[[], bool], timeout: float, what: str,
                     interval: float = 0.2) -> None:
    """Poll `ready` until it holds; RuntimeError as soon as the process exits, TimeoutError after
    `timeout` seconds. `what` names the server and where its log is, for both messages."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        if ready():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout}s")


def stop_group(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM a process started with start_new_session, wait up to `grace` seconds, then SIGKILL
    its whole group (children included: none may outlive it)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(10)
