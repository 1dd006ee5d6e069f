"""Rewrite the figures in README.md, docs/*.md and the default model's card from the benchmark
results (benchmarks/results/*.json), so that no figure in the docs is ever copied by hand.

A generated region is marked in the markdown:

    <!-- figures:NAME -->
    ...replaced by FIGURES[NAME](the JSON)...
    <!-- /figures:NAME -->

Run it after a benchmark writes its JSON (benchmarks/default_model.py runs it itself):

    python scripts/figures.py           # rewrite every marked region in place
    python scripts/figures.py --check   # exit 1 and name the files that are out of date

tests/test_docs.py checks that running it changes nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CARD = ROOT / "src" / "redraft" / "default" / "MODEL_CARD.md"
REGION = re.compile(r"(<!-- figures:([\w-]+) -->\n)(.*?)(<!-- /figures:\2 -->)", re.S)


def documents() -> list[Path]:
    """Every markdown file whose figures this script owns."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), CARD]


def _json(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def _machine(res: dict) -> str:
    m = res["machine"]
    return (f"{m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, torch "
            f"{m['torch']}, {m['date']}")


def default_model() -> str:
    """The default pair's table: the very block benchmarks/default_model.py writes."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from default_model import figures
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return figures(_json("default_model"))


def default_infill() -> str:
    """The default model's infilling figures, in one sentence (README and infilling.md)."""
    res = _json("default_model")
    ip, detail = res["infill_parse_rate"], res["infill_detail"]
    rows = [f"`{s}` sampler: {ip[f'diffusion_{s}']:.2f} parse, "
            f"{detail[f'diffusion_{s}']['substantive_parse_rate']:.2f} parse and are code, "
            f"{detail[f'diffusion_{s}']['exact_match']:.2f} exact"
            for s in ("confidence", "ancestral")]
    return (f"Infilling {res['infill_tasks']} held-out standard-library functions with 1-3 body "
            f"lines cut out (`{res['command']}`, {res['machine']['date']}): "
            + "; ".join(rows) + f". The AR twin, seeing only the prefix: "
            f"{ip['ar_prefix_only']:.2f} parse, {detail['ar_prefix_only']['exact_match']:.2f} "
            f"exact. Validation bits/byte: {res['val_bits_per_byte']['diffusion_bound']:.3f} "
            f"(diffusion, upper bound) vs {res['val_bits_per_byte']['ar_exact']:.3f} (AR twin, "
            "exact).")


def core() -> str:
    res = _json("core")
    ar, md = res["runs"]["ar"], res["runs"]["mdlm"]
    minutes = re.search(r"--minutes (\S+)", res["command"])
    gap = md["val_bits_per_char"] / ar["val_bits_per_char"] - 1
    return (f"Last run (`{res['command']}`; {_machine(res)}; {res['params']:,} parameters, "
            f"{minutes.group(1) if minutes else '?'} minutes of training each): AR twin "
            f"{ar['val_bits_per_char']:.3f} bits/char (exact), masked diffusion "
            f"{md['val_bits_per_char']:.3f} bits/char (upper bound), at "
            f"{ar['train_tokens_per_s']:,.0f} and {md['train_tokens_per_s']:,.0f} training "
            f"tokens/s: at this scale and budget the diffusion bound trails the AR twin by "
            f"{gap:.0%}.")


def processes() -> str:
    res = _json("processes")
    lines = [f"Last run (`{res['command']}`; {_machine(res)}); unigram baseline "
             f"{res['unigram_bits_per_char']:.2f} bits/char, held-out text gen-ppl "
             f"{res['val_gen_ppl']:.1f} at entropy {res['val_entropy']:.2f}:", "",
             "| process | objective | validation bits/char (bound) | gen-ppl at 64 steps |",
             "|---|---|---|---|"]
    for run in sorted(res["runs"], key=lambda r: r["val_bits_per_char"]):
        ppl = next((s["gen_ppl"] for s in run["sampling"] if s["steps"] == 64), None)
        lines.append(f"| {run['process']} | {run['objective']} | "
                     f"{run['val_bits_per_char']:.2f} | "
                     + ("-" if ppl is None else f"{ppl:.0f}") + " |")
    return "\n".join(lines)


def serve() -> str:
    res = _json("serve")
    ceil = res["offline_ceiling"]
    text = (f"Last run (`{res['command']}`; {_machine(res)}): at 16 clients step-level "
            f"batching gives the AR twin {res['ar_batching_speedup_16_clients']:.1f}x and "
            f"diffusion {res['batching_speedup_16_clients']:.1f}x the throughput of one "
            f"request at a time; the offline batch-16 / batch-1 ceiling on that machine is "
            f"{ceil['ar']['speedup']:.1f}x for AR and {ceil['mdlm']['speedup']:.1f}x for "
            "diffusion.")
    block = res.get("block")
    if block:
        text += (f" A block-diffusion model (block {block['block_size']}) gets "
                 f"{block['batching_speedup_16_clients']:.1f}x (`{block['command']}`).")
    return text


def distributed() -> str:
    res = _json("distributed")
    text = (f"Last run (`{res['command']}`; {_machine(res)}; {res['launcher']}): "
            f"{res['tokens_per_s_1proc']:,.0f} training tokens/s on 1 process, "
            f"{res['tokens_per_s_2proc']:,.0f} on 2, a weak-scaling efficiency of "
            f"{res['scaling_efficiency']:.1%}.")
    if res.get("tokens_per_s_1gpu") is None and res.get("gpu_note"):
        text += " " + res["gpu_note"]
    return text


def structured() -> str:
    res = _json("structured")
    low = res["bars"]["min_validity"]
    unc = max(r["unconstrained"] for k in res["validity"].values()
              for r in k["schemas"].values())
    steps = "; ".join(f"{r['kind']} at batch {r['batch']} {r['overhead']:+.0%}"
                      for r in res["overhead"].values())
    return (f"Last run (`{res['command']}`; {_machine(res)}): on six schemas the default "
            f"models' constrained outputs validated at a rate of at least {low:.2f} for every "
            f"kind ({', '.join(res['validity'])}), unconstrained at most {unc:.2f}; a "
            f"constrained step cost (interleaved medians) {steps}. Details: BENCHMARKS.md.")


FIGURES: dict[str, Callable[[], str]] = {
    "default-model": default_model, "default-infill": default_infill, "core": core,
    "processes": processes, "serve": serve, "distributed": distributed,
    "structured": structured,
}


def render(text: str, cache: dict[str, str], where: str = "") -> str:
    """`text` with every marked region's body regenerated."""
    def body(match: re.Match) -> str:
        name = match.group(2)
        if name not in FIGURES:
            raise SystemExit(f"{where}: unknown figures region {name!r}; known: "
                             f"{', '.join(FIGURES)}")
        if name not in cache:
            cache[name] = FIGURES[name]().strip("\n")
        return match.group(1) + cache[name] + "\n" + match.group(4)

    return REGION.sub(body, text)


def update(check: bool = False) -> list[Path]:
    """Rewrite (or with check, only compare) every document; the paths that differ(ed)."""
    cache: dict[str, str] = {}
    changed = []
    for path in documents():
        old = path.read_text()
        new = render(old, cache, str(path))
        if new != old:
            changed.append(path)
            if not check:
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_text(new)
                tmp.replace(path)
    return changed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a "
                                                         "document is out of date")
    args = ap.parse_args()
    changed = update(check=args.check)
    for path in changed:
        print(f"{'out of date' if args.check else 'rewrote'}: {path.relative_to(ROOT)}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
