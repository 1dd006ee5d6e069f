"""The `redraft` command's entry point: signal handling from the first instant, then the CLI.

Importing the CLI imports torch (seconds). A Ctrl-C or a SIGTERM in that time, or anywhere
before training installs its own handlers, must end like one during training: one line and
status 128 + the signal (130, 143), not a 29-line import traceback (SIGINT) or a silent death
(SIGTERM). So this module imports nothing heavy before the handlers are in place.
"""

from __future__ import annotations

import contextlib
import signal
import sys
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with stop_signals():
        try:
            from redraft.cli import main as cli_main
        except KeyboardInterrupt as e:
            line, status = interrupted_line(argv[0] if argv else "", e)
            print(line, file=sys.stderr)
            return status
        return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
