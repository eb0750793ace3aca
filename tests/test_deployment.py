"""Deployment files, validated without a Docker engine: the compose files against the Compose
Specification's JSON schema, yamllint over every YAML file, and cross-checks that ports, service
names, environment variables, routes and metric names agree between compose, the Dockerfile,
Prometheus, Grafana and the gateway's own settings."""

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path

import jsonschema
import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from gateway.app import create_app
from gateway.settings import Settings

ROOT = Path(__file__).parents[1]
COMPOSE_FILES = ["docker-compose.yml", "docker-compose.cpu.yml"]


class ComposeLoader(yaml.SafeLoader):
    """YAML as compose reads it: `!reset` (drop the key when merging) becomes a marker."""


RESET = object()
ComposeLoader.add_constructor("!reset", lambda loader, node: RESET)


def load(name: str) -> dict:
    return yaml.load((ROOT / name).read_text(), Loader=ComposeLoader)


def without_markers(value):
    if isinstance(value, dict):
        return {k: without_markers(v) for k, v in value.items() if v is not RESET}
    if isinstance(value, list):
        return [without_markers(v) for v in value]
    return value


def merge(base, override):
    """Compose's merge of an override file: mappings merge, `!reset` removes, anything else replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            if value is RESET:
                merged.pop(key, None)
            else:
                merged[key] = merge(base.get(key), value) if key in base else without_markers(value)
        return merged
    return without_markers(override)


@pytest.fixture(scope="module")
def compose_schema() -> dict:
    return json.loads((files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_files_follow_the_compose_specification(compose_schema, name):
    jsonschema.validate(without_markers(load(name)), compose_schema)


def test_the_cpu_variant_drops_the_gpu_and_exports_for_the_cpu(compose_schema):
    gpu, cpu = load("docker-compose.yml"), merge(load("docker-compose.yml"), load("docker-compose.cpu.yml"))
    jsonschema.validate(cpu, compose_schema)
    assert gpu["services"]["triton"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "deploy" not in cpu["services"]["triton"]
    assert cpu["services"]["export-clip"]["command"][-1] == "--cpu" and cpu["services"]["export-blip"]["command"][-1] == "--cpu"
    assert cpu["services"]["gateway"] == gpu["services"]["gateway"]


def test_every_yaml_file_passes_yamllint():
    config = YamlLintConfig("extends: default\nrules: {line-length: {max: 130}, document-start: disable, "
                            "truthy: {check-keys: false}, comments: {min-spaces-from-content: 1}}")
    paths = [p for p in ROOT.rglob("*.y*ml") if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]
    assert paths
    problems = [f"{p.relative_to(ROOT)}:{problem}" for p in paths
                for problem in linter.run(p.read_text(), config) if problem.level == "error"]
    assert problems == []


def test_images_are_pinned():
    compose = load("docker-compose.yml")
    for name, service in compose["services"].items():
        image = service.get("image", "")
        assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), f"{name}: {image!r} is not pinned"
    dockerfile = (ROOT / "Dockerfile").read_text()
    for image in re.findall(r"^ARG \w+_IMAGE=(\S+)", dockerfile, re.MULTILINE):
        assert re.search(r":[\w.-]+$", image) and "latest" not in image


def test_gateway_environment_names_are_real_settings():
    known = {f"GATEWAY_{name.upper()}" for name in Settings.model_fields} | {"CLIP_MODEL", "BLIP_MODEL"}
    compose = load("docker-compose.yml")
    used = set(compose["services"]["gateway"]["environment"])
    used |= set(re.findall(r"\b(GATEWAY_[A-Z_]+)=", (ROOT / "Dockerfile").read_text()))
    assert used and used <= known, f"unknown settings: {sorted(used - known)}"


def test_ports_services_and_routes_agree():
    compose = load("docker-compose.yml")
    services = compose["services"]
    gateway_env = services["gateway"]["environment"]
    triton_host, triton_port = gateway_env["GATEWAY_TRITON_URL"].split(":")
    assert triton_host == "triton" and f"--grpc-port={triton_port}" in services["triton"]["command"]
    assert triton_port in services["triton"]["expose"]
    milvus = re.fullmatch(r"http://(\w+):(\d+)", gateway_env["GATEWAY_MILVUS_URI"])
    assert milvus and milvus.group(1) in services and milvus.group(2) == "19530"
    # the gateway listens where the image and the port mapping say
    dockerfile = (ROOT / "Dockerfile").read_text()
    port = gateway_env["GATEWAY_PORT"]
    assert f"EXPOSE {port}" in dockerfile and services["gateway"]["ports"] == [f"{port}:{port}"]
    # model repository: mounted where the gateway reads it, and where Triton serves it from
    assert any(v.startswith("./model_repository:" + gateway_env["GATEWAY_MODEL_REPOSITORY"])
               for v in services["gateway"]["volumes"])
    assert "--model-repository=/models" in services["triton"]["command"]
    # health checks probe routes that exist
    routes = set(create_app(Settings(_env_file=None)).openapi()["paths"])
    probed = re.findall(r"127\.0\.0\.1:\d+(/\w+)", json.dumps(services["gateway"]["healthcheck"]) + dockerfile)
    assert probed and set(probed) <= routes
    # build targets exist
    targets = set(re.findall(r"^FROM \S+ AS (\w+)", dockerfile, re.MULTILINE))
    assert {s["build"]["target"] for s in services.values() if "build" in s} <= targets
    # dependencies wait for health, and depend on services that have a health check
    for name in ("gateway", "milvus"):
        for dependency, condition in services[name]["depends_on"].items():
            assert condition == {"condition": "service_healthy"} and "healthcheck" in services[dependency]


def test_prometheus_and_grafana_point_at_real_things():
    compose = load("docker-compose.yml")["services"]
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert targets == {f"gateway:{compose['gateway']['environment']['GATEWAY_PORT']}", "triton:8002", "milvus:9091"}
    assert "--metrics-port=8002" in compose["triton"]["command"]
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "image-search.json").read_text())
    expressions = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    ours = set(re.findall(r"\b(gateway_[a-z_]+?)(?:_bucket|_count|_sum|_total)?\b", expressions))
    metrics = (ROOT / "gateway" / "metrics.py").read_text()
    declared = {m.removesuffix("_total") for m in re.findall(r'"(gateway_[a-z_]+)"', metrics)}
    assert ours and ours <= declared
