"""Structured outputs benchmark: what a JSON Schema / regex constraint costs and buys on the
default models (the shipped masked-diffusion model, full canvas and in blocks, and its AR twin).

- validity: per schema (flat object, nested, enum, array of objects, patterned strings,
  numbers) and kind, the share of samples whose completion is a JSON document that validates
  (jsonschema), unconstrained vs constrained. Unconstrained is also scored leniently: the
  first JSON value at the start of the completion, whatever follows it.
- overhead: milliseconds per step (diffusion: per reverse step of the canvas; AR: per token)
  constrained vs unconstrained, same process, same seeds and canvas, at batch 1 and 16; the
  arms alternate over --reps and the medians are compared (the machine is shared: the ratio
  of neighbours is what holds). The first compile of each constraint is timed apart.
- quality: gen-ppl (judge: the AR twin; it scores its own samples too, which flatters the AR
  rows) and unigram entropy of the completions, constrained vs unconstrained.
- fill the skeleton: a few lines of Python define some settings; a JSON skeleton with a hole
  per value follows, and the values must be filled from the code. Diffusion fills the holes
  in place (an infill template, constrained); the AR twin writes the skeleton left to right
  under the skeleton's regex. Scored per field (exact match) and per record.

    python benchmarks/structured.py             # ~5 minutes on 2 CPU cores
    python benchmarks/structured.py --quick     # a smoke run; writes nothing

Writes the "structured" section of BENCHMARKS.md and benchmarks/results/structured.json.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_json, write_section  # noqa: E402

import redraft  # noqa: E402
from redraft.constraints import compile_constraint  # noqa: E402
from redraft.default import FOLDER  # noqa: E402
from redraft.eval.constraint_speed import step_overhead  # noqa: E402
from redraft.eval.judge import RedraftJudge  # noqa: E402
from redraft.eval.quality import unigram_entropy  # noqa: E402

SCHEMAS = {
    "flat object": {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 12}, "id": {"type": "integer"},
        "active": {"type": "boolean"}},
        "required": ["name", "id", "active"], "additionalProperties": False},
    "nested": {"type": "object", "properties": {
        "user": {"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 10}, "admin": {"type": "boolean"}},
            "required": ["name", "admin"], "additionalProperties": False},
        "meta": {"type": "object", "properties": {"version": {"type": "integer"}},
                 "required": ["version"], "additionalProperties": False}},
        "required": ["user", "meta"], "additionalProperties": False},
    "enum": {"type": "object", "properties": {
        "level": {"enum": ["debug", "info", "warning", "error"]},
        "color": {"type": "string", "enum": ["red", "green", "blue"]}},
        "required": ["level", "color"], "additionalProperties": False},
    "array of objects": {"type": "array", "minItems": 1, "maxItems": 3, "items": {
        "type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
        "required": ["x", "y"], "additionalProperties": False}},
    "patterned strings": {"type": "object", "properties": {
        "date": {"type": "string", "pattern": "[0-9]{4}-[0-9]{2}-[0-9]{2}"},
        "code": {"type": "string", "pattern": "[A-Z]{3}-[0-9]{3}"}},
        "required": ["date", "code"], "additionalProperties": False},
    "numbers": {"type": "object", "properties": {
        "x": {"type": "number"}, "y": {"type": "number"}, "count": {"type": "integer"}},
        "required": ["x", "y", "count"], "additionalProperties": False},
}
PROMPT = "# {name}, as JSON\nrecord = "
KINDS = {  # name -> (model spec, knobs)
    "diffusion": ("default", {"steps": 16}),
    "diffusion, blocks of 32": ("default", {"steps": 16, "block_size": 32}),
    "ar": ("default-ar", {}),
}


def spec_of(schema: dict) -> dict:
    return {"type": "json_schema", "schema": schema}


def valid(text: str, schema: dict, lenient: bool = False) -> bool:
    """Whether the completion is (lenient: starts with) a JSON value that validates."""
    import jsonschema

    try:
        value = (json.JSONDecoder().raw_decode(text.lstrip())[0] if lenient
                 else json.loads(text))
        jsonschema.validate(value, schema)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def completion_ids(model, text: str) -> list[int]:
    return model.tokenizer.encode(text) if text else []


# --- validity and quality --------------------------------------------------------------------


def validity(models, args, judge) -> dict:
    out = {}
    for kind, (spec, knobs) in KINDS.items():
        model = models[spec]
        rows = {}
        texts = {"unconstrained": [], "constrained": []}
        for name, schema in SCHEMAS.items():
            prompt = PROMPT.format(name=name)
            row = {}
            for arm, extra in (("unconstrained", {}), ("constrained",
                                                      {"constraint": spec_of(schema)})):
                o = model.generate(prompt, max_new_tokens=args.new_tokens,
                                   num_samples=args.samples, seed=0, stop_at_eos=True,
                                   **knobs, **extra)
                row[arm] = sum(valid(c, schema) for c in o.completions) / len(o.completions)
                if arm == "unconstrained":
                    row["unconstrained_lenient"] = sum(valid(c, schema, True)
                                                       for c in o.completions) / args.samples
                else:
                    row["example"] = o.completions[0]
                texts[arm] += o.completions
            rows[name] = row
            print(f"{kind:>24} | {name:>18} | valid {row['unconstrained']:.2f} "
                  f"(lenient {row['unconstrained_lenient']:.2f}) -> {row['constrained']:.2f} | "
                  f"{row['example']!r}", file=sys.stderr)
        quality = {}
        for arm, ts in texts.items():
            kept = [t for t in ts if t]
            ppl, _, n = judge.gen_ppl(kept)
            quality[arm] = {"gen_ppl": ppl, "judge_tokens": n, "entropy": unigram_entropy(
                [completion_ids(model, t) for t in kept])}
        out[kind] = {"schemas": rows, "quality": quality,
                     "min_constrained_validity": min(r["constrained"] for r in rows.values())}
    return out


# --- per-step overhead ----------------------------------------------------------------------


def overhead(models, args) -> dict:
    """redraft.eval.constraint_speed.step_overhead for each kind and batch (the nested
    schema): the arms interleaved in this process, medians over --reps, and guard_share, the
    time inside the guards over the rest of the same constrained steps (steady under load)."""
    spec = spec_of(SCHEMAS["nested"])
    out = {}
    for kind, (name, knobs) in KINDS.items():
        for batch in args.batches:
            if "block_size" in knobs:  # step_overhead has no block knob
                r = _blocks_overhead(models[name], spec, batch, knobs, args)
            else:
                r = step_overhead(models[name], spec, batch=batch,
                                  max_new_tokens=args.new_tokens, steps=knobs.get("steps"),
                                  repeats=args.reps, prompt=PROMPT.format(name="nested"))
            r.update(kind=kind, unit="token" if name == "default-ar" else "step")
            out[f"{kind}, batch {batch}"] = r
            print(f"{kind:>24} batch {batch:>2}: {r['ms_plain']:7.2f} -> "
                  f"{r['ms_constrained']:7.2f} ms a {r['unit']} ({r['overhead']:+.1%}; "
                  f"guards {r['guard_share']:.1%} of the rest)", file=sys.stderr)
    return out


def _blocks_overhead(model, spec, batch, knobs, args) -> dict:
    """step_overhead's measure with block_size set (the same interleaving and medians)."""
    from redraft.eval import constraint_speed

    generate = model.generate
    model.generate = lambda *a, **k: generate(*a, block_size=knobs["block_size"], **k)
    try:
        return constraint_speed.step_overhead(model, spec, batch=batch,
                                              max_new_tokens=args.new_tokens,
                                              steps=knobs["steps"], repeats=args.reps,
                                              prompt=PROMPT.format(name="nested"))
    finally:
        del model.generate


def compile_times(models) -> dict:
    """Seconds of the first compile of each schema for the default tokenizer (then cached)."""
    tok = models["default"].tokenizer
    out = {}
    for name, schema in SCHEMAS.items():
        t = time.perf_counter()
        compile_constraint(spec_of(schema), tok)
        out[name] = time.perf_counter() - t
    return out


# --- fill the skeleton ----------------------------------------------------------------------

WORDS = ["server", "parser", "client", "worker", "reader", "writer", "logger", "cache",
         "socket", "loader", "runner", "filter", "buffer", "handler", "config", "manager"]
FIELDS = [("name", "str"), ("port", "int"), ("mode", "str"), ("retries", "int")]
# A hole's language and its most tokens (bytes): an infill span <|mask:<=N|> (flexible).
HOLE = {"str": ('"[a-z_]{1,10}"', 12), "int": ("[0-9]{1,5}", 5)}


def records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"name": rng.choice(WORDS), "port": rng.randrange(1000, 9999),
             "mode": rng.choice(WORDS), "retries": rng.randrange(1, 9)} for _ in range(n)]


def context(rec: dict) -> str:
    lines = [f"{k} = {json.dumps(rec[k])}" for k, _ in FIELDS]
    return "\n".join(lines) + "\nsettings = "


def skeleton(hole) -> str:
    """The JSON skeleton with each field's value replaced by hole(type)."""
    return "{" + ", ".join(f'"{k}": {hole(t)}' for k, t in FIELDS) + "}"


def skeleton_regex() -> str:
    """The skeleton's language: its fixed text, and each hole's."""
    fixed = skeleton(lambda t: "\0" + t + "\0")
    return "".join(HOLE[p][0] if i % 2 else re.escape(p)
                   for i, p in enumerate(fixed.split("\0")))


def score(text: str, rec: dict) -> list[bool]:
    try:
        got = json.loads(text)
    except ValueError:
        return [False] * len(FIELDS)
    return [isinstance(got, dict) and got.get(k) == rec[k] for k, _ in FIELDS]


def fill(models, args) -> dict:
    """Diffusion: the template context + skeleton, flexible holes, constrained to
    the context then the skeleton's language (a template's constraint covers its whole
    canvas). AR: the context as prompt, the completion constrained to the skeleton's
    language. Both greedy."""
    recs = records(args.records)
    regex = skeleton_regex()
    template = skeleton(lambda t: f"<|mask:<={HOLE[t][1]}|>")
    out = {}
    for kind, name in (("diffusion (infill)", "default"), ("ar (left to right)", "default-ar")):
        model, fields, whole, texts = models[name], [], [], []
        for i, rec in enumerate(recs):
            ctx = context(rec)
            if name == "default":
                o = model.infill(ctx + template, steps=args.fill_steps, sampler="confidence",
                                 seed=i, temperature=0.0,
                                 constraint={"type": "regex",
                                             "pattern": re.escape(ctx) + regex})
                text = o.texts[0][len(ctx):]
            else:
                width = len(skeleton(lambda t: "x" * HOLE[t][1]))
                o = model.generate(ctx, max_new_tokens=width, seed=i, temperature=0.0,
                                   stop_at_eos=True,
                                   constraint={"type": "regex", "pattern": regex})
                text = o.completions[0]
            hits = score(text, rec)
            fields += hits
            whole.append(all(hits))
            texts.append(text)
        out[kind] = {"field_accuracy": sum(fields) / len(fields),
                     "record_accuracy": sum(whole) / len(whole),
                     "valid": sum(bool(re.fullmatch(regex, t)) for t in texts) / len(texts),
                     "example": texts[0], "reference": json.dumps(recs[0])}
        print(f"fill {kind}: fields {out[kind]['field_accuracy']:.2f}, records "
              f"{out[kind]['record_accuracy']:.2f}, e.g. {texts[0]!r}", file=sys.stderr)
    return out


# --- report ---------------------------------------------------------------------------------


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        "## Structured outputs",
        "",
        f"`{res['command']}` on {m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch "
        f"threads, torch {m['torch']}), {m['date']}; {res['seconds']:.0f} s. The default "
        f"models, {res['settings']['samples']} samples per schema, "
        f"{res['settings']['new_tokens']} new tokens, diffusion with 16 steps (T = 1).",
        "",
        "Validity (the completion is JSON that validates; unconstrained lenient: a valid JSON "
        "value at its start, whatever follows):",
        "",
        "| kind | schema | unconstrained | (lenient) | constrained |",
        "|---|---|---|---|---|",
    ]
    for kind, r in res["validity"].items():
        for name, row in r["schemas"].items():
            lines.append(f"| {kind} | {name} | {row['unconstrained']:.2f} | "
                         f"{row['unconstrained_lenient']:.2f} | {row['constrained']:.2f} |")
    lines += ["", "Quality of the completions (gen-ppl under the AR twin; entropy in nats):", "",
              "| kind | gen-ppl unconstrained | constrained | entropy unconstrained | "
              "constrained |", "|---|---|---|---|---|"]
    for kind, r in res["validity"].items():
        q = r["quality"]
        lines.append(f"| {kind} | {q['unconstrained']['gen_ppl']:.2f} | "
                     f"{q['constrained']['gen_ppl']:.2f} | {q['unconstrained']['entropy']:.2f} "
                     f"| {q['constrained']['entropy']:.2f} |")
    lines += ["", "Per-step cost (the nested schema; medians of interleaved runs in one "
              "process; guards: the time inside the constraint's guards over the rest of the "
              "same constrained steps, which the machine's load cancels out of):", "",
              "| kind | batch | unconstrained ms | constrained ms | overhead | guards |",
              "|---|---|---|---|---|---|"]
    for r in res["overhead"].values():
        lines.append(f"| {r['kind']} (a {r['unit']}) | {r['batch']} | {r['ms_plain']:.2f} | "
                     f"{r['ms_constrained']:.2f} | {r['overhead']:+.1%} | "
                     f"{r['guard_share']:.1%} |")
    compiled = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in res["compile_s"].items())
    lines += ["", f"First compile of each schema for the byte tokenizer: {compiled}.", "",
              "Fill the skeleton (values of a JSON template read off the Python above it; "
              "both constrained, greedy):", "", "| kind | field accuracy | record accuracy | "
              "matches the skeleton |", "|---|---|---|---|"]
    for kind, r in res["fill"].items():
        lines.append(f"| {kind} | {r['field_accuracy']:.2f} | {r['record_accuracy']:.2f} | "
                     f"{r['valid']:.2f} |")
    b = res["bars"]
    lines += ["", f"Bars: constrained validity 1.0 for every schema and kind: "
              f"{'met' if b['validity_1'] else 'NOT met'} (lowest {b['min_validity']:.2f}); "
              f"per-step overhead at batch 1 <= 15%: {'met' if b['overhead_15'] else 'NOT met'}"
              f" (highest {b['max_overhead_batch1']:+.1%})."]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=4, help="samples per schema and kind")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--records", type=int, default=8, help="fill-the-skeleton records")
    ap.add_argument("--fill-steps", type=int, default=16)
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS),
                    metavar="KIND", help=f"of {list(KINDS)} (default: all)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument("--quick", action="store_true", help="a smoke run; writes nothing")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.samples, args.reps, args.records, args.batches = 2, 1, 2, [1, 4]
        args.no_write = True
    if args.threads:
        torch.set_num_threads(args.threads)
    for kind in set(KINDS) - set(args.kinds):
        del KINDS[kind]
    start = time.perf_counter()
    models = {name: redraft.load(name) for name in ("default", "default-ar")}
    judge = RedraftJudge(FOLDER / "ar")
    res = {"machine": machine(), "command": "python benchmarks/structured.py"
           + "".join(f" {a}" for a in sys.argv[1:]),
           "settings": {"samples": args.samples, "new_tokens": args.new_tokens,
                        "reps": args.reps, "records": args.records,
                        "fill_steps": args.fill_steps},
           "schemas": SCHEMAS}
    res["compile_s"] = compile_times(models)
    res["validity"] = validity(models, args, judge)
    res["overhead"] = overhead(models, args)
    res["fill"] = fill(models, args)
    res["seconds"] = time.perf_counter() - start
    low = min(r["min_constrained_validity"] for r in res["validity"].values())
    worst = max(r["overhead"] for r in res["overhead"].values() if r["batch"] == 1)
    res["bars"] = {"validity_1": low == 1.0, "min_validity": low, "overhead_15": worst <= 0.15,
                   "max_overhead_batch1": worst}
    text = markdown(res)
    print(text)
    if not args.no_write:
        write_json("structured", res)
        write_section("structured", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
