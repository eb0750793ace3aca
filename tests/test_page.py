"""The search page at / in a real headless Chromium (Debian's, driven by Playwright) against the real
gateway: search by text, search by an uploaded image, add images; thumbnails come from the gateway."""

from __future__ import annotations

import shutil

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from gateway.server.http.app import create_app
from local_servers.uvicorn_server import LiveServer
from tests.support.images import photo_bytes
from tests.support.references import settings_for

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def site(model_repository, tmp_path_factory):
    settings = settings_for(model_repository, str(tmp_path_factory.mktemp("milvus-page") / "images.db"))
    with LiveServer(create_app(settings)) as server:
        files = [("files", (f"{n}.jpg", photo_bytes(n, "JPEG"), "image/jpeg")) for n in ("astronaut", "coffee", "rocket")]
        ids = {i["source"]: i["id"] for i in httpx.post(f"{server.url}/v1/images", files=files, timeout=120).json()["images"]}
        yield server.url, ids


@pytest.fixture(scope="module")
def page(site):
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed for the page test: `make setup` installs it"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        page.goto(site[0] + "/")
        yield page
        browser.close()


def images_loaded(page) -> bool:
    return page.eval_on_selector_all(".result img",
                                     "imgs => imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0)")


def test_before_any_search_the_page_shows_what_is_indexed_and_labels_its_fields(page, site):
    expect(page.locator("#status")).to_have_text("3 images indexed: search by text or by image")
    expect(page.locator(".result")).to_have_count(3)
    listed = httpx.get(f"{site[0]}/v1/images").json()["images"]
    assert [c.get_attribute("data-id") for c in page.locator(".result").all()] == [i["id"] for i in listed]
    page.wait_for_function("() => [...document.querySelectorAll('.result img')].every(i => i.complete && i.naturalWidth > 0)")
    assert page.get_by_label("results").get_attribute("id") == "k"
    assert page.get_by_label("min score").get_attribute("id") == "min-score"


def test_text_search_shows_results_with_thumbnails_captions_and_scores(page, site):
    page.fill("#query", "man in red jacket")
    page.fill("#k", "2")
    page.click("#text-form button[type=submit]")
    expect(page.locator(".result")).to_have_count(2)
    expect(page.locator("#status")).to_contain_text("2 results for")
    page.wait_for_function("() => [...document.querySelectorAll('.result img')].every(i => i.complete && i.naturalWidth > 0)")
    assert images_loaded(page)
    want = httpx.get(f"{site[0]}/v1/search/text", params={"q": "man in red jacket", "k": 2}).json()["results"]
    assert [c.get_attribute("data-id") for c in page.locator(".result").all()] == [h["id"] for h in want]
    assert page.locator(".result figcaption").first.inner_text().startswith(f"{want[0]['score']:.4f}")


def test_search_by_uploaded_image_finds_it_first(page, site, tmp_path):
    query = tmp_path / "rocket.jpg"
    query.write_bytes(photo_bytes("rocket", "JPEG"))
    page.set_input_files("#image-query", str(query))
    expect(page.locator("#status")).to_contain_text("for rocket.jpg")
    assert page.locator(".result").first.get_attribute("data-id") == site[1]["rocket.jpg"]
    page.wait_for_function("() => [...document.querySelectorAll('.result img')].every(i => i.complete && i.naturalWidth > 0)")


def test_min_score_hides_lower_results(page, site):
    every = httpx.get(f"{site[0]}/v1/search/text", params={"q": "a photo", "k": 3}).json()["results"]
    cutoff = every[1]["score"]  # the second hit's score: two results at or above it
    page.fill("#query", "a photo")
    page.fill("#k", "3")
    page.fill("#min-score", repr(cutoff))
    page.click("#text-form button[type=submit]")
    # (the whole status: the previous test's "2 results for rocket.jpg" must not pass for this search's)
    expect(page.locator("#status")).to_have_text("2 results for “a photo”")
    assert [c.get_attribute("data-id") for c in page.locator(".result").all()] == [h["id"] for h in every[:2]]
    page.fill("#min-score", "")


def test_the_similar_link_shows_the_images_most_like_a_result(page, site):
    page.fill("#min-score", "")
    page.fill("#query", "man in red jacket")
    page.fill("#k", "3")
    page.click("#text-form button[type=submit]")
    expect(page.locator("#status")).to_have_text("3 results for “man in red jacket”")
    first = page.locator(".result").first.get_attribute("data-id")
    page.locator(".result .similar").first.click()
    expect(page.locator("#status")).to_contain_text("2 results for images like")  # the 3 stored, less itself
    want = httpx.get(f"{site[0]}/v1/images/{first}/similar", params={"k": 3}).json()["results"]
    assert [c.get_attribute("data-id") for c in page.locator(".result").all()] == [h["id"] for h in want]
    assert first not in [h["id"] for h in want]


def test_adding_images_from_the_page(page, site, tmp_path):
    total = httpx.get(f"{site[0]}/v1/images").json()["total"]
    new, old = tmp_path / "chelsea.png", tmp_path / "coffee.jpg"
    new.write_bytes(photo_bytes("chelsea", "PNG"))
    old.write_bytes(photo_bytes("coffee", "JPEG"))
    page.set_input_files("#add-images", [str(new), str(old)])
    expect(page.locator("#status")).to_have_text("1 indexed, 1 already there")
    assert httpx.get(f"{site[0]}/v1/images").json()["total"] == total + 1


def test_errors_are_shown_on_the_page(page, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"not an image")
    page.set_input_files("#image-query", str(bad))
    expect(page.locator("#status")).to_have_text("notes.jpg: not a recognised image format")
    expect(page.locator("#status")).to_have_class("error")


def test_with_api_keys_the_page_asks_for_one_and_then_searches_with_thumbnails(model_repository, tmp_path, page):
    from gateway.server.access import hash_key

    key = "isk_page_0123456789abcdef0123456789abcdef01"
    settings = settings_for(model_repository, str(tmp_path / "images.db"),
                            api_keys=[{"name": "page", "sha256": hash_key(key), "scopes": ["search", "write"]}])
    with LiveServer(create_app(settings)) as server:
        files = [("files", ("rocket.jpg", photo_bytes("rocket", "JPEG"), "image/jpeg"))]
        assert httpx.post(f"{server.url}/v1/images", files=files, headers={"X-API-Key": key}, timeout=120).status_code == 200
        page = page.context.browser.new_page()
        page.goto(server.url + "/")
        page.fill("#query", "rocket")
        page.click("#text-form button[type=submit]")
        expect(page.locator("#status")).to_contain_text("this route needs an API key")
        page.fill("#api-key", key)
        page.dispatch_event("#api-key", "change")
        page.click("#text-form button[type=submit]")
        expect(page.locator(".result")).to_have_count(1)
        page.wait_for_function("() => [...document.querySelectorAll('.result img')].every(i => i.complete && i.naturalWidth > 0)")
        assert page.evaluate("sessionStorage.getItem('api-key')") == key
        page.close()


def test_docs_and_redoc_render_with_the_network_blocked(page, site):
    """Air-gapped clusters: every request that does not go to the gateway itself is refused."""
    url = site[0]
    outside: list[str] = []

    def only_the_gateway(route):
        if route.request.url.startswith(url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context = page.context.browser.new_context()
    docs = context.new_page()
    docs.route("**/*", only_the_gateway)
    docs.goto(url + "/docs")
    expect(docs.locator(".swagger-ui .info .title")).to_contain_text("image-search gateway")
    expect(docs.locator(".opblock-summary-path").first).to_be_visible()
    docs.goto(url + "/redoc")
    expect(docs.locator("h1").first).to_contain_text("image-search gateway")
    # nothing the pages need leaves the gateway: ReDoc's footer asks for its vendor's logo, an image whose
    # absence changes nothing
    assert [u for u in outside if not u.endswith("/redoc/logo-mini.svg")] == []
    context.close()
