"""Run a real Milvus standalone server (PyPI package `milvus` 2.3.5: the real binary with embedded
etcd) for tests. `make setup` installs it in its own environment, .venv-milvus/.

Its client port is chosen free; its internal ports (etcd 2379/2380, 9091, 19529, ...) are fixed,
so only one such server runs at a time. It ignores SIGTERM: it is stopped with SIGKILL of its
process group. (Restarted on the same data folder after a kill, it waits for its old etcd session
to expire before it serves again: minutes here.)
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
        return self

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
