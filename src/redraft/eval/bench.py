"""`redraft bench`: quality, speed and hardware figures for a set of checkpoints, side by side.

For every checkpoint (diffusion models under every sampler and step count, the AR twin with
its KV cache) one run generates the same number of samples of the same length, then reports:
quality (gen-ppl under the judge, unigram entropy, distinct-n, repetition, parse rate for code,
optionally MAUVE / Frechet distance against held-out text), speed (batch-1 latency, batch-16
throughput, network calls, time per step) and hardware figures (achieved GFLOP/s, arithmetic
intensity), next to a reference line computed the same way on held-out real text and next to
this machine's measured ceilings. A random-weight sweep over model sizes (eval/speed.py) adds
the diffusion-vs-AR crossover. Writes report.md, eval.json and PNG plots into one folder.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from redraft.config import BenchConfig
from redraft.data.tokenizers import write_text_atomic
from redraft.display import show_progress
from redraft.errors import RedraftError
from redraft.eval import flops, hardware, quality, speed
from redraft.eval.judge import Judge, load_judge, texts_of
from redraft.request import fit
from redraft.sampling.registry import SAMPLERS, parse_options, takes_temperature

BATCH = 16  # the throughput batch
CROSSOVER_NOTE = (
    "crossover_params_*: batch 1, 256 tokens, diffusion 16 steps vs AR + KV cache; the size "
    "above which diffusion generates faster, null if it never overtakes AR within the sweep; "
    "equal to the smallest size swept when diffusion is faster at every size (the crossover "
    "then lies at or below it). See crossovers for every setting.")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}")


# Loop-level settings a spec may carry; "steps" pins step counts ("16/64") for this spec.
LOOP_KNOBS = {"block": int, "guidance": float, "early": float,
              "steps": lambda raw: tuple(int(v) for v in raw.split("/"))}
INFILL_TASKS = 32


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler setting of the bench: `name[:key=value[+key=value...]]`, e.g.
    "threshold:threshold=0.7", "confidence:measure=margin+block=32", "remask:steps=64/256".
    Keys are the sampler's knobs (sampling.registry) plus the loop's `block` (semi-AR block
    size), `guidance` (classifier-free guidance scale), `early` (early commit's gap threshold,
    sampling/commit.py) and `steps` (step counts for this spec instead of the bench's,
    separated by "/")."""

    label: str
    name: str
    options: dict
    loop: dict

    @property
    def adaptive(self) -> bool:
        return SAMPLERS[self.name].adaptive


def parse_spec(spec: str) -> SamplerSpec:
    name, _, rest = spec.partition(":")
    if name not in SAMPLERS:
        raise RedraftError(f"sampler spec {spec!r}: unknown sampler {name!r}, expected one of "
                           f"{list(SAMPLERS)}")
    pairs = [p for p in rest.split("+") if p] if rest else []
    loop, knobs = {}, []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if key in LOOP_KNOBS:
            try:
                loop[key] = LOOP_KNOBS[key](raw)
            except ValueError:
                raise RedraftError(f"sampler spec {spec!r}: bad value {key}={raw!r}") from None
            if key == "steps" and (not loop[key] or min(loop[key]) < 1):
                raise RedraftError(f"sampler spec {spec!r}: steps must be integers >= 1")
        else:
            knobs.append(pair)
    return SamplerSpec(spec, name, parse_options(name, knobs), loop)


def _is_code(corpus: str) -> bool:
    return corpus == "stdlib" or corpus.endswith(".py") or "python" in corpus.lower()


def _cut(row, eos_id: int) -> list[int]:
    row = [int(v) for v in row]
    return row[:row.index(eos_id)] if eos_id in row else row


class Bench:
    def __init__(self, cfg: BenchConfig):
        from redraft.model import load

        if not cfg.checkpoints and cfg.sweep == "none":
            raise RedraftError("nothing to do: give checkpoints, or a sweep preset")
        if cfg.num_samples < 1:
            raise RedraftError(f"num_samples={cfg.num_samples}: expected >= 1")
        if any(s < 1 for s in cfg.steps):
            raise RedraftError(f"steps={cfg.steps}: each must be >= 1")
        self.cfg = cfg
        self.ckpts = [load(p) for p in cfg.checkpoints]
        self.judge: Judge | None = load_judge(cfg.judge) if cfg.judge else None
        names = [self._name(c) for c in self.ckpts]
        if len(set(names)) != len(names):
            raise RedraftError(f"two checkpoints share a name: {names}")

    @staticmethod
    def _name(ck) -> str:
        return f"{ck.objective.name}:{ck.name}"

    # ---- quality ----------------------------------------------------------------------
    def quality(self, rows, tokenizer, reference_texts) -> dict:
        rows = [_cut(r, tokenizer.eos_id) for r in rows]
        texts = texts_of(rows, tokenizer)
        out = quality.sample_stats(rows)
        out["gen_ppl"] = out["judge_nats_per_token"] = None
        if self.judge is not None:
            out["gen_ppl"], out["judge_nats_per_token"], out["judge_tokens"] = (
                self.judge.gen_ppl(texts))
        if self.code:
            out["parse_rate"] = quality.parse_rate(texts)
        if self.cfg.mauve and reference_texts is not None:
            from redraft.eval import features

            ours = features.embed(texts)
            out["frechet"] = features.frechet_distance(self.ref_features, ours)
            out["mauve"] = features.mauve_score(self.ref_features, ours)
        out["example"] = texts[0][:300]
        return out

    def reference(self, ck, length: int, second: bool = False):
        """(rows, texts) of num_samples windows of `length` held-out tokens, evenly spaced over
        the val split; `second` moves each half-way to the next, a second set (disjoint from
        the first when the split holds 2 * num_samples windows)."""
        from redraft.data import load_data

        _, data = load_data(ck.config.data, ck.config.model.seq_len, ck.tokenizer)
        val = np.asarray(data.val)
        if len(val) < length:
            raise RedraftError(f"the validation split has {len(val)} tokens, fewer than the "
                               f"sample length {length}")
        n = self.cfg.num_samples
        shift = (len(val) - length) // (2 * n) if second else 0
        starts = np.linspace(0, len(val) - length - shift, n).astype(int) + shift
        rows = [val[s:s + length].tolist() for s in starts]
        return rows, texts_of([_cut(r, ck.tokenizer.eos_id) for r in rows], ck.tokenizer)

    def python_tasks(self, ck) -> list:
        """Infilling tasks from functions in the held-out documents (eval/infilling.py)."""
        from redraft.data import load_data
        from redraft.eval.infilling import python_infill_tasks

        _, data = load_data(ck.config.data, ck.config.model.seq_len, ck.tokenizer)
        val = np.asarray(data.val)
        cuts = np.flatnonzero(val == ck.tokenizer.eos_id)
        docs = [ck.tokenizer.decode(d) for d in np.split(val, cuts) if len(d) > 1]
        tok = ck.tokenizer
        tasks = python_infill_tasks(docs, lambda text: len(tok.encode(text)), self.length,
                                    INFILL_TASKS, seed=self.cfg.seed)
        # Tokenised once here, not once per run: (task, prefix ids, span ids, suffix ids).
        return [(task, tok.encode(task.before), tok.encode(task.span), tok.encode(task.after))
                for task in tasks]

    # ---- speed ------------------------------------------------------------------------
    def generate(self, ck, spec: SamplerSpec | None, steps: int | None, batch: int, seed,
                 temperature, **kw):
        """spec None: the AR twin with its KV cache; kw: length, prefix, suffix overrides."""
        seeds = [seed + r for r in range(batch)] if isinstance(seed, int) else list(seed)
        prefix, suffix = kw.get("prefix") or [], kw.get("suffix") or []
        knobs = {} if spec is None else dict(
            steps=steps or 1, sampler=spec.name, options=spec.options,
            block_size=spec.loop.get("block"), guidance=spec.loop.get("guidance", 0.0),
            early_commit=spec.loop.get("early"), suffixes=[suffix] * batch)
        return ck.sample([prefix] * batch, length=kw.get("length", self.length), seeds=seeds,
                         temperature=temperature, **knobs)

    def infill_rate(self, ck, spec: SamplerSpec | None, steps: int | None,
                    temperature: float) -> float | None:
        """Share of the Python infilling tasks whose filled-in function parses."""
        from redraft.eval.infilling import parses

        if not self.infill_tasks or not ck.decoder.infills:
            return None
        tok, ok = ck.tokenizer, 0
        for i, (task, pre, span, suf) in enumerate(self.infill_tasks):
            if spec is None:  # left to right: the fill sees only the prefix
                gen = self.generate(ck, None, None, 1, self.cfg.seed + i, temperature,
                                    length=len(pre) + len(span), prefix=pre)
                fill = gen.tokens[0, len(pre):]
            else:
                block = spec.loop.get("block")
                total = len(pre) + len(span) + len(suf)
                # A block size must fit the canvas; the steps must split over the blocks.
                spec_i = spec if not block or block <= total else SamplerSpec(
                    spec.label, spec.name, spec.options, {**spec.loop, "block": total})
                n_blocks = -(-total // spec_i.loop["block"]) if spec_i.loop.get("block") else 1
                st = None if steps is None else max(n_blocks, steps - steps % n_blocks)
                gen = self.generate(ck, spec_i, st, 1, self.cfg.seed + i, temperature,
                                    length=total, prefix=pre, suffix=suf)
                fill = gen.tokens[0, len(pre):len(pre) + len(span)]
            ok += parses(task, tok.decode(fill))
        return ok / len(self.infill_tasks)

    def cost(self, ck, gen, batch: int) -> flops.Cost | None:
        """The run's FLOPs and bytes from the model's config (None for Hugging Face models,
        whose architecture flops.py does not describe)."""
        if ck.config is None:
            return None
        cfg, V = ck.config.model, ck.backbone.vocab_size
        tc = ck.time_conditioned
        if not ck.decoder.uses_steps:  # one token a call over a KV cache
            return flops.ar_cost(cfg, V, batch=batch, prompt=1, new=self.length)
        return flops.diffusion_cost(cfg, V, calls=gen.nfe, row_calls=gen.row_nfe,
                                    length=self.length, time_conditioning=tc)

    def run_one(self, ck, spec: SamplerSpec | None, steps: int | None,
                temperature: float) -> dict:
        n, seeds = self.cfg.num_samples, range(self.cfg.seed, self.cfg.seed + self.cfg.num_samples)
        rows, seconds, tokens, last, nfe, tpf = [], 0.0, 0, None, [], None
        for start in range(0, n, BATCH):
            chunk = list(seeds)[start:start + BATCH]
            gen = self.generate(ck, spec, steps, len(chunk), chunk, temperature)
            rows += gen.tokens.tolist()
            nfe.append(gen.row_nfe / len(chunk))
            tpf = gen.tpf if tpf is None else tpf + gen.tpf
            if len(chunk) == BATCH or last is None:
                last, seconds, tokens = gen, seconds + gen.seconds, tokens + gen.tokens.numel()
        b1 = [self.generate(ck, spec, steps, 1, self.cfg.seed, temperature) for _ in range(3)]
        lat = sorted(b1, key=lambda g: g.seconds)[1]  # the median of three
        c16, c1 = self.cost(ck, last, last.tokens.shape[0]), self.cost(ck, lat, 1)
        return {
            "model": self._name(ck), "objective": ck.objective.name,
            "sampler": spec.label if spec is not None else "ar-kv", "steps": steps,
            "temperature": temperature, "length": self.length, "samples": n,
            "nfe": (sum(nfe) / len(nfe)) if spec is not None else self.length,
            "tokens_per_forward": tpf.value,  # new tokens / per-row forwards (sampling/tpf.py)
            "infill_parse_rate": self.infill_rate(ck, spec, steps, temperature),
            "latency_s_batch1": lat.seconds, "nfe_batch1": lat.nfe,
            "seconds_per_step": lat.seconds / max(lat.nfe, 1),
            "tokens_per_s_batch16": tokens / seconds, "throughput_batch": last.tokens.shape[0],
            "achieved_gflops": c16.flops / last.seconds / 1e9 if c16 else None,
            "arithmetic_intensity": c16.intensity if c16 else None,
            "achieved_gflops_batch1": c1.flops / lat.seconds / 1e9 if c1 else None,
            "arithmetic_intensity_batch1": c1.intensity if c1 else None,
            **self.quality(rows, ck.tokenizer, self.ref_texts),
        }

    # ---- the whole bench --------------------------------------------------------------
    def run(self) -> dict:
        """The tasks of cfg.tasks: "samples" (the runs table, ceilings, likelihood, sweep),
        then each other task's section under its name (TASKS)."""
        cfg = self.cfg
        unknown = [t for t in cfg.tasks if t != "samples" and t not in TASKS]
        if unknown:
            raise RedraftError(f"bench task {unknown[0]!r}: expected samples or one of "
                               f"{list(TASKS)}")
        # The smallest context; an hf: model's default completion, not its whole context.
        self.length = cfg.length or (min(fit(0, 0, c.seq_len, None, None, c.name,
                                             c.default_new_tokens) for c in self.ckpts)
                                     if self.ckpts else 0)
        # "runs" (empty without samples) marks the folder as a bench's (runs.check_report_dir)
        result = self.samples() if "samples" in cfg.tasks else {
            "machine": machine(), "command": cfg.command, "length": self.length, "runs": []}
        result["tasks"] = list(cfg.tasks)
        for name in cfg.tasks:
            if name != "samples":
                result[name] = task(name).run(self)
        return result

    def samples(self) -> dict:
        cfg = self.cfg
        # The reference texts and infilling tasks come from the first model with a training
        # corpus (a Hugging Face model has none of its own).
        first = next((c for c in self.ckpts if c.config is not None), None)
        self.code = cfg.code if cfg.code is not None else bool(
            first and _is_code(first.config.data.corpus))
        plan = []
        for ck in self.ckpts:
            if self.length > ck.seq_len:
                raise RedraftError(f"length {self.length} exceeds {self._name(ck)}'s seq_len "
                                   f"{ck.seq_len}")
            specs = [parse_spec(s) for s in cfg.samplers or [ck.objective.default_sampler
                                                             or "ancestral"]]
            for temp in cfg.temperatures:
                if not ck.decoder.uses_steps:
                    plan.append((ck, None, None, temp))
                    continue
                for spec in specs:
                    # Rate-based samplers have no temperature: they run at T = 1 only.
                    if temp != 1.0 and not takes_temperature(spec.name, ck.objective):
                        continue
                    # Adaptive samplers choose their own number of calls: one run each.
                    for n in [None] if spec.adaptive else spec.loop.get("steps", cfg.steps):
                        plan.append((ck, spec, n, temp))
        self.infill_tasks = []
        if self.code and first is not None:
            self.infill_tasks = self.python_tasks(first)
        result = {"machine": machine(), "command": cfg.command, "length": self.length,
                  "num_samples": cfg.num_samples, "temperatures": cfg.temperatures,
                  "judge": None, "reference": None, "likelihood": [], "runs": []}
        bar = tqdm(total=len(plan) + len(self.ckpts) + 2, desc="bench", unit="task",
                   disable=not show_progress(sys.stderr))
        bar.set_postfix_str("hardware ceilings")
        result.update(hardware.measure(quick=cfg.sweep in ("none", "tiny")))
        bar.update()
        self.ref_texts = None
        if first is not None:
            from redraft.model import load

            ref_rows, self.ref_texts = self.reference(first, self.length)
            ref = self.quality(ref_rows, first.tokenizer, None)
            if cfg.mauve:
                from redraft.eval import features

                self.ref_features = features.embed(self.ref_texts)
                # What "indistinguishable" scores at this sample count: a second held-out
                # set against the first.
                _, other = self.reference(first, self.length, second=True)
                feats = features.embed(other)
                ref["frechet"] = features.frechet_distance(self.ref_features, feats)
                ref["mauve"] = features.mauve_score(self.ref_features, feats)
            result["reference"] = {"corpus": first.config.data.corpus, **ref}
            for ck in self.ckpts:
                bar.set_postfix_str(f"likelihood {self._name(ck)}")
                if ck.objective.bound.startswith("none"):
                    bar.update()  # no bound to evaluate (DiffusionGemma)
                    continue
                ev = ck.evaluate(corpus=first.config.data.corpus, samples=4,
                                 max_batches=cfg.eval_batches, progress=False)
                result["likelihood"].append({"model": self._name(ck), **ev})
                bar.update()
            judge_ck = getattr(self.judge, "ck", None)
            if judge_ck is not None:  # the judge's own loss on the same split, for scale
                ev = load(judge_ck.path).evaluate(corpus=first.config.data.corpus, samples=1,
                                                  max_batches=cfg.eval_batches, progress=False)
                result["likelihood"].append({"model": "judge", **ev})
        if self.judge is not None:
            result["judge"] = {"path": self.judge.name, "params": self.judge.params,
                               "context": self.judge.context}
        result["infill_tasks"] = len(self.infill_tasks)
        for ck, spec, steps, temp in plan:
            label = spec.label if spec else "ar-kv"
            bar.set_postfix_str(f"{self._name(ck)} {label} {steps or ''} T={temp}")
            result["runs"].append(self.run_one(ck, spec, steps, temp))
            bar.update()
        matched_entropy(result)
        result["sweep"], result["crossovers"] = [], []
        if cfg.sweep != "none":
            bar.set_postfix_str("size sweep (random weights)")
            result["sweep"] = speed.sweep(cfg.sweep, progress=bar.set_postfix_str)
            result["crossovers"] = speed.crossovers(result["sweep"])
        for dtype in ("fp32", "bf16"):
            result[f"crossover_params_{dtype}"] = speed.headline(result["crossovers"], dtype)
        result["crossover_note"] = CROSSOVER_NOTE
        bar.update()
        bar.close()
        return result


def matched_entropy(result: dict) -> None:
    """gen-ppl at the reference's entropy, where temperatures bracket it (else None).

    Lowering the temperature lowers both entropy and gen-ppl, so gen-ppl only compares at
    matched entropy: log gen-ppl is interpolated linearly in entropy between the two
    temperatures whose entropies bracket the held-out text's.
    """
    ref = (result.get("reference") or {}).get("entropy")
    groups: dict[tuple, list[dict]] = {}
    for r in result["runs"]:
        groups.setdefault((r["model"], r["sampler"], r["steps"]), []).append(r)
    for runs in groups.values():
        pts = sorted((r["entropy"], r["gen_ppl"]) for r in runs if r["gen_ppl"])
        value = None
        if ref is not None:
            for (e0, p0), (e1, p1) in zip(pts, pts[1:], strict=False):
                if e0 <= ref <= e1 and e1 > e0:
                    f = (ref - e0) / (e1 - e0)
                    value = math.exp(math.log(p0) + f * (math.log(p1) - math.log(p0)))
        for r in runs:
            r["gen_ppl_at_ref_entropy"] = value


def write(result: dict, out_dir: str | Path) -> Path:
    """report.md, eval.json and the plots into out_dir (files replaced atomically)."""
    from redraft.eval import plots, report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = "samples" in result.get("tasks", ["samples"])
    images = plots.all_plots(result, out) if samples else {}
    text = report.markdown(result, images) if samples else (
        f"Machine: {result['machine']}.\nCommand: `{result['command']}`\n")
    for name in TASKS:
        if name in result:
            mod = task(name)
            image = mod.plot(result[name], out / f"task_{name}.png") if plots.available() else None
            text += mod.markdown(result[name]) + (f"\n\n![{name}]({image})\n" if image else "\n")
    write_text_atomic(out / "eval.json", json.dumps(result, indent=1, default=float) + "\n")
    write_text_atomic(out / "report.md", text)
    return out / "report.md"


# The bench's tasks besides "samples": modules with run(bench) -> section, markdown(section)
# and plot(section, path), imported when used (they import this module).
TASKS = {"frontier": "redraft.eval.frontier", "humaneval-infill": "redraft.eval.humaneval"}


def task(name: str):
    import importlib

    return importlib.import_module(TASKS[name])
