"""Command line: `redraft train|distill|sample|samplers|eval|bench|serve|demo|export|
lm-eval`, plain functions of args.

Errors a user can cause (RedraftError) print one clear line and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import warnings
from pathlib import Path

from redraft.config import BENCH, BENCH_TASKS, SERVE
from redraft.diffusion import OBJECTIVES, PROCESSES
from redraft.errors import RedraftError, TrainingStopped
from redraft.request import HF_NEW_TOKENS, add_flags
from redraft.runs import check_report_dir, check_run_dir, resume_config
from redraft.sampling.registry import SAMPLERS
from redraft.signals import interrupted_line, stop_signals
from redraft.validate import (
    MAX_SAMPLE_SEED,
    MAX_WORK,
    check_output_dir,
    check_sampling_memory,
    check_work,
    integer,
    memory_error_line,
    number,
    os_error_line,
    read_text,
    shown,
)

BIG = 2**31 - 1  # the bound of every count argument (the server's): no overflow further down


def cmd_train(args, overrides: list[str]) -> int:
    from redraft.config import load_config
    from redraft.train import train

    config = args.config
    if config is not None and "=" in config and not Path(config).exists():
        config, overrides = None, [config, *overrides]  # no config file, only overrides
    # --process / --objective are shorthands for the dotted overrides (applied last).
    overrides = [*overrides, *(f"diffusion.{k}={v}" for k, v in
                               (("process", args.process), ("objective", args.objective)) if v)]
    cfg = load_config(config, overrides)
    cfg, settings = resume_config(cfg, overrides, args.resume)  # the run's own, unless given
    check_run_dir(cfg.train.out_dir, args.resume, cfg.train.init_from, args.overwrite)
    if settings and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks
        print(f"redraft train: {settings}", file=sys.stderr)
    with _plain_warnings("train"):
        result = train(cfg, resume=args.resume, overwrite=args.overwrite)
    if result.rank != 0:  # under torchrun, rank 0 speaks for all
        return 0
    print(json.dumps({"checkpoint": str(result.checkpoint), "step": result.step,
                      "params": result.params, "world_size": result.world_size,
                      "train_tokens_per_s": round(result.train_tokens_per_s, 1),
                      "train_tokens_per_s_per_rank": round(
                          result.train_tokens_per_s / result.world_size, 1),
                      "val_nats_per_token": result.val_nats_per_token,
                      "val_bits_per_byte": result.val_bits_per_byte}, indent=2))
    return 0


def cmd_distill(args, overrides: list[str]) -> int:
    from redraft.distill import DistillSettings, distill

    _no_overrides(overrides)
    settings = DistillSettings(
        rounds=args.rounds, steps_per_round=args.steps_per_round,
        teacher_steps=args.teacher_steps, divergence=args.divergence, weighting=args.weighting,
        batch_size=args.batch_size, length=args.length, lr=args.lr,
        warmup_steps=args.warmup_steps, seed=args.seed, device=args.device,
        threads=args.threads, save_every=args.save_every, progress=args.progress)
    with _plain_warnings("distill"):
        result = distill(args.teacher, args.out, settings, resume=args.resume is not None,
                         overwrite=args.overwrite)
    rounds = [{"round": r + 1, "checkpoint": str(path), "student_steps": result.student_steps[r]}
              for r, path in enumerate(result.checkpoints)]
    print(json.dumps({"out": str(result.out), "rounds": rounds}, indent=2))
    return 0


@contextlib.contextmanager
def _plain_warnings(command: str):
    """Warnings raised by redraft itself (a torn checkpoint skipped, a spent budget) print as
    one line, `redraft train: warning: ...`, not with a source location meant for developers."""
    package = str(Path(__file__).parent)
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if str(filename).startswith(package):
            print(f"redraft {command}: warning: {message}", file=file or sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original


def cmd_sample(args, overrides: list[str]) -> int:
    from redraft.display import DraftView, StepBar
    from redraft.model import load
    from redraft.request import fit, from_args
    from redraft.sampling import parse_options

    _no_overrides(overrides)
    template = read_text(args.infill_file, "--infill-file") if args.infill_file else args.infill
    model = load(args.checkpoint)
    if args.drafter is not None or args.draft_length is not None:
        model = _speculative(model, args.drafter, args.draft_length)
    if args.chat is not None:  # the model's chat template (a Hugging Face tokenizer's own)
        if args.prompt or template is not None:
            raise RedraftError("--chat builds the prompt from the message: drop --prompt/--infill")
        args.prompt = model.chat_prompt([{"role": "user", "content": args.chat}])
    _check_matches(model, args)
    decoder = model.decoder
    options = None
    if args.sampler_opt:
        sampler = args.sampler or decoder.default_sampler()
        if sampler is None:
            raise RedraftError(f"--sampler-opt needs a diffusion model: {model.name!r} has no "
                               "step rules (it decodes left to right)")
        options = parse_options(sampler, args.sampler_opt)
    constraint = _constraint(args, model)
    req = model.request(from_args(args, options=options, guidance=args.guidance or 0.0,
                                  **({"constraint": constraint} if constraint else {})))
    prompt = len(model.encode(args.prompt or ""))
    length = model.seq_len if template is not None else fit(
        prompt, len(model.encode(args.suffix or "")), model.seq_len, req.max_new_tokens,
        req.length, f"model {model.name!r}", model.default_new_tokens)
    _check_sample_limits(req, model, length, args.max_work)
    if not decoder.uses_steps:  # one step per generated token
        view = StepBar(length - prompt)
    elif args.show:
        view = DraftView(model.tokenizer.decode, req.steps, stream=sys.stderr)
    else:  # adaptive samplers, templates and DiffusionGemma choose their own number of steps
        sampler = req.sampler or decoder.default_sampler()
        adaptive = sampler in SAMPLERS and SAMPLERS[sampler].adaptive
        view = StepBar(None if adaptive or template is not None or decoder.adaptive_steps
                       else req.steps)
    if template is not None:
        if args.prompt or args.suffix:
            raise RedraftError("--infill holds its own fixed text: drop --prompt/--suffix")
        out = model.infill(template, request=req, on_step=view, oracle=args.oracle_tpf)
    else:
        out = model.generate(args.prompt or "", suffix=args.suffix or "", request=req,
                             on_step=view, oracle=args.oracle_tpf)
    tokens = sum(len(row) for row in out.tokens)
    if args.json:
        tpf = {"tokens_per_forward": round(out.tpf.value, 4)}
        if out.tpf.ceiling is not None:
            tpf["oracle_tpf_ceiling"] = round(out.tpf.ceiling, 4)
        print(json.dumps({"samples": out.texts, "nfe": out.nfe, "seconds": out.seconds,
                          "tokens_per_s": tokens / out.seconds, **tpf}, indent=2))
    else:
        for i, text in enumerate(out.texts):
            print(f"=== sample {i} ===\n{text}")
        print(f"--- {tokens} tokens in {out.seconds:.2f} s ({tokens / out.seconds:,.0f} "
              f"tokens/s, {out.nfe} network calls; {out.tpf})", file=sys.stderr)
    return 0


def cmd_eval(args, overrides: list[str]) -> int:
    from redraft.model import load

    _no_overrides(overrides)
    model = load(args.checkpoint)
    _check_matches(model, args)
    out = model.evaluate(corpus=args.corpus, samples=args.samples,
                         max_batches=args.max_batches, estimator=args.estimator)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        draws = (f", {out['mc_samples']} Monte Carlo t draws per window ({out['estimator']})"
                 if out.get("mc_samples") else "")
        print(f"{out['checkpoint']}: {out['kind']} on {out['windows']} windows "
              f"({out['tokens']:,} tokens) of {out['corpus']!r}{draws}")
        for key in ("nats_per_token", "bits_per_token", "bits_per_byte", "perplexity",
                    "stderr_nats"):
            print(f"  {key:16s} {out[key]:.4f}")
        if "block_bound" in out:  # a hybrid: its block mode's bound beside the exact NLL
            print(f"block mode's bound (every block drafted, {args.samples} noise draws per "
                  "window):")
            for key, value in out["block_bound"].items():
                print(f"  {key:16s} {value:.4f}")
    return 0


def cmd_bench(args, overrides: list[str]) -> int:
    from redraft.config import BenchConfig
    from redraft.eval.bench import Bench, write

    _no_overrides(overrides)
    check_output_dir(args.out, "--out")  # before the run, not after an hour of it
    check_report_dir(args.out, "--out")
    if args.length is not None:
        check_work(args.num_samples, max(args.steps), args.length, False, args.max_work)
    cfg = BenchConfig(
        checkpoints=args.checkpoints, out_dir=args.out, judge=args.judge,
        samplers=args.samplers, steps=args.steps, temperatures=args.temperatures,
        num_samples=args.num_samples, length=args.length, seed=args.seed,
        eval_batches=args.eval_batches, mauve=args.mauve, code=args.code, sweep=args.sweep,
        command="redraft bench " + shlex.join(args.argv), tasks=args.tasks, ngram=args.ngram,
        humaneval_tasks=args.humaneval_tasks, humaneval_hole=args.humaneval_hole,
    )
    report = write(Bench(cfg).run(), cfg.out_dir)
    print(f"report: {report}", file=sys.stderr)
    return 0


def cmd_serve(args, overrides: list[str]) -> int:
    import os

    _no_overrides(overrides)
    try:
        import uvicorn  # noqa: F401

        from redraft.serve import create_app, run
        from redraft.serve.limits import Limits
    except ImportError as e:
        raise RedraftError(f"redraft serve needs the 'serve' extra ({e.name} is missing): "
                           "pip install -e '.[serve]'") from None
    if args.max_rows is not None and args.max_rows < args.max_batch:
        raise RedraftError(f"--max-rows {args.max_rows}: expected >= --max-batch "
                           f"({args.max_batch})")
    from redraft.model import load

    models = [load(path) for path in args.checkpoints]
    for spec in args.speculative or []:  # VERIFIER,DRAFTER[,K]
        parts = spec.split(",")
        if len(parts) not in (2, 3) or (len(parts) == 3 and not parts[2].isdigit()):
            raise RedraftError(f"--speculative {spec!r}: expected VERIFIER,DRAFTER[,K]")
        models.append(_speculative(load(parts[0]), parts[1],
                                   int(parts[2]) if len(parts) == 3 else None))
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise RedraftError(f"two checkpoints share a model name {names}: serve run folders "
                           "with different names")
    api_key = args.api_key or os.environ.get("REDRAFT_API_KEY") or None
    limits = Limits(max_body_bytes=args.max_body, body_timeout_s=args.body_timeout,
                    header_timeout_s=args.header_timeout, keep_alive_s=args.keep_alive,
                    max_connections=args.max_connections, max_prompt_tokens=args.max_prompt_tokens,
                    max_work=args.max_work, metrics_open=args.metrics_open)
    app = create_app(models, api_key=api_key, max_batch=args.max_batch,
                     max_queue=args.max_queue, timeout_s=args.timeout, max_steps=args.max_steps,
                     grace_s=args.grace, max_rows=args.max_rows, limits=limits)
    print(f"serving {names} on http://{args.host}:{args.port}/ (page at /, API under /v1)",
          file=sys.stderr)
    run(app, args.host, args.port, args.grace, args.log_level)
    return 0


def cmd_demo(args, overrides: list[str]) -> int:
    from redraft.demo import run_demo

    check_output_dir(args.out, "--out")
    run_demo(minutes=args.minutes, out_dir=args.out, overrides=overrides, from_process_start=True)
    return 0


def cmd_export(args, overrides: list[str]) -> int:
    from redraft.export import check_export_target, export_model
    from redraft.model import load

    _no_overrides(overrides)
    check_export_target(args.out, args.force)  # before loading the model, and again after
    check_output_dir(args.out, "the export folder")
    model = load(args.checkpoint)
    out = export_model(model, args.out, overwrite=args.force)
    auto = "AutoModelForCausalLM" if model.backbone.causal else "AutoModelForMaskedLM"
    print(f"exported {model.name!r} to {str(out)!r}: load it with redraft.load('hf:{out}') "
          f"(read natively), or transformers' {auto}.from_pretrained(..., "
          f"trust_remote_code=True), which runs {str(out / 'modeling_redraft.py')!r}",
          file=sys.stderr)
    return 0


def cmd_lm_eval(args, overrides: list[str]) -> int:
    try:
        from redraft.lm_eval import main as lm_eval_main
    except ImportError as e:
        raise RedraftError(f"redraft lm-eval needs the 'lm-eval' extra ({e.name} is missing): "
                           "pip install -e '.[lm-eval]'") from None
    return lm_eval_main(args.argv)  # every argument is the harness's own


def cmd_samplers(args, overrides: list[str]) -> int:
    """List the samplers, which models they apply to and their knobs."""
    _no_overrides(overrides)
    for name, info in SAMPLERS.items():
        fits = [o.name for o in OBJECTIVES.values() if not o.autoregressive and (
            info.models == "any" or (info.models == "denoiser" and o.denoiser)
            or (info.models == "masked" and o.masked_denoiser))]
        print(f"{name:14s} {info.summary} [{', '.join(fits)}]")
        for knob, k in info.knobs.items():
            allowed = f" one of {list(k.choices)}" if k.choices else ""
            print(f"{'':16s}--sampler-opt {knob}={k.default}  ({k.help}{allowed})")
    return 0


def _speculative(verifier, drafter: str | None, draft_length: int | None):
    """The verifier decoded speculatively with the drafter (decoders/speculative.py)."""
    from redraft.decoders.speculative import speculative
    from redraft.model import load

    if drafter is None:
        raise RedraftError("--draft-length needs --drafter (the model that drafts)")
    return speculative(verifier, load(drafter), 4 if draft_length is None else draft_length)


def _check_matches(model, args) -> None:
    """--process / --objective on sample and eval state what the checkpoint must be: a model
    is trained for one process and parameterisation, so they cannot be switched afterwards."""
    have = {"objective": model.objective.name,
            "process": model.process.name if model.process is not None else None}
    for key in ("process", "objective"):
        want = getattr(args, key, None)
        if want and want != have[key]:
            raise RedraftError(f"--{key} {want}: the checkpoint was trained with diffusion.{key}="
                               f"{have[key]!r}, which cannot be changed after training")


def _constraint(args, model) -> dict | None:
    """The constraint of --json-schema FILE / --regex R (mutually exclusive), compiled for the
    model's tokenizer now, so a bad schema or regex is one line naming the flag (exit 2)."""
    if args.json_schema is not None:
        text, flag = read_text(args.json_schema, "--json-schema"), "--json-schema"
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as e:
            raise RedraftError(f"--json-schema {args.json_schema!r} is not JSON ({e.msg}, line "
                               f"{e.lineno} column {e.colno})") from None
        if not isinstance(schema, dict):
            raise RedraftError(f"--json-schema {args.json_schema!r}: expected a JSON Schema "
                               f"object, got a JSON {type(schema).__name__}")
        spec = {"type": "json_schema", "schema": schema}
    elif args.regex is not None:
        spec, flag = {"type": "regex", "pattern": args.regex}, "--regex"
    else:
        return None
    from redraft.constraints import compile_constraint

    try:
        compile_constraint(spec, model.tokenizer)
    except RedraftError as e:
        raise RedraftError(f"{flag}: {e}") from None
    return spec


def _check_sample_limits(req, model, length: int, max_work: int) -> None:
    """The server's work bound (--max-work) and the logits of the batch within memory."""
    from redraft.request import check_work

    d = model.decoder
    check_work(d.work_units(req.num_samples, req.steps, length, req.mode),
               d.work_formula(req.num_samples, req.steps, length, req.mode), max_work)
    check_sampling_memory(req.num_samples, length, model.backbone.vocab_size)


def _no_overrides(overrides: list[str]) -> None:
    if overrides:
        raise RedraftError(f"unexpected arguments {overrides}")


_positive_int = integer(1, BIG)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number of seconds > 0")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port in 1-65535")
    return value


def _bench_task(name: str) -> str:
    if name not in BENCH_TASKS:
        raise argparse.ArgumentTypeError(f"unknown task {shown(name)}: expected one of "
                                         f"{', '.join(BENCH_TASKS)}")
    return name


_bench_task.__name__ = "task names"  # as the list type's error message names it


def _list(kind):
    """argparse type: a comma-separated list of `kind` (a type or an argparse type function)."""
    def parse(text: str):
        try:
            values = [kind(v) for v in text.split(",") if v.strip()]
        except (ValueError, argparse.ArgumentTypeError) as e:
            raise argparse.ArgumentTypeError(f"{shown(text)} is not a comma-separated list of "
                                             f"{getattr(kind, '__name__', 'values')} ({e})") \
                from None
        if not values:
            raise argparse.ArgumentTypeError("empty list")
        return values

    return parse


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block): `redraft sample: error: ...`, status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")
def _process_args(p: argparse.ArgumentParser, process_help: str, objective_help: str) -> None:
    p.add_argument("--process", choices=list(PROCESSES), default=None, help=process_help)
    p.add_argument("--objective", choices=list(OBJECTIVES), default=None,
                   help=objective_help)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="redraft", description="Diffusion language models.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from a YAML config",
                       description="Train; extra arguments section.key=value (or "
                                   "--section.key=value) override the config.")
    t.add_argument("config", nargs="?", help="YAML config (defaults when omitted)")
    t.add_argument("--resume", help="checkpoint or run folder to continue exactly, or 'auto': "
                                    "the newest complete checkpoint in train.out_dir (a fresh "
                                    "start when there is none)")
    t.add_argument("--overwrite", action="store_true",
                   help="start afresh in a train.out_dir that holds a run: the old run is moved "
                        "aside to <out_dir>.old-N, never deleted (without it such a start is "
                        "refused)")
    _process_args(t, "shorthand for diffusion.process=...", "shorthand for diffusion.objective")

    s = sub.add_parser("sample", help="generate text from a checkpoint")
    s.add_argument("checkpoint", nargs="?", default="default",
                   help="checkpoint folder, run folder (newest checkpoint), a shipped model: "
                        "'default' (masked diffusion on Python source; the default) or "
                        "'default-ar' (its autoregressive twin), or hf:<folder or hub "
                        "id>[?key=value&...] (a Hugging Face model: DiffusionGemma, "
                        "LLaDA/Dream-style, causal)")
    s.add_argument("--prompt", default="", help="text held fixed at the start")
    s.add_argument("--chat", default=None, metavar="MESSAGE",
                   help="a user message: the prompt is the model's chat template around it "
                        "(the tokenizer's own for hf: models)")
    s.add_argument("--suffix", default="", help="text held fixed at the end (diffusion)")
    # Every decoding knob's flag comes from redraft.request.Request (defaults, ranges, help).
    add_flags(s, choices={"sampler": list(SAMPLERS)})
    s.add_argument("--max-work", type=integer(1, 2**62), default=MAX_WORK,
                   help="refuse more than this many token positions of work, num-samples x "
                        "steps x length (AR: num-samples x length); the server's default "
                        f"(default {MAX_WORK:,})")
    s.add_argument("--sampler-opt", action="append", metavar="NAME=VALUE", default=None,
                   help="a knob of the sampler, e.g. threshold=0.9 (repeatable)")
    s.add_argument("--infill", default=None, metavar="TEMPLATE",
                   help="fill the spans of a template, e.g. 'def f(x):\\n    <|mask:16|>\\n' "
                        "(<|mask:N|> exactly N tokens, <|mask:<=N|> at most N)")
    s.add_argument("--infill-file", default=None, help="read the --infill template from a file")
    _process_args(s, "must match the checkpoint's", "must match the checkpoint's")
    shape = s.add_mutually_exclusive_group()
    shape.add_argument("--json-schema", default=None, metavar="FILE",
                       help="constrain the output to this JSON Schema (a file holding the "
                            "schema; the subset of docs/structured.md)")
    shape.add_argument("--regex", default=None, metavar="REGEX",
                       help="constrain the output to match this regular expression")
    s.add_argument("--drafter", default=None, metavar="CHECKPOINT",
                   help="decode the checkpoint (a causal model) speculatively: this model "
                        "(masked or block diffusion, same tokenizer) drafts, the checkpoint "
                        "verifies; the text has the checkpoint's law (docs/speculative.md)")
    s.add_argument("--draft-length", type=integer(1, 64), default=None,
                   help="tokens drafted a call with --drafter (default 4)")
    s.add_argument("--show", action="store_true", help="draw the draft as it is denoised")
    s.add_argument("--oracle-tpf", action="store_true",
                   help="diffusion: also report the oracle tokens-per-forward ceiling (each "
                        "token committed at the first step its argmax is its final value)")
    s.add_argument("--json", action="store_true")

    sub.add_parser("samplers", help="list the diffusion samplers and their knobs")

    e = sub.add_parser("eval", help="validation NLL (bound for diffusion, exact for AR)")
    e.add_argument("checkpoint", nargs="?", default="default",
                   help="checkpoint or run folder, 'default' / 'default-ar' (the shipped "
                        "models; 'default' when omitted), or hf:<folder or hub id> (a Hugging "
                        "Face masked or causal model; give --corpus)")
    e.add_argument("--corpus", default=None, help="another corpus spec to evaluate on")
    e.add_argument("--samples", type=_positive_int, default=4,
                   help="Monte Carlo draws of t per window (diffusion)")
    e.add_argument("--max-batches", type=_positive_int, default=None)
    e.add_argument("--estimator", choices=("time", "count"), default="time",
                   help="diffusion bound estimator: draw t, or draw the number of masks "
                        "(same bound, lower variance; objective mdlm only)")
    _process_args(e, "must match the checkpoint's", "must match the checkpoint's")
    e.add_argument("--json", action="store_true")

    b = sub.add_parser("bench", help="quality, speed and roofline of checkpoints, side by side",
                       description="Generate with every checkpoint (diffusion: each sampler x "
                                   "steps; AR: KV cache), judge the samples, time them, sweep "
                                   "model sizes, and write report.md, eval.json and plots.")
    b.add_argument("checkpoints", nargs="*", help="checkpoint or run folders, or hf:<folder "
                                                  "or hub id> specs")
    b.add_argument("--judge", help="AR checkpoint (or Hugging Face causal-LM folder) that "
                                   "scores samples for gen-ppl")
    b.add_argument("--samplers", type=_list(str), default=None,
                   help="diffusion sampler settings, comma-separated, each "
                        "name[:key=value+key=value], keys: the sampler's knobs, block, "
                        "guidance, steps (e.g. threshold:threshold=0.7, "
                        "confidence:block=32+steps=64); default: each model's own sampler")
    b.add_argument("--steps", type=_list(_positive_int), default=BENCH.steps,
                   help="diffusion step counts, comma-separated")
    b.add_argument("--temperatures", type=_list(number(0, 100)), default=BENCH.temperatures,
                   help="two or more give gen-ppl at the held-out text's entropy")
    b.add_argument("--num-samples", type=_positive_int, default=BENCH.num_samples)
    b.add_argument("--length", type=_positive_int, default=None,
                   help="tokens per sample (default: the smallest seq_len; an hf: model "
                        f"counts as {HF_NEW_TOKENS})")
    b.add_argument("--seed", type=integer(0, MAX_SAMPLE_SEED), default=BENCH.seed)
    b.add_argument("--max-work", type=integer(1, 2**62), default=MAX_WORK,
                   help="refuse settings of more than this many token positions of work, "
                        f"num-samples x steps x length (default {MAX_WORK:,})")
    b.add_argument("--eval-batches", type=_positive_int, default=None,
                   help="validation batches for the likelihood table (default: all)")
    b.add_argument("--mauve", action="store_true",
                   help="MAUVE and Frechet distance on MiniLM features (extra 'quality')")
    b.add_argument("--code", action=argparse.BooleanOptionalAction, default=None,
                   help="report the parse rate of samples as Python (default: when the "
                        "corpus is Python source)")
    b.add_argument("--sweep", choices=("none", "tiny", "quick", "full"), default=BENCH.sweep,
                   help="random-weight model-size sweep for the diffusion/AR crossover")
    b.add_argument("--tasks", type=_list(_bench_task), default=BENCH.tasks,
                   help="comma-separated: samples (the runs table), frontier (gen-ppl vs "
                        "entropy per steps over --temperatures, with an n-gram floor), "
                        "humaneval-infill (single-line HumanEval infilling; extra 'humaneval')")
    b.add_argument("--ngram", type=_positive_int, default=BENCH.ngram,
                   help="order of the frontier's naive n-gram sampler")
    b.add_argument("--humaneval-tasks", type=_positive_int, default=None,
                   help="HumanEval tasks, spread over the 164 problems (default: all)")
    b.add_argument("--humaneval-hole", type=_positive_int, default=None,
                   help="a flexible hole of this many tokens (default: the true line's length)")
    b.add_argument("--out", default=BENCH.out_dir, help="folder for report.md, eval.json, PNGs")

    v = sub.add_parser("serve", help="HTTP server: OpenAI-shaped API, step-level batching, "
                                     "streamed drafts, a live page at /")
    v.add_argument("checkpoints", nargs="*", default=["default", "default-ar"],
                   help="checkpoint or run folders, 'default' / 'default-ar', or hf: specs "
                        "(the first is the default model; each is named by its run folder; "
                        "none: the shipped 'default' and 'default-ar')")
    v.add_argument("--speculative", action="append", metavar="VERIFIER,DRAFTER[,K]",
                   help="also serve a causal model decoded speculatively with a drafter, K "
                        "tokens a call (default 4), named VERIFIER+DRAFTER (repeatable)")
    v.add_argument("--host", default=SERVE.host, help="bind address (loopback by default)")
    v.add_argument("--port", type=_port, default=SERVE.port, help="TCP port, 1-65535")
    v.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on every "
                                                   "route but /health (default: "
                                                   "$REDRAFT_API_KEY, else none)")
    v.add_argument("--metrics-open", action="store_true",
                   help="serve /metrics without the API key (for a Prometheus scraper)")
    v.add_argument("--max-batch", type=_positive_int, default=SERVE.max_batch,
                   help="rows (sequences) per network call in one tick (default %(default)s)")
    v.add_argument("--max-rows", type=_positive_int, default=SERVE.max_rows,
                   help="rows admitted at once, >= --max-batch (default 2 x --max-batch, so a "
                        "small request runs beside a maximal one; = --max-batch: first come, "
                        "first served)")
    v.add_argument("--max-queue", type=_positive_int, default=SERVE.max_queue,
                   help="requests waiting to join; more get 429 (default %(default)s)")
    v.add_argument("--max-steps", type=_positive_int, default=SERVE.max_steps,
                   help="the largest `steps` a request may ask for (default %(default)s)")
    v.add_argument("--max-work", type=_positive_int, default=SERVE.max_work,
                   help="the most work one request may ask for, n x steps x length tokens "
                        "(AR: n x length), summed over a list of prompts; more gets 400 "
                        "(default %(default)s)")
    v.add_argument("--max-prompt-tokens", type=_positive_int, default=SERVE.max_prompt_tokens,
                   help="prompt (+ suffix) tokens of a request, a list of prompts summed "
                        "(default: the model's context)")
    v.add_argument("--max-body", type=_positive_int, default=SERVE.max_body_bytes,
                   help="request body bytes; more gets 413 before it is read (default "
                        "%(default)s)")
    v.add_argument("--body-timeout", type=_seconds, default=SERVE.body_timeout_s,
                   help="seconds a request body may take to arrive (then 408; default "
                        "%(default)s)")
    v.add_argument("--header-timeout", type=_seconds, default=SERVE.header_timeout_s,
                   help="seconds a connection may take to send a request's headers (then 408; "
                        "default %(default)s)")
    v.add_argument("--keep-alive", type=_seconds, default=SERVE.keep_alive_s,
                   help="seconds an idle keep-alive connection stays open (default %(default)s)")
    v.add_argument("--max-connections", type=_positive_int, default=SERVE.max_connections,
                   help="open connections; at the limit the longest-idle are closed to make "
                        "room, and when all are busy a small reserve serves /health only "
                        "(others 503) (default %(default)s)")
    v.add_argument("--timeout", type=_seconds, default=SERVE.timeout_s,
                   help="seconds a request may take, queue included (then 504; default "
                        "%(default)s)")
    v.add_argument("--grace", type=_seconds, default=SERVE.grace_s,
                   help="seconds in-flight requests get to finish on shutdown (default "
                        "%(default)s)")
    v.add_argument("--log-level", default="info",
                   choices=("critical", "error", "warning", "info", "debug", "trace"))

    r = sub.add_parser("distill", help="step distillation (SDTT): students that sample in "
                                       "half the steps, round after round",
                       description="Each round's student learns to do in one ancestral step "
                                   "what its teacher (the previous round's student) does in "
                                   "two, on the teacher's own training corpus; each round "
                                   "writes OUT/round-R/ckpt-*, a normal checkpoint "
                                   "(docs/distillation.md).")
    r.add_argument("teacher", help="masked (mdlm) or block-diffusion checkpoint or run folder, "
                                   "'default' (the shipped model), or hf:<a redraft export>")
    r.add_argument("--out", required=True, help="run folder: distill.json and round-1 .. "
                                                "round-R")
    r.add_argument("--rounds", type=_positive_int, default=3,
                   help="rounds of halving (default %(default)s)")
    r.add_argument("--steps-per-round", type=_positive_int, default=200,
                   help="optimiser steps per round (default %(default)s)")
    r.add_argument("--teacher-steps", type=_positive_int, default=64,
                   help="the teacher's steps T (per block for block models); round r's student "
                        "samples in T / 2^r (default %(default)s)")
    r.add_argument("--divergence", choices=("kl", "tvd"), default="kl",
                   help="KL(teacher || student) or total variation (default %(default)s)")
    r.add_argument("--weighting", choices=("marginal", "sdtt"), default="marginal",
                   help="targets weighted to the two-step law's exact marginals, or the "
                        "paper's unweighted ones (default %(default)s)")
    r.add_argument("--batch-size", type=_positive_int, default=8)
    r.add_argument("--length", type=_positive_int, default=None,
                   help="tokens per training window (default: the model's seq_len)")
    r.add_argument("--lr", type=number(0, 1, low_open=True), default=1e-4)
    r.add_argument("--warmup-steps", type=integer(0, BIG), default=10)
    r.add_argument("--seed", type=integer(0, 2**31 - 1), default=0)
    r.add_argument("--device", default="cpu")
    r.add_argument("--threads", type=_positive_int, default=None)
    r.add_argument("--save-every", type=integer(0, BIG), default=0,
                   help="a resumable checkpoint every N steps of a round (0: at its end, and "
                        "when SIGINT/SIGTERM stops it)")
    r.add_argument("--resume", nargs="?", const="auto", default=None, choices=("auto",),
                   help="continue the run in --out: finished rounds are kept, an interrupted "
                        "one continues from its newest checkpoint (an empty --out starts "
                        "afresh)")
    r.add_argument("--overwrite", action="store_true",
                   help="move a run in --out aside (to OUT.old-N) and start afresh")
    r.add_argument("--no-progress", dest="progress", action="store_false")

    x = sub.add_parser("export", help="write a checkpoint as a Hugging Face model folder "
                                      "(trust_remote_code)",
                       description="Write config.json, model.safetensors, tokenizer files and "
                                   "the modelling code, so transformers' AutoModel... "
                                   "from_pretrained(OUT, trust_remote_code=True) loads it; "
                                   "redraft.load('hf:OUT') loads it back.")
    x.add_argument("checkpoint", help="checkpoint folder or run folder (newest checkpoint)")
    x.add_argument("out", help="the folder to write (written whole, then renamed into place)")
    x.add_argument("--force", action="store_true",
                   help="replace OUT if it holds an earlier export (never anything else)")

    sub.add_parser("lm-eval", add_help=False,
                   help="EleutherAI's lm-evaluation-harness on a redraft model (its own "
                        "arguments: --model_args pretrained=CKPT,mc_samples=16 --tasks ...)")

    d = sub.add_parser("demo", help="watch the shipped default model fill in a function body, "
                                    "then train a diffusion LM and its AR twin on Python's "
                                    "stdlib, compare, and watch a sample denoise")
    d.add_argument("--minutes", type=number(0, low_open=True), default=5.0,
                   help="wall-time budget of the whole demo: training, evaluation, the "
                        "sampling views and the speed table scale their work to it (default "
                        "%(default)s)")
    d.add_argument("--out", default="runs/demo",
                   help="where the two runs are written (an earlier demo's runs there are moved "
                        "aside to <run>.old-N, not deleted)")
    return p


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "samplers": cmd_samplers,
            "eval": cmd_eval, "bench": cmd_bench, "serve": cmd_serve, "demo": cmd_demo,
            "export": cmd_export, "lm-eval": cmd_lm_eval,
            "distill": cmd_distill}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, extra = parser().parse_known_args(argv)
    args.argv = argv[1:]
    try:
        with stop_signals():  # SIGTERM, too, ends in one line before training's own handlers
            return COMMANDS[args.command](args, extra)
    except RedraftError as e:
        # One line, whatever the message holds (a YAML parser's error spans several).
        line = " ".join(part.strip() for part in str(e).splitlines() if part.strip())
        print(f"redraft {args.command}: error: {line}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk or a forbidden folder is the user's, not a bug
        line = os_error_line(e)
        if line is None:
            raise
        print(f"redraft {args.command}: error: {line}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        line = memory_error_line(e)
        if line is None:
            raise
        print(f"redraft {args.command}: error: {line}", file=sys.stderr)
        return 2
    except TrainingStopped as e:  # SIGINT/SIGTERM in training: saved at a step boundary
        print(f"redraft {args.command}: {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt as e:  # nothing saved: start-up, or a second signal
        line, status = interrupted_line(args.command, e)
        print(line, file=sys.stderr)
        return status
    except BrokenPipeError:  # the reader closed the pipe (`redraft samplers | head`): done
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
