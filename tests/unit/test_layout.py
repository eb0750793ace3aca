"""The layout the architecture depends on, checked on the source: dependencies point one way
(server, cli -> wiring -> backends -> core -> runtime; the generated gRPC API a leaf; the HTTP and gRPC transports
apart), the runtime and the export import no web
framework, Milvus client or metrics, routes reach the service through typed dependencies, and no
test module imports another."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
# package -> the gateway packages it must not import
ABOVE_CORE = {"gateway.backends", "gateway.server", "gateway.cli", "gateway.wiring", "gateway.settings"}
FORBIDDEN = {
    "gateway.runtime": {"gateway.core"} | ABOVE_CORE,
    "gateway.core": ABOVE_CORE,
    "gateway.backends": {"gateway.server", "gateway.cli", "gateway.wiring", "gateway.settings"},
    "gateway.wiring": {"gateway.server", "gateway.cli"},
    "gateway.server": {"gateway.cli"},
    "gateway.server.http": {"gateway.server.grpc"},  # the transports know the core, not each other
    "gateway.server.grpc": {"gateway.server.http"},
    "gateway.cli": {"gateway.server"},
    "gateway.api": {"gateway.core", "gateway.runtime"} | ABOVE_CORE,  # generated code: a leaf the server and clients share
    "export": {"gateway.core", "gateway.backends", "gateway.server", "gateway.cli", "gateway.wiring", "gateway.settings"},
}
# what the Triton image installs (Dockerfile, target triton); nvidia: nvImageCodec, cupy: the GPU resize
RUNTIME_THIRD_PARTY = {"numpy", "PIL", "onnxruntime", "tokenizers", "nvidia", "cupy"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Absolute names of every module a file imports (relative imports resolved)."""
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                prefix = ".".join(base)
                names.add(f"{prefix}.{node.module}" if node.module else prefix)
                names |= {f"{prefix}.{node.module + '.' if node.module else ''}{a.name}" for a in node.names}
            else:
                names.add(node.module or "")
    return names


def sources(package: str) -> list[Path]:
    folder = ROOT.joinpath(*package.split("."))
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [folder.with_suffix(".py")]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependencies_point_one_way(package):
    wrong = [(module_name(path), name) for path in sources(package) for name in imports(path)
             if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[package])]
    assert wrong == []


def test_the_runtime_imports_only_what_the_triton_python_models_have():
    third_party = {name.split(".")[0] for path in sources("gateway.runtime") for name in imports(path)
                   if not name.startswith("gateway.")} - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party <= RUNTIME_THIRD_PARTY


def test_export_imports_without_the_web_stack_the_milvus_client_or_prometheus():
    blocked = ["fastapi", "starlette", "uvicorn", "pymilvus", "prometheus_client"]
    script = ("import sys\n"
              "class Block:\n"
              "    def find_spec(self, name, path=None, target=None):\n"
              f"        if name.split('.')[0] in {blocked!r}: raise ImportError('blocked: ' + name)\n"
              "sys.meta_path.insert(0, Block())\n"
              "import export.__main__, export.clip, export.blip, export.triton_repo, export.random_checkpoints\n"
              "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_only_the_milvus_backend_knows_milvus():
    """pymilvus is imported, and Milvus expressions are written, only under gateway/backends/milvus/."""
    milvus = ROOT / "gateway" / "backends" / "milvus"
    elsewhere = [p for p in (ROOT / "gateway").rglob("*.py") if milvus not in p.parents]
    assert [module_name(p) for p in elsewhere if any(n.split(".")[0] == "pymilvus" for n in imports(p))] == []
    expression = re.compile(r"""metadata\[\\?["']|\b(id|caption|source) (==|!=|in) [\["']""")
    assert [module_name(p) for p in elsewhere if expression.search(p.read_text())] == []
    assert all(expression.search((milvus / name).read_text()) for name in ("expressions.py", "store.py"))


def test_routes_take_the_service_from_typed_dependencies():
    routes = sources("gateway.server.http.routes")
    assert routes and not [p.name for p in routes if re.search(r"app\.state|\bRequest\b", p.read_text())]


def test_no_test_module_imports_another_test_module():
    offenders = [(module_name(path), name) for path in (ROOT / "tests").rglob("test_*.py") for name in imports(path)
                 if name.startswith("tests.") and name.split(".")[-1].startswith("test_")]
    assert offenders == []


def test_bench_and_the_makefile_do_not_reach_into_tests():
    reaches_in = re.compile(r"\b(from|import) tests\b|-m tests\.")
    users = [p.name for p in [*(ROOT / "bench").glob("*.py"), ROOT / "Makefile"] if reaches_in.search(p.read_text())]
    assert users == []


def test_the_generated_grpc_code_is_what_the_proto_gives(tmp_path):
    """gateway/api/*_pb2* are committed: regenerating them from the .proto (make proto) changes nothing."""
    from grpc_tools import protoc

    proto = "gateway/api/image_search.proto"
    (tmp_path / "gateway" / "api").mkdir(parents=True)
    (tmp_path / proto).write_text((ROOT / proto).read_text())
    include = Path(protoc.__file__).parent / "_proto"
    assert protoc.main(["protoc", f"-I{tmp_path}", f"-I{include}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}",
                        f"--grpc_python_out={tmp_path}", str(tmp_path / proto)]) == 0
    for name in ("image_search_pb2.py", "image_search_pb2.pyi", "image_search_pb2_grpc.py"):
        assert (tmp_path / "gateway" / "api" / name).read_text() == (ROOT / "gateway" / "api" / name).read_text(), name
