"""Terminal output: a draft being denoised, redrawn in place after every step, and progress
bars for every step that takes more than a few seconds.

On a terminal the previous frame is erased with ANSI cursor moves so the text visibly
resolves in place; in a log (not a TTY) a few snapshots are printed instead. Progress bars
(tqdm, on stderr) show only on a terminal and never under CI (`$CI` set), where their
carriage returns would fill the log.
"""

from __future__ import annotations

import os
import shutil
import sys
import time

from tqdm.auto import tqdm

MASK_GLYPH = "░"


def show_progress(stream=None) -> bool:
    """Whether progress bars belong on `stream` (default stderr): a terminal, and not CI."""
    stream = stream or sys.stderr
    return stream.isatty() and not os.environ.get("CI")


def progress_bar(iterable=None, enabled: bool = True, **kw) -> tqdm:
    """A tqdm bar on stderr, shown only where show_progress() says so (and `enabled`)."""
    return tqdm(iterable, file=sys.stderr, disable=not (enabled and show_progress()),
                dynamic_ncols=True, **kw)


def _wrap(text: str, width: int) -> list[str]:
    lines = []
    for line in text.split("\n"):
        while len(line) > width:
            lines.append(line[:width])
            line = line[width:]
        lines.append(line)
    return lines


class DraftView:
    """Callable for a sampling loop's on_step: (step, tokens (B, L)) -> draws row 0."""

    def __init__(self, decode, steps: int, stream=None, delay: float = 0.0, max_lines: int = 24,
                 snapshots: int = 4):
        self.decode, self.steps, self.delay = decode, steps, delay
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.width = max(20, shutil.get_terminal_size((100, 24)).columns - 1)
        self.max_lines, self.drawn = max_lines, 0
        self.marks = {round(steps * k / snapshots) - 1 for k in range(1, snapshots + 1)}

    def frame(self, step: int, tokens) -> str:
        text = self.decode(tokens[0], mask_text=MASK_GLYPH)
        lines = _wrap(text, self.width)[: self.max_lines]
        return "\n".join([f"── step {step + 1}/{self.steps} " + "─" * 20, *lines])

    def __call__(self, step: int, tokens) -> None:
        if self.tty:
            if self.drawn:
                self.stream.write(f"\x1b[{self.drawn}F\x1b[J")  # up to the frame's top, clear
            frame = self.frame(step, tokens)
            self.stream.write(frame + "\n")
            self.drawn = frame.count("\n") + 1
            self.stream.flush()
            if self.delay:
                time.sleep(self.delay)
        elif step in self.marks:
            self.stream.write(self.frame(step, tokens) + "\n")
            self.stream.flush()


class StepBar:
    """Callable for a sampling loop's on_step: a progress bar over its steps (see
    progress_bar); `total` None when the step count is not known in advance."""

    def __init__(self, total: int | None, desc: str = "sample"):
        self.bar = progress_bar(total=total, desc=desc, unit="step")

    def __call__(self, step: int, tokens) -> None:
        if step + 1 > self.bar.n:  # AR prompts of different lengths restart the count
            self.bar.update(step + 1 - self.bar.n)
        if self.bar.total is not None and self.bar.n >= self.bar.total:
            self.bar.close()
