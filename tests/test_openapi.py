"""The OpenAPI spec exercised by schemathesis against the live gateway (embedded mode, Milvus Lite):
generated requests, valid and invalid, never get a 5xx, and every response matches the documented
status codes, content types and schemas. One check is left out: "schema-valid data is accepted"
cannot hold for uploads, where any bytes fit the schema's `binary` but only images decode (they get
the documented 400). The gateway requires API keys, so schemathesis also checks that requests
without a key or with a wrong one are refused with 401. Driven through schemathesis's Python API: its pytest plugin does not work
with pytest 9."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from gateway.server.access import hash_key
from gateway.server.http.app import create_app
from local_servers.uvicorn_server import LiveServer
from tests.support.references import settings_for

pytestmark = pytest.mark.integration


KEY = "isk_schemathesis_0123456789abcdef0123456789"


@pytest.fixture(scope="module")
def api_schema(model_repository, tmp_path_factory):
    config = settings_for(model_repository, str(tmp_path_factory.mktemp("milvus-openapi") / "images.db"),
                          api_keys=[{"name": "schemathesis", "sha256": hash_key(KEY), "scopes": ["admin"]}])
    with LiveServer(create_app(config)) as server:
        yield schemathesis.openapi.from_url(f"{server.url}/openapi.json")


def test_api_conforms_to_its_openapi_spec(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 11
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            case.call_and_validate(headers={"X-API-Key": KEY}, excluded_checks=[positive_data_acceptance])

        check()
