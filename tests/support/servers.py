"""Real servers on loopback for the tests: a free port, and uvicorn in a thread."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThreadedServer:
    """uvicorn serving `app` on a free loopback port; `stop()` shuts it down gracefully
    (as SIGTERM would: in-flight requests finish first)."""

    def __init__(self, app: FastAPI) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_service(store: Path, **env: str) -> tuple[subprocess.Popen, str]:
    """`python -m service` on a free loopback port, once ready; settings as keywords."""
    port = free_port()
    settings = {f"BERT_MTS_{k.upper()}": v for k, v in env.items()}
    process = service_process(store, port, settings)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start")


def service_process(
    model_dir: Path, port: int, settings: dict[str, str] | None = None, **popen
) -> subprocess.Popen:
    """`python -m service` serving `model_dir` on 127.0.0.1:`port` (CPU), run from the
    repository root as an operator starts it, quiet but for warnings; not waited for."""
    command = ["-m", "service", "--model-dir", str(model_dir), "--port", str(port)]
    return subprocess.Popen(
        [sys.executable, *command, "--provider", "cpu"],
        cwd=ROOT,
        env={**os.environ, "BERT_MTS_LOG_LEVEL": "warning", **(settings or {})},
        **popen,
    )
