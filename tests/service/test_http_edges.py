"""The smaller HTTP points: no Host-built redirect, no trusted X-Forwarded-For by
default, UTF-16 bodies refused, our own message for unparseable bodies, and a 500 that
keeps its keep-alive connection."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest

from service import __main__ as serve_main
from service.app import create_app
from service.settings import Settings
from tests.support.servers import ThreadedServer


@pytest.fixture(scope="module")
def store(tiny_store: Path) -> Path:
    """The session's tiny store (served read-only)."""
    return tiny_store


@pytest.fixture(scope="module")
def server(store: Path):
    app = create_app(Settings(model_dir=store, provider="cpu"))

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom, methods=["GET"])
    running = ThreadedServer(app)
    yield running
    running.stop()


def _raw(url: str, *requests: bytes) -> list[bytes]:
    """Send requests one after another on ONE connection; each response's head+body."""
    host, port = url.removeprefix("http://").split(":")
    answers = []
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        reader = sock.makefile("rb")
        for request in requests:
            sock.sendall(request)
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                byte = reader.read(1)
                if not byte:
                    raise ConnectionError("connection closed")
                head += byte
            length = next(
                int(line.split(b":")[1])
                for line in head.lower().split(b"\r\n")
                if line.startswith(b"content-length:")
            )
            answers.append(head + reader.read(length))
    return answers


def test_trailing_slash_does_not_redirect_by_host(server) -> None:
    body = json.dumps({"text": "fine"}).encode()
    [answer] = _raw(
        server.url,
        b"POST /sentiment/ HTTP/1.1\r\nHost: evil.example\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body,
    )
    assert b"evil.example" not in answer
    assert answer.startswith(b"HTTP/1.1 404") and b'"detail"' in answer


def test_a_500_keeps_the_keep_alive_connection(server) -> None:
    get = b"GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n"
    first, second = _raw(server.url, get % b"/boom", get % b"/health")
    assert first.startswith(b"HTTP/1.1 500") and b'"internal error"' in first
    assert second.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_utf16_and_utf32_bodies_are_refused(server, encoding) -> None:
    body = json.dumps({"text": "a fine film"}).encode(encoding)
    answer = httpx.post(
        f"{server.url}/sentiment", content=body, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400 and "must be UTF-8" in answer.json()["detail"]


@pytest.mark.parametrize("body", [b'{"text": "\xff\xfe bad"}', b"[" * 100_000])
def test_unparseable_bodies_get_our_message(server, body) -> None:
    answer = httpx.post(
        f"{server.url}/sentiment", content=body, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400
    assert "There was an error" not in answer.text
    assert answer.json()["detail"].startswith("the body is not valid JSON")


def test_forwarded_headers_are_not_trusted_by_default(store, monkeypatch) -> None:
    seen: dict = {}

    class Recorder:  # the server the command would run, with the config it was given
        started = True

        def __init__(self, config) -> None:
            seen["config"] = config

        def run(self) -> None:
            pass

    monkeypatch.setattr(serve_main, "CleanExitServer", Recorder)
    assert serve_main.main(["--model-dir", str(store), "--provider", "cpu"]) == 0
    assert seen["config"].proxy_headers is False
    monkeypatch.setenv("BERT_MTS_FORWARDED_ALLOW_IPS", "10.0.0.7")
    assert serve_main.main(["--model-dir", str(store), "--provider", "cpu"]) == 0
    assert seen["config"].proxy_headers is True
    assert seen["config"].forwarded_allow_ips == "10.0.0.7"
