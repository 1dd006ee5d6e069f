"""The hybrid (objective "hybrid"): an exact causal LM whose draft blocks decode by diffusion,
and its speculative mode, whose text is the AR mode's (greedy: token for token)."""

import pytest
import torch

from redraft.checkpoint import build_model
from redraft.config import Config
from redraft.errors import RedraftError
from redraft.likelihood import evaluate_model
from redraft.losses import ar_inputs, draw_hybrid_noise, token_losses
from redraft.model import load

PROMPTS = ["the ", "the cat", "t", "sat on the mat. the d", "rat", "the bat sat on"]


@pytest.fixture(scope="module")
def hybrid(hybrid_run):
    return load(hybrid_run)


def tiny_hybrid(block=4, seq_len=16):
    cfg = Config()
    cfg.model.n_layer, cfg.model.n_head, cfg.model.d_model, cfg.model.seq_len = 2, 2, 32, seq_len
    cfg.diffusion.objective, cfg.diffusion.block_size = "hybrid", block
    torch.manual_seed(0)
    return cfg, build_model(cfg, 20).eval()


def test_the_clean_stream_is_the_plain_causal_pass_and_drafts_match_over_a_cache():
    cfg, m = tiny_hybrid()
    x0 = torch.randint(0, 18, (3, 16))
    y0 = ar_inputs(x0, 18)
    pos = torch.arange(16)
    drafts = torch.where(torch.rand(3, 16) < 0.5, 19, x0)
    clean, drafted = m(y0, drafts=drafts, draft_pos=pos, draft_start=pos - pos % 4)
    assert torch.allclose(clean, m(y0), atol=1e-6)  # drafts never leak into the clean stream
    for start in (0, 4, 8, 12):  # a block over the cache of the clean tokens before it
        cache = m.new_cache(3)
        if start:
            m(y0[:, :start], cache=cache)
        c, d = m(y0[:, start:start + 1], cache=cache, positions=torch.full((3,), start),
                 drafts=drafts[:, start:start + 4], draft_pos=torch.arange(start, start + 4),
                 draft_start=torch.full((4,), start))
        assert torch.allclose(c[:, 0], clean[:, start], atol=1e-5)
        assert torch.allclose(d, drafted[:, start:start + 4], atol=1e-5)


def test_a_draft_block_sees_only_the_tokens_before_it():
    cfg, m = tiny_hybrid()
    x0 = torch.randint(0, 18, (1, 16))
    y0 = ar_inputs(x0, 18)
    pos = torch.arange(4, 8)
    masks = torch.full((1, 4), 19)
    _, d1 = m(y0, drafts=masks, draft_pos=pos, draft_start=torch.full((4,), 4))
    later = y0.clone()
    later[:, 5:] = (later[:, 5:] + 1) % 18  # change the clean tokens from token 4 on
    _, d2 = m(later, drafts=masks, draft_pos=pos, draft_start=torch.full((4,), 4))
    assert torch.allclose(d1, d2, atol=1e-6)
    earlier = y0.clone()
    earlier[:, 4] = (earlier[:, 4] + 1) % 18  # token 3 (position 4) is before the block
    _, d3 = m(earlier, drafts=masks, draft_pos=pos, draft_start=torch.full((4,), 4))
    assert not torch.allclose(d1, d3, atol=1e-4)


@torch.no_grad()
def test_ar_mode_nll_is_the_hand_computed_cross_entropy():
    cfg, m = tiny_hybrid()
    x0 = torch.randint(0, 18, (2, 16))
    noise = draw_hybrid_noise(cfg.diffusion, 2, 16, 19, torch.Generator().manual_seed(0))
    got = token_losses(m, x0, cfg.diffusion, 19, 18, noise=noise, part="ar")
    logits = m(torch.cat((torch.full((2, 1), 18), x0[:, :-1]), dim=1)).double()
    hand = -logits.log_softmax(-1).gather(-1, x0[..., None])[..., 0]
    assert torch.allclose(got.double(), hand, atol=1e-5)
    train = token_losses(m, x0, cfg.diffusion, 19, 18, noise=noise, part="train")
    draft = token_losses(m, x0, cfg.diffusion, 19, 18, noise=noise, part="draft")
    w = cfg.diffusion.hybrid_draft_weight
    assert torch.allclose(train, got + w * draft, atol=1e-5)
    assert float(draft.sum()) > 0


@torch.no_grad()
def test_a_share_of_blocks_drafts_fewer_positions():
    cfg, m = tiny_hybrid()
    cfg.diffusion.hybrid_draft_share = 0.5
    noise = draw_hybrid_noise(cfg.diffusion, 2, 16, 19, torch.Generator().manual_seed(1))
    assert len(noise.drafted) == 8 and bool((noise.drafted.view(2, 4) % 4 ==
                                              torch.arange(4)).all())
    x0 = torch.randint(0, 18, (2, 16))
    draft = token_losses(m, x0, cfg.diffusion, 19, 18, noise=noise, part="draft")
    undrafted = torch.ones(16, dtype=torch.bool)
    undrafted[noise.drafted] = False
    assert float(draft[:, undrafted].abs().sum()) == 0


@pytest.mark.parametrize("layout", ["all", "last"])
def test_greedy_speculative_is_the_greedy_ar_text(hybrid, layout):
    ar = hybrid.generate(PROMPTS, max_new_tokens=40, temperature=0, mode="ar")
    spec = hybrid.generate(PROMPTS, max_new_tokens=40, temperature=0, mode="speculative",
                           options={"layout": layout})
    assert spec.tokens == ar.tokens
    assert spec.nfe < ar.nfe  # drafts were accepted: fewer calls than tokens


def test_speculative_rows_do_not_depend_on_the_batch(hybrid):
    big = hybrid.generate(PROMPTS[:3], max_new_tokens=30, temperature=0.8, top_k=20,
                          num_samples=2, seed=7)
    alone = hybrid.generate(PROMPTS[1], max_new_tokens=30, temperature=0.8, top_k=20,
                            num_samples=2, seed=9)
    assert big.tokens[2:4] == alone.tokens


def test_speculative_stops_at_eos_and_at_the_length(hybrid):
    out = hybrid.generate(PROMPTS, max_new_tokens=13, temperature=1.0, seed=3)
    lengths = [len(hybrid.encode(p)) + 13 for p in PROMPTS]
    assert [len(t) for t in out.tokens] == lengths
    eos = hybrid.tokenizer.eos_id
    ar = hybrid.generate(PROMPTS, max_new_tokens=40, temperature=0, mode="ar",
                         stop_at_eos=True)
    spec = hybrid.generate(PROMPTS, max_new_tokens=40, temperature=0, stop_at_eos=True)
    assert spec.completions == ar.completions
    assert all(eos not in hybrid.encode(c) for c in spec.completions)


def test_evaluate_reports_the_ar_nll_and_the_block_bound(hybrid, hybrid_run, capsys):
    out = evaluate_model(hybrid, samples=1, max_batches=1, progress=False)
    assert out["objective"] == "hybrid" and out["kind"] == "exact NLL (AR mode)"
    assert out["block_bound"]["nats_per_token"] > 0 and out["nats_per_token"] > 0
    from redraft.cli import main

    capsys.readouterr()
    assert main(["eval", str(hybrid_run), "--samples", "1", "--max-batches", "1"]) == 0
    printed = capsys.readouterr().out
    assert "exact NLL (AR mode)" in printed and "block mode's bound" in printed


def test_modes_are_checked(hybrid, serve_runs):
    with pytest.raises(RedraftError, match="modes"):
        hybrid.generate("the", max_new_tokens=4, mode="canvas")
    with pytest.raises(RedraftError, match="layout"):
        hybrid.generate("the", max_new_tokens=4, options={"layout": "some"})
    with pytest.raises(RedraftError, match="logprobs"):
        hybrid.generate("the", max_new_tokens=4, logprobs=2)
    assert hybrid.generate("the", max_new_tokens=4, mode="ar", logprobs=2).completions
    with pytest.raises(RedraftError, match="hybrids"):
        load(serve_runs["mdlm"]).generate("the", max_new_tokens=4, mode="speculative")
    assert load(serve_runs["ar"]).generate("the", max_new_tokens=4, mode="ar").completions


@pytest.mark.parametrize("mode", ["speculative", "ar", "block"])
def test_work_units_bound_the_positions_each_mode_evaluates(hybrid, mode, monkeypatch):
    """The server's --max-work counts a request by its decoder's work_units: for a hybrid,
    by mode, never below the clean and draft positions its calls really carry."""
    seen = []
    forward = type(hybrid.backbone).forward

    def counted(self, x, *args, drafts=None, **kwargs):
        seen.append(x.numel() + (0 if drafts is None else drafts.numel()))
        return forward(self, x, *args, drafts=drafts, **kwargs)

    monkeypatch.setattr(type(hybrid.backbone), "forward", counted)
    prompt, new, n, steps = hybrid.encode("the c"), 27, 2, 16
    hybrid.generate("the c", max_new_tokens=new, num_samples=n, steps=steps, mode=mode,
                    temperature=0.8)
    length = len(prompt) + new
    d = hybrid.decoder
    assert sum(seen) <= d.work_units(n, steps, length, mode)
    if mode == "speculative":
        assert d.work_units(n, steps, length, mode) > d.work_units(n, steps, length, "ar")
        assert "b + b^2" in d.work_formula(n, steps, length, mode)


def test_the_server_bounds_speculative_work_by_its_positions(hybrid):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from redraft.serve import create_app
    from redraft.serve.limits import Limits

    body = {"model": hybrid.name, "prompt": "the cat", "max_tokens": 24, "temperature": 0}
    with TestClient(create_app([hybrid], max_steps=1000, limits=Limits(max_work=200))) as c:
        assert c.post("/v1/completions", json={**body, "mode": "ar"}).status_code == 200
        bad = c.post("/v1/completions", json={**body, "mode": "speculative"})
        assert bad.status_code == 400 and "b + b^2" in bad.text


def test_served_speculative_rows_equal_offline(hybrid):
    pytest.importorskip("fastapi")
    from redraft.serve import Engine, Work

    tok = hybrid.tokenizer
    works = [Work("h", tok.encode(PROMPTS[0]), 30, [1, 2]),
             Work("h", tok.encode(PROMPTS[1]), 40, [3], temperature=0.7, top_k=5),
             Work("h", tok.encode("cat "), 26, [8], temperature=0.9),  # prefilled with the 1st
             Work("h", tok.encode(PROMPTS[3]), 44, [4], temperature=0, options={"layout": "last"}),
             Work("h", tok.encode(PROMPTS[2]), 20, [5], mode="ar", top_p=0.9),
             Work("h", tok.encode(PROMPTS[4]), 36, [6, 7], stop_at_eos=True)]
    hybrid.name = "h"
    engine = Engine({"h": hybrid}, max_batch=64)
    first = [engine.submit(w) for w in works[:3]]
    engine.start()
    first[0].wait(60)  # later requests join a lane that is already running
    rest = [engine.submit(w) for w in works[3:]]
    events = [job.wait(60) for job in first + rest]
    rows = engine.metrics.batch_rows
    engine.close()
    assert rows.max >= 2
    for w, ev in zip(works, events, strict=True):
        assert ev.kind == "done"
        offline = hybrid.sample([w.prefix] * w.n, length=w.length, seeds=w.seeds,
                                request=w.request)
        assert torch.equal(ev.tokens, offline.tokens), w


def test_requests_arriving_together_share_their_first_call(hybrid):
    """New requests of one layout and prompt length are prefilled in one call, then every
    row is in one call a tick: the run's calls are the ticks, and each row's text is its own."""
    from redraft.decoders.jobs import Work
    from redraft.decoders.run import run

    tok = hybrid.tokenizer
    works = [Work(hybrid.name, tok.encode(p), 24, [s], temperature=0.8)
             for p, s in (("the ", 1), ("cat ", 2), ("the ", 3))]
    jobs, calls, _ = run(hybrid, works)
    assert calls == max(job.state.calls for job in jobs)
    for w, job in zip(works, jobs, strict=True):
        alone = hybrid.sample([w.prefix], length=w.length, seeds=w.seeds, request=w.request)
        assert torch.equal(job.state.current(), alone.tokens)


def test_block_mode_windows_are_the_training_pass(hybrid):
    """HybridBlocks' cached window (clean blocks and window in one call, as the block lane
    runs them) gives the draft logits of the uncached training pass."""
    m = hybrid
    x = torch.tensor([m.encode("the cat sat on the mat. the dog")[:24]])
    y0 = ar_inputs(x, m.tokenizer.eos_id)
    pos = torch.arange(24)
    xt = x.clone()
    xt[:, 9:12] = m.tokenizer.mask_id
    with torch.no_grad():
        _, ref = m.backbone(y0, drafts=xt, draft_pos=pos, draft_start=pos - pos % 4)
        blocks = m.decoder.blocks.backbone
        cache = blocks.new_cache(2)
        y = torch.stack([x[0, 0:4], x[0, 4:8], xt[0, 8:12], xt[0, 0:4]])
        out = blocks(y, cache=cache, positions=torch.tensor([0, 4, 8, 0]),
                     cache_rows=torch.tensor([0, 0, 0, 1]))
    assert torch.allclose(out[2], ref[0, 8:12], atol=1e-5)
    assert torch.allclose(out[3], ref[0, 0:4], atol=1e-5)  # block 0 reads bos's keys


@pytest.mark.parametrize("sampler", ["ancestral", "confidence", "first_hitting", "threshold",
                                     "remask"])
def test_block_mode_takes_every_masked_rule(hybrid, sampler):
    out = hybrid.generate(PROMPTS[:2], max_new_tokens=12, mode="block", steps=6,
                          sampler=sampler, num_samples=2, seed=1)
    assert all(hybrid.tokenizer.mask_id not in row for row in out.tokens)
    again = hybrid.generate(PROMPTS[1], max_new_tokens=12, mode="block", steps=6,
                            sampler=sampler, num_samples=2, seed=3)
    assert out.tokens[2:] == again.tokens  # rows do not depend on the batch


def test_http_modes_streams_and_models(hybrid):
    pytest.importorskip("fastapi")
    import json

    from fastapi.testclient import TestClient

    from redraft.serve import create_app

    with TestClient(create_app([hybrid], max_steps=1000)) as client:
        listed = client.get("/v1/models").json()["data"][0]
        assert listed["modes"] == ["speculative", "ar", "block"]
        body = {"model": hybrid.name, "prompt": "the cat", "max_tokens": 24, "temperature": 0}
        ar = client.post("/v1/completions", json={**body, "mode": "ar"}).json()
        spec = client.post("/v1/completions", json={**body, "mode": "speculative"}).json()
        assert spec["choices"][0]["text"] == ar["choices"][0]["text"]
        assert spec["usage"]["completion_tokens"] == ar["usage"]["completion_tokens"] == 24
        assert spec["redraft"]["network_rows"] < ar["redraft"]["network_rows"]
        with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
            chunks = [json.loads(line[6:]) for line in r.iter_lines()
                      if line.startswith("data: {")]
        assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == \
            ar["choices"][0]["text"]
        assert len(chunks) > 1  # accepted runs arrive as they land
        bad = client.post("/v1/completions", json={**body, "mode": "fast"})
        assert bad.status_code == 400 and "modes" in bad.text


def ar_law(m, ids: list[int], length: int, temperature: float, top_k: int) -> dict:
    """The AR mode's exact law of the next `length` tokens after `ids` under the knobs, by
    enumeration ({continuation: probability}), from the uncached causal pass."""
    from redraft.sampling.categorical import probabilities

    law = {(): 1.0}
    for _ in range(length):
        rows = list(law)
        y = torch.tensor([[m.tokenizer.eos_id, *ids, *r] for r in rows])
        logits = m.backbone(y)[:, -1].double()
        logits[:, m.tokenizer.non_text_ids] = -torch.inf
        p = probabilities(logits, temperature, top_k)
        law = {r + (a,): law[r] * float(p[i, a]) for i, r in enumerate(rows)
               for a in p[i].nonzero().flatten().tolist()}
    return law


def frequencies(m, prompt: str, length: int, n: int, **knobs) -> dict:
    out = m.generate(prompt, max_new_tokens=length, num_samples=n, **knobs)
    skip = len(m.encode(prompt))
    freq: dict = {}
    for row in out.tokens:
        freq[tuple(row[skip:])] = freq.get(tuple(row[skip:]), 0) + 1
    return freq


@torch.no_grad()
def test_speculative_law_on_the_trained_model_is_the_ar_modes(hybrid):
    """Three tokens after a prompt with top-k 3 (27 outcomes): the frequencies of 20,000
    speculative rows (a first call drafting, a second verifying a draft) against the AR
    mode's exact law, computed from its logits."""
    m, prompt, n = hybrid, "the c", 20_000
    exact = ar_law(m, m.encode(prompt), 3, 0.9, 3)
    freq = frequencies(m, prompt, 3, n, temperature=0.9, top_k=3)
    assert set(freq) <= set(exact)  # nothing outside the AR mode's support
    tv = 0.5 * sum(abs(freq.get(k, 0) / n - exact[k]) for k in exact)
    assert tv < 0.04, tv  # Monte Carlo TV of 2e4 draws over 27 outcomes: about 0.015
    out = m.generate(prompt, max_new_tokens=3, temperature=0.9, top_k=3, num_samples=4)
    assert out.nfe <= 3  # a first call drafting, a second verifying; a third after rejections


@torch.no_grad()
@pytest.mark.parametrize("layout", ["all", "last"])
def test_long_speculative_runs_keep_the_ar_law(hybrid, layout):
    """Seven tokens with top-k 2 (128 outcomes), so a row takes several calls (drafts
    accepted, rejected, drafted after a rejection, cut by the length): the chi-square
    statistic of 20,000 rows against the AR mode's exact law is the null's (z below 5; a
    bug that shifts the law by a few percent gives z in the tens)."""
    m, prompt, n = hybrid, "sat on the", 20_000
    exact = ar_law(m, m.encode(prompt), 7, 1.0, 2)
    freq = frequencies(m, prompt, 7, n, top_k=2, mode="speculative",
                       options={"layout": layout})
    assert set(freq) <= set(exact)
    chi2 = sum((freq.get(k, 0) - n * p) ** 2 / (n * p) for k, p in exact.items())
    dof = len(exact) - 1
    assert abs(chi2 - dof) / (2 * dof) ** 0.5 < 5, (chi2, dof)


@pytest.mark.parametrize("mode", ["speculative", "ar", "block"])
def test_every_mode_keeps_a_constraint(hybrid, mode):
    pytest.importorskip("interegular")
    from redraft.constraints import compile_constraint

    spec = {"type": "regex", "pattern": "(the (cat|dog|rat) sat\\. )+"}
    c = compile_constraint(spec, hybrid.tokenizer)
    out = hybrid.generate(["the ", "a"], max_new_tokens=30, mode=mode, constraint=spec,
                          num_samples=2, seed=5, stop_at_eos=True, temperature=0.9)
    eos = hybrid.tokenizer.eos_id
    for row, prompt in zip(out.tokens, ["the ", "the ", "a", "a"], strict=True):
        span = row[len(hybrid.encode(prompt)):]
        span = span[:span.index(eos) + 1] if eos in span else span  # then placeholders
        assert c.matches(span), hybrid.tokenizer.decode(row)


def test_greedy_constrained_speculative_is_the_constrained_ar_text(hybrid):
    pytest.importorskip("interegular")
    spec = {"type": "regex", "pattern": "[a-z ]{5,20}\\."}
    kw = dict(max_new_tokens=24, temperature=0, constraint=spec, stop_at_eos=True)
    ar = hybrid.generate(PROMPTS, mode="ar", **kw)
    spec_out = hybrid.generate(PROMPTS, mode="speculative", **kw)
    assert spec_out.tokens == ar.tokens
