"""/docs and /redoc render from the service alone: every asset they reference is served
by the service (200, non-empty, the right content type), and no page names a URL on
another host, so a host without internet still gets working API docs. ReDoc renders
the whole document in a headless browser, and every request example the document
shows is one the service answers."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from tests.support.servers import ThreadedServer

CONTENT_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
    ".json": ("application/json",),
}


class _References(HTMLParser):
    """Every src/href/spec-url in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "spec-url") and value:
                self.urls.append(value)


def references(page: str) -> list[str]:
    parser = _References()
    parser.feed(page)
    # Swagger UI takes the schema's URL in its inline script.
    parser.urls += re.findall(r"\burl:\s*'([^']+)'", page)
    return parser.urls


@pytest.fixture(scope="module")
def app(tiny_store):
    return create_app(Settings(model_dir=tiny_store, provider="cpu"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_page_and_its_assets_come_from_the_service(app, page: str) -> None:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            answer = await http.get(page)
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/html")
            html = answer.text
            # No other host: neither absolute nor protocol-relative URLs.
            assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.I), html
            urls = references(html)
            assert any(u.endswith(".js") for u in urls), urls
            assert any(u.endswith("openapi.json") for u in urls), urls
            for url in urls:
                assert url.startswith("/"), url
                asset = await http.get(url)
                assert asset.status_code == 200, url
                assert asset.content, url
                suffix = url[url.rfind(".") :]
                kind = asset.headers["content-type"].split(";")[0]
                assert kind in CONTENT_TYPES[suffix], (url, kind)
            if page == "/docs":
                assert 'validatorUrl": null' in html
                redirect = await http.get("/docs/oauth2-redirect")
                assert redirect.status_code == 200


@pytest.mark.anyio
async def test_docs_assets_are_not_in_the_schema(app) -> None:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            schema = (await http.get("/openapi.json")).json()
    assert not [p for p in schema["paths"] if p.startswith(("/docs", "/redoc"))]


class _Text(HTMLParser):
    """The text a page shows (not its scripts and styles)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        self._hidden += tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._hidden -= tag in ("script", "style")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def _browser() -> str:
    found = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
    if found is None:
        pytest.skip("no headless chromium (apt-get install -y chromium)")
    return found


@pytest.fixture(scope="module")
def served(embedding_repository: Path):
    """A live service whose model answers the documented examples (sentiment and an
    embedding task named `embedding`, as the default model's)."""
    server = ThreadedServer(create_app(Settings(model_dir=embedding_repository, provider="cpu")))
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def ranking(tiny_store: Path):
    """A live service with a `similarity` pair task, the one /rerank's example needs
    (the default model's; the embedding repository above has no pair task)."""
    server = ThreadedServer(create_app(Settings(model_dir=tiny_store, provider="cpu")))
    yield server.url
    server.stop()


def test_redoc_renders_every_operation_in_a_browser(served: str) -> None:
    """ReDoc stops at the first reference it cannot resolve ("Something went wrong ...
    Invalid reference token: $defs"): the rendered text must hold every operation."""
    dom = subprocess.run(
        [
            _browser(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=20000",
            "--dump-dom",
            f"{served}/redoc",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    reader = _Text()
    reader.feed(dom)
    text = " ".join(" ".join(reader.parts).split())
    assert "Something went wrong" not in text, text[:2000]
    schema = httpx.get(f"{served}/openapi.json").json()
    summaries = [
        operation["summary"] for path in schema["paths"].values() for operation in path.values()
    ]
    missing = [summary for summary in summaries if summary not in text]
    assert not missing, (missing, text[:2000])


def _path_of(served: str, template: str, parameters: list[dict]) -> str:
    """The template with each path parameter's documented example (a version: the one
    the model serves, as its metadata says)."""
    path = template
    for parameter in parameters:
        if parameter["in"] != "path":
            continue
        name = parameter["name"]
        if name == "version":
            task = re.search(r"/v2/models/([^/]+)/", path).group(1)
            [value] = httpx.get(f"{served}/v2/models/{task}").json()["versions"]
        else:
            value = next(iter(parameter["examples"].values()))["value"]
        path = path.replace("{" + name + "}", value)
    return path


def test_every_documented_example_is_answered(served: str, ranking: str) -> None:
    """The request examples /docs and /redoc show are requests the service answers (200),
    and every protocol route that takes a body documents at least one."""
    schema = httpx.get(f"{served}/openapi.json").json()
    posted, undocumented = [], []
    for template, operations in schema["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if content is None:
                continue
            shown = content.get("examples", {})
            if not shown and template in PROTOCOL_BODIES:
                undocumented.append(template)
            for name, example in shown.items():
                base = ranking if template in NEEDS_PAIR_TASK else served
                url = base + _path_of(base, template, operation.get("parameters", []))
                answer = httpx.request(method, url, json=example["value"])
                assert answer.status_code == 200, (template, name, answer.text)
                posted.append((template, name))
    assert not undocumented
    assert {template for template, _ in posted} >= PROTOCOL_BODIES


NEEDS_PAIR_TASK = {"/rerank"}
PROTOCOL_BODIES = {
    "/v1/embeddings",
    "/embed",
    "/predict",
    "/rerank",
    "/tokenize",
    "/v2/models/{task}/infer",
    "/v2/models/{task}/versions/{version}/infer",
}
