"""Shared helpers for benchmark scripts: machine facts and writing one section of BENCHMARKS.md."""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from redraft.data.corpus import DOWNLOADS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
# The one-line download in docs/training.md writes data/tinyshakespeare/input.txt; the project's own
# machines keep a copy in ../shared/data.
SHAKESPEARE_URL = DOWNLOADS["tinyshakespeare/input.txt"]
_SHAKESPEARE_PLACES = [ROOT / "data" / "tinyshakespeare" / "input.txt",
                       SHARED / "data" / "tinyshakespeare" / "input.txt"]
TINYSHAKESPEARE = next((p for p in _SHAKESPEARE_PLACES if p.is_file()), _SHAKESPEARE_PLACES[0])


def need_tinyshakespeare() -> Path:
    """The corpus file, or exit with the one line that fetches it."""
    if not TINYSHAKESPEARE.is_file():
        raise SystemExit(f"missing {TINYSHAKESPEARE}: this benchmark needs tinyshakespeare; "
                         f"from the repository root: mkdir -p data/tinyshakespeare && curl -fL "
                         f"-o data/tinyshakespeare/input.txt {SHAKESPEARE_URL}")
    return TINYSHAKESPEARE


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        cpu = re.search(r"Model name:\s*(.+)", out).group(1).strip()
    except (OSError, subprocess.CalledProcessError, AttributeError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_section(name: str, markdown: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replace (or append) the block between <!-- name:start --> and <!-- name:end -->."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else (
        "# Benchmarks\n\nEvery number here is written by a script in `benchmarks/`; each section "
        "names the machine and the command that produced it.\n")
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_json(name: str, data: dict) -> Path:
    path = ROOT / "benchmarks" / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_server(args: list[str], log: Path | None = None, env: dict | None = None,
                  timeout_s: float = 120, poll_s: float = 0.2
                  ) -> tuple[subprocess.Popen, str, list[str]]:
    """`python -m redraft serve ARGS --port P` on a free local port, returned once /health
    answers: (process, url, the redraft arguments). Its output goes to `log` if given."""
    port = free_port()
    argv = ["serve", *args, "--port", str(port)]
    out = log.open("w") if log is not None else None
    proc = subprocess.Popen([sys.executable, "-m", "redraft", *argv],
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})},
                            stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT if out else None)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, url, log, timeout_s, poll_s)
    return proc, url, argv


def stop_server(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_healthy(proc: subprocess.Popen, url: str, log: Path | None, timeout_s: float,
                 poll_s: float = 0.2) -> None:
    """Wait until the server at url answers GET /health with 200; exit (naming its log) if
    the process dies or timeout_s passes first."""
    import httpx

    end = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            sys.exit(f"the server at {url} did not start" + (f"; see {log}" if log else ""))
        time.sleep(poll_s)
