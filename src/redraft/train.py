"""One readable training loop for both objectives (masked diffusion and the AR twin).

corpus -> tokenizer -> token shards -> batch x0 (B, L) -> token_losses -> AdamW step,
with warmup + cosine LR, gradient clipping and accumulation, EMA weights, periodic
validation, a progress bar, a JSONL metrics log, and atomic, exactly resumable checkpoints.

Exact resume: the batch at step s is a pure function of (seed, s) (see data.Batches), the
diffusion noise of step s comes from a generator seeded by (seed, s), and the checkpoint
stores weights, optimizer, EMA and the global RNG (dropout). So a resumed run computes the
same losses as an uninterrupted one.

Under torchrun the same loop runs in every process (redraft.distributed): train.batch_size
is the global batch, the noise is drawn for the whole global batch and each rank scores its
rows, so the optimizer sees the same gradient at any world size and any grad_accum (up to
float summation order).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

import redraft.distributed as distributed
from redraft.checkpoint import (
    Checkpoint,
    build_model,
    checkpoint_folders,
    clean_run_dir,
    fit_weights,
    list_checkpoints,
    load_checkpoint,
    load_train_state,
    prune_checkpoints,
    read_meta,
    resolve_checkpoint,
    save_checkpoint,
    weights_to_save,
)
from redraft.config import Config, config_from_dict
from redraft.data import Batches, cache_dir, load_data, load_tokenizer
from redraft.display import show_progress
from redraft.errors import Interrupted, RedraftError, TrainingStopped
from redraft.likelihood import evaluate, report
from redraft.losses import condition_noise, draw_noise, token_losses
from redraft.runs import check_run_dir, move_aside, run_contents
from redraft.validate import check_device, check_output_dir, check_training_fits


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 for autocast, or None for plain fp32."""
    if precision == "auto":
        fast = (device.type == "cuda" and torch.cuda.is_bf16_supported()) or (
            device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported()
                                      or torch.cpu._is_amx_tile_supported()))
        precision = "bf16" if fast else "fp32"
    return torch.bfloat16 if precision == "bf16" else None


def lr_at(cfg, step: int, progress: float) -> float:
    """Linear warmup over warmup_steps, then cosine decay to min_lr_ratio * lr at progress 1."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine)


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """The noise source of one training step: a pure function of (seed, step)."""
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + step)
    return g


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path
    step: int
    train_tokens_per_s: float
    val_nats_per_token: float | None
    val_bits_per_byte: float | None
    params: int
    history: list[dict] = field(default_factory=list)
    world_size: int = 1
    rank: int = 0


def _param_groups(model, weight_decay: float):
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def train(cfg: Config, resume: str | Path | None = None, overwrite: bool = False) -> TrainResult:
    """Train per `cfg`; with `resume` (a checkpoint, a run folder, or "auto": the newest
    complete checkpoint in train.out_dir, if any) continue exactly.

    A fresh start into a train.out_dir that holds a run is a RedraftError unless `overwrite`,
    which moves that run aside (`<out_dir>.old-N`) first: a run is never replaced silently.

    Under torchrun every process runs this same function (see redraft.distributed): each
    computes its share of the global batch, gradients are averaged, validation is reduced
    over all ranks, and only rank 0 writes the log and the checkpoints.
    """
    cfg.validate()
    _check_before_work(cfg)
    check_run_dir(cfg.train.out_dir, resume, cfg.train.init_from, overwrite)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    world = distributed.setup(cfg.train.device)
    try:
        with _StopSignals() as stop:
            return _train(cfg, resume, world, stop, overwrite)
    finally:
        world.close()


def _check_before_work(cfg: Config) -> None:
    """The device exists and the output and cache folders can be written: fail now, not at
    the first checkpoint."""
    check_device(cfg.train.device)
    cores = os.cpu_count() or 1
    if cfg.train.threads is not None and cfg.train.threads > 4 * cores:
        raise RedraftError(f"train.threads={cfg.train.threads}: this machine has {cores} cores; "
                           f"expected at most {4 * cores}")
    check_output_dir(cfg.train.out_dir, "train.out_dir")
    check_output_dir(cache_dir(cfg.data), "data.cache_dir")


def _train(cfg: Config, resume, world: distributed.World, stop: _StopSignals,
           overwrite: bool = False) -> TrainResult:
    tc = cfg.train
    device = world.device
    dtype = autocast_dtype(tc.precision, device)
    run_dir = Path(tc.out_dir)
    L = cfg.model.seq_len
    rank_batch, micro = distributed.split_batch(tc.batch_size, tc.grad_accum, world.world_size)

    if world.main:
        for line in clean_run_dir(run_dir):  # what an earlier crash left half done
            warnings.warn(line, stacklevel=3)
    world.barrier()
    ckpt, state = _resume_point(resume, run_dir, cfg, world)
    if state is not None and _budget_spent(tc, state["step"], state["elapsed"]):
        return _already_done(cfg, ckpt, state, world)
    init = init_source(tc.init_from) if tc.init_from and state is None else None
    tokenizer = load_tokenizer(ckpt) if ckpt is not None else init.tokenizer if init else None
    with world.main_first():  # rank 0 writes the token shards, the others then map them
        tokenizer, data = load_data(cfg.data, L, tokenizer)
    check_training_fits(cfg, tokenizer.vocab_size, device, world.world_size, world.main)
    torch.manual_seed(tc.seed)
    model = build_model(cfg, tokenizer.vocab_size).to(device)
    model.checkpoint_blocks = tc.activation_checkpointing
    if state is not None:
        model.load_state_dict(state["model"])  # full weights, before any sharding
    elif init is not None:
        init_weights(model, init)
    if world.rank:
        # Each rank its own dropout stream; rank 0 keeps the single-process one.
        torch.manual_seed(tc.seed * 1_000_003 + world.rank)
    net = distributed.wrap(model, tc.parallel, world)  # what the training forward calls
    optimizer = torch.optim.AdamW(_param_groups(model, tc.weight_decay), lr=tc.lr,
                                  betas=(tc.beta1, tc.beta2))
    params = dict(model.named_parameters())  # sharded DTensors under FSDP
    ema = {n: p.detach().clone() for n, p in params.items()} if tc.ema > 0 else None
    start_step, elapsed = 0, 0.0
    if state is not None:
        distributed.load_optimizer(model, optimizer, state["optimizer"])
        if ema is not None:
            ema = {n: distributed.like(params[n], t) for n, t in state["ema"].items()}
        rngs = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]
        if world.rank < len(rngs):  # exact for the same world size; new ranks keep their seed
            torch.set_rng_state(rngs[world.rank])
        start_step, elapsed = state["step"], state["elapsed"]

    batches = Batches(data.train, L, rank_batch, seed=tc.seed)
    first_row = world.rank * rank_batch  # where this rank's rows sit in the step's global batch
    mask_id, bos_id = tokenizer.mask_id, tokenizer.eos_id
    log_path = run_dir / "metrics.jsonl"
    if world.main:
        if overwrite and run_contents(run_dir):  # only now: a bad config leaves it in place
            warnings.warn(f"moved the earlier run in {str(run_dir)!r} to "
                          f"{str(move_aside(run_dir))!r} (--overwrite)", stacklevel=3)
        run_dir.mkdir(parents=True, exist_ok=True)
    history = _trim_log(log_path, start_step) if world.main else []
    bytes_per_token = data.val_bytes_per_token if data.meta["val_tokens"] else float("nan")

    def val_metrics():
        if not data.meta["val_tokens"]:
            return {}
        with _swapped(model, ema):
            nats, err, n = evaluate(model, data.val, cfg, mask_id, bos_id, tc.eval_batches,
                                    dtype=dtype, shard=(world.rank, world.world_size))
        r = report(nats, err, bytes_per_token)
        return {"val_nats_per_token": nats, "val_stderr": err,
                "val_bits_per_token": r["bits_per_token"], "val_bits_per_byte": r["bits_per_byte"]}

    def save(step):
        # Gathering full tensors is collective; then rank 0 alone writes.
        model_state, optimizer_state = distributed.full_state(model, optimizer)
        ema_full = {n: distributed.full(t) for n, t in ema.items()} if ema is not None else None
        weights = ema_full or {n: distributed.full(p) for n, p in params.items()}
        rngs = world.gather(torch.get_rng_state())
        path = run_dir / f"ckpt-{step:08d}"
        if world.main:
            train_state = {"model": model_state, "optimizer": optimizer_state, "ema": ema_full,
                           "rng": rngs, "step": step, "elapsed": elapsed,
                           "world_size": world.world_size}
            path = save_checkpoint(run_dir, step, cfg, model, tokenizer, inference_params=weights,
                                   train_state=train_state, keep=tc.keep_checkpoints,
                                   extra_meta={"bytes_per_token": bytes_per_token,
                                               "train_tokens": data.meta["train_tokens"]})
        world.barrier()  # every rank returns once the checkpoint is on disk
        return path

    tokens_per_step = tc.batch_size * L  # all ranks together
    # With a time budget the bar counts training seconds, so its ETA is the budget's.
    timed = tc.time_budget_s is not None
    bar = tqdm(total=round(tc.time_budget_s) if timed else tc.max_steps,
               initial=round(elapsed) if timed else start_step, unit="step",
               bar_format=("{desc}: {percentage:3.0f}%|{bar}| {n}/{total} s "
                           "[{elapsed}<{remaining}{postfix}]") if timed else None,
               disable=not (tc.progress and world.main and show_progress()),
               desc=cfg.diffusion.objective, dynamic_ncols=True)
    step, last, last_save = start_step, {}, time.monotonic()
    model.train()
    stop.armed = True  # from here a first SIGINT/SIGTERM waits for the end of the step
    while not _budget_spent(tc, step, elapsed):
        t0 = time.perf_counter()
        progress = elapsed / tc.time_budget_s if tc.time_budget_s else step / tc.max_steps
        lr = lr_at(tc, step, progress)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x0 = batches.batch(step, world.rank, world.world_size).to(device)  # (B / world, L)
        # The noise of the whole global batch; this rank scores its rows of it.
        noise = draw_noise(cfg.diffusion, tc.batch_size, L, mask_id,
                           step_generator(tc.seed, step, device), cfg.diffusion.train_t_min,
                           cfg.diffusion.elbo_estimator, device, model.vocab_size,
                           cfg.diffusion.train_t_max)
        if noise is not None and cfg.diffusion.cond_prefix_max:
            noise = condition_noise(noise, cfg.diffusion, mask_id,
                                    step_generator(tc.seed + 1, step, device))
        loss_sum = 0.0
        for j in range(tc.grad_accum):
            a = j * micro
            rows = noise.rows(first_row + a, first_row + a + micro) if noise else None
            with distributed.grad_sync(net, j == tc.grad_accum - 1):
                losses = token_losses(net, x0[a:a + micro], cfg.diffusion, mask_id, bos_id,
                                      autocast_dtype=dtype, weighting=cfg.diffusion.train_weighting,
                                      noise=rows)
                # Sum over this piece / the global token count: pieces add up to the global
                # mean. The factor world_size undoes DDP's and FSDP's averaging of gradients.
                loss = losses.sum() * (world.world_size / (tc.batch_size * L))
                loss.backward()
            loss_sum += loss.item() / world.world_size
        grad_norm = torch.nn.utils.clip_grad_norm_(
            model.parameters(), tc.grad_clip if tc.grad_clip > 0 else float("inf"))
        # Before the update, so the weights (and any checkpoint) stay the last good ones. The
        # gradient norm is global (the same on every rank), the loss here only this rank's.
        norm = float(distributed.full(grad_norm))
        if not math.isfinite(norm) or (world.world_size == 1 and not math.isfinite(loss_sum)):
            bar.close()
            saved = list_checkpoints(run_dir)
            kept = (f"the last good checkpoint {str(saved[-1])!r} is kept" if saved
                    else "no checkpoint had been saved yet")
            raise RedraftError(f"training diverged at step {step + 1}: loss {loss_sum}, gradient "
                               f"norm {norm} (lr {lr:g}); {kept}: lower train.lr, or raise "
                               "train.warmup_steps")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            with torch.no_grad():
                # Warm-up of the decay so early EMA weights are not dominated by the init.
                decay = min(tc.ema, (1 + step) / (10 + step))
                torch._foreach_lerp_(list(ema.values()), [params[n] for n in ema], 1 - decay)
        step += 1
        dt = time.perf_counter() - t0
        save_due = (tc.save_every_minutes is not None
                    and time.monotonic() - last_save >= 60 * tc.save_every_minutes)
        stopping = stop.signum is not None
        if world.world_size > 1:
            # One small all-reduce a step: the loss over all ranks, rank 0's clock and save
            # timer, and any rank's stop signal, so every rank makes the same decisions (lr,
            # stop, save).
            mine = [dt, float(save_due)] if world.main else [0.0, 0.0]
            loss_sum, dt, due, stops = world.sum([loss_sum, *mine, float(stopping)])
            save_due, stopping = due > 0, stops > 0
        elapsed += dt
        record = {"step": step, "loss": loss_sum, "lr": lr,
                  "grad_norm": float(distributed.full(grad_norm)),
                  "tokens_per_s": tokens_per_step / dt,
                  "tokens_per_s_per_rank": tokens_per_step / dt / world.world_size,
                  "elapsed_s": elapsed}
        final = _budget_spent(tc, step, elapsed)
        if step % tc.eval_every == 0 or final:
            record.update(val_metrics())
        if world.main and (step % tc.log_every == 0 or "val_nats_per_token" in record):
            _append_log(log_path, record)
            history.append(record)
        last = record
        bar.update(round(elapsed) - bar.n if timed else 1)
        bar.set_postfix(step=step, loss=f"{loss_sum:.3f}", tok_s=f"{tokens_per_step / dt:,.0f}",
                        **({"val": f"{record['val_nats_per_token']:.3f}"}
                           if "val_nats_per_token" in record else {}))
        if stopping and not final:  # (a last step ends normally: its save is next anyway)
            bar.close()
            path = save(step)
            raise TrainingStopped(stop.signum or signal.SIGTERM, step, path)
        if not final and ((tc.save_every and step % tc.save_every == 0) or save_due):
            save(step)
            last_save = time.monotonic()
    bar.close()
    ckpt_path = save(step)
    # Throughput of this invocation's optimisation steps (validation and saving excluded).
    trained_time = elapsed - (state["elapsed"] if state is not None else 0.0)
    tokens_per_s = (step - start_step) * tokens_per_step / trained_time if trained_time else 0.0
    return TrainResult(run_dir, ckpt_path, step, tokens_per_s,
                       last.get("val_nats_per_token"), last.get("val_bits_per_byte"),
                       model.num_params(), history, world.world_size, world.rank)


class _StopSignals:
    """SIGINT/SIGTERM while training: the first asks the loop to save at the end of the current
    step and stop (TrainingStopped); a second one, or one before the loop runs (`armed`),
    raises KeyboardInterrupt at once. Only in the main thread (where Python runs handlers)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self.armed = False
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if not self.armed or self.signum is not None:
            raise Interrupted(signum)  # a KeyboardInterrupt that says which signal
        self.signum = signum
        print(f"\nredraft: {signal.Signals(signum).name}: saving a checkpoint at the end of this "
              "step, then stopping (signal again to stop at once, unsaved)", file=sys.stderr,
              flush=True)


def _budget_spent(tc, step: int, elapsed: float) -> bool:
    return step >= tc.max_steps or (tc.time_budget_s is not None and elapsed >= tc.time_budget_s)


def _already_done(cfg: Config, ckpt: Path, state: dict, world: distributed.World) -> TrainResult:
    """Resuming a run whose budget is spent trains nothing: say so (not a silent no-op), and
    return the checkpoint as it is, so that re-running a finished `--resume auto` command is
    harmless."""
    tc, step, elapsed = cfg.train, state["step"], state["elapsed"]
    if world.main:
        # A crash while the last save pruned may have left one more than train.keep_checkpoints.
        prune_checkpoints(ckpt.parent, tc.keep_checkpoints, ckpt)
        budget = f"train.max_steps={tc.max_steps}"
        if tc.time_budget_s is not None:
            budget += f", train.time_budget_s={tc.time_budget_s:g}"
        warnings.warn(f"nothing to train: {str(ckpt)!r} is at step {step} after {elapsed:.0f} s "
                      f"of training, which already meets the budget ({budget}); raise "
                      "train.max_steps or train.time_budget_s to train on", stacklevel=3)
    history = _trim_log(Path(tc.out_dir) / "metrics.jsonl", step) if world.main else []
    val = next((r for r in reversed(history) if "val_nats_per_token" in r), {})
    return TrainResult(Path(tc.out_dir), ckpt, step, 0.0, val.get("val_nats_per_token"),
                       val.get("val_bits_per_byte"), read_meta(ckpt)["params"], history,
                       world.world_size, world.rank)


INIT_SPECS = ("a checkpoint or run folder, 'default', 'default-ar', or hf:<a folder redraft "
              "export wrote>")


def init_source(spec: str) -> Checkpoint:
    """train.init_from: the redraft model a spec names, as redraft.load takes it (INIT_SPECS),
    loaded on the CPU with its files verified (the same checks as every other loader). A
    Hugging Face model of another architecture is refused: its weights have other names."""
    from redraft.export import read_exported_spec

    shown = f"train.init_from={str(spec)!r}"
    try:
        if str(spec).startswith("hf:"):
            from redraft.hf import parse_spec
            from redraft.hf.loaders import check_path

            path = parse_spec(str(spec))[0]
            loaded = read_exported_spec(str(spec), "cpu")
            if loaded is None:
                check_path(path)  # a missing folder or a redraft run folder, said as such
                if not Path(path).is_dir():  # a hub id: the weights are not here to read
                    raise RedraftError(f"hf:{path} is not a local folder: download it first "
                                       f"(huggingface-cli download {path} --local-dir DIR) "
                                       "and give hf:DIR if redraft exported it")
                raise RedraftError(f"hf:{path} is not a folder redraft exported, so its "
                                   "weights are not a redraft Transformer's")
            return loaded
        from redraft.default import shipped

        return load_checkpoint(shipped(spec) or spec, "cpu")  # "default", "default-ar" too
    except RedraftError as e:
        raise RedraftError(f"{shown}: {e}; init_from takes {INIT_SPECS} whose model has "
                           "this config's shapes") from None


def init_weights(model: torch.nn.Module, source: Checkpoint) -> None:
    """train.init_from: copy a loaded model's (inference) weights into a freshly built model.

    The three attention kinds share one weights layout, so an AR twin, a masked model and a
    block-diffusion model initialise one another as long as the shapes agree (same vocabulary,
    widths and depth; a time-conditioned model needs a time-conditioned source). Anything
    else is a RedraftError naming the first tensor that does not fit.
    """
    objective = source.config.diffusion.objective
    try:
        fit_weights(model, weights_to_save(source.model), f"the weights of {str(source.path)!r}")
    except RedraftError as e:
        raise RedraftError(f"train.init_from={str(source.path)!r} (objective {objective!r}) "
                           f"does not fit this model: {e}") from None


def _resume_point(resume, run_dir: Path, cfg: Config, world: distributed.World):
    """(checkpoint, its training state) to continue from, or (None, None) to start afresh.

    Every rank picks on its own (they read the same files), so an error stops them all.
    With "auto", a torn checkpoint is skipped with a warning for the one before it.
    """
    if resume is None:
        return None, None
    auto = str(resume) == "auto"
    # (clean_run_dir has already cleared the .tmp-* folders an earlier crash left.)
    candidates = checkpoint_folders(run_dir) if auto else [resolve_checkpoint(resume)]
    torn = []
    for ckpt in candidates:
        try:
            state = load_train_state(ckpt)
        except RedraftError as e:
            if not auto:
                raise
            if world.main:
                warnings.warn(f"skipping torn checkpoint: {e}", stacklevel=3)
            torn.append(ckpt.name)
            continue
        saved = config_from_dict(read_meta(ckpt)["config"])
        if saved.model != cfg.model or saved.diffusion != cfg.diffusion:
            raise RedraftError(f"cannot resume {str(ckpt)!r}: its model/diffusion config differs "
                               "from the requested one")
        return ckpt, state
    if torn:  # not a fresh start: silently training from step 0 would discard them
        raise RedraftError(f"--resume auto: every checkpoint in {str(run_dir)!r} is damaged "
                           f"({', '.join(torn)}): resume one by path to see why, or move them "
                           "away to start afresh")
    return None, None


class _swapped:
    """Temporarily load other weights (e.g. EMA) into the model's parameters."""

    def __init__(self, model, weights):
        self.model, self.weights, self.backup = model, weights, None

    def __enter__(self):
        if self.weights is not None:
            params = dict(self.model.named_parameters())
            self.backup = {n: p.detach().clone() for n, p in params.items()}
            with torch.no_grad():
                for n, w in self.weights.items():
                    params[n].copy_(w)

    def __exit__(self, *exc):
        if hasattr(self.model, "reshard"):
            # FSDP2 leaves the root's parameters gathered after a forward pass: shard them
            # again so they match the (sharded) backup.
            self.model.reshard()
        if self.backup is not None:
            params = dict(self.model.named_parameters())
            with torch.no_grad():
                for n, w in self.backup.items():
                    params[n].copy_(w)


def _append_log(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _trim_log(path: Path, start_step: int) -> list[dict]:
    """Keep the log lines up to start_step (a resumed run rewrites what came after)."""
    if not path.exists():
        return []
    kept = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a crash
        if rec.get("step", 0) <= start_step:
            kept.append(rec)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, path)
    return kept


__all__ = ["TrainResult", "TrainingStopped", "train"]
