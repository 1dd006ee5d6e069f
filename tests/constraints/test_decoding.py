"""Every output of every supported decoder and step rule matches its constraint (tiny
random-weight models over bytes: the worst case for a constraint, nothing steers them)."""

from __future__ import annotations

import json
import random
import re

import pytest

pytest.importorskip("interegular")
pytest.importorskip("outlines_core")

from redraft.data.tokenizers import ByteTokenizer  # noqa: E402
from redraft.errors import RedraftError  # noqa: E402
from tests.constraints.helpers import tiny_models  # noqa: E402

TOK = ByteTokenizer()
RULES = [("ancestral", None), ("confidence", None), ("threshold", {"threshold": 0.5}),
         ("first_hitting", None), ("remask", {"eta": 0.2})]
PATTERNS = ["[0-9]{2,4}-[a-z]+", "(yes|no|maybe)!?", "[A-Z][a-z]{0,3}( [A-Z][a-z]{0,3})*",
            "é+|x[0-9]?", "\\((a|bb)*\\)"]
SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 6},
    "age": {"type": "integer"},
    "tags": {"type": "array", "items": {"enum": ["x", "y"]}, "maxItems": 2},
    "ok": {"type": "boolean"}}, "required": ["name", "age", "ok"],
    "additionalProperties": False}


@pytest.fixture(scope="module")
def models():
    return tiny_models(TOK)


def _check(out, pattern):
    for c in out.completions:
        assert re.fullmatch(pattern, c, flags=re.DOTALL), (pattern, c)


def _valid(out):
    for c in out.completions:
        doc = json.loads(c)
        assert set(doc) >= {"name", "age", "ok"} and isinstance(doc["age"], int)
        assert len(doc["name"]) <= 6 and isinstance(doc["ok"], bool)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_ar_outputs_match(models, pattern):
    out = models.ar.generate("q: ", max_new_tokens=10, num_samples=4, seed=3,
                             constraint={"type": "regex", "pattern": pattern})
    _check(out, pattern)


@pytest.mark.parametrize("rule,options", RULES)
def test_masked_diffusion_outputs_match_with_every_rule(models, rule, options):
    for k, pattern in enumerate(PATTERNS):
        out = models.mdlm.generate("q: ", max_new_tokens=10, num_samples=3, seed=k, steps=5,
                                   sampler=rule, options=options,
                                   constraint={"type": "regex", "pattern": pattern})
        _check(out, pattern)


@pytest.mark.parametrize("rule,options", RULES)
def test_block_diffusion_outputs_match_with_every_rule(models, rule, options):
    for k, pattern in enumerate(PATTERNS[:3]):
        out = models.block.generate("q: ", max_new_tokens=13, num_samples=3, seed=k, steps=4,
                                    sampler=rule, options=options,
                                    constraint={"type": "regex", "pattern": pattern})
        _check(out, pattern)


def test_random_regexes_on_every_kind(models):
    from tests.constraints.helpers import random_regex

    for i in range(6):
        pattern = random_regex(random.Random(100 + i))
        c = {"type": "regex", "pattern": pattern}
        _check(models.ar.generate("", max_new_tokens=9, num_samples=2, seed=i, constraint=c),
               pattern)
        _check(models.mdlm.generate("", max_new_tokens=9, num_samples=2, seed=i, steps=3,
                                    sampler="confidence", constraint=c), pattern)
        _check(models.block.generate("", max_new_tokens=9, num_samples=2, seed=i, steps=2,
                                     constraint=c), pattern)


def test_json_schema_on_every_kind_and_with_eos_stops(models):
    c = {"type": "json_schema", "schema": SCHEMA}
    _valid(models.ar.generate("", max_new_tokens=40, num_samples=3, constraint=c))
    for rule, options in RULES[:3]:
        _valid(models.mdlm.generate("", max_new_tokens=40, num_samples=2, steps=8,
                                    sampler=rule, options=options, constraint=c))
    _valid(models.mdlm.generate("", max_new_tokens=40, num_samples=2, steps=8, block_size=8,
                                stop_at_eos=True, constraint=c))
    _valid(models.block.generate("", max_new_tokens=40, num_samples=2, steps=10,
                                 stop_at_eos=True, constraint=c))
    _valid(models.ar.generate("", max_new_tokens=40, num_samples=2, stop_at_eos=True,
                              constraint=c))


def test_every_draft_is_a_completable_canvas(models):
    """The canvases a stream would show (after every step) can all still be completed."""
    from redraft.constraints import CanvasGuard, compile_constraint

    pattern = "[0-9]{2,4}-[a-z]+"
    comp = compile_constraint({"type": "regex", "pattern": pattern}, TOK)
    guard = CanvasGuard(comp, [(3, 3 + 12)], TOK.mask_id)
    seen = []
    models.mdlm.generate("q: ", max_new_tokens=12, num_samples=2, steps=6, sampler="confidence",
                         constraint={"type": "regex", "pattern": pattern},
                         on_step=lambda i, x: seen.append(x.clone()))
    assert len(seen) == 6
    for x in seen:
        for row in x.tolist():
            assert guard.completable(row[3:15])


def test_infill_template_with_fixed_json_around_holes(models):
    schema = {"type": "object", "properties": {"id": {"type": "integer"},
                                               "tag": {"type": "string", "maxLength": 5}},
              "required": ["id", "tag"], "additionalProperties": False}
    c = {"type": "json_schema", "schema": schema}
    for rule in ("ancestral", "confidence"):
        out = models.mdlm.infill('{"id": <|mask:<=4|>, "tag": "<|mask:<=5|>"}', num_samples=3,
                                 steps=6, sampler=rule, constraint=c)
        for text in out.texts:
            doc = json.loads(text)
            assert isinstance(doc["id"], int) and len(doc["tag"]) <= 5
    with pytest.raises(RedraftError, match="cannot be met"):  # fixed text against the schema
        models.mdlm.infill('{"idx": <|mask:4|>}', steps=2, constraint=c)


def test_no_constraint_never_enters_the_constraint_code(models, monkeypatch):
    """Without a constraint no guard is consulted (so the outputs are the plain path's, bit
    for bit: the decoders' only new lines run under `guard is not None`)."""
    from redraft.constraints import ARGuard, CanvasGuard

    def boom(*a, **k):
        raise AssertionError("a guard was consulted without a constraint")

    for name in ("allow", "repair"):
        monkeypatch.setattr(CanvasGuard, name, boom)
    for name in ("mask", "advance"):
        monkeypatch.setattr(ARGuard, name, boom)
    models.mdlm.generate("q: ", max_new_tokens=8, num_samples=2, steps=3, sampler="confidence")
    models.block.generate("q: ", max_new_tokens=8, num_samples=2, steps=2)
    models.ar.generate("q: ", max_new_tokens=8, num_samples=2)


def test_a_constraint_that_allows_every_draw_changes_nothing():
    """The masked draw is the plain draw when the mask removes nothing the row would draw:
    an AR row whose plain output is in the language is reproduced token for token."""
    from redraft.data.tokenizers import CharTokenizer

    tok = CharTokenizer(["a", "b", "c"])  # eos 3, pad 4, mask 5
    ar = tiny_models(tok, seed=1).ar
    plain = ar.generate([0], max_new_tokens=6, num_samples=16, seed=1)
    loose = ar.generate([0], max_new_tokens=6, num_samples=16, seed=1,
                        constraint={"type": "regex", "pattern": "[abc]*"})
    same = 0
    for p, q in zip(plain.tokens, loose.tokens, strict=True):
        if tok.eos_id not in p:
            assert p == q
            same += 1
    assert same >= 2


def test_refusals(models):
    c = {"type": "regex", "pattern": "[0-9]{20}"}
    with pytest.raises(RedraftError, match="at least 20 tokens"):
        models.ar.generate("", max_new_tokens=5, constraint=c)
    with pytest.raises(RedraftError, match="cannot be met"):
        models.mdlm.generate("", max_new_tokens=5, steps=2, constraint=c)
    with pytest.raises(RedraftError, match="grammar constraints are not supported"):
        models.mdlm.generate("", max_new_tokens=5, constraint={"type": "grammar", "lark": "x"})
    with pytest.raises(RedraftError, match="expected 'regex'"):
        models.ar.generate("", max_new_tokens=5, constraint={"type": "xml"})
    with pytest.raises(RedraftError, match="constraint=.*expected dict"):
        models.ar.generate("", max_new_tokens=5, constraint="[0-9]+")


def test_uniform_noise_models_are_refused():
    from redraft.config import ModelConfig
    from redraft.diffusion import LogLinearSchedule, UniformProcess
    from redraft.model import Model
    from redraft.models.transformer import Transformer

    cfg = ModelConfig(n_layer=1, n_head=2, d_model=32, seq_len=16)
    m = Model(Transformer(cfg, TOK.vocab_size, causal=False), TOK, "udlm",
              UniformProcess(TOK.vocab_size, TOK.mask_id, LogLinearSchedule()))
    with pytest.raises(RedraftError, match="uniform.*noise model"):
        m.generate("", max_new_tokens=4, steps=2, constraint={"type": "regex", "pattern": "a+"})
    assert len(m.generate("", max_new_tokens=4, steps=2).tokens[0]) == 4  # unconstrained: fine


def test_requests_sharing_a_lane_keep_their_own_constraints(models):
    """Block requests with the same rule merge into one state (their guards merge with
    them); a constrained and a plain request in one lane stay apart. Each row's output is
    the one it gets alone."""
    from redraft.decoders.jobs import Work
    from redraft.decoders.run import run
    from redraft.request import Request

    pattern = "[0-9]{2,4}-[a-z]+"
    c = {"type": "regex", "pattern": pattern}
    for m in (models.block, models.mdlm):
        req = m.request(Request(constraint=c, steps=4))
        works = [Work(m.name, TOK.encode(p), 16, [i, i + 10], request=req)
                 for i, p in enumerate(("q: ", "r: ", "s: "))]
        works.append(Work(m.name, TOK.encode("t: "), 16, [5], request=m.request(steps=4)))
        jobs, _, _ = run(m, works)
        for job, p in zip(jobs[:3], ("q: ", "r: ", "s: "), strict=True):
            for row in job.state.current().tolist():
                assert re.fullmatch(pattern, TOK.decode(row[3:])), (m.name, row)
            alone = m.generate(p, max_new_tokens=13, seed=job.work.seeds[0], steps=4,
                               constraint=c)
            assert job.state.current()[0].tolist() == alone.tokens[0]
        plain = m.generate("t: ", max_new_tokens=13, seed=5, steps=4)
        assert jobs[3].state.current()[0].tolist() == plain.tokens[0]
