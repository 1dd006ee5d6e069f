"""Round 2 of the CLI hardening (issue 26): commands never destroy a user's files, signals at
start-up end in one line, resumed runs keep their own settings, the last tracebacks."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import TEXT, tiny_overrides

# --- signals during start-up (item 9) ---------------------------------------------------------

# Each wrapper stops the real `redraft` entry point at one moment of start-up (prints READY,
# then waits), so that the signal lands there every time: no sleeps, no races.
PAUSES = {
    # while the CLI (and torch) is being imported
    "import": """
        class Pause:
            def find_spec(self, name, path=None, target=None):
                if name == "torch":
                    ready()
                return None
        sys.meta_path.insert(0, Pause())
    """,
    # after the imports, reading the config
    "config": """
        import redraft.config
        redraft.config.load_config = lambda *a, **k: ready()
    """,
    # inside train(), its handlers installed, before the loop (the corpus step)
    "corpus": """
        import redraft.train
        redraft.train.load_data = lambda *a, **k: ready()
    """,
}


def _wrapper(pause: str) -> str:
    return textwrap.dedent("""
        import sys, time
        def ready():
            print("READY", flush=True)
            time.sleep(600)
    """) + textwrap.dedent(PAUSES[pause]) + textwrap.dedent("""
        from redraft.entry import main
        sys.exit(main(sys.argv[1:]))
    """)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("pause", list(PAUSES))
def test_a_signal_during_start_up_is_one_line_and_128_plus_signal(tmp_path, pause, sig):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    args = tiny_overrides(corpus, tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-c", _wrapper(pause), "train", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    try:
        assert proc.stdout.readline().strip() == "READY", proc.communicate()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err
    assert err.strip() == f"redraft train: interrupted ({signal.Signals(sig).name})", err
    assert not (tmp_path / "run").exists()  # nothing half-written
