"""Every command in README.md and docs/*.md runs as written, and every figure there is the one
scripts/figures.py writes from benchmarks/results/*.json.

The convention (docs/development.md): a fenced `bash` or `python` block preceded by
`<!-- docs-test: run -->` is run (in a temporary folder; `run slow` only with the slow tests;
`run; expect: TEXT` also checks the output), `<!-- docs-test: serve -->` runs against a
`redraft serve` of the default models started here; every other block is checked without
running: each shell command against the CLI's parser (and a `train` line's config), each
python block compiles and its imports resolve."""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
        SRC / "redraft" / "default" / "MODEL_CARD.md"]  # the card ships in the wheel
MARK = re.compile(r"<!-- docs-test: (run|serve)( slow)?(?:; expect: (.*))? -->$")
FENCE = re.compile(r"^```(\w*)\s*$")
# What a run block sees of the repository, as if run from its root.
LINKED = ("configs", "examples", "benchmarks", "scripts")


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    mode: str  # "check", "run" or "serve"
    slow: bool = False
    expect: str | None = None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The bash and python blocks of a markdown file, with the mode of the marker before each."""
    lines = path.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        lang = {"sh": "bash", "shell": "bash", "py": "python"}.get(m.group(1), m.group(1))
        before = lines[i - 1].strip() if i else ""
        if before.startswith("<!-- docs-test"):
            mark = MARK.match(before)
            assert mark, f"{path}:{i}: unknown marker {before!r} (docs/development.md)"
            mode, slow, expect = mark.group(1), bool(mark.group(2)), mark.group(3)
        else:
            mode, slow, expect = "check", False, None
        if lang in ("bash", "python"):
            found.append(Block(path, i + 1, lang, "\n".join(lines[i + 1:end]) + "\n", mode,
                               slow, expect))
        else:
            assert mode == "check", f"{path}:{i + 1}: a marker on a {lang or 'plain'} block"
        i = end + 1
    return found


ALL = [b for path in DOCS for b in blocks(path)]


def test_the_readme_is_a_front_page_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 250
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"
    for path in DOCS:  # relative links between the pages point at files that exist
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text()):
            assert (path.parent / target).exists(), f"{path.name}: broken link {target}"


def test_the_figures_are_the_ones_the_script_writes_from_the_results_json():
    spec = importlib.util.spec_from_file_location("figures", ROOT / "scripts" / "figures.py")
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    stale = figures.update(check=True)
    assert not stale, f"run `python scripts/figures.py`: out of date: {stale}"
    regions = [m.group(2) for path in figures.documents()
               for m in figures.REGION.finditer(path.read_text())]
    assert set(regions) == set(figures.FIGURES)  # every generator is used somewhere
    # A region whose body was edited by hand is rewritten (the check can fail).
    text = (ROOT / "README.md").read_text()
    edited = text.replace("bits/char (exact)", "bits/char (exact, edited)")
    assert edited != text and figures.render(edited, {}) == text


# ---- Blocks that are checked, not run -------------------------------------------------------

RECORD = r"""
_rec() { local a; for a in "$@"; do printf '%s\0' "$a"; done; printf '\036\0'; }
command_not_found_handle() { _rec "$@" >> "$DOCS_RECORD"; return 0; }
"""


def commands(code: str, tmp: Path) -> list[list[str]]:
    """The command lines of a shell block as bash expands them (quotes, $'...', line
    continuations, &&), without running any: with a PATH that holds nothing every command is
    'not found', and bash's not-found hook records its arguments."""
    record = tmp / "record"
    record.write_bytes(b"")
    script = tmp / "block.sh"
    script.write_text(RECORD + code)
    bash = shutil.which("bash")
    run = subprocess.run([bash, str(script)], cwd=tmp, capture_output=True, text=True,
                         env={"PATH": str(tmp / "no-such-bin"), "DOCS_RECORD": str(record),
                              "HOME": str(tmp)})
    assert run.returncode == 0, run.stderr
    out = []
    for rec in record.read_bytes().split(b"\x1e\x00"):
        if rec:
            out.append([a.decode() for a in rec.split(b"\x00")[:-1]])
    return out


def placeholder(word: str) -> bool:
    """CONFIG, RUN, HEAD:29500: a name the reader fills in."""
    return bool(re.fullmatch(r"[A-Z_]+(:\d+)?", word))


def check_redraft(argv: list[str]) -> None:
    from redraft.cli import parser
    from redraft.config import load_config

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args, extra = parser().parse_known_args(argv)
    except SystemExit as e:
        assert e.code == 0, f"redraft {' '.join(argv)}: {err.getvalue().strip()}"
        return
    if args.command == "train":
        config = args.config
        if config and placeholder(config):
            return
        if config and "=" in config:
            config, extra = None, [config, *extra]
        overrides = [e.removeprefix("--") for e in extra if not placeholder(e)]
        overrides += [f"diffusion.{k}={v}" for k, v in
                      (("process", args.process), ("objective", args.objective)) if v]
        load_config(ROOT / config if config else None, overrides)
    elif args.command == "lm-eval":
        known = lm_eval_flags()
        for flag in (a.split("=")[0] for a in extra if a.startswith("-")):
            assert flag in known, f"redraft lm-eval: unknown flag {flag}"
    else:
        assert not extra, f"redraft {args.command}: unrecognised {extra}"


_HELP: dict[str, str] = {}


def help_text(argv: list[str]) -> str:
    key = " ".join(argv)
    if key not in _HELP:
        run = subprocess.run([sys.executable, *argv, "--help"], capture_output=True, text=True,
                             cwd=ROOT, timeout=120,
                             env={**os.environ, "PYTHONPATH": str(SRC)})
        assert run.returncode == 0, run.stderr[-2000:]
        _HELP[key] = run.stdout
    return _HELP[key]


def lm_eval_flags() -> set[str]:
    pytest.importorskip("lm_eval")
    return set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", help_text(["-m", "redraft",
                                                                         "lm-eval"])))


def check_command(argv: list[str]) -> None:
    name, args = argv[0], argv[1:]
    if name == "redraft":
        check_redraft(args)
    elif name == "torchrun":
        assert args[args.index("-m") + 1] == "redraft", argv
        check_redraft(args[args.index("-m") + 2:])
    elif name in ("python", "python3"):
        if args[:2] == ["-m", "redraft"]:
            check_redraft(args[2:])
        elif args[:2] == ["-m", "pytest"]:
            markers = tomllib.loads((ROOT / "pyproject.toml").read_text())
            declared = " ".join(markers["tool"]["pytest"]["ini_options"].get("markers", []))
            for expr in args[args.index("-m", 1) + 1:][:1] if "-m" in args[1:] else []:
                for word in re.findall(r"\w+", expr):
                    assert word in ("not", "and", "or") or word in declared, expr
        elif args[:1] == ["-c"]:
            compile(args[1], "<python -c>", "exec")
        else:
            script = args[0]
            assert script.endswith(".py") and (ROOT / script).is_file(), argv
            flags = [a.split("=")[0] for a in args[1:] if a.startswith("--")]
            text = help_text([script]) if flags else ""
            for flag in flags:
                assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), \
                    f"{script} has no {flag}"
    elif name == "pip":
        assert args[0] == "install", argv
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
            "optional-dependencies"]
        for spec in (a for a in args if "[" in a):
            for extra in re.search(r"\[(.*)\]", spec).group(1).split(","):
                assert extra in extras, f"pip install: no extra {extra!r} in pyproject.toml"
    elif name == "curl":
        from redraft.data.corpus import DOWNLOADS

        urls = [a for a in args if a.startswith("http")]
        assert urls and all(u in DOWNLOADS.values() or u.startswith("http://127.0.0.1:")
                            for u in urls), argv
    elif name in ("bash", "sbatch"):
        script = next(a for a in args if not a.startswith("-"))
        assert (ROOT / script).is_file(), argv
    elif name in ("mkdir", "ruff"):
        pass
    else:
        raise AssertionError(f"a command the docs test does not know: {argv}")


CHECKED = [b for b in ALL if b.mode == "check"]


@pytest.mark.parametrize("block", CHECKED, ids=[b.id for b in CHECKED])
def test_a_block_that_is_not_run_is_checked(block, tmp_path, monkeypatch):
    if block.lang == "python":
        tree = ast.parse(block.code)
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                top = name.split(".")[0]
                if (top in ("huggingface_hub", "openai", "lm_eval", "transformers")
                        and importlib.util.find_spec(top) is None):
                    continue  # an extra this environment lacks
                assert importlib.util.find_spec(name) is not None, f"no module {name}"
        return
    monkeypatch.setenv("REDRAFT_CACHE", str(tmp_path / "cache"))
    found = commands(block.code, tmp_path)
    assert found, "a shell block with no command"
    for argv in found:
        check_command(argv)


def test_the_checker_refuses_a_wrong_command(tmp_path):
    """The checks above can fail: an unknown flag, a bad override, an unknown extra."""
    from redraft.errors import RedraftError

    for code in ("redraft sample --no-such-flag\n",
                 "redraft train configs/stdlib-mdlm.yaml train.no_such_key=1\n",
                 "python benchmarks/core.py --no-such-flag\n",
                 "pip install -e '.[no-such-extra]'\n",
                 "curl -fLO https://example.com/x\n",
                 "rm -rf /\n"):
        (argv,) = commands(code, tmp_path)
        with pytest.raises((AssertionError, RedraftError)):
            check_command(argv)


# ---- Blocks that run ------------------------------------------------------------------------

def workdir(tmp: Path) -> Path:
    """A folder that looks like the repository root to relative paths, but writes go to tmp."""
    work = tmp / "work"
    work.mkdir()
    for name in LINKED:
        (work / name).symlink_to(ROOT / name, target_is_directory=True)
    return work


def environment(tmp: Path, **extra: str) -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PYTHONPATH": str(SRC), "REDRAFT_CACHE": str(tmp / "cache"),
           "HF_HOME": str(tmp / "hf"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PATH": bindir + os.pathsep + os.environ["PATH"],
           **extra}
    return env


# What a block needs beyond the base install: the extra that brings it (pyproject.toml).
OPTIONAL = {"transformers": "hf", "openai": "serve-test", "lm_eval": "lm-eval",
            "fastapi": "serve", "huggingface_hub": "hf"}


def skip_without_extras(block: Block) -> None:
    """Skip (naming the extra) a block that needs a package this environment lacks; the
    README's test command installs every extra, so there nothing is skipped."""
    needs = set()
    if block.lang == "python":
        for node in ast.walk(ast.parse(block.code)):
            if isinstance(node, ast.Import):
                needs |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                needs.add(node.module.split(".")[0])
    else:
        if "redraft lm-eval" in block.code:
            needs.add("lm_eval")
        if "curl " in block.code and shutil.which("curl") is None:
            pytest.skip(f"{block.id} needs curl")
    for module in sorted(needs & set(OPTIONAL)):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{block.id} needs {module} (pip install -e '.[{OPTIONAL[module]}]')")


def run_block(block: Block, work: Path, env: dict[str, str]) -> str:
    skip_without_extras(block)
    if block.lang == "bash":
        argv = [shutil.which("bash"), "-e", "-o", "pipefail", "-c", block.code]
    else:
        argv = [sys.executable, "-c", block.code]
    if block.lang == "bash" and "redraft " in block.code:
        # `redraft` as a console script comes from whichever install is on PATH; run this
        # checkout's instead, as `python -m redraft` (the same entry point).
        env = {**env}
        shim = work.parent / "bin"
        shim.mkdir(exist_ok=True)
        (shim / "redraft").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m redraft "$@"\n')
        (shim / "redraft").chmod(0o755)
        env["PATH"] = str(shim) + os.pathsep + env["PATH"]
    run = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    out = run.stdout + run.stderr
    assert run.returncode == 0, f"{block.id} exited {run.returncode}:\n{out[-3000:]}"
    if block.expect is not None:
        assert block.expect in run.stdout, f"{block.id}: {block.expect!r} not in:\n{out[-3000:]}"
    return out


RUN_FILES = sorted({b.path for b in ALL if b.mode == "run" and not b.slow})


@pytest.mark.parametrize("path", RUN_FILES, ids=[str(p.relative_to(ROOT)) for p in RUN_FILES])
def test_the_cheap_blocks_run_as_written(path, tmp_path):
    """A file's run blocks, in order, in one folder (a later block may use an earlier one's
    output, e.g. an export)."""
    work, env = workdir(tmp_path), environment(tmp_path)
    for block in (b for b in ALL if b.path == path and b.mode == "run" and not b.slow):
        run_block(block, work, env)


SLOW = [b for b in ALL if b.mode == "run" and b.slow]


@pytest.mark.slow
@pytest.mark.parametrize("block", SLOW, ids=[b.id for b in SLOW])
def test_the_slow_blocks_run_as_written(block, tmp_path):
    run_block(block, workdir(tmp_path), environment(tmp_path))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`redraft serve` with no argument (the default models) on a free port."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    tmp = tmp_path_factory.mktemp("serve")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "redraft", "serve", "--port", str(port)],
                            cwd=tmp, env=environment(tmp), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"redraft serve did not start: {proc.stderr.read()[-2000:]}")
            time.sleep(0.5)
    yield tmp, port
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


SERVED = [b for b in ALL if b.mode == "serve"]


@pytest.mark.parametrize("block", SERVED, ids=[b.id for b in SERVED])
def test_the_server_examples_run_as_written(block, server):
    tmp, port = server
    code = block.code.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    assert code != block.code  # the example talks to the documented address
    out = run_block(Block(block.path, block.line, block.lang, code, "serve",
                          expect=block.expect), tmp, environment(tmp))
    assert '"error"' not in out, out[-2000:]
