"""The one error type a user can cause: bad config, corpus, checkpoint, prompt or request.

The CLI catches it, prints the message (which names the bad value and what was expected)
and exits with status 2; everything else is a bug and keeps its traceback.
"""


class RedraftError(ValueError):
    """A mistake in user input, with a message that says what was given and what was expected."""
