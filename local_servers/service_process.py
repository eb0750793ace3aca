"""Services as real processes (the gateway, the benchmark's baseline), on free ports, stopped with
their children.

    with gateway_process(repository, workdir) as gateway:   # python -m gateway, embedded mode
        gateway.url, gateway.rss_bytes()
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from local_servers.processes import (
    answers_200,
    free_ports,
    start_server,
    stop_group,
    tree_cpu_seconds,
    tree_sum,
    wait_until_ready,
)


class ServiceProcess:
    """A server command in its own process group, ready when `ready_path` answers 200."""

    def __init__(self, command: list[str], port: int, env: dict[str, str], log_path: Path, ready_path: str = "/readyz",
                 startup_timeout: float = 300.0):
        self.command, self.port, self.env, self.log_path = command, port, env, log_path
        self.ready_path, self.startup_timeout = ready_path, startup_timeout
        self.process: subprocess.Popen | None = None
        self.grpc_url: str | None = None  # host:port of its gRPC API, when it has one

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = start_server(self.command, log, {**os.environ, **self.env})
        try:
            wait_until_ready(self.process, answers_200(self.url + self.ready_path, timeout=5), self.startup_timeout,
                             f"{self.command} (log: {self.log_path})", interval=0.5)
        except BaseException:
            self.stop()
            raise
        return self

    def _pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def rss_bytes(self) -> int:
        """Resident memory of the process and its children (Milvus Lite runs as a child)."""
        return int(tree_sum(self._pid(), lambda proc: proc.memory_info().rss))

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the process and its children have used so far."""
        return tree_cpu_seconds(self._pid())

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process, 30)
            self.process = None

    def kill(self) -> None:
        """A crash: SIGKILL of the process and its children, no shutdown."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def gateway_env(repository: Path, workdir: Path, port: int, **settings: str) -> dict[str, str]:
    """(The caption spool in ``workdir`` unless given: with a server's milvus_uri it would be the checkout's data/.)"""
    return {"GATEWAY_MODEL_REPOSITORY": str(Path(repository).resolve()), "GATEWAY_PORT": str(port),
            "GATEWAY_HOST": "127.0.0.1", "GATEWAY_MILVUS_URI": str(Path(workdir).resolve() / "images.db"),
            "GATEWAY_CAPTION_SPOOL": str(Path(workdir).resolve() / "caption-spool"),
            "GATEWAY_LOG_LEVEL": "WARNING", **{f"GATEWAY_{k.upper()}": str(v) for k, v in settings.items()}}


def gateway_process(repository: Path, workdir: Path, **settings: str) -> ServiceProcess:
    """`python -m gateway` on the repository with a fresh Milvus Lite file; more GATEWAY_* settings
    as keyword arguments (inference_mode="triton", triton_url=..., captions="false", ...)."""
    port, grpc_port = free_ports(2)
    env = {**gateway_env(repository, workdir, port, **settings), "GATEWAY_GRPC_PORT": str(grpc_port)}
    process = ServiceProcess([sys.executable, "-m", "gateway"], port, env, Path(workdir) / "gateway.log")
    process.grpc_url = f"127.0.0.1:{env['GATEWAY_GRPC_PORT']}"
    return process


def captioner_process(repository: Path, workdir: Path, **settings: str) -> ServiceProcess:
    """`python -m gateway.captioner` with the gateway's settings (a Milvus server's milvus_uri and the
    gateways' caption_spool among them), ready once its /metrics answers."""
    (port,) = free_ports(1)
    return ServiceProcess([sys.executable, "-m", "gateway.captioner"], port, gateway_env(repository, workdir, port, **settings),
                          Path(workdir) / "captioner.log", ready_path="/metrics")
