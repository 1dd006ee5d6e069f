"""Quality frontiers: gen-ppl against entropy from a temperature sweep, per number of steps.

Generative perplexity and sample entropy are two parts of one divergence: lowering the
temperature buys a lower gen-ppl with a lower entropy, so a single (gen-ppl, entropy) point
can rank two samplers either way. A frontier is a curve instead: for one model and one step
count, the points of a temperature sweep; a setting is better where its curve lies lower (less
gen-ppl) at the same entropy. Each curve is summarised by its gen-ppl at the held-out text's
entropy (log gen-ppl interpolated linearly in entropy between the two temperatures that
bracket it; None when none do).

A naive floor row: an n-gram sampler of the training split (`NGram`, zero learned parameters)
swept over the same temperatures. It shows what a judge rewards in text that merely has the
corpus's local statistics (a low-order n-gram at low temperature reaches a "good" gen-ppl at
an entropy near the text's), the line a model has to be read against.

Tokens per forward (TPF): new tokens / network evaluations per row, as every decoder reports
it (sampling/tpf.py, Generation.tpf); 1 for the AR twin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from redraft.errors import RedraftError
from redraft.eval import quality


class NGram:
    """An n-gram sampler fitted on a token stream (counts only, no smoothing, no parameters).

    Law: with c the longest suffix (at most n - 1 tokens) of the tokens so far that occurs in
    the training stream followed by some token,
        p(x | context) = count(c x)^(1/T) / sum_y count(c y)^(1/T)
    (the empirical conditional at temperature T; T = 0 takes the most frequent next token, the
    smallest id on a tie). The empty suffix always qualifies: the unigram law of the stream.
    """

    def __init__(self, stream: Sequence[int] | np.ndarray, n: int, vocab_size: int):
        if not isinstance(n, int) or n < 1:
            raise RedraftError(f"n-gram order {n!r}: expected an integer >= 1")
        x = np.asarray(stream, dtype=np.int64)
        if x.size < n:
            raise RedraftError(f"an {n}-gram needs at least {n} training tokens, got {x.size}")
        if x.min() < 0 or x.max() >= vocab_size:
            raise RedraftError(f"token ids outside a vocabulary of {vocab_size}")
        if vocab_size ** n >= 2 ** 62:
            raise RedraftError(f"order {n} over a vocabulary of {vocab_size} does not fit the "
                               "n-gram's 64-bit keys: choose a lower order")
        self.n, self.V = n, vocab_size
        # tables[k]: sorted keys (context of k tokens, next token) as base-V integers, counts.
        self.tables = []
        for k in range(n):
            key = np.zeros(x.size - k, dtype=np.int64)
            for j in range(k + 1):  # x[i], ..., x[i + k]: context then next
                key = key * vocab_size + x[j:x.size - k + j]
            keys, counts = np.unique(key, return_counts=True)
            self.tables.append((keys, counts))

    def counts(self, context: Sequence[int]) -> np.ndarray:
        """(V,) counts of the next token after the longest seen suffix of `context`."""
        context = list(context)[-(self.n - 1):] if self.n > 1 else []
        for k in range(len(context), -1, -1):
            ctx = 0
            for t in context[len(context) - k:]:
                ctx = ctx * self.V + int(t)
            keys, counts = self.tables[k]
            lo, hi = np.searchsorted(keys, [ctx * self.V, (ctx + 1) * self.V])
            if hi > lo:
                out = np.zeros(self.V, dtype=np.float64)
                out[keys[lo:hi] - ctx * self.V] = counts[lo:hi]
                return out
        raise AssertionError("the unigram table is never empty")

    def probs(self, context: Sequence[int], temperature: float = 1.0) -> np.ndarray:
        """(V,) the law above, float64."""
        c = self.counts(context)
        if temperature < 0:
            raise RedraftError(f"temperature={temperature}: expected >= 0")
        if temperature == 0:
            out = np.zeros_like(c)
            out[int(np.argmax(c))] = 1.0
            return out
        seen = c > 0
        logw = np.full_like(c, -np.inf)
        logw[seen] = np.log(c[seen]) / temperature
        w = np.exp(logw - logw[seen].max())
        return w / w.sum()

    def sample(self, length: int, seed: int, temperature: float = 1.0,
               prefix: Sequence[int] = ()) -> list[int]:
        """`length` tokens after `prefix` (not included), drawn with a seeded generator."""
        rng = np.random.default_rng(seed)
        seq, out = list(prefix), []
        for _ in range(length):
            p = self.probs(seq, temperature)
            tok = int(rng.choice(self.V, p=p))
            seq.append(tok)
            out.append(tok)
        return out


def at_entropy(points: Sequence[dict], entropy: float | None) -> float | None:
    """gen-ppl at `entropy` on one curve (log gen-ppl linear in entropy between the two
    nearest points that bracket it), None when no two points bracket it."""
    pts = sorted((p["entropy"], p["gen_ppl"]) for p in points
                 if p.get("gen_ppl") and p.get("entropy") is not None)
    if entropy is None:
        return None
    for (e0, p0), (e1, p1) in zip(pts, pts[1:], strict=False):
        if e0 <= entropy <= e1:
            if e1 == e0:
                return min(p0, p1)
            f = (entropy - e0) / (e1 - e0)
            return math.exp(math.log(p0) + f * (math.log(p1) - math.log(p0)))
    return None


def point(rows: Sequence[Sequence[int]], tokenizer, judge, **facts) -> dict:
    """One frontier point of a sample set: gen-ppl (judge), entropy and the facts given."""
    from redraft.eval.judge import texts_of

    eos = tokenizer.eos_id
    rows = [[int(v) for v in r] for r in rows]
    rows = [r[:r.index(eos)] if eos in r else r for r in rows]
    gen_ppl = judge.gen_ppl(texts_of(rows, tokenizer))[0] if judge is not None else None
    return {**facts, "gen_ppl": gen_ppl, "entropy": quality.unigram_entropy(rows),
            "distinct_4": quality.distinct_n(rows, 4)}


def curves(points: Sequence[dict], reference_entropy: float | None) -> list[dict]:
    """Points grouped by (model, sampler, steps), each curve sorted by temperature and
    summarised by its gen-ppl at the reference entropy."""
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        groups.setdefault((p["model"], p["sampler"], p["steps"]), []).append(p)
    return [{"model": m, "sampler": s, "steps": n,
             "points": sorted(ps, key=lambda p: p["temperature"]),
             "gen_ppl_at_ref_entropy": at_entropy(ps, reference_entropy)}
            for (m, s, n), ps in groups.items()]


def run(bench) -> dict:
    """The frontier task of `redraft bench` (eval.bench.Bench): every checkpoint at every
    step count and temperature, the n-gram floor and the held-out text, judged alike."""
    from redraft.data import load_data
    from redraft.eval.bench import BATCH, parse_spec
    from redraft.sampling.registry import takes_temperature

    cfg = bench.cfg
    if bench.judge is None:
        raise RedraftError("the frontier task needs a judge for gen-ppl: give --judge")
    first = next((c for c in bench.ckpts if c.config is not None), None)
    if first is None:
        raise RedraftError("the frontier task needs a redraft checkpoint (its training split "
                           "fits the n-gram floor)")
    n, length = cfg.num_samples, bench.length
    seeds = list(range(cfg.seed, cfg.seed + n))
    pts = []
    for ck in bench.ckpts:
        specs = [parse_spec(s) for s in cfg.samplers or [ck.objective.default_sampler
                                                         or "ancestral"]]
        settings = [(None, None)] if not ck.decoder.uses_steps else [
            (spec, s) for spec in specs
            for s in ([None] if spec.adaptive else spec.loop.get("steps", cfg.steps))]
        for spec, steps in settings:
            for temp in cfg.temperatures:
                if spec is not None and temp != 1.0 and not takes_temperature(spec.name,
                                                                              ck.objective):
                    continue
                rows, tpf = [], None
                for start in range(0, n, BATCH):
                    chunk = seeds[start:start + BATCH]
                    gen = bench.generate(ck, spec, steps, len(chunk), chunk, temp)
                    rows += gen.tokens.tolist()
                    tpf = gen.tpf if tpf is None else tpf + gen.tpf
                pts.append(point(rows, ck.tokenizer, bench.judge, model=bench._name(ck),
                                 sampler=spec.label if spec else "ar-kv", steps=steps,
                                 temperature=temp, calls=tpf.forwards / n,
                                 tokens_per_forward=tpf.value))
    _, data = load_data(first.config.data, first.config.model.seq_len, first.tokenizer)
    ngram = NGram(np.asarray(data.train), cfg.ngram, first.tokenizer.vocab_size)
    for temp in cfg.temperatures:
        rows = [ngram.sample(length, s, temp) for s in seeds]
        pts.append(point(rows, first.tokenizer, bench.judge, model=f"{cfg.ngram}-gram",
                         sampler="naive", steps=None, temperature=temp, calls=0,
                         tokens_per_forward=None))
    ref_rows, _ = bench.reference(first, length)
    ref = point(ref_rows, first.tokenizer, bench.judge, model="held-out text")
    return {"corpus": first.config.data.corpus, "length": length, "num_samples": n,
            "ngram_order": cfg.ngram, "judge": bench.judge.name, "reference": ref,
            "curves": curves(pts, ref["entropy"])}


def plot(section: dict, path) -> str | None:
    """gen-ppl (log) against entropy: a line per (model, sampler, steps) through its
    temperatures, the n-gram floor dashed, the held-out text a star."""
    from redraft.eval.plots import _pyplot, _save

    cs = [c for c in section["curves"] if any(p["gen_ppl"] for p in c["points"])]
    if not cs:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    # colour = steps (one scale for every model), line style and marker = the model
    steps = sorted({c["steps"] for c in cs if c["steps"] is not None})
    cmap = plt.get_cmap("viridis")
    models = list(dict.fromkeys(c["model"] for c in cs))
    styles = [("o", "-"), ("s", "--"), ("^", "-."), ("D", ":")]
    for c in cs:
        ps = c["points"]
        xs, ys = [p["entropy"] for p in ps], [p["gen_ppl"] for p in ps]
        if c["sampler"] == "naive":
            ax.plot(xs, ys, "--", color="0.5", lw=1.5, label=f"{c['model']} (naive floor)")
            continue
        marker, line = styles[models.index(c["model"]) % len(styles)]
        color = ("C3" if c["steps"] is None else
                 cmap(steps.index(c["steps"]) / max(len(steps) - 1, 1) * 0.9))
        label = c["model"] + ("" if c["steps"] is None else f" {c['steps']} steps")
        ax.plot(xs, ys, marker=marker, ls=line, color=color, ms=4, lw=1.2, label=label)
    ref = section["reference"]
    if ref.get("gen_ppl"):
        ax.plot([ref["entropy"]], [ref["gen_ppl"]], "k*", ms=11, label="held-out text")
        ax.axvline(ref["entropy"], color="k", lw=0.5, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("sample entropy (nats, unigram)")
    ax.set_ylabel("gen-ppl (judge)")
    ax.set_title(f"frontier on {section['corpus']} (points: temperatures; lower right is better)",
                 fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, path)


def markdown(section: dict) -> str:
    ref = section["reference"]
    lines = [f"\n**Frontier** on {section['corpus']}: {section['num_samples']} samples of "
             f"{section['length']} tokens per point, judge {section['judge']}; held-out text: "
             f"gen-ppl {ref['gen_ppl']:.3g}, entropy {ref['entropy']:.3g}; naive floor: a "
             f"{section['ngram_order']}-gram of the training split.\n",
             "| model | sampler | steps | gen-ppl @ ref entropy | (T, entropy, gen-ppl, TPF) |",
             "|---|---|---|---|---|"]
    for c in section["curves"]:
        at = c["gen_ppl_at_ref_entropy"]
        pts = "; ".join(f"{p['temperature']:g}, {p['entropy']:.3g}, {p['gen_ppl']:.3g}"
                        + (f", {p['tokens_per_forward']:.2g}" if p["tokens_per_forward"] else "")
                        for p in c["points"])
        lines.append(f"| {c['model']} | {c['sampler']} | {c['steps'] or '-'} | "
                     f"{'-' if at is None else format(at, '.3g')} | {pts} |")
    return "\n".join(lines)
