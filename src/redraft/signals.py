"""Stops by signal: SIGINT/SIGTERM as one line and status 128 + the signal, wherever they
come (the entry point before the CLI is imported, the CLI, training's start-up)."""

from __future__ import annotations

import contextlib
import signal
import threading

from redraft.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _raise(signum, frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_signals():
    """SIGINT/SIGTERM raise Interrupted (a KeyboardInterrupt carrying the signal) while the
    block runs, in the main thread only (where Python runs handlers); the handlers found on
    entry come back on exit. A handler someone else installed (not the default) is kept."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            if signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
                previous[sig] = signal.signal(sig, _raise)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def interrupted_line(command: str, e: KeyboardInterrupt) -> tuple[str, int]:
    """(the one line, the exit status) for a stop before any work was saved."""
    signum = getattr(e, "signum", signal.SIGINT)
    prog = f"redraft {command}" if command and not command.startswith("-") else "redraft"
    return f"{prog}: interrupted ({signal.Signals(signum).name})", 128 + signum
