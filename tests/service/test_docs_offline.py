"""/docs and /redoc render from the service alone: every asset they reference is served
by the service (200, non-empty, the right content type), and no page names a URL on
another host, so a host without internet still gets working API docs."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx
import pytest

from service.app import create_app
from service.settings import Settings

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
