"""Stop strings in linear time (issue 26 item 1): the automaton and the incremental decoder
agree with the plain definitions on every split of random texts, a text of any length costs
one pass, and requests bound their stop strings."""

import random
import re

import pytest

from redraft.data.tokenizers import ByteTokenizer
from redraft.decoders.stops import (
    MAX_STOP_CHARS,
    IncrementalText,
    StopMatcher,
    StopScan,
    check_stops,
)
from redraft.errors import RedraftError


def first_stop(text, stops):
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(cuts) if cuts else None


def held_back(text, stops):
    return max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)


@pytest.mark.parametrize("seed", range(40))
def test_matcher_equals_the_definition_on_every_split(seed):
    rng = random.Random(seed)
    alphabet = "ab" if seed % 2 else "abc"
    stops = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5)))
             for _ in range(rng.randint(1, 4))]
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
    m, fed = StopMatcher(stops), 0
    while fed < len(text):
        step = rng.randint(1, 4)
        m.feed(text[fed:fed + step])
        fed = min(len(text), fed + step)
        seen = text[:fed]
        assert m.found == first_stop(seen, stops), (stops, seen)
        if m.found is None:
            assert m.held == held_back(seen, stops), (stops, seen)


def test_earliest_start_wins_over_earliest_end():
    m = StopMatcher(["abcd", "bc"])
    m.feed("abc")
    assert m.found == 1  # "bc" so far
    m.feed("d")
    assert m.found == 0  # "abcd" starts earlier: the text is cut there, as str.find says


def test_incremental_text_equals_whole_decode_across_utf8():
    tok = ByteTokenizer()
    text = "naïve café ✓ 𝄞 done"
    ids = tok.encode(text)
    for step in (1, 2, 3, 5):
        inc, out = IncrementalText(tok.decode), ""
        for i in range(0, len(ids), step):
            out += inc.extend(ids[i:i + step])
            assert "\ufffd" not in out and text.startswith(out)
        out += inc.extend([], final=True)
        assert out == text and inc.ends[-1] == len(text)
        assert inc.ends == sorted(inc.ends) and len(inc.ends) == len(ids)


def test_a_long_text_costs_one_pass():
    """A 200,000-character row fed a few tokens at a time (as the engine does: a view of
    the row's committed ids) decodes each id about once, not the whole prefix each time
    (counted, not timed)."""
    import torch

    tok = ByteTokenizer()
    decoded = 0

    def decode(ids):
        nonlocal decoded
        decoded += len(ids)
        return tok.decode(ids)

    scan = StopScan(decode, ["x" * MAX_STOP_CHARS] * 4)
    ids = torch.tensor(tok.encode("ab" * 100_000))
    for end in range(1, len(ids) + 1, 7):
        assert not scan.feed(ids[:end])
    assert decoded < 4 * len(ids)
    assert scan.visible() == scan.text.text[:len(scan.text.text)]


def test_visible_holds_back_a_possible_stop():
    tok = ByteTokenizer()
    scan = StopScan(tok.decode, ["END", "STOP"])
    scan.feed(tok.encode("hello ST"))
    assert scan.visible() == "hello "
    scan.feed(tok.encode("hello STOP now"))
    assert scan.found == 6 and scan.visible() == "hello "


@pytest.mark.parametrize("stop,word", [
    (["a"] * 5, "at most 4"), ([""], "stop[0] is empty"), (["ok", ""], "stop[1] is empty"),
    ("x" * (MAX_STOP_CHARS + 1), f"at most {MAX_STOP_CHARS:,}")])
def test_check_stops_refuses(stop, word):
    with pytest.raises(RedraftError, match=re.escape(word)):
        check_stops(stop)


def test_check_stops_accepts():
    assert check_stops(None) == [] and check_stops("a") == ["a"]
    assert check_stops(["a", "b" * MAX_STOP_CHARS]) == ["a", "b" * MAX_STOP_CHARS]


def test_rows_share_one_automaton():
    """A request's 64 rows keep a state each, not an automaton each (built once)."""
    stops = ["x" * MAX_STOP_CHARS, "y" * MAX_STOP_CHARS]
    a, b = StopMatcher(stops), StopMatcher(list(stops))
    assert a._goto is b._goto
    a.feed("xx")
    assert a.held == 2 and b.held == 0
