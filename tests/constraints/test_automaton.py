"""The token automaton and the completability check against brute-force enumeration."""

from __future__ import annotations

import itertools
import random

import pytest

pytest.importorskip("interegular")

from redraft.constraints import CanvasGuard, compile_constraint  # noqa: E402
from redraft.data.tokenizers import ByteTokenizer  # noqa: E402
from tests.constraints.helpers import full_match, random_regex, text_of, toy_tokenizer  # noqa: E402

TOK = toy_tokenizer()
SPAN_IDS = list(range(8))  # every id a span may hold: text, eos, pad (mask 8 is a hole)
REGEXES = [random_regex(random.Random(i)) for i in range(40)]


@pytest.mark.parametrize("pattern", REGEXES[:20])
def test_token_walk_matches_python_re(pattern):
    c = compile_constraint({"type": "regex", "pattern": pattern}, TOK)
    for n in range(4):
        for ids in itertools.product(SPAN_IDS, repeat=n):
            assert c.matches(ids) == full_match(pattern, text_of(ids, TOK)), (pattern, ids)


@pytest.mark.parametrize("pattern", REGEXES)
def test_completability_and_allowed_tokens_agree_with_enumeration(pattern):
    """For canvases of 1..4 positions (holes anywhere): the canvas is completable iff some
    filling of its holes matches, and token v is allowed at a hole iff some filling with v
    there matches."""
    c = compile_constraint({"type": "regex", "pattern": pattern}, TOK)
    rng = random.Random(pattern)
    mask = TOK.mask_id
    for _ in range(25):
        n = rng.randint(1, 4)
        canvas = [mask if rng.random() < 0.6 else rng.choice(SPAN_IDS) for _ in range(n)]
        holes = [i for i, v in enumerate(canvas) if v == mask]
        fills = []
        for values in itertools.product(SPAN_IDS, repeat=len(holes)):
            row = list(canvas)
            for i, v in zip(holes, values, strict=True):
                row[i] = v
            if full_match(pattern, text_of(row, TOK)):
                fills.append(row)
        g = CanvasGuard(c, [(0, n)], mask)
        fwd, back = g.forward(canvas), g.backward(canvas)
        assert bool(c.sets[fwd[-1]] & c.accept_set) == bool(fills), (pattern, canvas)
        assert bool(c.sets[back[0]] & (1 << c.start)) == bool(fills)
        for i in holes:
            allowed = c.allowed(c.sets[fwd[i]], c.sets[back[i + 1]])
            want = {row[i] for row in fills}
            assert {v for v in range(c.vocab) if allowed[v]} == want, (pattern, canvas, i)


def test_left_to_right_length_check_agrees_with_enumeration():
    for pattern in REGEXES[:15]:
        c = compile_constraint({"type": "regex", "pattern": pattern}, TOK)
        for left in range(1, 4):
            allowed = c.ar_allowed(c.start, left)
            for v in range(c.vocab):
                want = any(full_match(pattern, text_of((v, *rest), TOK))
                           for rest in itertools.product(SPAN_IDS, repeat=left - 1))
                assert bool(allowed[v]) == want, (pattern, left, v)


def test_multibyte_characters_split_over_byte_tokens():
    tok = ByteTokenizer()
    c = compile_constraint({"type": "regex", "pattern": "(é|[^a-z])x"}, tok)
    assert c.matches(tok.encode("éx")) and c.matches(tok.encode("€x"))
    assert c.matches(tok.encode("Zx")) and not c.matches(tok.encode("ax"))
    assert not c.matches(list("é".encode())[:1] + tok.encode("x"))  # half a character
    # after the lead byte of é only its continuation (or another 2-byte char's) may follow
    g = CanvasGuard(c, [(0, 3)], tok.mask_id)
    canvas = [0xC3, tok.mask_id, tok.mask_id]
    fwd, back = g.forward(canvas), g.backward(canvas)
    ok = c.allowed(c.sets[fwd[1]], c.sets[back[2]])
    assert ok[0xA9] and not ok[ord("x")] and not ok[0xC3]


def test_compilation_is_cached_per_spec_and_tokenizer():
    tok = ByteTokenizer()
    a = compile_constraint({"type": "regex", "pattern": "[0-9]+"}, tok)
    assert compile_constraint({"pattern": "[0-9]+", "type": "regex"}, tok) is a
    assert compile_constraint({"type": "regex", "pattern": "[0-9]+"}, ByteTokenizer()) is not a


def test_specials_are_never_text_and_eos_ends_the_span():
    tok = ByteTokenizer()
    c = compile_constraint({"type": "regex", "pattern": "a+"}, tok)
    assert (c.T[:, tok.mask_id] < 0).all()
    assert c.matches(tok.encode("aa") + [tok.eos_id, tok.pad_id, tok.eos_id])
    assert not c.matches([tok.eos_id])  # the empty text does not match a+
    assert not c.matches(tok.encode("a") + [tok.eos_id] + tok.encode("a"))


def test_only_well_formed_utf8_is_accepted():
    """Every byte string of 1..4 bytes from a sample of interesting bytes: accepted by "." iff
    it is one well-formed UTF-8 character."""
    tok = ByteTokenizer()
    c = compile_constraint({"type": "regex", "pattern": "."}, tok)
    sample = [0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xDF, 0xE0, 0xED,
              0xEF, 0xF0, 0xF4, 0xF5]
    for n in range(1, 5):
        for seq in itertools.product(sample, repeat=n):
            raw = bytes(seq)
            try:
                ok = len(raw.decode("utf-8")) == 1 and raw.decode("utf-8") != "\n"
            except UnicodeDecodeError:
                ok = False
            assert c.matches(list(seq)) == ok, raw
