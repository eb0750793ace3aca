"""Run the real tritonserver binary bundled in the nvidia-pytriton wheel on free local ports.

That build (Triton 2.51) has the python backend but no onnxruntime backend, so it serves
repositories exported with ``--flavour python``. The python-backend stub runs the Python that is
first on PATH, so this interpreter's environment (numpy<2, onnxruntime) is put first.

    with TritonServer(repository, workdir) as triton:
        triton.grpc_url  # "127.0.0.1:PORT"

From a shell (serves until Ctrl-C): python -m local_servers.tritonserver --repository model_repository
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import urllib.request
from importlib.util import find_spec
from pathlib import Path

from export.triton_repo import installed_models
from local_servers.processes import answers_200, free_ports, start_server, stop_group, wait_until_ready


def _pytriton_root() -> Path:
    spec = find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise RuntimeError("nvidia-pytriton is not installed; it carries the tritonserver binary")
    return Path(spec.origin).parent


class TritonServer:
    def __init__(self, repository: Path, workdir: Path, startup_timeout: float = 120.0, extra_args: tuple = (),
                 ports: tuple[int, int, int] | None = None):
        self.repository = Path(repository).resolve()
        self.workdir = Path(workdir)
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)
        self.http_port, self.grpc_port, self.metrics_port = ports or free_ports(3)
        self.process: subprocess.Popen | None = None
        self.log_path = self.workdir / f"tritonserver-{self.grpc_port}.log"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def _backends(self) -> Path:
        root = _pytriton_root() / "tritonserver"
        backends = self.workdir / "backends"
        python_backend = backends / "python"
        if not python_backend.exists():
            shutil.copytree(root / "backends" / "python", python_backend)
            version = f"{sys.version_info.major}.{sys.version_info.minor}"
            shutil.copy2(root / "python_backend_stubs" / version / "triton_python_backend_stub", python_backend)
        return backends

    def _env(self) -> dict[str, str]:
        libs = [str(_pytriton_root().parent / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR") or ""]
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [env.get("LD_LIBRARY_PATH", "")])
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def start(self) -> TritonServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [
            str(_pytriton_root() / "tritonserver" / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={self._backends()}",
            f"--backend-config=python,shm-region-prefix-name=triton{self.grpc_port}_",
            f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}", f"--metrics-port={self.metrics_port}",
            "--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
            "--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0", "--exit-timeout-secs=10",
            # the installed models by name: a scan would also take an export's staging folder for a model
            "--model-control-mode=explicit", *(f"--load-model={name}" for name in installed_models(self.repository)),
            *self.extra_args,
        ]
        with open(self.log_path, "wb") as log:
            self.process = start_server(command, log, self._env())
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None, "not started"
        try:
            wait_until_ready(self.process, answers_200(f"{self.http_url}/v2/health/ready"), self.startup_timeout,
                             "tritonserver")
        except (RuntimeError, TimeoutError) as exc:
            raise type(exc)(f"{exc}:\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:]) if self.log_path.exists() else ""

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return response.read().decode()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the server's process group (server + python stubs), SIGKILL what is left."""
        if self.process is not None:
            stop_group(self.process, timeout)
            self.process = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="serve a python-flavour model repository with the bundled tritonserver")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--workdir", type=Path, default=Path(".cache/tritonserver"))
    # gRPC on Triton's usual 8001 (the gateway's default GATEWAY_TRITON_URL); HTTP off the gateway's 8000
    parser.add_argument("--ports", type=int, nargs=3, default=(8010, 8001, 8002), metavar=("HTTP", "GRPC", "METRICS"))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run the finally below: stop the server group
    server = TritonServer(args.repository, args.workdir, ports=tuple(args.ports)).start()
    print(f"tritonserver ready: gRPC {server.grpc_url}, HTTP {server.http_url}, metrics {server.metrics_url}"
          f" (log: {server.log_path}); Ctrl-C stops it", flush=True)
    try:
        assert server.process is not None
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
