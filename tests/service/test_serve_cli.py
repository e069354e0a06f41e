"""`python -m service` as an operator runs it: the start-up log says whether the admin
routes exist, and Ctrl-C or SIGTERM ends it cleanly (exit code 0 after the graceful
shutdown), so `make serve` stopped with Ctrl-C prints no make error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.commands import ROOT
from tests.support.live_repository import ADMIN_TOKEN
from tests.support.servers import free_port


@pytest.fixture
def store(tiny_store: Path) -> Path:
    """The session's tiny store (read-only: the service only reads it)."""
    return tiny_store


def serve(store: Path, **env: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--model-dir", str(store), "--port", str(port)],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if k != "BERT_MTS_ADMIN_TOKEN"},
            **{"BERT_MTS_PROVIDER": "cpu", "BERT_MTS_LOG_LEVEL": "info", **env},
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(process.communicate()[0])


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_admin_routes_off_are_logged_and_a_signal_exits_zero(store: Path, stop) -> None:
    process, url = serve(store)
    try:
        assert httpx.post(f"{url}/admin/reload").status_code == 404
    finally:
        process.send_signal(stop)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "admin routes off" in output and "BERT_MTS_ADMIN_TOKEN" in output, output
    assert "Traceback" not in output


def test_admin_routes_on_are_logged(store: Path) -> None:
    process, url = serve(store, BERT_MTS_ADMIN_TOKEN=ADMIN_TOKEN)
    try:
        answer = httpx.post(
            f"{url}/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert answer.status_code == 200, answer.text
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "admin routes on" in output, output
    assert ADMIN_TOKEN not in output
