"""redraft models in EleutherAI's lm-evaluation-harness (`pip install -e '.[lm-eval]'`).

The harness finds models in its registry; its own CLI imports only its own models, so redraft
registers "redraft" when this module is imported. Three ways in:

    redraft lm-eval --model_args pretrained=runs/x --tasks lambada_openai     # CLI
    python -m redraft.lm_eval --model redraft --model_args pretrained=runs/x --tasks ...

    import redraft.lm_eval, lm_eval                                             # Python API
    lm_eval.simple_evaluate(model="redraft", model_args="pretrained=runs/x", tasks=[...])
    lm_eval.simple_evaluate(model=redraft.lm_eval.RedraftLM(pretrained="runs/x"), ...)

(`redraft lm-eval` adds `--model redraft` when no --model is given; every other argument is
the harness's own, e.g. --include_path for local YAML tasks, --limit, --output_path.)

model_args: pretrained (any redraft.load spec: a checkpoint or run folder, "hf:<export>"),
mc_samples (Monte Carlo draws per diffusion score, default 16), estimator ("count" or "time";
default count for masked models, time otherwise: eval/conditional.py), seed, device (or the
harness's --device), and the generation knobs steps, sampler, block_size (diffusion) used by
generate_until; stderr_file (a JSONL path) keeps each scored request's standard error;
max_work bounds one request as the server's --max-work does (mc_samples x seq_len for a
diffusion score, steps x seq_len for a generation; default validate.MAX_WORK).

`redraft lm-eval` checks these, the tasks named and the output places, and loads the model,
before the harness starts: a mistake is one line and exit status 2, never a traceback after
the harness's logging or an evaluation that runs for ever.

    loglikelihood          log p(continuation | context): exact for the AR twin ([bos] context
                           continuation); for diffusion minus the Monte Carlo ELBO of the
                           continuation with the context clean, over mc_samples draws
    loglikelihood_rolling  the same over the whole text in windows of the model's context
                           (AR: exact, as the harness defines it; diffusion: the bound), so
                           perplexity tasks (wikitext-style) work
    generate_until         redraft's samplers (Model.generate), cut at the first stop string;
                           greedy (temperature 0) unless the task asks for do_sample

The harness keeps only (logprob, is_greedy) per request; each diffusion figure's standard
error is logged (mean and max per call), kept in `RedraftLM.stderrs`, and written to
stderr_file when given.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path

from lm_eval.api.model import LM
from lm_eval.api.registry import model_registry

from redraft.errors import RedraftError
from redraft.eval.conditional import request_seed, score, score_rolling
from redraft.request import DEFAULTS
from redraft.sampling.registry import SAMPLERS
from redraft.validate import (
    MAX_SAMPLE_SEED,
    MAX_WORK,
    check_device,
    check_output_dir,
    os_error_line,
    shown,
)

# The harness bootstraps some metrics' standard errors (perplexity, median, f1, ...) in a
# multiprocessing pool it forks from this process, whose torch (OpenMP) threads make a forked
# child able to deadlock on a lock held by a thread that is gone: a test run of the CLI hung
# that way. DISABLE_MULTIPROC is the harness's own switch to bootstrap in-process; a user who
# wants the pool back sets it to "" (the harness reads an empty value as unset).
os.environ.setdefault("DISABLE_MULTIPROC", "1")

log = logging.getLogger("redraft.lm_eval")

NAME = "redraft"


def register() -> None:
    """Put "redraft" in the harness's model registry (lazily: the class is imported when the
    harness asks for it). The harness's own models are registered first, since its registry
    loads them only when it finds itself empty. Idempotent."""
    import lm_eval.models  # noqa: F401  (registers "hf", "vllm", ... as placeholders)

    model_registry.register(NAME, target="redraft.lm_eval:RedraftLM")


ARGS = ("pretrained", "mc_samples", "estimator", "seed", "device", "steps", "sampler",
        "block_size", "stderr_file", "max_work", "progress")
HARNESS_ARGS = ("batch_size", "max_batch_size")  # what the harness passes every model
_PRELOADED: dict = {}
"""(spec, device) -> the Model `main` loaded before the harness started, for RedraftLM."""
_STARTED = [False]  # the harness has asked for its first request (errors are then ours)


def _int(name: str, value, low: int, high: int) -> int:
    """model_args values come typed by the harness (42 -> int) or as text; floats are refused
    (1e9 is not a count the user meant to be exact)."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RedraftError(f"model_args {name}={shown(value)}: expected an integer in "
                           f"{low}..{high:,}")
    return value


def check_model_args(args: dict) -> dict:
    """redraft's model_args checked and typed (RedraftLM's keyword arguments), or a
    RedraftError naming the first bad one."""
    unknown = sorted(set(args) - set(ARGS) - set(HARNESS_ARGS))
    if unknown:
        raise RedraftError(f"unknown redraft model_args {unknown}: expected {', '.join(ARGS)}")
    out = dict(args)
    if out.get("pretrained") in (None, ""):
        raise RedraftError("model_args has no pretrained: give --model_args pretrained=SPEC (a "
                           "checkpoint or run folder, 'default', 'default-ar' or hf:<folder>)")
    if "mc_samples" in out:
        out["mc_samples"] = _int("mc_samples", out["mc_samples"], 1, MAX_WORK)
    if out.get("steps") is not None:  # None: the model's own default
        out["steps"] = _int("steps", out["steps"], 1, MAX_WORK)
    if out.get("block_size") is not None:
        out["block_size"] = _int("block_size", out["block_size"], 1, MAX_WORK)
    if "seed" in out:
        out["seed"] = _int("seed", out["seed"], 0, MAX_SAMPLE_SEED)
    if "max_work" in out:
        out["max_work"] = _int("max_work", out["max_work"], 1, 2**62)
    if not isinstance(out.get("progress", True), bool):
        raise RedraftError(f"model_args progress={shown(out['progress'])}: expected true or "
                           "false")
    if out.get("estimator") not in (None, "count", "time"):
        raise RedraftError(f"model_args estimator={shown(out['estimator'])}: expected count or "
                           "time")
    if out.get("sampler") is not None and out["sampler"] not in SAMPLERS:
        raise RedraftError(f"model_args sampler={shown(out['sampler'])}: expected one of "
                           f"{list(SAMPLERS)}")
    if out.get("device") is not None:
        check_device(str(out["device"]))
    if out.get("stderr_file"):
        file = Path(str(out["stderr_file"]))
        if file.is_dir():
            raise RedraftError(f"model_args stderr_file={str(file)!r} is a folder: expected a "
                               "file to write")
        check_output_dir(file.parent if str(file.parent) else ".", "model_args stderr_file")
    return out


def check_work(model, mc_samples: int, steps: int, max_work: int) -> None:
    """One request's work within max_work, as the server bounds a request: a diffusion score
    evaluates mc_samples canvases of up to seq_len tokens, a generation steps of them."""
    if model.scorer.exact:
        return  # one exact pass per score, one token per step: bounded by the context
    steps = model.decoder.default_steps if steps is None else steps
    for name, n in (("mc_samples", mc_samples), ("steps", steps)):
        if n * model.seq_len > max_work:
            raise RedraftError(f"model_args {name}={n}: {n} x {model.seq_len} (the model's "
                               f"context) = {n * model.seq_len:,} token positions per request, "
                               f"more than max_work={max_work:,}: lower {name}, or raise "
                               "max_work")


def _device(device: str | None) -> str:
    """The harness's CLI asks for cuda:0 unless told otherwise: CPU where there is no CUDA
    (as its own HF model does), and CPU when nothing is asked."""
    import torch

    if device is None:
        return "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        log.warning("redraft: device %r asked for but CUDA is not available: using the CPU",
                    device)
        return "cpu"
    return str(device)


class RedraftLM(LM):
    """A redraft Model behind the harness's LM interface (see the module docstring)."""

    def __init__(self, pretrained: str, mc_samples: int = 16, estimator: str | None = None,
                 seed: int = 0, device: str | None = None, steps: int | None = DEFAULTS.steps,
                 sampler: str | None = DEFAULTS.sampler, block_size: int | None = None,
                 stderr_file: str | None = None, batch_size=None, max_batch_size=None,
                 progress: bool = True, max_work: int = MAX_WORK, **unknown):
        super().__init__()
        from redraft.model import Model, load

        device = _device(device)  # once: its CUDA fallback warns
        given = {"mc_samples": mc_samples, "estimator": estimator, "seed": seed,
                 "device": device, "steps": steps, "sampler": sampler, "block_size": block_size,
                 "stderr_file": stderr_file, "max_work": max_work, "progress": progress}
        checked = check_model_args({"pretrained": pretrained, **given, **unknown})
        mc_samples, seed, steps = checked["mc_samples"], checked["seed"], checked["steps"]
        block_size = checked["block_size"]
        if isinstance(pretrained, Model):
            self.model = pretrained
        else:
            key = (str(pretrained), device)
            self.model = _PRELOADED.pop(key, None) or load(key[0], device=key[1])
        check_work(self.model, mc_samples, steps, checked["max_work"])
        self.mc_samples, self.estimator, self.seed = mc_samples, estimator, int(seed)
        self.steps, self.sampler, self.block_size = steps, sampler, block_size
        self.stderr_file = Path(stderr_file) if stderr_file else None
        self.progress = progress
        self.stderrs: list[dict] = []
        """One entry per scored request: kind, logprob, stderr, tokens, samples."""
        self._device = self.model.device

    # --- what the harness asks ----------------------------------------------------------

    @property
    def tokenizer_name(self) -> str:
        return f"redraft-{self.model.tokenizer.kind}-{self.model.tokenizer.fingerprint}"

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        _STARTED[0] = True
        out = []
        for req in self._bar(requests, "loglikelihood"):
            context, continuation = req.args[0], req.args[1]
            ctx, cont = self._split(context, continuation)
            if not cont:  # nothing to score: probability one
                out.append((0.0, True))
                continue
            s = score(self.model, ctx, cont, samples=self.mc_samples, seed=self.seed,
                      estimator=self.estimator)
            self._keep("loglikelihood", s)
            out.append((s.logprob, s.greedy))
            self.cache_hook.add_partial("loglikelihood", (context, continuation),
                                        (s.logprob, s.greedy))
        self._report("loglikelihood")
        return out

    def loglikelihood_rolling(self, requests) -> list[float]:
        _STARTED[0] = True
        out = []
        for req in self._bar(requests, "loglikelihood_rolling"):
            text = req.args[0]
            s = score_rolling(self.model, self.model.encode(text), samples=self.mc_samples,
                              seed=self.seed, estimator=self.estimator)
            self._keep("loglikelihood_rolling", s)
            out.append(s.logprob)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), s.logprob)
        self._report("loglikelihood_rolling")
        return out

    def generate_until(self, requests) -> list[str]:
        _STARTED[0] = True
        out = []
        for req in self._bar(requests, "generate_until"):
            context, kwargs = req.args[0], dict(req.args[1] or {})
            text = self._generate(context, kwargs)
            out.append(text)
            self.cache_hook.add_partial("generate_until", (context, req.args[1]), text)
        return out

    # --- the pieces ---------------------------------------------------------------------

    def _split(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of context and continuation. As the harness's HF model does, trailing
        spaces of the context move to the continuation, and the whole text is encoded at once
        so a token may span the boundary only inside the continuation."""
        spaces = len(context) - len(context.rstrip(" "))
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.model.encode(context + continuation)
        ctx = self.model.encode(context)
        if whole[:len(ctx)] != ctx:  # the boundary merged into one token: score them apart
            return ctx, self.model.encode(continuation)
        return ctx, whole[len(ctx):]

    def _generate(self, context: str, kwargs: dict) -> str:
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        max_new = int(kwargs.pop("max_gen_toks", kwargs.pop("max_new_tokens", 256)))
        do_sample = bool(kwargs.pop("do_sample", False))
        temperature = float(kwargs.pop("temperature", 1.0 if do_sample else 0.0))
        if not do_sample:
            temperature = 0.0
        top_k, top_p = kwargs.pop("top_k", None), kwargs.pop("top_p", None)
        if kwargs:
            log.warning("redraft generate_until: ignoring generation kwargs %s (redraft takes "
                        "until, max_gen_toks, do_sample, temperature, top_k, top_p)",
                        sorted(kwargs))
        seq_len = self.model.seq_len
        max_new = max(1, min(max_new, seq_len))
        ids = self.model.encode(context)
        keep = seq_len - max_new
        ids = ids[-keep:] if keep > 0 else []
        knobs = ({"steps": self.steps, "sampler": self.sampler, "block_size": self.block_size}
                 if self.model.decoder.uses_steps else {})
        gen = self.model.generate(ids, max_new_tokens=max_new,
                                  seed=request_seed(self.seed, ids, []) % 2**31,
                                  temperature=temperature, top_k=top_k, top_p=top_p,
                                  stop_at_eos=True, **knobs)
        text = gen.completions[0]
        cuts = [text.find(stop) for stop in until if stop and stop in text]
        return text[:min(cuts)] if cuts else text

    def _keep(self, kind: str, s) -> None:
        self.stderrs.append({"kind": kind, "logprob": s.logprob, "stderr": s.stderr,
                             "tokens": s.tokens, "samples": s.samples})

    def _report(self, kind: str) -> None:
        errs = [e["stderr"] for e in self.stderrs if e["kind"] == kind]
        finite = [e for e in errs if math.isfinite(e)]
        if finite and not self.model.scorer.exact:
            log.info("redraft %s: %d diffusion scores over %d Monte Carlo draws each, standard "
                     "error mean %.4f, max %.4f nats", kind, len(errs), self.mc_samples,
                     sum(finite) / len(finite), max(finite))
        if self.stderr_file is not None:
            tmp = self.stderr_file.with_name(f".{self.stderr_file.name}.tmp")
            try:
                tmp.write_text("".join(json.dumps(e) + "\n" for e in self.stderrs))
                os.replace(tmp, self.stderr_file)
            except OSError as e:
                # Checked writable before the run; lost since (full disk, removed folder):
                # say so, and keep the evaluation's results, which the harness writes next.
                log.error("redraft: cannot write stderr_file %r: %s", str(self.stderr_file),
                          os_error_line(e) or e)

    def _bar(self, requests, what: str):
        from redraft.display import progress_bar

        return progress_bar(requests, desc=f"redraft {what}", enabled=self.progress)


register()


def main(argv: list[str] | None = None) -> int:
    """The harness's CLI with "redraft" registered; --model redraft unless another is named.
    For redraft, the arguments are checked and the model loaded before the harness starts
    (RedraftError: one line); whatever stops the harness before its first request (an unknown
    task, a dataset it cannot read) is a RedraftError too."""
    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[:1] if argv[:1] in (["run"], ["ls"], ["validate"]) else []
    rest = argv[len(command):]
    if command in ([], ["run"]) and not any(a == "--model" or a.startswith("--model=")
                                            for a in rest):
        rest = ["--model", NAME, *rest]
    argv = ["run", *rest] if not command and rest else command + rest
    saved = sys.argv
    sys.argv = ["lm-eval", *argv]
    try:
        parser = HarnessCLI()
        args = parser.parse_args()
    except ValueError as e:  # e.g. --model_args that starts like JSON but is not
        raise RedraftError(f"arguments: {str(e).strip().splitlines()[0][:300]}") from None
    finally:
        sys.argv = saved
    if getattr(args, "command", None) == "run" and args.model == NAME:
        _prepare(args)
    setup_logging()
    _STARTED[0] = False
    try:
        parser.execute(args)
    except (KeyboardInterrupt, RedraftError):
        raise
    except Exception as e:  # noqa: BLE001  (before the first request: the run's set-up)
        if _STARTED[0]:
            raise
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        hint = (" (`redraft lm-eval ls tasks` lists the tasks; --include_path adds a folder of "
                "YAML tasks)" if "task" in text.lower() else "")
        raise RedraftError(f"the harness stopped before evaluating: {type(e).__name__}: "
                           f"{text[:300]}{hint}") from None
    finally:
        _PRELOADED.clear()
    return 0


def _prepare(args) -> None:
    """Check redraft's model_args, the tasks and the output path, and load the model, so that
    a mistake is one line before the harness logs anything or evaluates for an hour."""
    from redraft.model import load

    margs = dict(args.model_args or {})
    if "device" in margs:  # the harness passes --device to the model too: give it once
        if args.device is not None and str(args.device) != str(margs["device"]):
            raise RedraftError(f"device given twice: model_args device={margs['device']!r} and "
                               f"--device {args.device!r}: give one")
        args.device = margs.pop("device")
    margs = check_model_args(margs)
    if not args.tasks:
        raise RedraftError("no --tasks: name the tasks to run (`redraft lm-eval ls tasks` "
                           "lists them; --include_path adds a folder of YAML tasks)")
    if args.output_path:
        out = Path(args.output_path)
        check_output_dir(out.parent if out.suffix == ".json" else out, "--output_path")
    if args.include_path and not Path(args.include_path).exists():
        raise RedraftError(f"--include_path {args.include_path!r}: no such file or folder")
    device = _device(args.device)
    check_device(device)
    args.device = device  # resolved once (no second "CUDA is not available" line)
    model = load(str(margs["pretrained"]), device=device)
    check_work(model, margs.get("mc_samples", 16), margs.get("steps", DEFAULTS.steps),
               margs.get("max_work", MAX_WORK))
    _PRELOADED[(str(margs["pretrained"]), device)] = model
    args.model_args = margs


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RedraftError as e:  # as `redraft lm-eval` says it (redraft.cli imports this module)
        print(f"redraft lm-eval: error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)
