"""A collection made before tenants and declared filter fields (the schema every collection had until
then: the image id as primary key, no tenant), brought to the current schema by `image-search migrate`
on Milvus Lite and on the Milvus 2.3.5 server (where the tenant becomes the partition key): a gateway
refuses it until then, naming what to run; afterwards every record is the default tenant's with its
id, vector, caption, metadata and thumbnail, the declared fields are filled from the metadata (a value
of another type counts as missing there, and stays in the metadata), and a filter on them selects
what brute force selects."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from gateway.backends.milvus import MilvusStore
from gateway.backends.milvus.schema import row
from gateway.backends.repository import read_model_info
from gateway.cli.main import main as cli
from gateway.core.errors import ServiceError
from gateway.core.filters import check, validate
from gateway.core.records import DEFAULT_TENANT, ImageRecord
from gateway.settings import Settings
from gateway.wiring import build_store
from tests.support.fakes import unit

pytestmark = pytest.mark.integration
DECLARED = {"album": "keyword", "year": "integer"}
COUNT = 700


def legacy_collection(client, name: str, dim: int) -> None:
    """The collection schema.create_collection made before tenants (its code then, without the BM25 field)."""
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False, enable_dynamic_field=False, description="")
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("caption", DataType.VARCHAR, max_length=4096)
    schema.add_field("source", DataType.VARCHAR, max_length=1024)
    schema.add_field("metadata", DataType.JSON)
    schema.add_field("created_at", DataType.INT64)
    schema.add_field("phash", DataType.VARCHAR, max_length=32)
    schema.add_field("thumbnail", DataType.VARCHAR, max_length=65535)
    schema.add_field("caption_state", DataType.VARCHAR, max_length=16)
    schema.add_field("caption_error", DataType.VARCHAR, max_length=1024)
    schema.add_field("caption_attempts", DataType.INT64)
    schema.add_field("lease_owner", DataType.VARCHAR, max_length=128)
    schema.add_field("lease_until", DataType.INT64)
    schema.add_field("retry_at", DataType.INT64)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="COSINE")
    client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")


def old_records(dim: int) -> list[ImageRecord]:
    rng = np.random.default_rng(4)
    out = []
    for i in range(COUNT):
        metadata: dict = {"album": ["a", "b", "c"][i % 3], "year": 2000 + i % 9, "n": i}
        if i % 10 == 0:
            metadata["year"] = "not a year"  # another type than the declaration's: missing for the typed field
        if i % 13 == 0:
            del metadata["album"]
        out.append(ImageRecord(f"{i:032x}", f"caption {i}", f"{i}.jpg", metadata, 1_700_000_000 + i, "0" * 16,
                               unit(rng.normal(size=dim)), f"thumb{i}", "done"))
    return out


def store_at(uri: str, dim: int, **settings) -> MilvusStore:
    return build_store(Settings(_env_file=None, milvus_uri=uri, collection="legacy", index_type="FLAT", **settings), dim)


def fill_legacy(uri: str, dim: int, records: list[ImageRecord]) -> None:
    from pymilvus import MilvusClient

    client = MilvusClient(uri)
    if client.has_collection("legacy"):
        client.drop_collection("legacy")
    legacy_collection(client, "legacy", dim)
    for start in range(0, len(records), 200):  # rows as they were: no key, no tenant
        client.insert("legacy", [{k: v for k, v in row(r, {}).items() if k not in ("key", "tenant")}
                                 for r in records[start:start + 200]])
    client.flush("legacy")
    client.close()


async def refused(uri: str, dim: int) -> str:
    store = store_at(uri, dim, filter_fields=DECLARED)
    try:
        await store.start()
    except ServiceError as exc:
        return exc.message
    finally:
        await store.close()
    return ""


async def check_migrated(uri: str, dim: int, records: list[ImageRecord]) -> None:
    store = store_at(uri, dim, filter_fields=DECLARED)
    await store.start()
    try:
        assert await store.tenants() == {DEFAULT_TENANT: COUNT}
        copied = {r.id: r for r in await store.all_records(DEFAULT_TENANT)}
        assert set(copied) == {r.id for r in records}
        for record in records[::37]:
            got = copied[record.id]
            assert (got.caption, got.source, got.metadata, got.created_at, got.tenant) == (
                record.caption, record.source, record.metadata, record.created_at, DEFAULT_TENANT)
            np.testing.assert_allclose(got.vector, record.vector, atol=1e-6)
            assert await store.thumbnail(DEFAULT_TENANT, record.id) == record.thumbnail
        query = records[5].vector[None]
        for conditions, keeps in (
                ([{"field": "metadata.year", "op": "lt", "value": 2004}],
                 lambda r: isinstance(r.metadata.get("year"), int) and r.metadata["year"] < 2004),
                ([{"field": "metadata.year", "op": "ne", "value": 2003}], lambda r: r.metadata.get("year") != 2003),
                ([{"field": "metadata.album", "op": "in", "value": ["a", "c"]}],
                 lambda r: r.metadata.get("album") in ("a", "c"))):
            (hits,) = await store.search(DEFAULT_TENANT, query, COUNT, check(validate(conditions), DECLARED))
            assert {r.id for r, _ in hits} == {r.id for r in records if keeps(r)}, conditions
    finally:
        await store.close()


@pytest.mark.parametrize("where", ["lite", pytest.param("server", marks=pytest.mark.milvus_server)])
def test_a_collection_made_before_tenants_is_migrated_by_the_cli(where, request, tmp_path, model_repository, monkeypatch,
                                                                 capsys, caplog):
    dim = read_model_info(model_repository, captions=False).embedding_dim
    uri = str(tmp_path / "old.db") if where == "lite" else request.getfixturevalue("milvus_server").uri
    records = old_records(dim)
    fill_legacy(uri, dim, records)
    message = asyncio.run(refused(uri, dim))
    assert "made before tenants" in message and "image-search migrate" in message
    for name, value in {"GATEWAY_MILVUS_URI": uri, "GATEWAY_MODEL_REPOSITORY": str(model_repository),
                        "GATEWAY_CAPTIONS": "false", "GATEWAY_COLLECTION": "legacy",
                        "GATEWAY_FILTER_FIELDS": json.dumps(DECLARED), "GATEWAY_INDEX_TYPE": "FLAT"}.items():
        monkeypatch.setenv(name, value)
    caplog.set_level("WARNING", "gateway.store")
    assert cli(["migrate"]) == 0
    assert f"copied {COUNT} records" in capsys.readouterr().out
    unfit = sum(1 for r in records if not isinstance(r.metadata.get("year"), int))
    assert any(f"{unfit} metadata values do not have their declared type" in r.message for r in caplog.records)
    asyncio.run(check_migrated(uri, dim, records))
    # another declaration: refused until migrated again, then served with it
    monkeypatch.setenv("GATEWAY_FILTER_FIELDS", json.dumps({**DECLARED, "n": "float"}))
    assert cli(["migrate"]) == 0 and f"copied {COUNT} records" in capsys.readouterr().out
    assert cli(["migrate"]) == 0 and "nothing to do" in capsys.readouterr().out
    if where == "server":
        from pymilvus import MilvusClient

        MilvusClient(uri).drop_collection("legacy")
