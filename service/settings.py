"""Every setting of the service, from the command line or BERT_MTS_* environment variables.

pydantic-settings reads the environment (e.g. `BERT_MTS_MAX_BATCH_SIZE=64`), and
validates values at start-up, so a bad setting stops the process with a clear message
instead of misbehaving under load. A security setting that is empty or weak is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model_store.locations import default_store
from model_store.runtime import CUDA
from service.engine import EngineConfig

MIN_ADMIN_TOKEN_LENGTH = 32
CPU_BATCH_TOKENS = 2048
GPU_BATCH_TOKENS = 16384


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BERT_MTS_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # models/default, or under $BERT_MTS_MODELS_DIR (model_store.locations).
    model_dir: Path = Field(default_factory=default_store)
    # Which graph of the store to serve; "auto": the fastest for the hardware (int8 on
    # CPU, fp16 on CUDA) whose recorded validation metric is within
    # graph_tolerance_points of fp32's on every task, else fp32.
    graph: Literal["auto", "fp32", "int8", "fp16"] = "auto"
    graph_tolerance_points: float = Field(1.0, ge=0, description="points of metric, per task")
    # "auto": CUDA when onnxruntime-gpu sees a GPU, else CPU.
    provider: Literal["auto", "cpu", "cuda"] = "auto"
    intra_op_threads: int = Field(0, ge=0, description="0: ONNX Runtime's default")
    inter_op_threads: int = Field(0, ge=0)
    # Let ONNX Runtime's threads busy-wait between runs (they then compete with the
    # HTTP side for the CPU; see docs/results.md for the measured effect).
    ort_spin_wait: bool = True

    # Dynamic batching: a batch closes at whichever limit comes first.
    max_batch_size: int = Field(32, ge=1, description="rows per ONNX Runtime run")
    # A batch's padded tokens bound how long a row that arrives while it runs waits
    # (there is no preempting a run). None: the provider's default below.
    max_batch_tokens: int | None = Field(
        None, ge=1, description="rows x padded length per run (default: per provider)"
    )
    max_wait_ms: float = Field(0.0, ge=0, description="wait for more rows when idle")
    # Fixed cost of one ONNX Runtime run, in tokens of compute: the batcher splits a
    # window into more, tighter batches when that saves more padding than this.
    batch_overhead_tokens: int = Field(32, ge=0)
    max_queue_items: int = Field(1024, ge=1, description="rows waiting; beyond: 429")
    # The queue's bound in work: tokens of the rows waiting (beyond: 429). Sized so
    # that a full queue drains within request_timeout_s on a small CPU.
    max_queue_tokens: int = Field(32768, ge=128, description="tokens waiting; beyond: 429")
    request_timeout_s: float = Field(30.0, gt=0)
    # Requests of at most this many characters (all their texts) are tokenized on the
    # event loop (well under a millisecond); longer ones in the tokenizer threads. 0:
    # every request in the threads.
    inline_tokenizing_chars: int = Field(512, ge=0, le=4096)
    # text-embeddings-inference's POST /predict: the task it answers (default: the only
    # served classification, binary or regression task taking the input's shape).
    tei_predict_task: str | None = None
    # text-embeddings-inference's POST /rerank: the pair task that scores (query, text)
    # (default: the served `similarity` task, else the only regression or binary pair
    # task). Checked against the store at start-up.
    tei_rerank_task: str | None = None

    # Client input limits.
    max_items_per_request: int = Field(256, ge=1)
    max_body_bytes: int = Field(1_000_000, ge=1024)
    # Connection limits: a client must send its request line and headers within
    # header_timeout_s, in at most max_header_bytes, and its body within body_timeout_s.
    max_header_bytes: int = Field(16384, ge=1024)
    header_timeout_s: float = Field(10.0, gt=0)
    body_timeout_s: float = Field(30.0, gt=0)

    # Proxies whose X-Forwarded-For / X-Forwarded-Proto headers are believed
    # (comma-separated addresses, as uvicorn's --forwarded-allow-ips). None: no one's,
    # so a client cannot choose the address the logs show for it.
    forwarded_allow_ips: str | None = None
    # Bearer token for /admin/* (reload); admin endpoints do not exist without one.
    admin_token: SecretStr | None = None

    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @field_validator("admin_token")
    @classmethod
    def _strong_token(cls, token: SecretStr | None) -> SecretStr | None:
        """An empty or short token would open the admin route to guessing (an empty one
        to anyone): refuse it, rather than run with it or silently without it."""
        if token is None:
            return None
        value = token.get_secret_value()
        if len(value) < MIN_ADMIN_TOKEN_LENGTH or value != value.strip():
            raise ValueError(
                f"must be at least {MIN_ADMIN_TOKEN_LENGTH} characters without surrounding "
                "spaces (e.g. `openssl rand -hex 32`); unset it to disable the admin routes"
            )
        return token

    def batch_tokens_for(self, provider: str) -> int:
        """`max_batch_tokens`, or the default of the provider serving: on a CPU, 2048
        (a run of 128-token rows then takes about 0.1-0.2 s on the 6-layer model, and
        rows per second were flat from 2 to 16 such rows a batch, docs/results.md); on
        CUDA, 16384 (text-embeddings-inference's default: a GPU needs wide batches)."""
        if self.max_batch_tokens is not None:
            return self.max_batch_tokens
        return GPU_BATCH_TOKENS if provider == CUDA else CPU_BATCH_TOKENS

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            graph=self.graph,
            provider=self.provider,
            intra_op_threads=self.intra_op_threads,
            inter_op_threads=self.inter_op_threads,
            spin_wait=self.ort_spin_wait,
            graph_tolerance_points=self.graph_tolerance_points,
        )
