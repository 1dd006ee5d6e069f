"""Python infilling tasks from held-out source: does a filled-in function still parse?

Each task is one function taken whole from a held-out document (dedented, so it parses on its
own, and short enough for the model's context), with 1-3 consecutive lines of its body cut
out. A diffusion model fills the gap seeing the code on both sides; the AR twin can only
continue the prefix, so its fill is written from the prefix alone and spliced in before the
suffix, the honest baseline for a left-to-right model. The metric is the share of filled-in
functions that `ast.parse` accepts (the originals all do, by construction).
"""

from __future__ import annotations

import ast
import random
import textwrap
import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class InfillTask:
    before: str
    span: str  # the cut-out lines (the reference fill)
    after: str


def _functions(document: str) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SyntaxWarnings from old escape sequences
        try:
            tree = ast.parse(document)
        except (SyntaxError, ValueError):
            return []
    lines = document.splitlines(keepends=True)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno:
            out.append(textwrap.dedent("".join(lines[node.lineno - 1:node.end_lineno])))
    return out


def _parses(text: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ast.parse(text)
        except (SyntaxError, ValueError):
            return False
    return True


def python_infill_tasks(documents: list[str], count_tokens, max_tokens: int, n: int,
                        seed: int = 0) -> list[InfillTask]:
    """Up to n tasks from functions in `documents` that take at most max_tokens tokens
    (count_tokens(text) -> int) and have at least 3 body lines; spread evenly over all the
    candidates, the cut chosen by a seeded RNG."""
    rng = random.Random(seed)
    candidates = []
    for doc in documents:
        for fn in _functions(doc):
            lines = fn.splitlines(keepends=True)
            if len(lines) < 4 or count_tokens(fn) > max_tokens or not _parses(fn):
                continue
            candidates.append(lines)
    if not candidates:
        return []
    m = min(n, len(candidates))
    picks = [candidates[round(i * (len(candidates) - 1) / max(m - 1, 1))] for i in range(m)]
    tasks = []
    for lines in picks:
        body = [i for i in range(1, len(lines)) if lines[i].strip()]
        start = rng.choice(body)
        stop = min(start + rng.randint(1, 3), len(lines))
        tasks.append(InfillTask("".join(lines[:start]), "".join(lines[start:stop]),
                                "".join(lines[stop:])))
    return tasks


def parses(task: InfillTask, fill: str) -> bool:
    """Whether the function with `fill` in place of the cut lines parses."""
    return _parses(task.before + fill + task.after)
