"""Judge-free sample statistics against hand-computed values, and float32 vs float64 Gumbel."""

import math

import pytest
import torch

from redraft.eval.quality import (
    distinct_n,
    parse_rate,
    repetition_rate,
    sample_entropy,
    sample_stats,
    unigram_entropy,
)
from redraft.sampling.categorical import gumbel_max


def test_entropy_hand_computed():
    assert sample_entropy([7, 7, 7, 7]) == 0.0
    assert sample_entropy([1, 2, 3, 4]) == pytest.approx(math.log(4))
    # counts 2, 1, 1 of 4: -(1/2 ln 1/2 + 2 * 1/4 ln 1/4) = 1.5 ln 2
    assert sample_entropy([5, 5, 6, 9]) == pytest.approx(1.5 * math.log(2))
    # mean over samples; the empty sample is skipped
    assert unigram_entropy([[1, 2, 3, 4], [7, 7], []]) == pytest.approx(math.log(4) / 2)


def test_distinct_and_repetition_hand_computed():
    a = [1, 2, 1, 2, 3]  # bigrams 12 21 12 23: 3 distinct of 4
    b = [4, 4, 4, 4]  # bigrams 44 44 44: 1 of 3
    assert distinct_n([a], 2) == pytest.approx(3 / 4)
    assert distinct_n([a, b], 2) == pytest.approx((3 / 4 + 1 / 3) / 2)
    assert distinct_n([a], 1) == pytest.approx(3 / 5)
    assert distinct_n([[1, 2]], 3) != distinct_n([[1, 2]], 3)  # too short: NaN, not 0 or 1
    # 2-grams of a: 12 occurs twice, so 2 of the 4 occurrences repeat
    assert repetition_rate([a], n=2) == pytest.approx(2 / 4)
    assert repetition_rate([list(range(20))]) == 0.0
    assert repetition_rate([[1, 2, 3] * 10]) == 1.0  # a loop
    stats = sample_stats([a, b])
    assert set(stats) == {"entropy", "distinct_1", "distinct_2", "distinct_4", "repetition"}
    with pytest.raises(ValueError):
        distinct_n([a], 0)


def test_parse_rate():
    texts = ["def f(x):\n    return x + 1\n", "def f(x) return", "import os\n", "x = (1,"]
    assert parse_rate(texts) == 0.5
    assert math.isnan(parse_rate([]))


def _tail_share(dtype, logits, rows, seed):
    g = torch.Generator().manual_seed(seed)
    hits = 0
    for _ in range(rows // 50):
        idx = gumbel_max(logits.expand(50, -1), dtype, g)
        hits += int((idx != 0).sum())
    return hits / rows


@pytest.mark.slow
def test_float32_gumbel_lowers_entropy_float64_does_not():
    # One head token and a flat tail of 2^20 - 1 tokens holding 3% of the mass: each tail
    # token trails the head by ln(0.97 (V - 1) / 0.03) = 17.3 nats, past the ~16.6 that
    # float32 Gumbel noise can reach, so float32 can only pick the tail when the head's own
    # noise is low. Integrating over the head's noise (24-bit uniforms) predicts a tail share
    # of 0.0092 in float32 against the true 0.03 that float64 reproduces.
    V, eps, rows = 2**20, 0.03, 1000
    logits = torch.full((1, V), math.log(eps / (V - 1)), dtype=torch.float64)
    logits[0, 0] = math.log(1 - eps)
    share64 = _tail_share(torch.float64, logits, rows, seed=0)
    share32 = _tail_share(torch.float32, logits, rows, seed=1)
    sd64 = math.sqrt(eps * (1 - eps) / rows)  # binomial standard error: 0.0054
    # float64 within 3.5 standard errors of the truth; float32 below 0.0196, which is 3.8 of
    # its own standard errors (0.0030) above its predicted share, and far below the truth.

    def entropy(share):  # entropy of the distribution the sampler implements (tail symmetry)
        h = -sum(p * math.log(p) for p in (share, 1 - share) if p > 0)
        return h + share * math.log(V - 1)

    assert abs(share64 - eps) < 3.5 * sd64
    assert share32 < 0.0196
    assert entropy(share32) < entropy(eps) - 0.1  # float32 lowers the entropy of samples
    assert abs(entropy(share64) - entropy(eps)) < 3.5 * sd64 * math.log(V)
