"""Command line: `redraft train|sample|samplers|eval|bench|serve|demo`, plain functions of args.

Errors a user can cause (RedraftError) print one clear line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from redraft.diffusion import OBJECTIVES, PROCESSES
from redraft.errors import RedraftError
from redraft.sampling.registry import DEFAULT_SAMPLER, SAMPLERS


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
    result = train(cfg, resume=args.resume)
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


def cmd_sample(args, overrides: list[str]) -> int:
    from redraft.checkpoint import load_checkpoint
    from redraft.display import DraftView
    from redraft.losses import make_process
    from redraft.sampling import generate_ar, generate_diffusion, infill, parse_options

    _no_overrides(overrides)
    ckpt = load_checkpoint(args.checkpoint)
    _check_matches(ckpt.config.diffusion, args)
    tok = ckpt.tokenizer
    prefix, suffix = tok.encode(args.prompt or ""), tok.encode(args.suffix or "")
    knobs = dict(batch=args.num_samples, length=args.length, temperature=args.temperature,
                 top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    template = args.infill
    if args.infill_file:
        template = Path(args.infill_file).read_text(encoding="utf-8")
    diffusion_only = [name for name, used in (
        ("--sampler", args.sampler), ("--sampler-opt", args.sampler_opt),
        ("--suffix", suffix), ("--infill", template), ("--block-size", args.block_size),
        ("--guidance", args.guidance)) if used]
    texts = None
    if ckpt.config.diffusion.objective == "ar":
        if diffusion_only:
            raise RedraftError(f"{diffusion_only[0]} needs a diffusion model: the AR twin only "
                               "continues a prefix, left to right")
        gen = generate_ar(ckpt.model, bos_id=tok.eos_id, prefix=prefix,
                          banned=tok.non_text_ids, **knobs)
    elif ckpt.config.diffusion.objective == "block":
        raise RedraftError("a block-diffusion checkpoint: sample it from Python with "
                           "redraft.sampling.generate_block (the CLI and server take it once "
                           "they go through redraft.load)")
    else:
        diff = ckpt.config.diffusion
        process = make_process(diff, tok.mask_id, ckpt.model.vocab_size)
        name = args.sampler or DEFAULT_SAMPLER.get(diff.objective)
        options = parse_options(name, args.sampler_opt) if args.sampler_opt else None
        view = DraftView(tok.decode, args.steps, stream=sys.stderr) if args.show else None
        common = dict(steps=args.steps, on_step=view, sampler=args.sampler,
                      objective=diff.objective, options=options, block_size=args.block_size,
                      eos_id=tok.eos_id if args.stop_at_eos else None,
                      guidance=args.guidance or 0.0)
        if template is not None:
            if prefix or suffix:
                raise RedraftError("--infill holds its own fixed text: drop --prompt/--suffix")
            knobs.pop("length")  # the template sets the canvas
            texts, _, gen = infill(ckpt.model, process, tok, template, **common, **knobs)
        else:
            gen = generate_diffusion(ckpt.model, process, prefix=prefix, suffix=suffix,
                                     **common, **knobs)
    if texts is None:
        texts = [tok.decode(row) for row in gen.tokens]
    if args.json:
        print(json.dumps({"samples": texts, "nfe": gen.nfe, "seconds": gen.seconds,
                          "tokens_per_s": gen.tokens.numel() / gen.seconds}, indent=2))
    else:
        for i, text in enumerate(texts):
            print(f"=== sample {i} ===\n{text}")
        print(f"--- {gen.tokens.numel()} tokens in {gen.seconds:.2f} s "
              f"({gen.tokens.numel() / gen.seconds:,.0f} tokens/s, {gen.nfe} network calls)",
              file=sys.stderr)
    return 0


def cmd_eval(args, overrides: list[str]) -> int:
    from redraft.eval import evaluate_checkpoint

    _no_overrides(overrides)
    from redraft.checkpoint import load_checkpoint

    _check_matches(load_checkpoint(args.checkpoint).config.diffusion, args)
    out = evaluate_checkpoint(args.checkpoint, corpus=args.corpus, samples=args.samples,
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
    return 0


def cmd_bench(args, overrides: list[str]) -> int:
    from redraft.eval.bench import Bench, BenchConfig, write

    _no_overrides(overrides)
    cfg = BenchConfig(
        checkpoints=args.checkpoints, out_dir=args.out, judge=args.judge,
        samplers=args.samplers, steps=args.steps, temperatures=args.temperatures,
        num_samples=args.num_samples, length=args.length, seed=args.seed,
        eval_batches=args.eval_batches, mauve=args.mauve, code=args.code, sweep=args.sweep,
        command="redraft bench " + shlex.join(args.argv),
    )
    report = write(Bench(cfg).run(), cfg.out_dir)
    print(f"report: {report}", file=sys.stderr)
    return 0


def cmd_serve(args, overrides: list[str]) -> int:
    import os

    _no_overrides(overrides)
    try:
        import uvicorn  # noqa: F401

        from redraft.serve import create_app, load_served, run
    except ImportError as e:
        raise RedraftError(f"redraft serve needs the 'serve' extra ({e.name} is missing): "
                           "pip install -e '.[serve]'") from None
    models = [load_served(path) for path in args.checkpoints]
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise RedraftError(f"two checkpoints share a model name {names}: serve run folders "
                           "with different names")
    api_key = args.api_key or os.environ.get("REDRAFT_API_KEY") or None
    app = create_app(models, api_key=api_key, max_batch=args.max_batch,
                     max_queue=args.max_queue, timeout_s=args.timeout, max_steps=args.max_steps,
                     grace_s=args.grace)
    print(f"serving {names} on http://{args.host}:{args.port}/ (page at /, API under /v1)",
          file=sys.stderr)
    run(app, args.host, args.port, args.grace, args.log_level)
    return 0


def cmd_demo(args, overrides: list[str]) -> int:
    from redraft.demo import run_demo

    run_demo(minutes=args.minutes, out_dir=args.out, overrides=overrides)
    return 0


def cmd_samplers(args, overrides: list[str]) -> int:
    """List the samplers, which models they apply to and their knobs."""
    _no_overrides(overrides)
    for name, info in SAMPLERS.items():
        models = {"denoiser": "mdlm, udlm", "masked": "mdlm", "any": "any objective"}
        print(f"{name:14s} {info.summary} [{models[info.models]}]")
        for knob, k in info.knobs.items():
            allowed = f" one of {list(k.choices)}" if k.choices else ""
            print(f"{'':16s}--sampler-opt {knob}={k.default}  ({k.help}{allowed})")
    return 0


def _check_matches(diff, args) -> None:
    """--process / --objective on sample and eval state what the checkpoint must be: a model
    is trained for one process and parameterisation, so they cannot be switched afterwards."""
    for key in ("process", "objective"):
        want = getattr(args, key, None)
        if want and want != getattr(diff, key):
            raise RedraftError(f"--{key} {want}: the checkpoint was trained with diffusion.{key}="
                               f"{getattr(diff, key)!r}, which cannot be changed after training")


def _no_overrides(overrides: list[str]) -> None:
    if overrides:
        raise RedraftError(f"unexpected arguments {overrides}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def _list(kind):
    def parse(text: str):
        try:
            values = [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of "
                                             f"{kind.__name__}") from None
        if not values:
            raise argparse.ArgumentTypeError("empty list")
        return values

    return parse
def _process_args(p: argparse.ArgumentParser, process_help: str, objective_help: str) -> None:
    p.add_argument("--process", choices=list(PROCESSES), default=None, help=process_help)
    p.add_argument("--objective", choices=[*OBJECTIVES, "ar"], default=None,
                   help=objective_help)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="redraft", description="Diffusion language models.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from a YAML config",
                       description="Train; extra arguments section.key=value (or "
                                   "--section.key=value) override the config.")
    t.add_argument("config", nargs="?", help="YAML config (defaults when omitted)")
    t.add_argument("--resume", help="checkpoint or run folder to continue exactly, or 'auto': "
                                    "the newest complete checkpoint in train.out_dir (a fresh "
                                    "start when there is none)")
    _process_args(t, "shorthand for diffusion.process=...", "shorthand for diffusion.objective")

    s = sub.add_parser("sample", help="generate text from a checkpoint")
    s.add_argument("checkpoint", help="checkpoint folder or run folder (newest checkpoint)")
    s.add_argument("--steps", type=_positive_int, default=64,
                   help="denoising steps (diffusion; ignored by AR)")
    s.add_argument("--prompt", default="", help="text held fixed at the start")
    s.add_argument("--suffix", default="", help="text held fixed at the end (diffusion)")
    s.add_argument("--length", type=_positive_int, default=None,
                   help="canvas length in tokens, prompt included (default: seq_len)")
    s.add_argument("--num-samples", type=_positive_int, default=1)
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--top-k", type=int, default=None)
    s.add_argument("--top-p", type=float, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--sampler", choices=list(SAMPLERS), default=None,
                   help="diffusion step rule (default: ancestral for mdlm/udlm, analytic for "
                        "sedd); see `redraft samplers`")
    s.add_argument("--sampler-opt", action="append", metavar="NAME=VALUE", default=None,
                   help="a knob of the sampler, e.g. threshold=0.9 (repeatable)")
    s.add_argument("--block-size", type=_positive_int, default=None,
                   help="decode blocks of this many tokens left to right (semi-autoregressive; "
                        "--steps is split over the blocks)")
    s.add_argument("--stop-at-eos", action="store_true",
                   help="stop a sample after the block in which it writes EOS")
    s.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale towards the prompt (0 = none)")
    s.add_argument("--infill", default=None, metavar="TEMPLATE",
                   help="fill the spans of a template, e.g. 'def f(x):\\n    <|mask:16|>\\n' "
                        "(<|mask:N|> exactly N tokens, <|mask:<=N|> at most N)")
    s.add_argument("--infill-file", default=None, help="read the --infill template from a file")
    _process_args(s, "must match the checkpoint's", "must match the checkpoint's")
    s.add_argument("--show", action="store_true", help="draw the draft as it is denoised")
    s.add_argument("--json", action="store_true")

    sub.add_parser("samplers", help="list the diffusion samplers and their knobs")

    e = sub.add_parser("eval", help="validation NLL (bound for diffusion, exact for AR)")
    e.add_argument("checkpoint")
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
    b.add_argument("checkpoints", nargs="*", help="checkpoint or run folders")
    b.add_argument("--judge", help="AR checkpoint (or Hugging Face causal-LM folder) that "
                                   "scores samples for gen-ppl")
    b.add_argument("--samplers", type=_list(str), default=None,
                   help="diffusion sampler settings, comma-separated, each "
                        "name[:key=value+key=value], keys: the sampler's knobs, block, "
                        "guidance, steps (e.g. threshold:threshold=0.7, "
                        "confidence:block=32+steps=64); default: each model's own sampler")
    b.add_argument("--steps", type=_list(int), default=[8, 16, 64, 256],
                   help="diffusion step counts, comma-separated")
    b.add_argument("--temperatures", type=_list(float), default=[1.0],
                   help="two or more give gen-ppl at the held-out text's entropy")
    b.add_argument("--num-samples", type=_positive_int, default=32)
    b.add_argument("--length", type=_positive_int, default=None,
                   help="tokens per sample (default: the smallest seq_len)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--eval-batches", type=_positive_int, default=None,
                   help="validation batches for the likelihood table (default: all)")
    b.add_argument("--mauve", action="store_true",
                   help="MAUVE and Frechet distance on MiniLM features (extra 'quality')")
    b.add_argument("--code", action=argparse.BooleanOptionalAction, default=None,
                   help="report the parse rate of samples as Python (default: when the "
                        "corpus is Python source)")
    b.add_argument("--sweep", choices=("none", "tiny", "quick", "full"), default="quick",
                   help="random-weight model-size sweep for the diffusion/AR crossover")
    b.add_argument("--out", default="runs/bench", help="folder for report.md, eval.json, PNGs")

    v = sub.add_parser("serve", help="HTTP server: OpenAI-shaped API, step-level batching, "
                                     "streamed drafts, a live page at /")
    v.add_argument("checkpoints", nargs="+", help="checkpoint or run folders (the first is the "
                                                   "default model; each is named by its run "
                                                   "folder)")
    v.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1 "
                                                   "(default: $REDRAFT_API_KEY, else none)")
    v.add_argument("--max-batch", type=_positive_int, default=64,
                   help="rows (sequences) in the step loop at once")
    v.add_argument("--max-queue", type=_positive_int, default=256,
                   help="requests waiting to join; more get 429")
    v.add_argument("--max-steps", type=_positive_int, default=4096,
                   help="the largest `steps` a request may ask for")
    v.add_argument("--timeout", type=float, default=300.0,
                   help="seconds a request may take, queue included (then 504)")
    v.add_argument("--grace", type=float, default=10.0,
                   help="seconds in-flight requests get to finish on shutdown")
    v.add_argument("--log-level", default="info")

    d = sub.add_parser("demo", help="train a diffusion LM and its AR twin on Python's stdlib, "
                                    "compare, and watch a sample denoise")
    d.add_argument("--minutes", type=float, default=5.0, help="total time budget")
    d.add_argument("--out", default="runs/demo", help="where the two runs are written")
    return p


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "samplers": cmd_samplers,
            "eval": cmd_eval, "bench": cmd_bench, "serve": cmd_serve, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, extra = parser().parse_known_args(argv)
    args.argv = argv[1:]
    try:
        return COMMANDS[args.command](args, extra)
    except RedraftError as e:
        print(f"redraft {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
