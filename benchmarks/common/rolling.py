"""A rolling model update across service replicas behind HAProxy, on one machine.

The pieces of benchmarks/rolling_update_bench.py, importable by its test: replica
processes on loopback, an HAProxy in front of them that health-checks /ready, a bounded
load generator that records who answered each request with which model version, and
the two ways a new version reaches the replicas one at a time:

- `restart` (what a Kubernetes rolling update does): take the replica out of the load
  balancer (the endpoint removal), let its in-flight requests finish, SIGTERM it, start
  it again on the new version, wait until it is ready and the load balancer's health
  check has it back, then the next replica;
- `reload`: make the new version current in the replica's repository and POST
  /admin/reload to that replica alone, then the next one (the engine swap itself keeps
  every request: requests in flight finish on the old graph).
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from model_store.repository import set_current

ROOT = Path(__file__).resolve().parents[2]
BACKEND = "replicas"
# Long enough to pass the service's start-up check of the token.
ADMIN_TOKEN = "rolling-update-benchmark-admin-token-0123456789"
PROBE = {"text": "a gripping, funny and humane film"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not within {timeout_s} s")


class Replica:
    """One service process on a fixed loopback port, serving its own repository copy
    (as each pod serves the repository baked into its image)."""

    def __init__(self, name: str, repository: Path, log_dir: Path) -> None:
        self.name = name
        self.repository = repository
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "BERT_MTS_ADMIN_TOKEN": ADMIN_TOKEN,
            "BERT_MTS_LOG_LEVEL": "warning",
            # Two replicas share the machine: one ONNX Runtime thread each, no spinning.
            "BERT_MTS_INTRA_OP_THREADS": "1",
            "BERT_MTS_ORT_SPIN_WAIT": "false",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        command = [sys.executable, "-m", "service", "--model-dir", str(self.repository)]
        command += ["--port", str(self.port), "--provider", "cpu"]
        with self.log.open("a") as log:
            self.process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log)
        wait_until(self.ready, 120, f"{self.name} ready")

    def ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self.process.returncode}); see {self.log}")
        try:
            return httpx.get(f"{self.url}/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        """SIGTERM: the service stops accepting and lets in-flight requests finish."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)

    def reload(self) -> str:
        reply = httpx.post(
            f"{self.url}/admin/reload",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=120,
        )
        reply.raise_for_status()
        return reply.json()["result"]


class HAProxy:
    """HAProxy on loopback: round robin over the replicas, health checks on /ready every
    200 ms, the answering server's name in an X-Served-By header, and an admin socket
    for taking a server out of rotation and back."""

    def __init__(self, replicas: list[Replica], workdir: Path) -> None:
        binary = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
        if binary is None:
            raise FileNotFoundError("haproxy is not installed (apt-get install haproxy)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # A Unix socket path must stay under ~100 bytes: not inside a deep work directory.
        self.socket_dir = Path(tempfile.mkdtemp(prefix="bert-mts-lb-"))
        self.socket_path = self.socket_dir / "admin.sock"
        servers = "\n".join(
            f"    server {r.name} 127.0.0.1:{r.port} check inter 200ms fall 2 rise 2"
            for r in replicas
        )
        config = workdir / "haproxy.cfg"
        config.write_text(
            f"""global
    stats socket {self.socket_path} mode 600 level admin
    maxconn 512
    # Server state changes (a failed health check, a server going DOWN) reach the log.
    log stderr format raw local0 notice

defaults
    mode http
    log global
    option log-health-checks
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    # A request that found a replica gone (closed connection, refused connect) is
    # sent to another one; a 503 the service itself chose to send is not retried.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response
    # Without it a check times out after `inter` (200 ms): a busy replica that answers
    # /ready in 300 ms twice running was marked down, and with the other replica out
    # for its restart HAProxy answered 503 itself. The Kubernetes readiness probe
    # (deploy/k8s/base/deployment.yaml) waits 3 s too.
    timeout check 3s

frontend clients
    bind 127.0.0.1:{self.port}
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
    option httpchk GET /ready
    http-check expect status 200
    http-response set-header X-Served-By %s
{servers}
"""
        )
        self.log = workdir / "haproxy.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [binary, "-db", "-f", str(config)], stdout=log, stderr=log
            )
        names = {r.name for r in replicas}
        wait_until(lambda: self.up() == names, 30, "HAProxy sees every replica up")

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.socket_path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> dict[str, dict[str, str]]:
        """`show stat` of the backend's servers: status (UP, DOWN, MAINT...), scur..."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(line for line in text.splitlines() if line)
        return {
            row["svname"]: row
            for row in rows
            if row["pxname"] == BACKEND and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def up(self) -> set[str]:
        try:
            return {n for n, row in self.servers().items() if row["status"] == "UP"}
        except OSError:  # the admin socket is not there yet
            return set()

    def set_state(self, server: str, state: str) -> None:
        answer = self.command(f"set server {BACKEND}/{server} state {state}").strip()
        if answer:
            raise RuntimeError(f"haproxy refused `set server {server} state {state}`: {answer}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        shutil.rmtree(self.socket_dir, ignore_errors=True)


@dataclass
class Record:
    """One request through the load balancer, `at` seconds into the run."""

    at: float
    ok: bool
    server: str
    version: str
    error: str = ""


@dataclass
class Load:
    """`clients` threads posting /sentiment through the load balancer, one request at a
    time each, until stopped or `max_requests` have been sent. Bounded: it stops by
    itself."""

    url: str
    clients: int
    max_requests: int
    started: float = field(default_factory=time.monotonic)
    records: list[Record] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self._stop.is_set():
                with self._lock:
                    if len(self.records) >= self.max_requests:
                        return
                at = time.monotonic() - self.started
                try:
                    reply = client.post("/sentiment", json=PROBE)
                    ok = reply.status_code == 200
                    record = Record(
                        at,
                        ok,
                        reply.headers.get("x-served-by", "?"),
                        reply.json().get("model_version", "?") if ok else "",
                        "" if ok else f"HTTP {reply.status_code}",
                    )
                except httpx.HTTPError as err:
                    record = Record(at, False, "?", "", type(err).__name__)
                with self._lock:
                    self.records.append(record)

    def stop(self) -> list[Record]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)
        return list(self.records)


@dataclass
class Event:
    at: float
    replica: str
    what: str


def roll(
    mode: str,
    replicas: list[Replica],
    haproxy: HAProxy,
    new_version: str,
    clock: Callable[[], float],
    drain_s: float = 1.0,
) -> list[Event]:
    """Move every replica to `new_version`, one at a time; the next replica starts only
    once the previous one serves again (as maxUnavailable: 0 does)."""
    events: list[Event] = []

    def note(replica: Replica, what: str) -> None:
        events.append(Event(clock(), replica.name, what))

    for replica in replicas:
        set_current(replica.repository, new_version)
        if mode == "reload":
            note(replica, "reload requested")
            note(replica, f"reload: {replica.reload()}")
            continue
        haproxy.set_state(replica.name, "maint")
        note(replica, "out of the load balancer")
        # The endpoint removal reaches every proxy (preStop), in-flight requests end.
        time.sleep(drain_s)
        wait_until(
            lambda r=replica: haproxy.servers()[r.name]["scur"] == "0", 30, "no request in flight"
        )
        replica.stop()
        note(replica, "stopped (SIGTERM)")
        replica.start()
        note(replica, f"started on {new_version}, ready")
        haproxy.set_state(replica.name, "ready")
        wait_until(lambda r=replica: r.name in haproxy.up(), 30, f"{replica.name} back up")
        note(replica, "back in the load balancer")
    return events


def served_timeline(records: list[Record]) -> list[tuple[str, str, int, float, float]]:
    """(replica, version, requests, first s, last s) for every pair seen, in order."""
    spans: dict[tuple[str, str], list[float]] = {}
    for record in records:
        if record.ok:
            spans.setdefault((record.server, record.version), []).append(record.at)
    return sorted(
        ((server, version, len(times), min(times), max(times)))
        for (server, version), times in spans.items()
    )


@dataclass
class Outcome:
    mode: str
    records: list[Record]
    events: list[Event]

    @property
    def failures(self) -> list[Record]:
        return [r for r in self.records if not r.ok]


def rolling_update(
    repositories: list[Path],
    new_version: str,
    mode: str,
    workdir: Path,
    clients: int = 4,
    max_requests: int = 20_000,
    settle_s: float = 2.0,
) -> Outcome:
    """Serve each repository with one replica behind HAProxy, load them, roll every
    replica to `new_version`, keep the load on `settle_s` more seconds, tear down."""
    if mode not in ("restart", "reload"):
        raise ValueError(f"mode must be restart or reload, not {mode!r}")
    replicas = [Replica(f"r{i + 1}", repo, workdir) for i, repo in enumerate(repositories)]
    haproxy = None
    try:
        for replica in replicas:
            replica.start()
        haproxy = HAProxy(replicas, workdir)
        load = Load(haproxy.url, clients, max_requests)
        load.start()
        time.sleep(settle_s)
        events = roll(mode, replicas, haproxy, new_version, lambda: time.monotonic() - load.started)
        time.sleep(settle_s)
        return Outcome(mode, load.stop(), events)
    finally:
        if haproxy is not None:
            haproxy.stop()
        for replica in replicas:
            replica.stop()
