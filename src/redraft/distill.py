"""Step distillation of masked diffusion models: SDTT (Deschenaux & Gulcehre, arXiv 2410.21035).

A masked model sampled with N ancestral steps draws, at each step, every position it reveals
independently from its denoiser p(x0 | xt): the fewer the steps, the more positions are drawn
together without seeing one another, and the worse the samples. SDTT trains a student to do in
ONE step of size 1/N what its teacher does in TWO steps of size 1/(2N), round after round:

    round r (1..R): teacher = round r-1's student, frozen (round 1: the given model);
                    student initialised from it; the teacher runs on a grid of T / 2^(r-1)
                    steps, the student learns the grid of T / 2^r steps (T = teacher_steps).

One distillation step, for clean windows x0 (B, L) of the teacher's own training corpus:

    k ~ U{1..N}, t = k / N, s = (k - 1) / N, m = (t + s) / 2     (N = the student's steps)
    xt ~ q(xt | x0, t)                                            (masks, as in training)
    teacher: q1 = p_T(x0 | xt); reveal each mask w.p. p(t, m), draw it from q1 -> z
             q2 = p_T(x0 | z)                                     (the second half step)
    target at a position masked in xt: q1 if the first half step revealed it, else q2
    loss = mean over the masked positions of w * D(target || p_S(x0 | xt))

with p(t, s) = (alpha(s) - alpha(t)) / (1 - alpha(t)) and D the KL divergence or the total
variation distance. Both steps reveal the same positions with the same probability p(t, s) (the
masks are a Markov chain), so the laws can differ only in the values drawn, and a one-step
student, which draws them independently given xt, is closest to the two-step law when its
p_S(x0_l | xt) is the two-step law's marginal of the value revealed at l. Given that l is
revealed, the first half step revealed it with probability w1 = p(t, m) / p(t, s), so that
marginal is w1 q1 + (1 - w1) E[q2]. Weighting "marginal" (the default) gives the q1 targets
weight w1 / p(t, m) and the q2 targets (1 - w1) / (1 - p(t, m)): the KL's minimiser is then
exactly that marginal. The paper's targets carry weight 1 ("sdtt"), whose expectation puts
p(t, m) instead of w1 on q1; the two agree at the last step (s = 0, where p(t, s) = 1) and
differ elsewhere. A teacher whose multi-step law is exact is a fixed point either way: what a
round can gain is the teacher's own inconsistency between one step and two.

Block models (objective "block") are distilled block by block in one pass: every block gets its
own time on the student's grid (steps per block), the teacher and the student see the clean
blocks before it (the training pass, losses.block_token_losses), and the half steps run inside
every block at once. Uniform-noise models (udlm, sedd) are refused: their consistency
distillation (Duo, arXiv 2506.10892) is another algorithm.

A run folder OUT holds distill.json (the settings) and round-<r>/ per round: a run folder of
ordinary checkpoints (atomic, checksummed, crash-safe retention: checkpoint.py) with
metrics.jsonl. A round's last checkpoint is a normal redraft checkpoint (`redraft.load`,
`redraft sample`, `redraft serve`) whose config.json records `distill` (teacher, round,
divergence, the student's steps). An interrupted round continues exactly from its newest
checkpoint (the batch and the noise of step i are pure functions of the seed, round and i);
SIGINT/SIGTERM save at the end of the current step, as training does.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from redraft.checkpoint import (
    Checkpoint,
    build_model,
    checkpoint_folders,
    clean_run_dir,
    fit_weights,
    list_checkpoints,
    load_checkpoint,
    load_train_state,
    read_meta,
    save_checkpoint,
    weights_to_save,
)
from redraft.data import Batches, load_data
from redraft.diffusion import MaskProcess, make_schedule
from redraft.diffusion.block import block_inputs, per_position
from redraft.diffusion.registry import objective
from redraft.display import show_progress
from redraft.errors import RedraftError, TrainingStopped
from redraft.runs import move_aside
from redraft.sampling.categorical import sample
from redraft.train import (
    _append_log,
    _StopSignals,
    _trim_log,
    autocast_dtype,
    init_source,
    lr_at,
    step_generator,
)
from redraft.validate import check_device, check_output_dir

DIVERGENCES = ("kl", "tvd")
WEIGHTINGS = ("marginal", "sdtt")
MANIFEST = "distill.json"


@dataclass
class DistillSettings:
    """What a distillation run does (the CLI's flags; distill.json records them)."""

    rounds: int = 3
    """Rounds of halving: the last student samples in teacher_steps / 2^rounds steps."""
    steps_per_round: int = 200
    """Optimiser steps per round."""
    teacher_steps: int = 64
    """T: the original teacher's steps (per block for block models); round r's student learns
    T / 2^r of them, so T must be divisible by 2^rounds."""
    divergence: str = "kl"
    """"kl" (KL(teacher || student), the paper's choice) or "tvd" (total variation)."""
    weighting: str = "marginal"
    """"marginal" (the two-step law's exact marginals, see the module docstring) or "sdtt"
    (the paper's unweighted targets)."""
    batch_size: int = 8
    length: int | None = None
    """Window length of the training batches (None: the model's seq_len)."""
    lr: float = 1e-4
    min_lr_ratio: float = 1.0
    """Cosine decay to lr * min_lr_ratio over a round (1: constant after warmup)."""
    warmup_steps: int = 10
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "cpu"
    precision: str = "auto"
    """"auto" (bf16 autocast where the hardware has it), "bf16" or "fp32"."""
    threads: int | None = None
    save_every: int = 0
    """Save a resumable checkpoint every this many steps of a round (0: only at its end and
    when stopped by a signal)."""
    progress: bool = True

    # The settings a resumed run must share with the run it continues (rounds may grow).
    SAME = ("teacher_steps", "divergence", "weighting", "batch_size", "length", "lr",
            "min_lr_ratio", "warmup_steps", "grad_clip", "seed", "steps_per_round")

    def check(self) -> DistillSettings:
        def positive(name: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise RedraftError(f"{name}={v!r}: expected an integer >= 1")

        for name in ("rounds", "steps_per_round", "teacher_steps", "batch_size"):
            positive(name)
        if self.length is not None:
            positive("length")
        if self.divergence not in DIVERGENCES:
            raise RedraftError(f"divergence={self.divergence!r}: expected one of "
                               f"{list(DIVERGENCES)}")
        if self.weighting not in WEIGHTINGS:
            raise RedraftError(f"weighting={self.weighting!r}: expected one of "
                               f"{list(WEIGHTINGS)}")
        if self.teacher_steps % 2 ** self.rounds:
            most = (self.teacher_steps & -self.teacher_steps).bit_length() - 1
            raise RedraftError(f"teacher_steps={self.teacher_steps} with rounds={self.rounds}: "
                               f"{self.teacher_steps} / 2^{self.rounds} is not a whole number "
                               f"of steps; expected rounds <= {most}, or teacher_steps a "
                               f"multiple of {2 ** self.rounds}")
        for name in ("lr", "grad_clip"):
            if not (isinstance(getattr(self, name), (int, float))
                    and 0 < getattr(self, name) < math.inf):
                raise RedraftError(f"{name}={getattr(self, name)!r}: expected a number > 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise RedraftError(f"min_lr_ratio={self.min_lr_ratio!r}: expected 0..1")
        if self.warmup_steps < 0 or self.save_every < 0:
            raise RedraftError("warmup_steps and save_every must be >= 0")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise RedraftError(f"precision={self.precision!r}: expected auto, bf16 or fp32")
        return self

    def student_steps(self, round_: int) -> int:
        return self.teacher_steps // 2 ** round_

    def record(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in ("device", "threads", "progress", "save_every", "precision")}


# --- the maths of one step ---------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """What a distillation step needs to know about the models: the process, the special ids,
    the student's number of steps, and for block models (block_size, shift)."""

    process: MaskProcess
    bos_id: int
    steps: int
    block: tuple[int, bool] | None = None

    @property
    def mask_id(self) -> int:
        return self.process.mask_id


def grid_of(config, mask_id: int, bos_id: int, steps: int) -> Grid:
    """The Grid of a checkpoint's config, or a RedraftError for models SDTT does not apply to."""
    d = config.diffusion
    obj = objective(d.objective)
    if obj.autoregressive:
        raise RedraftError(f"objective {d.objective!r} is an autoregressive model: distillation "
                           "cuts the steps of a diffusion model; give a masked (mdlm) or "
                           "block-diffusion checkpoint")
    if not obj.masked_denoiser or d.process != "mask":
        raise RedraftError(f"objective {d.objective!r} with process {d.process!r}: only masked "
                           "(mdlm) and block models can be distilled (SDTT); the consistency "
                           "distillation of uniform-noise models (Duo) is not implemented")
    block = None
    if obj.blockwise:
        if d.block_reveal_last or d.block_reveal_width < 1:
            raise RedraftError("block models with ordered reveals (diffusion.block_reveal_last "
                               "or block_reveal_width < 1) cannot be distilled yet: their "
                               "positions have their own times")
        block = (d.block_size, d.block_shift)
    process = MaskProcess(mask_id, make_schedule(d.schedule, d.schedule_eps))
    return Grid(process, bos_id, steps, block)


def draw_times(x0: torch.Tensor, grid: Grid, generator: torch.Generator | None = None):
    """Per-position times (t, m, s) (B, L) float64: t = k / N with k ~ U{1..N} per row (per
    block for block models), s = t - 1/N, m = (t + s) / 2."""
    B, L = x0.shape
    units = 1 if grid.block is None else -(-L // grid.block[0])
    k = torch.randint(1, grid.steps + 1, (B, units), generator=generator, device=x0.device)
    t = k.double() / grid.steps
    t = t.expand(B, L) if grid.block is None else per_position(t, L, grid.block[0])
    s = t - 1.0 / grid.steps
    return t, (t + s) / 2, s


def _call(model, x: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, grid: Grid):
    """The backbone's logits (B, L, V) of p(x0 | x) at per-position times t (B, L)."""
    if grid.block is None:
        return model(x, t[:, 0].float())
    b, shift = grid.block
    y, y0 = block_inputs(x, x0, b, shift, grid.bos_id)
    return model(y, t.float(), x0=y0)  # each block beside the clean blocks before it


def _denoiser(logits: torch.Tensor, mask_id: int) -> torch.Tensor:
    """SUBS: float64 probabilities (..., V) over the clean tokens (the mask excluded)."""
    logits = logits.double().clone()
    logits[..., mask_id] = -torch.inf
    return torch.softmax(logits, dim=-1)


@torch.no_grad()
def teacher_targets(teacher, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                    m: torch.Tensor, s: torch.Tensor, grid: Grid, weighting: str = "marginal",
                    generator: torch.Generator | None = None,
                    dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets (B, L, V) float64, weights (B, L) float64) of the teacher's two half steps
    t -> m -> s from xt (B, L); meaningful at the masked positions of xt (see the module
    docstring for the targets and the two weightings)."""
    mask_id = grid.mask_id
    masked = xt == mask_id
    with _autocast(xt.device, dtype):
        q1 = _denoiser(_call(teacher, xt, x0, t, grid), mask_id)  # (B, L, V)
    p_tm = grid.process.unmask_probability(t, m)  # (B, L)
    u = torch.rand(xt.shape, generator=generator, device=xt.device, dtype=torch.float64)
    first = masked & (u < p_tm)
    z = xt.clone()
    if first.any():
        uz = torch.rand(int(first.sum()), generator=generator, device=xt.device,
                        dtype=torch.float64)
        z[first] = sample(q1[first], uz)
    with _autocast(xt.device, dtype):
        q2 = _denoiser(_call(teacher, z, x0, m, grid), mask_id)
    targets = torch.where(first[..., None], q1, q2)
    if weighting == "sdtt":
        return targets, torch.ones_like(p_tm)
    p_ts = grid.process.unmask_probability(t, s)
    w1 = p_tm / p_ts  # P(revealed in the first half | revealed by s)
    weights = torch.where(first, w1 / p_tm, (1.0 - w1) / (1.0 - p_tm))
    return targets, weights


def divergence(targets: torch.Tensor, student_logits: torch.Tensor, mask_id: int,
               kind: str = "kl") -> torch.Tensor:
    """(B, L) D(target || student) per position: "kl" sum_v q (log q - log p), or "tvd"
    1/2 sum_v |q - p|; p is the student's SUBS denoiser (float32, differentiable)."""
    logits = student_logits.float().clone()
    logits[..., mask_id] = -torch.inf
    q = targets.float()
    if kind == "kl":
        logp = torch.log_softmax(logits, dim=-1).clamp_min(-1e4)  # the mask: q = 0 there
        return (torch.xlogy(q, q) - q * logp).sum(-1)
    if kind == "tvd":
        return 0.5 * (q - torch.softmax(logits, dim=-1)).abs().sum(-1)
    raise RedraftError(f"divergence {kind!r}: expected one of {list(DIVERGENCES)}")


def distill_loss(student, teacher, x0: torch.Tensor, grid: Grid, kind: str = "kl",
                 weighting: str = "marginal", generator: torch.Generator | None = None,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
    """The scalar loss of one batch of clean windows x0 (B, L): the weighted divergence of the
    student's one step from the teacher's two, averaged over the masked positions."""
    t, m, s = draw_times(x0, grid, generator)
    keep = grid.process.schedule.alpha(t)
    u = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=torch.float64)
    xt = torch.where(u >= keep, grid.mask_id, x0)
    targets, weights = teacher_targets(teacher, x0, xt, t, m, s, grid, weighting, generator,
                                       dtype)
    with _autocast(x0.device, dtype):
        logits = _call(student, xt, x0, t, grid)
    per = divergence(targets, logits, grid.mask_id, kind) * weights.float()
    masked = xt == grid.mask_id
    return torch.where(masked, per, 0.0).sum() / masked.sum().clamp_min(1)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


# --- rounds, checkpoints, resume ---------------------------------------------------------


@dataclass
class DistillResult:
    out: Path
    checkpoints: list[Path]
    """The final checkpoint of each round, round 1 first."""
    student_steps: list[int]
    """The number of steps each round's student was distilled for."""
    history: list[dict] = field(default_factory=list)


def distill(teacher: str | Path, out: str | Path, settings: DistillSettings | None = None, *,
            resume: bool = False, overwrite: bool = False, **knobs) -> DistillResult:
    """Distil `teacher` (a checkpoint or run folder, "default", or hf:<a redraft export>)
    into OUT/round-1 .. round-R (see the module docstring). settings: a DistillSettings;
    knobs override its fields (e.g. rounds=3, steps_per_round=100).

    A fresh start into an OUT that holds a distillation run is refused unless `resume`
    (continue it: finished rounds are kept, an interrupted round continues from its newest
    checkpoint, more rounds than before are added; an empty OUT starts afresh) or `overwrite`
    (move it aside to OUT.old-N first). Returns the rounds' final checkpoints.
    """
    settings = dataclasses.replace(settings or DistillSettings(), **knobs).check()
    if resume and overwrite:
        raise RedraftError("--overwrite starts afresh and --resume continues: give one of them")
    check_device(settings.device)
    out = Path(out)
    check_output_dir(out, "--out")
    source = init_source(str(teacher))  # "default", run folders, hf: exports; verified
    try:  # refuse what SDTT does not apply to before any work
        grid_of(source.config, source.tokenizer.mask_id, source.tokenizer.eos_id, 1)
    except RedraftError as e:
        raise RedraftError(f"teacher {str(teacher)!r}: {e}") from None
    origin = {"teacher": str(teacher), "teacher_path": str(source.path)}
    _prepare_out(out, settings, origin, resume, overwrite)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = torch.device(settings.device)
    length = settings.length or source.config.model.seq_len
    if length > source.config.model.seq_len:
        raise RedraftError(f"length={length}: the model's seq_len is "
                           f"{source.config.model.seq_len}")
    _, data = load_data(source.config.data, length, source.tokenizer)
    batches = Batches(data.train, length, settings.batch_size, seed=settings.seed)
    done, steps, history = [], [], []
    teacher_ckpt: Checkpoint = source
    with _StopSignals() as stop:
        for r in range(1, settings.rounds + 1):
            path, rec = _round(r, teacher_ckpt, source, origin, out, settings, batches, device,
                               stop)
            done.append(path)
            steps.append(settings.student_steps(r))
            history += rec
            if r < settings.rounds:
                teacher_ckpt = load_checkpoint(path, "cpu")
    return DistillResult(out, done, steps, history)


def _prepare_out(out: Path, settings: DistillSettings, origin: dict, resume: bool,
                 overwrite: bool) -> None:
    manifest = out / MANIFEST
    rounds = sorted(out.glob("round-*")) if out.is_dir() else []
    if manifest.is_file() or rounds:
        if overwrite:
            warnings.warn(f"moved the earlier distillation run in {str(out)!r} to "
                          f"{str(move_aside(out))!r} (--overwrite)", stacklevel=3)
        elif not resume:
            raise RedraftError(f"--out {str(out)!r} already holds a distillation run: continue "
                               "it with --resume, choose another --out, or give --overwrite to "
                               "move it aside")
        elif manifest.is_file():
            try:
                earlier = json.loads(manifest.read_text())
            except (OSError, ValueError) as e:
                raise RedraftError(f"{str(manifest)!r} is unreadable ({e}): move the run "
                                   "aside or give --overwrite") from None
            now = {**settings.record(), **origin}
            for key in (*DistillSettings.SAME, "teacher"):
                if earlier.get(key) != now[key]:
                    raise RedraftError(f"cannot resume {str(out)!r}: it was distilled with "
                                       f"{key}={earlier.get(key)!r}, this run asks for "
                                       f"{now[key]!r}; give the same value, or another --out")
    out.mkdir(parents=True, exist_ok=True)
    tmp = manifest.with_name(f".{MANIFEST}.tmp")
    tmp.write_text(json.dumps({**settings.record(), **origin}, indent=2))
    os.replace(tmp, manifest)


def _finished(run_dir: Path) -> Path | None:
    """The round's final checkpoint, if the round is over."""
    found = list_checkpoints(run_dir)
    if found and read_meta(found[-1]).get("distill", {}).get("done"):
        return found[-1]
    return None


def _resume_state(run_dir: Path) -> tuple[Path | None, dict | None]:
    """The newest checkpoint of an unfinished round that loads, with its training state; a
    torn one is skipped with a warning for the one before."""
    for ckpt in checkpoint_folders(run_dir):
        try:
            return ckpt, load_train_state(ckpt)
        except RedraftError as e:
            warnings.warn(f"skipping torn checkpoint: {e}", stacklevel=4)
    return None, None


def _round(r: int, teacher: Checkpoint, source: Checkpoint, origin: dict, out: Path,
           s: DistillSettings, batches: Batches, device: torch.device,
           stop: _StopSignals) -> tuple[Path, list[dict]]:
    run_dir = out / f"round-{r}"
    for line in clean_run_dir(run_dir):
        warnings.warn(line, stacklevel=3)
    final = _finished(run_dir)
    log_path = run_dir / "metrics.jsonl"
    if final is not None:
        return final, _trim_log(log_path, s.steps_per_round)
    cfg = teacher.config
    grid = grid_of(cfg, teacher.tokenizer.mask_id, teacher.tokenizer.eos_id,
                   s.student_steps(r))
    dtype = autocast_dtype(s.precision, device)
    frozen = teacher.model.to(device).eval().requires_grad_(False)
    torch.manual_seed(s.seed)
    student = build_model(cfg, teacher.tokenizer.vocab_size).to(device)
    ckpt, state = _resume_state(run_dir)
    optimizer = torch.optim.AdamW(student.parameters(), lr=s.lr, weight_decay=0.0)
    start, elapsed = 0, 0.0
    if state is not None:
        if state.get("round") != r:
            raise RedraftError(f"cannot resume {str(ckpt)!r}: it holds round {state.get('round')}"
                               f", not {r}")
        student.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start, elapsed = state["step"], state["elapsed"]
    else:
        fit_weights(student, weights_to_save(frozen), f"the teacher {str(teacher.path)!r}")
    student.train()
    run_dir.mkdir(parents=True, exist_ok=True)
    history = _trim_log(log_path, start)
    config = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train,
                                                                out_dir=str(run_dir)))
    meta = {**s.record(), "round": r, "teacher": str(teacher.path),
            "teacher_steps": s.student_steps(r - 1), "student_steps": s.student_steps(r),
            "origin": origin["teacher"], "origin_path": origin["teacher_path"]}
    data_meta = {k: source.meta[k] for k in ("bytes_per_token", "train_tokens")
                 if k in source.meta}

    def save(step: int, done: bool) -> Path:
        state = None if done else {"model": student.state_dict(),
                                   "optimizer": optimizer.state_dict(),
                                   "rng": torch.get_rng_state(), "step": step,
                                   "elapsed": elapsed, "round": r}
        return save_checkpoint(run_dir, step, config, student, teacher.tokenizer,
                               train_state=state, keep=1,
                               extra_meta={**data_meta, "distill": {**meta, "steps": step,
                                                                    "done": done}})

    bar = tqdm(total=s.steps_per_round, initial=start, unit="step",
               desc=f"distill round {r}/{s.rounds} ({s.student_steps(r - 1)} -> "
                    f"{s.student_steps(r)} steps)",
               disable=not (s.progress and show_progress()), dynamic_ncols=True)
    step = start
    stop.armed = True
    while step < s.steps_per_round:
        t0 = time.perf_counter()
        lr = lr_at(s, step, step / s.steps_per_round)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x0 = batches.batch(step).to(device)
        g = step_generator(s.seed * 1_000 + r, step, device)
        loss = distill_loss(student, frozen, x0, grid, s.divergence, s.weighting, g, dtype)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(student.parameters(), s.grad_clip))
        if not (math.isfinite(norm) and math.isfinite(loss.item())):
            bar.close()
            raise RedraftError(f"distillation diverged in round {r} at step {step + 1}: loss "
                               f"{loss.item()}, gradient norm {norm}; lower --lr")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        elapsed += time.perf_counter() - t0
        record = {"step": step, "loss": loss.item(), "lr": lr, "grad_norm": norm,
                  "elapsed_s": elapsed, "round": r}
        _append_log(log_path, record)
        history.append(record)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if stop.signum is not None and step < s.steps_per_round:
            bar.close()
            raise TrainingStopped(stop.signum, step, save(step, False))
        if s.save_every and step % s.save_every == 0 and step < s.steps_per_round:
            save(step, False)
    stop.armed = False
    bar.close()
    return save(step, True), history


__all__ = ["DistillResult", "DistillSettings", "distill", "distill_loss", "divergence",
           "teacher_targets"]
