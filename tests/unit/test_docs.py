"""The documents follow the code: the README stays a quick start, every relative link in it and in
docs/ resolves (files and #anchors), every setting is in the settings table, and every gateway
module a document or a docstring names exists."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

from gateway.settings import Settings

ROOT = Path(__file__).parents[2]
DOCUMENTS = [ROOT / "README.md", ROOT / "model_repository" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings (lower case, punctuation dropped, spaces -> -)."""
    headings = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_the_readme_is_a_quick_start():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(document):
    for target in LINK.findall(document.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        path = (document.parent / file).resolve() if file else document
        assert path.exists(), f"{document.name}: {target}"
        if anchor:
            assert anchor in anchors(path), f"{document.name}: {target} (anchors: {sorted(anchors(path))})"


def test_every_setting_is_in_the_settings_table():
    table = (ROOT / "docs" / "operations.md").read_text()
    missing = [name for name in Settings.model_fields if f"GATEWAY_{name.upper()}" not in table]
    assert missing == []


def prose(path: Path) -> str:
    """A module's docstrings and comments (where modules are named for readers, not code)."""
    source = path.read_text()
    tree = ast.parse(source)
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]
    docstrings = [ast.get_docstring(n) or "" for n in nodes]
    return "\n".join(docstrings + re.findall(r"#.*$", source, re.M))


def test_every_gateway_module_named_in_documents_and_docstrings_exists():
    code = [p for p in (ROOT / "gateway").rglob("*.py") if "_pb2" not in p.name]
    texts = [p.read_text() for p in DOCUMENTS] + [prose(p) for p in code]
    named = {m.rstrip(".") for text in texts for m in re.findall(r"\bgateway(?:\.[a-z0-9_]+)+", text)}
    assert [name for name in sorted(named) if not exists(name)] == []


def exists(name: str) -> bool:
    """A module, or an attribute of one (gateway.core.filters.holds)."""
    parts = name.split(".")
    for n in range(len(parts), 1, -1):
        try:
            if importlib.util.find_spec(".".join(parts[:n])) is not None:
                module = importlib.import_module(".".join(parts[:n]))
                return all(hasattr(module, attribute) for attribute in parts[n:n + 1])
        except ModuleNotFoundError:
            continue
    return False
