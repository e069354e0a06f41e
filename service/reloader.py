"""The live model, and replacing it under traffic without losing a request.

A reload builds the new engine off the event loop (hash check, graph load, smoke
inference) while the old one keeps serving. Only a verified engine is swapped in, with
a batcher of its own; requests that already queued on the old batcher finish on the
old graph (it is drained, then stopped). Each request takes the live (engine, batcher)
pair once, so its rows are encoded and run by the same model. A version that fails
its checks is refused: the old one keeps serving, and the refusal is logged and
counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from fastapi.concurrency import run_in_threadpool

from model_store.leases import ServingLease
from model_store.manifest import StoreError
from model_store.tokenizer import TokenizerError
from service.batcher import DynamicBatcher
from service.engine import Engine, EngineError
from service.metrics import ServiceMetrics
from service.settings import Settings

log = logging.getLogger(__name__)


# The queue accepts work it can finish within this share of the request timeout (the
# rest is left for the request's own batch).
QUEUE_SHARE_OF_TIMEOUT = 0.8


class ReloadRefused(Exception):
    """The new version failed its checks; the old one is still serving."""


@dataclass(frozen=True)
class Live:
    engine: Engine
    batcher: DynamicBatcher


@dataclass(frozen=True)
class ReloadOutcome:
    result: str  # "loaded" | "unchanged"
    store: str
    tasks: dict[str, str]  # task -> branch version


class ModelReloader:
    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._lock = asyncio.Lock()
        self.live: Live | None = None
        # Marks the version served, so that pruning the repository keeps it.
        self._lease = ServingLease(settings.model_dir)

    def _batcher_for(self, engine: Engine) -> DynamicBatcher:
        s = self._settings
        batcher = DynamicBatcher(
            engine.run,
            self._metrics,
            s.max_batch_size,
            s.batch_tokens_for(engine.provider),
            s.max_wait_ms,
            s.max_queue_items,
            s.batch_overhead_tokens,
            s.max_queue_tokens,
            s.request_timeout_s * QUEUE_SHARE_OF_TIMEOUT,
        )
        batcher.start()
        return batcher

    def _describe(self, engine: Engine) -> None:
        manifest = engine.manifest
        self._lease.hold(manifest.directory)
        self._metrics.model_info.info(
            {
                "name": manifest.name,
                "base_model": str(manifest.base_model.get("name")),
                "graph": engine.variant,
                "provider": engine.provider,
            }
        )
        self._metrics.task_info.clear()
        for task in manifest.tasks:
            self._metrics.task_info.labels(task.name, task.branch_version, str(task.layers)).set(1)

    async def start(self, engine: Engine | None = None) -> None:
        if engine is None:
            store = self._lease.claim(self._settings.model_dir)
            engine = await run_in_threadpool(
                Engine.load_store, store, self._settings.engine_config()
            )
        self.live = Live(engine, self._batcher_for(engine))
        self._describe(engine)

    async def stop(self) -> None:
        if self.live is not None:
            await self.live.batcher.stop()
        self._lease.release()

    async def reload(self) -> ReloadOutcome:
        """Load what the model directory names now; swap it in if it differs."""
        async with self._lock:
            assert self.live is not None, "reload before start"
            serving = self.live.engine.manifest.directory
            try:
                # Leased with the version served until the swap (model_store.leases).
                store = await run_in_threadpool(self._lease.claim, self._settings.model_dir)
                if store.resolve() == serving.resolve():
                    self._metrics.reloads.labels("unchanged").inc()
                    return self._outcome("unchanged", self.live.engine)
                engine = await run_in_threadpool(
                    Engine.load_store, store, self._settings.engine_config()
                )
            except (StoreError, TokenizerError, EngineError, OSError) as err:
                self._lease.hold(serving)
                self._metrics.reloads.labels("refused").inc()
                log.error("reload refused, still serving %s: %s", self._current_store(), err)
                raise ReloadRefused(str(err)) from err
            except Exception as err:  # a version that breaks loading in any way is refused
                self._lease.hold(serving)
                self._metrics.reloads.labels("refused").inc()
                # One line, like every refusal: a bad version is the operator's to fix,
                # and its traceback would only show this loader's frames.
                detail = f"the new version failed to load: {err!r}"[:500]
                log.error("reload refused, still serving %s: %s", self._current_store(), detail)
                raise ReloadRefused(detail) from err
            old = self.live
            self.live = Live(engine, self._batcher_for(engine))  # new requests go here now
            self._describe(engine)
            await old.batcher.stop()  # requests already queued finish on the old graph
            self._metrics.reloads.labels("loaded").inc()
            log.info(
                "now serving %s with the %s graph: %s", store, engine.variant, engine.graph_reason
            )
            return self._outcome("loaded", engine)

    async def reload_quietly(self) -> None:
        """For signal handlers: a refusal is already logged and counted."""
        with contextlib.suppress(ReloadRefused):
            await self.reload()

    def _current_store(self) -> str:
        return str(self.live.engine.manifest.directory) if self.live else "nothing"

    @staticmethod
    def _outcome(result: str, engine: Engine) -> ReloadOutcome:
        tasks = {task.name: task.branch_version for task in engine.manifest.tasks}
        return ReloadOutcome(result, engine.manifest.directory.name, tasks)
