"""Updating one task on a live service: publish, reload, roll back, refuse bad versions."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from model_store.manifest import StoreError, load_manifest
from model_store.operations import rollback
from model_store.repository import list_versions, resolve_store, set_current
from service.app import create_app
from service.client import AsyncClient, Client
from service.settings import Settings
from tests.support.commands import assert_one_line_error, run
from tests.support.live_repository import ADMIN_TOKEN, PROBES, probe, reload
from tests.support.manifests import rewrite_manifest
from tests.support.servers import ThreadedServer, free_port, service_process
from tests.support.stores import has_torch


def test_publish_replaces_one_task_and_rollback_returns(tiny, repository: Path) -> None:
    first = resolve_store(repository)
    before = load_manifest(first)
    second = tiny.publish(repository, tiny.make("sentiment", 10))
    after = load_manifest(resolve_store(repository))
    assert after.directory.name == second != first.name
    changed = {
        t.name for t in after.tasks if t.branch_version != before.task(t.name).branch_version
    }
    assert changed == {"sentiment"}
    assert [t.task_id for t in after.tasks] == [t.task_id for t in before.tasks]
    assert [v.current for v in list_versions(repository)] == [False, True]

    assert rollback(repository) == first.name
    assert resolve_store(repository) == first
    assert rollback(repository, second) == second
    assert resolve_store(repository).name == second


def test_store_cli_misuse_is_one_line(repository: Path, tmp_path: Path) -> None:
    cases = [
        (["rollback", "--store", str(repository)], "no version before the current one"),
        (["rollback", "--store", str(repository), "--to", "v1999"], "does not exist"),
        (["list", "--store", str(tmp_path)], "not a model repository"),
    ]
    # The serving image's torch-free command, and the training half's, which adds publish.
    commands = ["model_store"] + (["training.commands.store"] if has_torch() else [])
    for command in commands:
        for args, fragment in cases:
            assert_one_line_error(run("-m", command, *args), fragment)
    if has_torch():
        plain = resolve_store(repository)  # a single store, not a repository
        publish = ["publish", "--store", str(plain), "--branch", str(tmp_path)]
        assert_one_line_error(run("-m", "training.commands.store", *publish), "not a repository")


def test_swaps_under_load_lose_nothing_and_leave_other_tasks_identical(tiny, repository, live):
    results: list[int] = []
    stop = threading.Event()

    async def load() -> None:
        async with AsyncClient(live.url) as client:

            async def worker(index: int) -> None:
                task = list(PROBES)[index % 3]
                while not stop.is_set():
                    response = await client._http.post(f"/{task}", json=PROBES[task])
                    results.append(response.status_code)

            await asyncio.gather(*(worker(i) for i in range(6)))

    traffic = threading.Thread(target=lambda: asyncio.run(load()))
    traffic.start()
    with Client(live.url) as client:
        original = probe(client)
        tiny.publish(repository, tiny.make("sentiment", 20))
        assert reload(client).json()["result"] == "loaded"
        first = probe(client)
        tiny.publish(repository, tiny.make("paraphrase", 21))
        assert reload(client).json()["result"] == "loaded"
        second = probe(client)
        set_current(repository, list_versions(repository)[0].version)  # roll back to the start
        assert reload(client).json()["result"] == "loaded"
        back = probe(client)
        assert reload(client).json()["result"] == "unchanged"
    stop.set()
    traffic.join(timeout=60)

    assert len(results) > 50 and set(results) == {200}, set(results)
    assert first["paraphrase"] == original["paraphrase"]
    assert first["similarity"] == original["similarity"]
    assert first["sentiment"]["model_version"] != original["sentiment"]["model_version"]
    assert (
        second["sentiment"] == first["sentiment"] and second["similarity"] == original["similarity"]
    )
    assert second["paraphrase"]["model_version"] != original["paraphrase"]["model_version"]
    assert back == original


def test_corrupt_version_is_refused_and_the_old_one_keeps_serving(tiny, repository, live):
    with Client(live.url) as client:
        before = probe(client)
        version = tiny.publish(repository, tiny.make("similarity", 30), activate=False)
        graph = repository / "versions" / version / "model.onnx"
        graph.write_bytes(graph.read_bytes()[:-100])  # truncated copy
        set_current(repository, version)
        refused = reload(client)
        assert refused.status_code == 409 and "corrupt" in refused.json()["detail"]
        assert probe(client) == before
        assert 'bert_mts_reloads_total{result="refused"} 1.0' in client.metrics()


def test_admin_endpoints_need_the_token(repository: Path) -> None:
    closed = ThreadedServer(create_app(Settings(model_dir=repository, provider="cpu")))
    try:
        with Client(closed.url) as client:
            assert reload(client).status_code == 404  # no token configured: no admin routes
    finally:
        closed.stop()
    guarded = ThreadedServer(
        create_app(Settings(model_dir=repository, provider="cpu", admin_token=ADMIN_TOKEN))
    )
    try:
        with Client(guarded.url) as client:
            assert client._http.post("/admin/reload").status_code == 401
            wrong = reload(client, "not-the-token")
            assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
            assert reload(client).json()["result"] == "unchanged"
    finally:
        guarded.stop()


def test_sighup_reloads_a_running_process(tiny, repository: Path) -> None:
    port = free_port()
    process = service_process(repository, port)
    try:
        with Client(f"http://127.0.0.1:{port}", timeout=5) as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if client.ready():
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            before = {t.name: t.version for t in client.info().tasks}
            tiny.publish(repository, tiny.make("sentiment", 40))
            process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                after = {t.name: t.version for t in client.info().tasks}
                if after != before:
                    break
                time.sleep(0.1)
        assert after["sentiment"] != before["sentiment"]
        assert after["paraphrase"] == before["paraphrase"]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_publish_re_merges_a_repository_of_the_previous_format(tiny, repository) -> None:
    """A repository whose current version an older release published (format 2, one
    task id per row) gets a new version in the current format from its kept branches."""
    old = resolve_store(repository)
    before = {t.name: t.branch_version for t in load_manifest(old).tasks}
    rewrite_manifest(old, lambda raw: raw.__setitem__("format_version", 2))
    with pytest.raises(StoreError, match="format_version 2 is not supported"):
        load_manifest(old)
    from training.graph.publish import publish

    new_branch = tiny.make("sentiment", 50)
    publish(repository, [new_branch], base_model=tiny.base_dir)
    current = load_manifest(resolve_store(repository))
    assert current.directory != old and "task_mask" in current.input_names
    after = {t.name: t.branch_version for t in current.tasks}
    assert after["paraphrase"] == before["paraphrase"]
    assert after["similarity"] == before["similarity"]
    assert after["sentiment"] != before["sentiment"]
