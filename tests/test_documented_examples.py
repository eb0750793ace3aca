"""The documents' examples run as written against a gateway with no keys configured (the embedded
default): the README's OpenAI client snippet (it sends a key, which is then ignored) and gRPC's Python
snippet in docs/grpc.md, each with only the address changed, in a folder holding the files they open."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.gateways import http_and_grpc
from tests.support.images import photo_bytes

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[1]


def python_blocks(document: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", document.read_text(), re.S)


@pytest.fixture(scope="module")
def gateway(model_repository, tmp_path_factory):
    with http_and_grpc(model_repository, str(tmp_path_factory.mktemp("examples") / "images.db")) as addresses:
        yield addresses


@pytest.fixture
def folder(tmp_path, monkeypatch):
    for name, photo in {"cat.jpg": "chelsea", "a.jpg": "coffee", "b.jpg": "rocket"}.items():
        (tmp_path / name).write_bytes(photo_bytes(photo, "JPEG"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readmes_openai_snippet(gateway, folder):
    (snippet,) = [b for b in python_blocks(ROOT / "README.md") if "OpenAI(" in b]
    scope: dict = {}
    exec(snippet.replace("http://localhost:8000", gateway[0]), scope)
    vectors = scope["vectors"]
    assert len(vectors) == 2 and all(len(v.embedding) > 0 for v in vectors)


def test_the_grpc_python_snippet(gateway, folder):
    (snippet,) = [b for b in python_blocks(ROOT / "docs" / "grpc.md") if "ImageSearchStub" in b]
    scope: dict = {}
    exec(snippet.replace("localhost:50051", gateway[1]), scope)
    assert [d.image.source for d in scope["done"]] == ["a.jpg", "b.jpg"] and scope["hits"] is not None
