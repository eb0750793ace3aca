"""Run a real Milvus standalone server (PyPI package `milvus` 2.3.5: the real binary with embedded
etcd) for tests. `make setup` installs it in its own environment, .venv-milvus/.

Its client port is chosen free; its internal ports (etcd 2379/2380, 9091, 19529, ...) are fixed,
so only one such server runs at a time. It ignores SIGTERM: it is stopped with SIGKILL of its
process group.

`kill()` then `restart()` is a crash and a restart on the same data and the same ports. The restart
runs the engine (`<data>/bin/milvus run standalone`, which the `milvus-server` wrapper writes and
starts) directly, with the environment and configuration the first start gave it: the wrapper
itself would move to the next free port, since its bind test (no SO_REUSEADDR) fails on a port
whose killed server left connections in TIME_WAIT, and the restarted server would answer elsewhere.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from local_servers.processes import free_ports, start_server, wait_until_ready

SERVICE_CONFIG = Path(__file__).parents[1] / "deploy" / "milvus" / "user.yaml"  # what compose and Helm give Milvus
BINARY = Path(os.environ.get("MILVUS_SERVER_BIN", Path(__file__).parents[1] / ".venv-milvus" / "bin" / "milvus-server"))


def service_config() -> dict[str, object]:
    """deploy/milvus/user.yaml as dotted keys (the form milvus-server's --extra-config takes)."""
    import yaml

    def flat(prefix: str, value) -> dict[str, object]:
        if isinstance(value, dict):
            return {k: v for key, item in value.items() for k, v in flat(f"{prefix}{key}.", item).items()}
        return {prefix[:-1]: value}

    return flat("", yaml.safe_load(SERVICE_CONFIG.read_text()))


class MilvusServer:
    def __init__(self, data_dir: Path, startup_timeout: float = 180.0, config: dict[str, object] | None = None):
        if not BINARY.exists():
            raise RuntimeError(f"{BINARY} is missing: run `make setup` (it installs milvus==2.3.5 in .venv-milvus)")
        self.data_dir = Path(data_dir)
        (self.port,) = free_ports(1)
        self.startup_timeout = startup_timeout
        # milvus.yaml settings by dotted key: the service's own (deploy/milvus/user.yaml), then ``config``
        self.config = {**service_config(), **(config or {})}
        self.process: subprocess.Popen | None = None
        self._engine: tuple[list[str], dict[str, str]] | None = None  # the engine's command line and environment

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MilvusServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "server.log", "ab") as log:
            extra = [arg for key, value in self.config.items() for arg in ("--extra-config", f"{key}={value}")]
            self.process = start_server([str(BINARY), "--data", str(self.data_dir), "--proxy-port", str(self.port), *extra],
                                        log)
        try:
            wait_until_ready(self.process, self._answers, self.startup_timeout,
                             f"milvus-server (log: {self.data_dir}/server.log)", interval=1)
        except BaseException:
            self.stop()
            raise
        self._engine = self._engine_of(self.process.pid)
        return self

    @staticmethod
    def _engine_of(wrapper_pid: int) -> tuple[list[str], dict[str, str]]:
        for child in Path(f"/proc/{wrapper_pid}/task/{wrapper_pid}/children").read_text().split():
            command = Path(f"/proc/{child}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
            if command[-2:] == [b"run", b"standalone"]:
                variables = Path(f"/proc/{child}/environ").read_bytes().rstrip(b"\0").split(b"\0")
                return ([part.decode() for part in command],
                        dict(v.decode().split("=", 1) for v in variables if b"=" in v))
        raise RuntimeError(f"milvus-server (pid {wrapper_pid}) has no `milvus run standalone` child")

    def kill(self) -> None:
        """A crash: SIGKILL of the server and everything it started, nothing flushed."""
        self.stop()

    def restart(self) -> None:
        """After kill(): the same engine on the same data, ports and configuration; returns once it
        answers (which is not yet once every acknowledged write is readable)."""
        assert self._engine is not None and self.process is None, "restart() follows start() and kill()"
        command, env = self._engine
        with open(self.data_dir / "server.log", "ab") as log:
            self.process = start_server(command, log, env=env, cwd=self.data_dir)
        wait_until_ready(self.process, self._answers, self.startup_timeout,
                         f"restarted milvus (log: {self.data_dir}/logs)", interval=0.2)

    def _answers(self) -> bool:
        from pymilvus import MilvusClient

        try:
            client = MilvusClient(self.uri, timeout=2)
            client.list_collections()
            client.close()
            return True
        except Exception:
            return False

    def freeze(self) -> None:
        """SIGSTOP the server: it stays connected but answers nothing (a hung dependency)."""
        assert self.process is not None, "not started"
        os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None, "not started"
        os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(30)
        self.process = None

    def __enter__(self) -> MilvusServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
