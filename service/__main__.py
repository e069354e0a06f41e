"""`python -m service` (or `bert-mts-serve`): serve a model store over HTTP.

    python -m service --model-dir models/default --port 8000

Every setting can also come from a BERT_MTS_* environment variable (see
service/settings.py); options given here win. The model is loaded and checked before
the server starts, so a bad store or setting ends with one line and exit code 2.
"""

from __future__ import annotations

import signal
import sys


def _hangup_during_start_up(_signum: int, _frame: object) -> None:
    """SIGHUP asks a running service to reload; until it serves there is nothing to
    reload, and the default action (exit, silently) would end a start-up a supervisor
    or a publish script happened to signal early."""
    print(
        "bert-mts-serve: SIGHUP during start-up ignored: the model is still loading "
        "(send it again once the service answers /ready)",
        file=sys.stderr,
        flush=True,
    )


def _ignore_hangup_until_served() -> None:
    """From the first moment: the app replaces it with its reload handler once serving."""
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, _hangup_during_start_up)


if __name__ == "__main__":
    _ignore_hangup_until_served()  # before the slow imports below

import argparse
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

import uvicorn
from pydantic import ValidationError
from uvicorn.main import STARTUP_FAILURE

from model_store.leases import ServingLease
from model_store.locations import moved_store_hint
from model_store.manifest import StoreError
from model_store.tokenizer import TokenizerError
from service.app import create_app
from service.engine import Engine, EngineError
from service.http_limits import limited_protocol
from service.protocols.tei import rerank_setting_problem
from service.settings import Settings

PROG = "bert-mts-serve"
# Seconds uvicorn lets in-flight requests finish after SIGTERM/SIGINT.
GRACEFUL_SHUTDOWN_S = 30


class CleanExitServer(uvicorn.Server):
    """uvicorn, minus the re-raise of SIGINT/SIGTERM after its graceful shutdown.

    uvicorn re-raises the signal it stopped on, so the process dies by it and `make
    serve` stopped with Ctrl-C ends in `make: *** [serve] Interrupt` (or `Terminated`).
    A graceful shutdown that an operator asked for is the expected end: exit code 0.
    """

    @contextlib.contextmanager
    def capture_signals(self):
        with super().capture_signals():
            yield
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()


def admin_status(settings: Settings) -> str:
    """The start-up line that says whether POST /admin/reload exists, and how to get it."""
    if settings.admin_token is not None:
        return "admin routes on: POST /admin/reload takes the BERT_MTS_ADMIN_TOKEN bearer token"
    return (
        "admin routes off (POST /admin/reload is a 404): set BERT_MTS_ADMIN_TOKEN to 32+ "
        "characters to enable them; SIGHUP reloads either way"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="default 127.0.0.1 (BERT_MTS_HOST)")
    parser.add_argument("--port", type=int, help="default 8000 (BERT_MTS_PORT)")
    parser.add_argument("--model-dir", type=Path, help="default models/default")
    parser.add_argument("--graph", choices=("auto", "fp32", "int8", "fp16"))
    parser.add_argument("--provider", choices=("auto", "cpu", "cuda"))
    return parser.parse_args(argv)


def proxy_options(settings: Settings) -> dict[str, object]:
    """uvicorn's proxy-header settings: off unless trusted proxies are configured
    (uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1)."""
    if settings.forwarded_allow_ips is None:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": settings.forwarded_allow_ips}


def main(argv: Sequence[str] | None = None) -> int:
    _ignore_hangup_until_served()
    args = parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as err:
        first = err.errors()[0]
        where = first["loc"][0] if first["loc"] else "settings"
        print(f"{PROG}: error: setting {where}: {first['msg']}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    # Leased before it loads, so a prune of the repository meanwhile keeps it (the
    # service's reloader takes the lease over once it serves).
    lease = ServingLease(settings.model_dir)
    try:
        engine = Engine.load_store(lease.claim(settings.model_dir), settings.engine_config())
    except (StoreError, TokenizerError, EngineError, OSError) as err:
        lease.release()
        print(f"{PROG}: error: {err}{moved_store_hint(settings.model_dir)}", file=sys.stderr)
        return 2
    except Exception as err:  # any other way a store breaks loading: still the operator's
        lease.release()
        print(f"{PROG}: error: cannot serve {settings.model_dir}: {err!r:.500}", file=sys.stderr)
        return 2
    problem = rerank_setting_problem(
        settings.tei_rerank_task, [task.definition for task in engine.manifest.tasks]
    )
    if problem:
        lease.release()
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    logging.getLogger(PROG).info(
        "serving %s (%s) on %s with the %s graph: %s",
        settings.model_dir,
        ", ".join(engine.tasks),
        engine.provider,
        engine.variant,
        engine.graph_reason,
    )
    logging.getLogger(PROG).info(admin_status(settings))
    config = uvicorn.Config(
        create_app(settings, engine),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        http=limited_protocol(settings.max_header_bytes, settings.header_timeout_s),
        **proxy_options(settings),
    )
    server = CleanExitServer(config)
    with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: forced, still quiet
        server.run()
    # A port in use or a failed start-up leaves uvicorn not started: uvicorn's exit code.
    return 0 if server.started else STARTUP_FAILURE


if __name__ == "__main__":
    sys.exit(main())
