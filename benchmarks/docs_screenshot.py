"""Render /docs and /redoc in headless Chromium with every other host unreachable, and
save screenshots: proof that the API docs need nothing but the service.

    apt-get install -y chromium
    python -m benchmarks.docs_screenshot --model-dir models/default --out /tmp/docs

Starts the service on a free loopback port, then runs Chromium headless with every host
name but 127.0.0.1 mapped to nothing (`--host-resolver-rules`), so a page that still
fetched from a CDN would render blank. Prints a table: page, PNG, its size, and the
number of distinct colours in it (a blank page has one or two).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.common.report import markdown_table, provenance
from model_store.locations import default_store

ROOT = Path(__file__).resolve().parents[1]
OFFLINE_RULES = "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(model_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--model-dir", str(model_dir), "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "BERT_MTS_LOG_LEVEL": "warning", "BERT_MTS_PROVIDER": "cpu"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            raise SystemExit(f"the service exited with {process.returncode}")
        time.sleep(0.2)
    process.kill()
    raise SystemExit("the service did not become ready")


def screenshot(browser: str, url: str, png: Path, profile: Path) -> None:
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",
            f"--host-resolver-rules={OFFLINE_RULES}",
            "--window-size=1280,1400",
            "--virtual-time-budget=15000",
            f"--screenshot={png}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def colours(png: Path) -> int:
    """Distinct colours in the image (matplotlib reads PNGs; it is a training extra)."""
    from matplotlib import image

    pixels = image.imread(png)
    flat = (pixels.reshape(-1, pixels.shape[-1]) * 255).astype("uint8")
    return len({bytes(row) for row in flat[:: max(1, len(flat) // 200_000)]})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=default_store())
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "bert-mts-docs")
    parser.add_argument("--browser", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    process, url = start_service(args.model_dir)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as profile:
            for page in ("docs", "redoc"):
                png = args.out / f"{page}.png"
                screenshot(args.browser, f"{url}/{page}", png, Path(profile))
                rows.append([f"/{page}", str(png), f"{png.stat().st_size:,} B", colours(png)])
    finally:
        process.terminate()
        process.wait(timeout=60)
    print(provenance())
    print(markdown_table(["page", "screenshot", "size", "colours"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
