"""Sample-quality statistics that need no judge: entropy, distinct-n, repetition, parse rate.

Generative perplexity alone rewards dull text (a model that repeats one word scores well), so
every gen-ppl redraft prints sits beside these. Definitions, each over a set of samples given
as token-id sequences in the generating model's own tokenizer:

- unigram entropy: for each sample, the entropy (nats) of its empirical token distribution,
  H = -sum_v (c_v / n) ln(c_v / n); then the mean over samples. (The measure of Zheng et al.,
  2024, under which low-precision sampling shows up as a drop.)
- distinct-n: for each sample, distinct n-grams / all n-grams; the mean over samples.
- repetition rate: for each sample, the share of its 8-gram occurrences that belong to an
  8-gram occurring more than once in that sample (0 for text that never repeats a span of 8
  tokens, 1 for a loop); the mean over samples.
- parse rate (code): the share of texts that `ast.parse` accepts.

Samples shorter than n contribute nothing to an n-gram figure; empty samples are skipped.
"""

from __future__ import annotations

import ast
import math
import warnings
from collections import Counter
from collections.abc import Sequence

REPETITION_N = 8


def _as_lists(samples) -> list[list[int]]:
    return [list(map(int, s)) for s in samples]


def sample_entropy(tokens: Sequence[int]) -> float:
    """Entropy in nats of one sample's empirical token distribution."""
    n = len(tokens)
    if n == 0:
        return 0.0
    return -sum(c / n * math.log(c / n) for c in Counter(tokens).values())


def unigram_entropy(samples) -> float:
    """Mean over non-empty samples of each sample's unigram entropy (nats)."""
    values = [sample_entropy(s) for s in _as_lists(samples) if len(s)]
    return sum(values) / len(values) if values else float("nan")


def _ngrams(tokens: list[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(samples, n: int) -> float:
    """Mean over samples (with at least n tokens) of distinct n-grams / n-grams."""
    if n < 1:
        raise ValueError(f"n={n}: expected >= 1")
    values = []
    for s in _as_lists(samples):
        grams = _ngrams(s, n)
        if grams:
            values.append(len(set(grams)) / len(grams))
    return sum(values) / len(values) if values else float("nan")


def repetition_rate(samples, n: int = REPETITION_N) -> float:
    """Mean over samples of the share of n-gram occurrences whose n-gram occurs twice or more."""
    values = []
    for s in _as_lists(samples):
        grams = _ngrams(s, n)
        if grams:
            counts = Counter(grams)
            values.append(sum(c for c in counts.values() if c > 1) / len(grams))
    return sum(values) / len(values) if values else float("nan")


def parses(text: str) -> bool:
    """True when `text` is syntactically valid Python."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes etc. in generated code
            ast.parse(text)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True


def parse_rate(texts: Sequence[str]) -> float:
    """Share of texts that parse as Python."""
    if not texts:
        return float("nan")
    return sum(parses(t) for t in texts) / len(texts)


def sample_stats(samples) -> dict[str, float]:
    """All judge-free figures of a sample set, as reported beside gen-ppl."""
    samples = _as_lists(samples)
    return {
        "entropy": unigram_entropy(samples),
        "distinct_1": distinct_n(samples, 1),
        "distinct_2": distinct_n(samples, 2),
        "distinct_4": distinct_n(samples, 4),
        "repetition": repetition_rate(samples),
    }
