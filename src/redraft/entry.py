"""The `redraft` command's entry point: signal handling from the first instant, then the CLI.

Importing the CLI imports torch (seconds). A Ctrl-C or a SIGTERM in that time, or anywhere
before training installs its own handlers, must end like one during training: one line and
status 128 + the signal (130, 143), not a 29-line import traceback (SIGINT) or a silent death
(SIGTERM). So this module imports nothing heavy before the handlers are in place.
"""

from __future__ import annotations

import sys

from redraft.signals import interrupted_line, stop_signals


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
