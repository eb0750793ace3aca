"""Tenants on a real gateway (uvicorn's HTTP and the gRPC server beside it, the tiny exported models in
process) over Milvus Lite and the Milvus 2.3.5 server (the tenant a partition key there): two tenants'
keys, alpha and beta, each holding images of its own and the same bytes as the other. With alpha's key,
every one of beta's ids is read, thumbnailed, searched from, deleted as an absent id is (the same status,
code and message), over HTTP, gRPC and the CLI; searches of both retrieval paths (CLIP and the captions'
words), listings and totals hold alpha's records only; an operator key acts for the tenant it names and
alone lists, counts and deletes tenants; hostile tenant names and declared-field values are refused
with a clear 4xx and change nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import httpx
import pytest

from gateway.api import image_search_pb2 as pb
from gateway.api import image_search_pb2_grpc as pb_grpc
from gateway.cli.main import main as cli
from gateway.server.access import hash_key
from tests.support.gateways import http_and_grpc
from tests.support.images import PHOTO_JPEGS, unique_image

pytestmark = pytest.mark.integration
KEYS = {"alpha": "isk_alpha_0123456789abcdef0123456789", "beta": "isk_beta_0123456789abcdef0123456789",
        "operator": "isk_operator_0123456789abcdef012345", "viewer": "isk_viewer_0123456789abcdef0123456"}
ENTRIES = [{"name": "alpha", "sha256": hash_key(KEYS["alpha"]), "scopes": ["admin"], "tenant": "alpha"},
           {"name": "beta", "sha256": hash_key(KEYS["beta"]), "scopes": ["admin"], "tenant": "beta"},
           {"name": "operator", "sha256": hash_key(KEYS["operator"]), "scopes": ["admin"], "operator": True},
           {"name": "viewer", "sha256": hash_key(KEYS["viewer"]), "scopes": ["search"], "operator": True}]
DECLARED = {"album": "keyword", "year": "integer"}
SHARED = PHOTO_JPEGS["coffee"]  # uploaded by both tenants
ABSENT = "0123456789abcdef" * 2


@dataclass
class Deployment:
    url: str
    target: str
    stub: pb_grpc.ImageSearchStub
    ids: dict[str, list[str]]  # tenant -> its ids (the shared image's last)
    captions: dict[str, list[str]]


def headers(key: str, tenant: str | None = None) -> dict[str, str]:
    return {"X-API-Key": KEYS[key], **({"X-Tenant": tenant} if tenant else {})}


def metadata(key: str, tenant: str | None = None) -> tuple[tuple[str, str], ...]:
    return (("x-api-key", KEYS[key]),) + ((("x-tenant", tenant),) if tenant else ())


def index(url: str, key: str, images: list[bytes], album: str) -> list[dict]:
    response = httpx.post(f"{url}/v1/images", headers=headers(key), timeout=120,
                          data={"metadata": json.dumps({"album": album, "year": 2024}), "wait_for_caption": "true"},
                          files=[("files", (f"{i}.jpg", data, "image/png")) for i, data in enumerate(images)])
    assert response.status_code == 200, response.text
    return response.json()["images"]


@pytest.fixture(scope="module", params=["lite", pytest.param("server", marks=pytest.mark.milvus_server)])
def deployment(request, model_repository, tmp_path_factory) -> Iterator[Deployment]:
    if request.param == "lite":
        uri = str(tmp_path_factory.mktemp("tenants") / "images.db")
    else:
        uri = request.getfixturevalue("milvus_server").uri
    with http_and_grpc(model_repository, uri, api_keys=ENTRIES, filter_fields=DECLARED, collection="tenants",
                       read_consistency="Strong" if request.param == "server" else "Session") as (url, target), \
            grpc.insecure_channel(target) as channel:
        ids, captions = {}, {}
        for tenant, seeds in (("alpha", (1, 2)), ("beta", (3, 4))):
            done = index(url, tenant, [unique_image(seed) for seed in seeds] + [SHARED], album=f"{tenant}-album")
            assert all(image["created"] for image in done)  # the shared bytes too: deduplicated within a tenant only
            ids[tenant], captions[tenant] = [image["id"] for image in done], [image["caption"] for image in done]
        assert ids["alpha"][-1] == ids["beta"][-1]  # the same bytes: the same id, two records
        yield Deployment(url, target, pb_grpc.ImageSearchStub(channel), ids, captions)


def absent_like(response: httpx.Response, image_id: str, absent: httpx.Response) -> None:
    """``response`` (about image_id) is what ``absent`` (about ABSENT) is, but for the id in the message."""
    assert response.status_code == absent.status_code == 404, response.text
    mine, theirs = response.json()["error"], absent.json()["error"]
    assert (mine["code"], mine["type"]) == (theirs["code"], theirs["type"])
    assert mine["message"].replace(image_id, "<id>") == theirs["message"].replace(ABSENT, "<id>")


def test_another_tenants_images_answer_as_absent_ones_over_http(deployment):
    url, ids = deployment.url, deployment.ids
    with httpx.Client(base_url=url, headers=headers("alpha"), timeout=60) as http:
        for route in ("/v1/images/{}", "/v1/images/{}/thumbnail", "/v1/images/{}/similar"):
            absent = http.get(route.format(ABSENT))
            for image_id in ids["beta"][:2]:
                absent_like(http.get(route.format(image_id)), image_id, absent)
        absent = http.delete(f"/v1/images/{ABSENT}")
        for image_id in ids["beta"][:2]:
            absent_like(http.delete(f"/v1/images/{image_id}"), image_id, absent)
        listed = http.get("/v1/images", params={"limit": 100}).json()
        assert sorted(i["id"] for i in listed["images"]) == sorted(ids["alpha"]) and listed["total"] == 3
        shared = http.get(f"/v1/images/{ids['alpha'][-1]}").json()
        assert shared["metadata"]["album"] == "alpha-album"  # alpha's record of the shared bytes, not beta's
    with httpx.Client(base_url=url, headers=headers("beta"), timeout=60) as http:  # beta lost nothing
        assert http.get("/v1/images", params={"limit": 100}).json()["total"] == 3
        assert all(http.get(f"/v1/images/{i}").status_code == 200 for i in ids["beta"])


def test_searches_of_every_path_find_only_the_callers_records(deployment):
    url, ids, captions = deployment.url, deployment.ids, deployment.captions
    with httpx.Client(base_url=url, headers=headers("alpha"), timeout=60) as http:
        for beta_image in (unique_image(3), unique_image(4), SHARED):
            hits = http.post("/v1/search/image", files={"file": ("q.jpg", beta_image, "image/jpeg")}, data={"k": 10}).json()
            assert {h["id"] for h in hits["results"]} == set(ids["alpha"])
            assert {h["metadata"]["album"] for h in hits["results"]} == {"alpha-album"}
        for query in {*captions["beta"], *captions["alpha"], "a photo"}:
            for response in (http.get("/v1/search/text", params={"q": query, "k": 10}),
                             http.post("/v1/search/text", json={"query": query, "k": 10})):
                results = response.json()["results"]
                assert {h["id"] for h in results} <= set(ids["alpha"]) and len(results) == 3, query
                assert {h["metadata"]["album"] for h in results} == {"alpha-album"}
        similar = http.get(f"/v1/images/{ids['alpha'][0]}/similar", params={"k": 10}).json()["results"]
        assert {h["id"] for h in similar} == set(ids["alpha"][1:])
        beta_filter = json.dumps([{"field": "metadata.album", "value": "beta-album"}])
        assert http.get("/v1/search/text", params={"q": "photo", "filter": beta_filter}).json()["results"] == []
        declared = json.dumps([{"field": "metadata.year", "op": "gte", "value": 2024}])
        assert {h["id"] for h in http.get("/v1/search/text", params={"q": "photo", "filter": declared}).json()["results"]} \
            == set(ids["alpha"])


def test_another_tenants_images_answer_as_absent_ones_over_grpc(deployment):
    stub, ids = deployment.stub, deployment.ids
    alpha = metadata("alpha")
    for call in (lambda i: stub.GetImage(pb.GetImageRequest(id=i), metadata=alpha),
                 lambda i: stub.GetThumbnail(pb.GetThumbnailRequest(id=i), metadata=alpha),
                 lambda i: stub.SearchSimilar(pb.SearchSimilarRequest(id=i), metadata=alpha),
                 lambda i: stub.DeleteImage(pb.DeleteImageRequest(id=i), metadata=alpha)):
        with pytest.raises(grpc.RpcError) as absent:
            call(ABSENT)
        for image_id in ids["beta"][:2]:
            with pytest.raises(grpc.RpcError) as refused:
                call(image_id)
            assert refused.value.code() == absent.value.code() == grpc.StatusCode.NOT_FOUND
            assert refused.value.details().replace(image_id, "<id>") == absent.value.details().replace(ABSENT, "<id>")
    listed = stub.ListImages(pb.ListImagesRequest(page_size=100), metadata=alpha)
    assert sorted(i.id for i in listed.images) == sorted(ids["alpha"]) and listed.total_size == 3
    hits = stub.SearchImage(pb.SearchImageRequest(image=unique_image(3), k=10), metadata=alpha)
    assert {h.image.id for h in hits.results} == set(ids["alpha"])
    texts = stub.SearchText(pb.SearchTextRequest(query=deployment.captions["beta"][0], k=10), metadata=alpha)
    assert {h.image.id for h in texts.results} == set(ids["alpha"])
    shared = stub.GetImage(pb.GetImageRequest(id=ids["beta"][-1]), metadata=metadata("beta"))
    assert shared.metadata["album"] == "beta-album"
    # alpha's bytes indexed with beta's key are a record of beta's own; deleting it leaves alpha's
    done = stub.IndexImages(iter([pb.IndexImagesRequest(image=unique_image(1), name="copy.png")]), metadata=metadata("beta"))
    assert done.images[0].created and done.images[0].image.id == ids["alpha"][0]
    stub.DeleteImage(pb.DeleteImageRequest(id=ids["alpha"][0]), metadata=metadata("beta"))
    assert stub.GetImage(pb.GetImageRequest(id=ids["alpha"][0]), metadata=alpha).source == "0.jpg"
    with pytest.raises(grpc.RpcError) as gone:
        stub.GetImage(pb.GetImageRequest(id=ids["alpha"][0]), metadata=metadata("beta"))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_operator_keys_act_for_the_tenant_they_name_and_alone_see_across_tenants(deployment):
    url, stub, ids = deployment.url, deployment.stub, deployment.ids
    with httpx.Client(base_url=url, timeout=60) as http:
        as_beta = http.get("/v1/images", params={"limit": 100}, headers=headers("operator", "beta")).json()
        assert sorted(i["id"] for i in as_beta["images"]) == sorted(ids["beta"])
        unnamed = http.get("/v1/images", headers=headers("operator"))
        assert unnamed.status_code == 422 and unnamed.json()["error"]["code"] == "invalid_tenant"
        assert "X-Tenant" in unnamed.json()["error"]["message"]
        other = http.get("/v1/images", headers=headers("alpha", "beta"))  # a bound key naming another tenant
        assert other.status_code == 403 and other.json()["error"]["code"] == "forbidden"
        assert http.get("/v1/images", headers=headers("alpha", "alpha")).json()["total"] == 3  # its own: fine
        tenants = http.get("/v1/tenants", headers=headers("viewer")).json()
        assert {t["tenant"]: t["images"] for t in tenants["tenants"]} == {"alpha": 3, "beta": 3}
        assert http.get("/v1/tenants/beta", headers=headers("viewer")).json() == {"tenant": "beta", "images": 3}
        assert http.get("/v1/tenants/nobody", headers=headers("viewer")).json() == {"tenant": "nobody", "images": 0}
        for refused, status in ((http.get("/v1/tenants", headers=headers("alpha")), 403),
                                (http.delete("/v1/tenants/beta", headers=headers("alpha")), 403),
                                (http.delete("/v1/tenants/beta", headers=headers("viewer")), 403),  # no admin scope
                                (http.get("/v1/tenants"), 401)):
            assert refused.status_code == status, refused.text
    reply = stub.ListTenants(pb.ListTenantsRequest(), metadata=metadata("viewer"))
    assert {t.tenant: t.images for t in reply.tenants} == {"alpha": 3, "beta": 3}
    assert stub.GetTenant(pb.GetTenantRequest(tenant="alpha"), metadata=metadata("viewer")).images == 3
    with pytest.raises(grpc.RpcError) as refused:
        stub.ListTenants(pb.ListTenantsRequest(), metadata=metadata("alpha"))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as refused:
        stub.ListImages(pb.ListImagesRequest(), metadata=metadata("operator"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(refused.value.trailing_metadata())["error-code"] == "invalid_tenant"
    named = stub.ListImages(pb.ListImagesRequest(page_size=100), metadata=metadata("operator", "alpha"))
    assert sorted(i.id for i in named.images) == sorted(ids["alpha"])


HOSTILE_TENANTS = ["../alpha", "alpha beta", "x" * 65, "alpha\"", "-alpha", "al.pha", "alpha%00", "ålpha", "tenant == \"alpha\""]


def test_hostile_tenant_names_and_declared_values_are_refused_and_change_nothing(deployment):
    url, stub = deployment.url, deployment.stub
    with httpx.Client(base_url=url, timeout=60) as http:
        before = http.get("/v1/tenants", headers=headers("viewer")).json()
        for name in HOSTILE_TENANTS:
            for response in (http.get("/v1/images", headers={"X-API-Key": KEYS["operator"], "X-Tenant": name.encode()}),
                             http.get(f"/v1/tenants/{name}", headers=headers("viewer")),
                             http.delete(f"/v1/tenants/{name}", headers=headers("operator"))):
                assert response.status_code in (404, 422), (name, response.text)  # 404: a path the router cannot match
                if response.status_code == 422:
                    assert response.json()["error"]["code"] == "invalid_tenant", (name, response.text)
            with pytest.raises(grpc.RpcError) as refused:
                stub.DeleteTenant(pb.DeleteTenantRequest(tenant=name), metadata=metadata("operator"))
            assert dict(refused.value.trailing_metadata())["error-code"] == "invalid_tenant"
        for bad in ({"album": 5}, {"album": ""}, {"year": "2024"}, {"year": 2024.5}, {"album": ["a"]}):
            response = httpx.post(f"{url}/v1/images", headers=headers("alpha"), data={"metadata": json.dumps(bad)},
                                  files=[("files", ("new.jpg", unique_image(50), "image/jpeg"))], timeout=60)
            assert response.status_code == 400 and "declared" in response.json()["error"]["message"], response.text
        for condition in ({"field": "metadata.album", "value": 5}, {"field": "metadata.year", "value": 1.5},
                          {"field": "metadata.year", "op": "contains", "value": 1},
                          {"field": "metadata.album", "op": "gt", "value": 3}):
            response = http.get("/v1/search/text", params={"q": "photo", "filter": json.dumps([condition])},
                                headers=headers("alpha"))
            assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_filter", response.text
        assert http.get("/v1/tenants", headers=headers("viewer")).json() == before


def test_the_cli_acts_for_its_keys_tenant_over_both_transports(deployment, tmp_path, monkeypatch, capsys):
    url, ids = deployment.url, deployment.ids
    monkeypatch.chdir(tmp_path)
    for address in (url, f"grpc://{deployment.target}"):
        assert cli(["--url", address, "--api-key", KEYS["alpha"], "query", "--similar-to", ids["beta"][0]]) == 2
        assert "error [not_found]" in capsys.readouterr().err
        assert cli(["--url", address, "--api-key", KEYS["alpha"], "query", "--similar-to", ids["alpha"][0], "--k", "5"]) == 0
        assert len([line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]) == 3  # header + 2 hits
        assert cli(["--url", address, "--api-key", KEYS["viewer"], "tenants"]) == 0
        assert capsys.readouterr().out.split() == ["tenant", "images", "alpha", "3", "beta", "3"]
        # the operator acting for beta finds beta's image (alpha's key did not)
        assert cli(["--url", address, "--api-key", KEYS["operator"], "--tenant", "beta", "query", "--similar-to",
                    ids["beta"][0], "--k", "5"]) == 0
        assert cli(["--url", address, "--api-key", KEYS["operator"], "query", "--similar-to", ids["beta"][0]]) == 2
        assert "error [invalid_tenant]" in capsys.readouterr().err


def test_deleting_a_tenant_removes_its_images_alone(deployment, tmp_path, monkeypatch, capsys):
    """(Last: it changes the deployment the other tests read.)"""
    url, ids = deployment.url, deployment.ids
    with httpx.Client(base_url=url, timeout=60) as http:
        assert http.delete(f"/v1/images/{ids['alpha'][-1]}", headers=headers("alpha")).status_code == 204
        assert http.get(f"/v1/images/{ids['beta'][-1]}", headers=headers("beta")).status_code == 200  # beta's copy stays
        monkeypatch.chdir(tmp_path)
        assert cli(["--url", url, "--api-key", KEYS["operator"], "delete-tenant", "beta"]) == 2  # without --yes
        assert cli(["--url", url, "--api-key", KEYS["operator"], "delete-tenant", "beta", "--yes"]) == 0
        assert "deleted 3 images of tenant 'beta'" in capsys.readouterr().out
        assert http.get("/v1/images", headers=headers("beta")).json()["total"] == 0
        assert http.get("/v1/images", headers=headers("alpha")).json()["total"] == 2
        assert {t["tenant"]: t["images"] for t in http.get("/v1/tenants", headers=headers("viewer")).json()["tenants"]} == \
            {"alpha": 2}
