"""Every setting of the service, from the command line or BERT_MTS_* environment variables.

pydantic-settings reads the environment (e.g. `BERT_MTS_MAX_BATCH_SIZE=64`), and
validates values at start-up, so a bad setting stops the process with a clear message
instead of misbehaving under load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL_DIR = Path("model_store/default")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BERT_MTS_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    model_dir: Path = DEFAULT_MODEL_DIR
    # Which graph of the store to serve; "auto" is fp16 on CUDA and fp32 on CPU.
    graph: Literal["auto", "fp32", "int8", "fp16"] = "auto"
    # "auto": CUDA when onnxruntime-gpu sees a GPU, else CPU.
    provider: Literal["auto", "cpu", "cuda"] = "auto"
    intra_op_threads: int = Field(0, ge=0, description="0: ONNX Runtime's default")
    inter_op_threads: int = Field(0, ge=0)
    # Let ONNX Runtime's threads busy-wait between runs (they then compete with the
    # HTTP side for the CPU; see docs/results.md for the measured effect).
    ort_spin_wait: bool = True

    # Dynamic batching: a batch closes at whichever limit comes first.
    max_batch_size: int = Field(32, ge=1, description="rows per ONNX Runtime run")
    max_batch_tokens: int = Field(16384, ge=1, description="rows x padded length per run")
    max_wait_ms: float = Field(0.0, ge=0, description="wait for more rows when idle")
    # Fixed cost of one ONNX Runtime run, in tokens of compute: the batcher splits a
    # window into more, tighter batches when that saves more padding than this.
    batch_overhead_tokens: int = Field(32, ge=0)
    max_queue_items: int = Field(1024, ge=1, description="rows waiting; beyond: 503")
    request_timeout_s: float = Field(30.0, gt=0)

    # Client input limits.
    max_items_per_request: int = Field(256, ge=1)
    max_body_bytes: int = Field(1_000_000, ge=1024)

    # Bearer token for /admin/* (reload); admin endpoints do not exist without one.
    admin_token: SecretStr | None = None

    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
