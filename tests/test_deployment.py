"""Deployment files, validated without a Docker engine or a cluster: the compose files against the
Compose Specification's JSON schema, the kustomize overlays rendered by kubectl and checked against
strict Kubernetes schemas, yamllint over every YAML file, and cross-checks that ports, service
names, environment variables, routes, images and metric names agree between compose, Kubernetes,
the Dockerfile, Prometheus, Grafana and the gateway's own settings."""

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

from gateway.server.http.app import create_app
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
    assert all(cpu["services"][f"export-{step}"]["command"][-1] == "--cpu" for step in ("clip", "blip", "decode"))
    # decoding on Triton: exported after BLIP (it reads both models' input sizes), loaded by name
    assert gpu["services"]["export-decode"]["depends_on"]["export-blip"] == {"condition": "service_completed_successfully"}
    assert {"--load-model=image_decode", "--load-model=clip_image_bytes"} <= set(gpu["services"]["triton"]["command"])
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
    port, grpc_port = gateway_env["GATEWAY_PORT"], gateway_env["GATEWAY_GRPC_PORT"]
    assert f"EXPOSE {port} {grpc_port}" in dockerfile
    assert services["gateway"]["ports"] == [f"{port}:{port}", f"{grpc_port}:{grpc_port}"]
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
    assert services["index"]["command"][:3] == ["image-search", "--url", f"http://gateway:{port}"]
    for name in ("gateway", "milvus", "index"):
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
    from prometheus_client import REGISTRY

    import gateway.backends.metrics
    import gateway.server.metrics  # noqa: F401

    declared = {family.name for family in REGISTRY.collect()}  # counters without _total
    assert ours and ours <= declared


# --- Kubernetes (kustomize base + overlays), rendered with kubectl's built-in kustomize ----------------

KUBERNETES_VERSION = "1.32"


def render(overlay: str) -> list[dict]:
    import shutil
    import subprocess

    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its built-in kustomize) is needed to render k8s/: install it from your package manager"
    out = subprocess.run([kubectl, "kustomize", str(ROOT / "k8s" / "overlays" / overlay)], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module", params=["dev", "prod", "tier-decode"])
def manifests(request) -> dict[tuple[str, str], dict]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in render(request.param)}


def test_rendered_manifests_pass_strict_kubernetes_schemas(manifests):
    import kubernetes_validate

    for (kind, _name), doc in manifests.items():
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # the Prometheus Operator's own kinds: checked against the pods below
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert doc["metadata"].get("namespace", "image-search") == "image-search" or kind == "Namespace"
    assert {("Deployment", "gateway"), ("Deployment", "triton"), ("Job", "export-models"), ("Job", "index-images"),
            ("Ingress", "gateway"),
            ("HorizontalPodAutoscaler", "triton"), ("PodDisruptionBudget", "gateway")} <= set(manifests)


def pod_labels(manifests, name: str) -> dict:
    return manifests[("Deployment", name)]["spec"]["template"]["metadata"]["labels"]


def container(manifests, name: str) -> dict:
    return manifests[("Deployment", name)]["spec"]["template"]["spec"]["containers"][0]


def test_kubernetes_objects_agree_with_each_other_and_with_the_gateway(manifests, request):
    config = manifests[("ConfigMap", "gateway")]["data"]
    known = {f"GATEWAY_{name.upper()}" for name in Settings.model_fields} | {"CLIP_MODEL", "BLIP_MODEL"}
    secret = manifests[("Secret", "gateway")]["stringData"]
    assert set(config) | set(secret) <= known
    with pytest.MonkeyPatch.context() as env:  # the values parse as the gateway will read them
        for name, value in {**config, **secret}.items():
            env.setenv(name, value)
        settings = Settings(_env_file=None)
    assert settings.rate_limit_per_s > 0
    overlay = request.node.callspec.params["manifests"]
    # keys required but in dev
    assert settings.anonymous_scopes == {"prod": [], "tier-decode": [], "dev": ["search", "write", "admin"]}[overlay]
    assert settings.decode == ("inference" if overlay == "tier-decode" else "gateway")
    job = manifests[("Job", "index-images")]["spec"]["template"]["spec"]["containers"][0]
    key_ref = next(e for e in job["env"] if e["name"] == "IMAGE_SEARCH_API_KEY")["valueFrom"]["secretKeyRef"]
    assert key_ref["key"] in manifests[("Secret", key_ref["name"])]["stringData"]
    # Triton and Milvus addresses: the gateway resolves a headless Service, so it reaches every Triton pod
    target = config["GATEWAY_TRITON_URL"]
    assert target.startswith("dns:///"), target
    host, port = target.removeprefix("dns:///").split(":")
    service = manifests[("Service", host)]
    assert service["spec"]["clusterIP"] == "None"
    assert {"name": "grpc", "port": int(port), "targetPort": "grpc"} in service["spec"]["ports"]
    assert service["spec"]["selector"].items() <= pod_labels(manifests, "triton").items()
    # Triton waits for what the export Job installs and loads the five models by name (a scan would take
    # the export's staging folders for models), one model (engine build) at a time
    triton_pod = manifests[("Deployment", "triton")]["spec"]["template"]["spec"]
    triton_args = container(manifests, "triton")["args"]
    loaded = {a.removeprefix("--load-model=") for a in triton_args if a.startswith("--load-model=")}
    assert {"--model-control-mode=explicit", "--model-load-thread-count=1"} <= set(triton_args)
    assert loaded == {"clip_image", "clip_text", "blip_caption", "image_decode", "clip_image_bytes"}
    (wait,) = triton_pod["initContainers"]
    assert all(f"/models/{name}/export.json" in " ".join(wait["command"]) for name in loaded)
    # the BLIP python model's ONNX Runtime threads fit the pod's CPU request (0 would take the node's cores)
    export_pod = manifests[("Job", "export-models")]["spec"]["template"]["spec"]
    steps = [c["args"][0] for c in export_pod["initContainers"] + export_pod["containers"]]
    assert steps == ["clip", "blip", "decode"]  # in order: the decode models read CLIP's and BLIP's input sizes
    blip = next(c for c in export_pod["initContainers"] if c["args"][0] == "blip")
    assert blip["args"][blip["args"].index("--threads") + 1] == container(manifests, "triton")["resources"]["requests"]["cpu"]
    mounts = {m["mountPath"]: m["name"] for m in container(manifests, "triton")["volumeMounts"]}
    volumes = {v["name"]: v for v in manifests[("Deployment", "triton")]["spec"]["template"]["spec"]["volumes"]}
    claim = volumes[mounts["/trt-cache"]]["persistentVolumeClaim"]["claimName"]  # the export's trt_engine_cache_path
    assert ("PersistentVolumeClaim", claim) in manifests
    hpa_metrics = {m["pods"]["metric"]["name"] for m in manifests[("HorizontalPodAutoscaler", "triton")]["spec"]["metrics"]}
    rules = manifests[("ConfigMap", "prometheus-adapter-rules")]["data"]["config.yaml"]
    assert hpa_metrics == {"triton_clip_image_queue_time_us", "triton_clip_text_queue_time_us"}
    assert all(f"as: {m}" in rules for m in hpa_metrics) and "delta(" not in rules and "rate(" in rules
    assert config["GATEWAY_MILVUS_URI"] == "http://milvus:19530"  # Helm release "milvus" (k8s/milvus/values.yaml)
    # selectors select the pods they mean
    for kind, name, target in (("Service", "gateway", "gateway"), ("Service", "triton", "triton"),
                               ("PodDisruptionBudget", "gateway", "gateway")):
        selector = manifests[(kind, name)]["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= pod_labels(manifests, target).items()
    for name in ("gateway", "triton"):
        assert manifests[("HorizontalPodAutoscaler", name)]["spec"]["scaleTargetRef"]["name"] == name
    # probes hit routes that exist, on ports the containers declare
    routes = set(create_app(Settings(_env_file=None)).openapi()["paths"])
    gateway = container(manifests, "gateway")
    assert {gateway["readinessProbe"]["httpGet"]["path"], gateway["livenessProbe"]["httpGet"]["path"]} <= routes
    for name in ("gateway", "triton"):
        ports = {p["name"] for p in container(manifests, name)["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in container(manifests, name):
                assert container(manifests, name)[probe]["httpGet"]["port"] in ports
    declared = {p["name"]: p["containerPort"] for p in container(manifests, "gateway")["ports"]}
    assert declared == {"http": int(config["GATEWAY_PORT"]), "grpc": int(config["GATEWAY_GRPC_PORT"])}
    # gRPC: the Service and the headless gateway-pods (client-side round robin) carry it, the policy lets it in
    for service in ("gateway", "gateway-pods"):
        grpc_port = {"name": "grpc", "port": declared["grpc"], "targetPort": "grpc"}
        assert grpc_port in manifests[("Service", service)]["spec"]["ports"]
        assert manifests[("Service", service)]["spec"]["selector"].items() <= pod_labels(manifests, "gateway").items()
    assert manifests[("Service", "gateway-pods")]["spec"]["clusterIP"] == "None"
    assert {"port": declared["grpc"], "protocol": "TCP"} in manifests[("NetworkPolicy", "gateway")]["spec"]["ingress"][0]["ports"]
    grpc_ingress = manifests[("Ingress", "gateway-grpc")]
    assert grpc_ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    # the indexing Job talks to the gateway Service, which lets it in
    job = manifests[("Job", "index-images")]["spec"]["template"]
    url = job["spec"]["containers"][0]["command"][2]
    assert url == f"http://gateway:{manifests[('Service', 'gateway')]['spec']['ports'][0]['port']}"
    allowed = manifests[("NetworkPolicy", "gateway")]["spec"]["ingress"][0]["from"]
    job_name = job["metadata"]["labels"]["app.kubernetes.io/name"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": job_name}}} in allowed
    assert job["spec"]["containers"][0]["command"][0] == "image-search"  # the CLI's entry point (pyproject)
    # only the gateway and the captioners reach Triton's gRPC port and Milvus
    callers = [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": name}}} for name in ("gateway", "captioner")]
    (grpc_rule, _) = manifests[("NetworkPolicy", "triton")]["spec"]["ingress"]
    assert grpc_rule["from"] == callers and grpc_rule["ports"] == [{"port": int(port), "protocol": "TCP"}]
    assert manifests[("NetworkPolicy", "milvus")]["spec"]["ingress"][0]["from"] == callers
    # the captioners run the gateway's image and settings, on the spool volume the gateway pods write
    captioner = container(manifests, "captioner")
    assert captioner["command"] == ["python", "-m", "gateway.captioner"] and captioner["image"] == gateway["image"]
    assert captioner["envFrom"] == gateway["envFrom"] and config["GATEWAY_CAPTION_WORKER"] == "false"
    for name in ("gateway", "captioner"):
        pod = manifests[("Deployment", name)]["spec"]["template"]["spec"]
        (spool,) = [v for v in pod["volumes"] if v["name"] == "caption-spool"]
        assert spool["persistentVolumeClaim"]["claimName"] == "caption-spool"
        mount = {"name": "caption-spool", "mountPath": config["GATEWAY_CAPTION_SPOOL"]}
        assert mount in container(manifests, name)["volumeMounts"]
    assert manifests[("PersistentVolumeClaim", "caption-spool")]["spec"]["accessModes"] == ["ReadWriteMany"]
    hpa = manifests[("HorizontalPodAutoscaler", "captioner")]["spec"]
    adapter = yaml.safe_load(manifests[("ConfigMap", "prometheus-adapter-rules")]["data"]["config.yaml"])
    assert hpa["metrics"][0]["external"]["metric"]["name"] in {r["name"]["as"] for r in adapter["externalRules"]}
    # graceful shutdown fits in the grace period; uploads fit through the ingress
    spec = manifests[("Deployment", "gateway")]["spec"]["template"]["spec"]
    drain = int(config["GATEWAY_SHUTDOWN_GRACE_S"]) + gateway["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert spec["terminationGracePeriodSeconds"] > drain
    assert spec["securityContext"]["runAsNonRoot"] and gateway["securityContext"]["readOnlyRootFilesystem"]
    body = manifests[("Ingress", "gateway")]["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert int(body.rstrip("m")) * 2**20 > Settings.model_fields["max_upload_bytes"].default
    assert container(manifests, "triton")["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_pod_monitors_scrape_every_gateway_and_triton_pod_on_its_metrics_port(manifests):
    """What the Prometheus Operator needs (its CRD's required fields), and that each PodMonitor's
    selector matches the Deployment's pods and names a container port serving /metrics."""
    for name in ("gateway", "triton", "captioner"):
        monitor = manifests[("PodMonitor", name)]
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels(manifests, name).items()
        ports = {p["name"] for p in container(manifests, name)["ports"]}
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
            assert re.fullmatch(r"\d+s", endpoint["interval"])
    assert container(manifests, "triton")["ports"][2] == {"name": "metrics", "containerPort": 8002}


def test_kubernetes_and_compose_run_the_same_images_and_versions(manifests):
    compose = load("docker-compose.yml")["services"]
    compose_images = {s["image"] for s in compose.values() if s.get("image", "").startswith("image-search/")}
    pods = [d["spec"]["template"]["spec"] for (kind, _), d in manifests.items() if kind in ("Deployment", "Job")]
    k8s_images = {c["image"] for spec in pods for c in spec.get("initContainers", []) + spec["containers"]}
    assert k8s_images == compose_images
    values = yaml.safe_load((ROOT / "k8s" / "milvus" / "values.yaml").read_text())
    assert f"{values['image']['all']['repository']}:{values['image']['all']['tag']}" == compose["milvus"]["image"]


def test_the_tier_decode_overlay_moves_decoding_to_triton_and_asks_less_gateway_cpu():
    prod = {(d["kind"], d["metadata"]["name"]): d for d in render("prod")}
    tier = {(d["kind"], d["metadata"]["name"]): d for d in render("tier-decode")}

    def cpu(manifests) -> float:
        request = container(manifests, "gateway")["resources"]["requests"]["cpu"]
        return float(request[:-1]) / 1000 if request.endswith("m") else float(request)

    assert tier[("ConfigMap", "gateway")]["data"]["GATEWAY_DECODE"] == "inference"
    assert prod[("ConfigMap", "gateway")]["data"]["GATEWAY_DECODE"] == "gateway"
    assert cpu(tier) < cpu(prod)


def test_overlays_size_the_tiers_differently():
    dev = {(d["kind"], d["metadata"]["name"]): d for d in render("dev")}
    prod = {(d["kind"], d["metadata"]["name"]): d for d in render("prod")}
    assert dev[("HorizontalPodAutoscaler", "gateway")]["spec"]["minReplicas"] == 1
    assert prod[("HorizontalPodAutoscaler", "gateway")]["spec"]["minReplicas"] == 3
    assert "maxUnavailable" in dev[("PodDisruptionBudget", "gateway")]["spec"]
    assert prod[("Deployment", "gateway")]["spec"]["template"]["spec"]["topologySpreadConstraints"]


@pytest.mark.integration  # asks the package registry
def test_the_triton_images_onnxruntime_gpu_is_built_for_its_cuda_major():
    """A CUDA 13 onnxruntime-gpu on a CUDA 12 Triton image loads no CUDA provider: every GPU session
    would fall back to the CPU (now refused at start). The wheel's own metadata names its CUDA runtime;
    pip reads it from the registry without downloading the wheel."""
    import subprocess
    import sys
    import tempfile

    dockerfile = (ROOT / "Dockerfile").read_text()
    cuda_major = re.search(r"^ARG TRITON_CUDA_MAJOR=(\d+)$", dockerfile, re.MULTILINE).group(1)
    (pin,) = re.findall(r'"onnxruntime-gpu==([0-9.]+)"', dockerfile)
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed", "--quiet",
                        "--report", report.name, f"onnxruntime-gpu=={pin}"], check=True, capture_output=True, timeout=300)
        requires = json.loads(Path(report.name).read_text())["install"][0]["metadata"]["requires_dist"]
    runtime = next(r for r in requires if r.startswith("nvidia-cuda-runtime"))
    assert re.search(rf"~={cuda_major}\.", runtime), (pin, runtime, cuda_major)


def test_every_milvus_gets_the_services_settings():
    """deploy/milvus/user.yaml (segment size: search cost grows with the segment count) reaches the
    compose Milvus, the Helm release and the test server alike."""
    from local_servers.milvus_server import service_config

    settings = yaml.safe_load((ROOT / "deploy" / "milvus" / "user.yaml").read_text())
    values = yaml.safe_load((ROOT / "k8s" / "milvus" / "values.yaml").read_text())
    assert yaml.safe_load(values["extraConfigFiles"]["user.yaml"]) == settings
    assert "./deploy/milvus/user.yaml:/milvus/configs/user.yaml:ro" in load("docker-compose.yml")["services"]["milvus"]["volumes"]
    assert service_config() == {"dataCoord.segment.maxSize": settings["dataCoord"]["segment"]["maxSize"]}


def test_compose_exports_run_as_the_export_images_user_on_volumes_handed_to_it():
    """The export image runs as a non-root user; a host folder mounted at /models is the host's, so a
    one-off root step hands exactly the exports' volumes to that user before either export starts."""
    services = load("docker-compose.yml")["services"]
    export_stage = (ROOT / "Dockerfile").read_text().split(" AS export\n")[1].split("\nFROM ")[0]
    user = re.findall(r"^USER (\d+)$", export_stage, re.MULTILINE)[-1]
    assert user != "0"
    handover = services["export-volumes"]
    assert handover["user"] == "root" and handover["entrypoint"][:3] == ["chown", "-R", f"{user}:{user}"]
    for name in ("export-clip", "export-blip"):
        service = services[name]
        assert "user" not in service and service["image"] == handover["image"]  # the image's own user
        assert service["depends_on"]["export-volumes"] == {"condition": "service_completed_successfully"}
        assert service["volumes"] == handover["volumes"]
        assert sorted(volume.split(":")[1] for volume in service["volumes"]) == sorted(handover["entrypoint"][3:])
