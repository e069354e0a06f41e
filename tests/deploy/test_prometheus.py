"""The Prometheus rules in deploy/prometheus/: valid (promtool check), each alert unit
tested (promtool test), and a real Prometheus server scraping a live service on
loopback, with the rules loaded, answering queries through its HTTP API."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from model_store.manifest import load_manifest
from service.app import create_app
from service.settings import Settings
from tests.support.servers import ThreadedServer, free_port
from tests.support.tiny_store import build_tiny_store

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "deploy" / "prometheus"
RULES = RULES_DIR / "bert-mts.rules.yml"
RULE_TESTS = RULES_DIR / "bert-mts.rules.test.yml"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")


@needs_promtool
def test_rules_pass_promtool_check() -> None:
    result = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    result = subprocess.run(
        [PROMTOOL, "test", "rules", RULE_TESTS.name], cwd=RULES_DIR, capture_output=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
    cases = [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    firing = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert alerts == firing == quiet


def test_the_alerts_cover_what_operators_watch() -> None:
    text = RULES.read_text()
    for metric in (
        "bert_mts_request_duration_seconds_bucket",
        "bert_mts_requests_total",
        "bert_mts_shed_requests_total",
        "bert_mts_queue_depth_rows",
        'bert_mts_reloads_total{result="refused"}',
        "bert_mts_task_info",
    ):
        assert metric in text


@pytest.fixture(scope="module")
def live_service(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    store = build_tiny_store(tmp_path_factory.mktemp("prom-store"))
    server = ThreadedServer(create_app(Settings(model_dir=store, provider="cpu")))
    yield server.url, store
    server.stop()


def query(prometheus: str, expr: str) -> list[dict]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def query_or_empty(prometheus: str, expr: str) -> list[dict]:
    """The query's result, or nothing while Prometheus is still starting."""
    try:
        return query(prometheus, expr)
    except httpx.TransportError:
        return []


def wait_for(prometheus: str, expr: str, timeout_s: float = 30) -> list[dict]:
    """The query's result once it is not empty; fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = query(prometheus, expr)
        if result:
            return result
        time.sleep(0.5)
    pytest.fail(f"no result for {expr} within {timeout_s} s")


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed")
def test_a_real_prometheus_scrapes_the_service_and_evaluates_the_rules(
    live_service: tuple[str, Path], tmp_path: Path
) -> None:
    service_url, store = live_service
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "bert-mts",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [service_url.removeprefix("http://")]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus = f"http://127.0.0.1:{free_port()}"
    with (tmp_path / "prometheus.log").open("w") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address={prometheus.removeprefix('http://')}",
            ],
            stdout=log,
            stderr=log,
        )
    try:
        with httpx.Client(base_url=service_url, timeout=10) as client:
            deadline = time.monotonic() + 30
            # Requests spread over a few scrapes, so rate() has two samples to work with.
            while time.monotonic() < deadline:
                for _ in range(5):
                    client.post("/sentiment", json={"text": "a gripping film"}).raise_for_status()
                if query_or_empty(
                    prometheus, 'endpoint:bert_mts_requests:rate5m{endpoint="/sentiment"} > 0'
                ):
                    break
                time.sleep(0.5)
        (sample,) = wait_for(prometheus, 'bert_mts_requests_total{endpoint="/sentiment"}')
        assert sample["metric"]["status"] == "200" and int(sample["value"][1]) >= 5
        (rate,) = wait_for(prometheus, 'endpoint:bert_mts_requests:rate5m{endpoint="/sentiment"}')
        assert float(rate["value"][1]) > 0
        served = {
            r["metric"]["task"]: r["metric"]["version"]
            for r in query(prometheus, "bert_mts_task_info")
        }
        assert served == {t.name: t.branch_version for t in load_manifest(store).tasks}
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
        assert {g["name"] for g in groups} == {"bert-mts.recording", "bert-mts.alerts"}
        assert all(r["health"] == "ok" for g in groups for r in g["rules"])
    finally:
        process.terminate()
        process.wait(timeout=30)
