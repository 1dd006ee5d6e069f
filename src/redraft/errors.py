"""The one error type a user can cause: bad config, corpus, checkpoint, prompt or request.

The CLI catches it, prints the message (which names the bad value and what was expected)
and exits with status 2; everything else is a bug and keeps its traceback.
"""


class RedraftError(ValueError):
    """A mistake in user input, with a message that says what was given and what was expected."""


class TrainingStopped(Exception):
    """Training stopped by SIGINT/SIGTERM after saving a checkpoint at a step boundary (not a
    mistake: the CLI prints the message and exits with 128 + the signal number)."""

    def __init__(self, signum: int, step: int, checkpoint):
        import signal

        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; saved "
                         f"{str(checkpoint)!r}: continue with --resume auto (or that folder)")


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM before anything was saved (start-up, or a second signal): the CLI
    prints one line and exits with 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
