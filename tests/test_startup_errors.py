"""Start-up mistakes end in one line that says what to do, not a traceback: a port in use, for HTTP and
for gRPC (named by its setting, checked before any model loads); a hub model without hub access."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from local_servers.processes import free_ports

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("setting", ["GATEWAY_PORT", "GATEWAY_GRPC_PORT"])
def test_a_port_in_use_is_one_line_naming_its_setting(setting, tmp_path):
    http_port, grpc_port = free_ports(2)
    taken = http_port if setting == "GATEWAY_PORT" else grpc_port
    with socket.socket() as squatter:
        squatter.bind(("0.0.0.0", taken))
        squatter.listen()
        env = {**os.environ, "GATEWAY_PORT": str(http_port), "GATEWAY_GRPC_PORT": str(grpc_port),
               "GATEWAY_MODEL_REPOSITORY": str(tmp_path / "none"), "GATEWAY_MILVUS_URI": str(tmp_path / "images.db")}
        done = subprocess.run([sys.executable, "-m", "gateway"], env=env, capture_output=True, text=True, timeout=60,
                              cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: port {taken} is in use ({setting}={taken}): stop what listens there, or set {setting} to a free port"
        + (" (0: no gRPC server)" if setting == "GATEWAY_GRPC_PORT" else "")]
    assert not (tmp_path / "images.db").exists()  # nothing was started


def test_a_hub_model_without_hub_access_is_one_line_saying_what_to_do(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}  # no cache: as a fresh machine
    done = subprocess.run([sys.executable, "-m", "export", "clip", "--repository", str(tmp_path / "repository"), "--cpu",
                           "--flavour", "python"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout
    errors = [line for line in (done.stderr + done.stdout).splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "openai/clip-vit-base-patch32 cannot be loaded from the Hugging Face hub" in errors[0]
    assert "make random-models" in errors[0] and not (tmp_path / "repository" / "clip_image").exists()
