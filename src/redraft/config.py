"""Typed configuration: dataclasses with documented fields, loaded from YAML plus dotted overrides.

Every value is checked against its field's type, and an unknown key is an error, so a typo
in a config file or on the command line fails loudly instead of being silently ignored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from redraft.errors import RedraftError
from redraft.validate import MAX_TRAIN_SEED, read_text


@dataclass
class DataConfig:
    corpus: str = "stdlib"
    """Corpus: "stdlib", a file, folder or glob, a .jsonl file, or "hf:<name-or-path>[#split]"."""
    text_field: str = "text"
    """Field holding the text in JSONL / Hugging Face records."""
    tokenizer: str = "byte"
    """Tokenizer kind: "char", "byte", "bpe" (trained on the corpus) or "hf" (tokenizer_path)."""
    tokenizer_path: str | None = None
    """For tokenizer "hf": a tokenizer.json file or a tokenizer folder."""
    vocab_size: int = 4096
    """For tokenizer "bpe": vocabulary size, special tokens included."""
    val_fraction: float = 0.1
    """Share of the token stream (its tail) held out for validation."""
    cache_dir: str | None = None
    """Where token shards are cached; default $REDRAFT_CACHE or ~/.cache/redraft."""
    shuffle_documents: bool = True
    """Shuffle documents (seeded) before the train/validation cut (representative validation)."""


@dataclass
class ModelConfig:
    n_layer: int = 4
    """Transformer blocks."""
    n_head: int = 4
    """Attention heads; d_model must be divisible by it."""
    d_model: int = 128
    """Width of the residual stream."""
    mlp_ratio: int = 4
    """MLP hidden width as a multiple of d_model."""
    seq_len: int = 256
    """Context length: training window and generation canvas."""
    dropout: float = 0.0
    """Dropout on attention and MLP outputs during training."""
    tie_weights: bool = True
    """Share the token embedding with the output projection."""
    time_conditioning: bool = False
    """Add an embedding of t to the input (masked diffusion needs none: the mask count tells t)."""
    rope_base: float = 10000.0
    """Base of the rotary position embedding frequencies."""


@dataclass
class DiffusionConfig:
    objective: str = "mdlm"
    """"mdlm" (masked-diffusion ELBO, SUBS denoiser; mask process only), "sedd" (score
    entropy, the network outputs the log concrete score), "udlm" (mean-parameterised
    continuous-time ELBO as in UDLM/Duo), "block" (block diffusion, BD3-LM: masked diffusion
    inside blocks of block_size, autoregressive across them, block-causal attention with an
    exact KV cache; mask process only) or "ar" (causal twin, exact NLL)."""
    process: str = "mask"
    """Noise process: "mask" (absorbing), "uniform" (any id to any id) or "mixture" (a resampled
    token is the mask w.p. mask_share, else uniform); see redraft.diffusion.PROCESSES."""
    schedule: str = "loglinear"
    """Noise schedule: "loglinear", "linear", "geometric" or "cosine" (diffusion.schedules)."""
    schedule_eps: float | None = None
    """alpha(1), what is left of the data at t = 1 (None: the schedule's default, 0 for
    loglinear and cosine). The mask process needs 0; sedd with uniform/mixture needs > 0 (the
    score must stay finite at t = 1); eps > 0 adds a small prior KL term to every bound."""
    mask_share: float = 0.5
    """Mixture process only: the probability that a resampled token becomes the mask."""
    train_t_min: float = 1e-3
    """Smallest t drawn in training (variance control); evaluation always integrates over (0, 1]."""
    train_t_max: float = 1.0
    """Largest t drawn in training (with train_t_min: BD3-LM's clipped schedule [beta, omega],
    a variance knob for objective "block"; below 1 the training loss is no longer a bound).
    Applies where t is drawn (elbo_estimator "time"); evaluation always uses (0, 1]."""
    block_size: int = 16
    """Objective "block": positions per block (1 is left to right, seq_len is one masked
    canvas); seq_len must be a multiple of it."""
    block_shift: bool = True
    """Objective "block": keep the AR twin's next-token alignment (the output at position j-1
    predicts token j; a block's first token is predicted from the clean last token of the
    block before, or bos). With it, block_size 1 is exactly the AR twin and weights adapted
    from it start aligned; without it (BD3-LM's), block_size seq_len is exactly mdlm."""
    block_reveal_width: float = 1.0
    """Objective "block": the share w of the time axis over which each position of a block
    is revealed. 1 (BD3-LM) reveals every position on all of [0, 1], in uniformly random
    order; w < 1 gives in-block position j its own window [c_j, c_j + w], c_j = (1 - w)
    (b - 1 - j) / (b - 1), so a block is revealed roughly left to right in overlapping
    windows (w <= 1/b: strictly left to right, one position per window). The bound stays a
    bound (per-position schedules, diffusion/block.py); it needs elbo_estimator "time"."""
    block_reveal_last: bool = False
    """Objective "block" with block_shift: reveal each block's last position after all its
    others. With the next-token alignment no position of a block reads the block's last
    token (it is the first input of the next block), so revealing it early only loses what
    the others could not see; revealed last, it is predicted from all of them (an AR-style
    term, read off the clean pass the training step already runs). Training, the bound and
    every sampler follow it (diffusion/block.py)."""
    hybrid_draft_weight: float = 0.3
    """Objective "hybrid": the weight of the draft blocks' diffusion loss beside the clean
    stream's next-token loss (Nemotron-Labs-Diffusion found about 0.3 best)."""
    hybrid_draft_noise: str = "partial"
    """Objective "hybrid": how training noises the draft blocks: "partial" (a noise level
    per block, as block diffusion: drafts and block decoding both learn) or "all" (every
    draft token masked, as TiDAR: what self-speculative drafting sees; needs
    train_weighting "token")."""
    hybrid_draft_share: float = 1.0
    """Objective "hybrid": the share of blocks that carry a draft block in a training step
    (the same blocks for every row of the step). Below 1 the pass is shorter (cheaper)."""
    elbo_estimator: str = "count"
    """How the masked ELBO is estimated in training (objectives mdlm and block, per block;
    the others always draw t): "time" (draw t, mask each token w.p.
    1 - alpha(t), weight -alpha'/(1 - alpha)) or "count" (draw the number of masks k, weight
    1/k: the same bound with t integrated out analytically, lower variance)."""
    train_weighting: str = "token"
    """How training weighs the masked tokens (objectives mdlm and block; the others train on
    their bound): "elbo" (each sequence's ELBO estimate, so the
    training loss is the bound) or "token" (every masked token of the batch weighs the same, a
    reweighted ELBO that emphasises heavily masked sequences and, measured on tinyshakespeare,
    reached a lower validation bound in equal time; validation always reports the bound)."""
    cond_prefix_max: int = 0
    """Prompt-conditioned training (objective mdlm; 0 = off): each training sequence gets a
    prefix of U{0..cond_prefix_max} tokens kept clean and not scored, the case a prompted
    sampler meets. Validation still reports the unconditional bound."""
    cond_dropout: float = 0.1
    """With cond_prefix_max > 0: the share of sequences whose prefix is masked instead (and
    still not scored): the unconditional case that classifier-free guidance contrasts with
    (sampling/guidance.py)."""


@dataclass
class TrainConfig:
    batch_size: int = 16
    """Global batch: sequences per optimizer step over all processes together. Under torchrun
    each of the world_size processes computes batch_size / world_size of them, in grad_accum
    micro-batches, so batch size, lr and the loss mean the same at any world size."""
    grad_accum: int = 1
    """Micro-batches per process and optimizer step (a memory knob: the gradient is the same);
    batch_size must be divisible by world_size * grad_accum."""
    max_steps: int = 1000
    """Optimizer steps; also the horizon of the cosine decay unless time_budget_s is set."""
    time_budget_s: float | None = None
    """Stop after this much training wall-clock; the LR decay then follows elapsed time."""
    lr: float = 2e-3
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak."""
    warmup_steps: int = 100
    """Linear warmup steps."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay (matrices only, not norms or embeddings)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.99
    """AdamW beta2."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    ema: float = 0.999
    """EMA decay of the weights used for evaluation and sampling (0 disables)."""
    eval_every: int = 250
    """Validate every this many steps (and at the end)."""
    eval_batches: int = 16
    """Validation batches per evaluation."""
    save_every: int = 0
    """Checkpoint every this many steps (0: only at the end)."""
    save_every_minutes: float | None = None
    """Also checkpoint when this many wall-clock minutes have passed since the last one."""
    log_every: int = 10
    """Write a metrics line every this many steps."""
    out_dir: str = "runs/default"
    """Checkpoint and log folder."""
    seed: int = 0
    """Seed for initialisation, data order and noise."""
    device: str = "cpu"
    """Torch device."""
    threads: int | None = None
    """torch.set_num_threads (None leaves the default)."""
    precision: str = "fp32"
    """"fp32", or "bf16" (autocast; weights and optimizer stay fp32), or "auto" (bf16 where the
    hardware has fast bf16 matmuls: CUDA, or a CPU with AVX512-BF16/AMX)."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints a run folder keeps."""
    progress: bool = True
    """Show a progress bar (on stderr, when it is a terminal and $CI is unset)."""
    parallel: str = "ddp"
    """How a torchrun launch (world size > 1) shares the model: "ddp" (each process holds it
    all; gradients are averaged) or "fsdp" (FSDP2 fully_shard: parameters, gradients and
    optimizer state are split across processes). Ignored in a single process."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass (less memory, more compute)."""
    init_from: str | None = None
    """Start from the weights of this redraft model (a ckpt-* folder, a run folder: its newest,
    "default", "default-ar", or hf:<a folder redraft export wrote>; verified like any load),
    e.g. the AR twin or a masked model for objective "block": weights only (a fresh optimizer,
    step 0), and its tokenizer. Every tensor must fit this config's model. Ignored when
    resuming."""


@dataclass
class ServeConfig:
    """`redraft serve`'s limits and their defaults (the CLI's flags read them)."""

    host: str = "127.0.0.1"
    """Bind address (loopback: only this machine can connect)."""
    port: int = 8000
    max_batch: int = 64
    """Rows (sequences) per network call in one tick."""
    max_rows: int | None = None
    """Rows admitted at once, >= max_batch (None: 2 x max_batch, so a small request runs beside
    a maximal one; = max_batch: first come, first served)."""
    max_queue: int = 256
    """Requests waiting to join; more get 429."""
    max_steps: int = 4096
    """The largest `steps` a request may ask for."""
    max_work: int = 1 << 24
    """The most work one request may ask for: n x steps x length tokens (AR: n x length)."""
    max_prompt_tokens: int | None = None
    """The longest prompt (+ suffix) in tokens (None: the model's context)."""
    max_body_bytes: int = 1 << 20
    """Request body bytes; more gets 413 before it is read."""
    body_timeout_s: float = 15.0
    """Seconds a request body may take to arrive (then 408)."""
    header_timeout_s: float = 10.0
    """Seconds a connection may take to send a request's headers (then 408)."""
    keep_alive_s: float = 5.0
    """Seconds an idle keep-alive connection stays open."""
    max_connections: int = 1000
    """Open connections + requests in progress; more get 503."""
    timeout_s: float = 300.0
    """Seconds a request may take, queue included (then 504)."""
    grace_s: float = 10.0
    """Seconds in-flight requests get to finish on shutdown."""


SERVE = ServeConfig()


@dataclass
class BenchConfig:
    """`redraft bench`: what to run and its defaults (the CLI's flags read them)."""

    checkpoints: list[str] = field(default_factory=list)
    out_dir: str = "runs/bench"
    judge: str | None = None
    samplers: list[str] | None = None
    """Sampler specs (eval.bench.parse_spec); None: each model's default."""
    steps: list[int] = field(default_factory=lambda: [8, 16, 64, 256])
    temperatures: list[float] = field(default_factory=lambda: [1.0])
    num_samples: int = 32
    length: int | None = None
    seed: int = 0
    eval_batches: int | None = None
    """Validation batches for the likelihood table (None: all)."""
    mauve: bool = False
    code: bool | None = None
    """None: decide from the corpus (Python source -> parse rate)."""
    sweep: str = "quick"
    """An eval.speed.PRESETS name or "none"."""
    command: str = ""
    tasks: list[str] = field(default_factory=lambda: ["samples"])
    """What to run (eval.bench.TASKS): "samples" (the table above), "frontier" (gen-ppl vs
    entropy curves, eval/frontier.py), "humaneval-infill" (eval/humaneval.py)."""
    ngram: int = 4
    """The frontier's naive floor: the order of its n-gram sampler."""
    humaneval_tasks: int | None = None
    """Single-line HumanEval tasks, spread over the 164 problems (None: all 164)."""
    humaneval_hole: int | None = None
    """None: oracle-length holes; N: flexible holes of N tokens."""


BENCH = BenchConfig()
BENCH_TASKS = ("samples", "frontier", "humaneval-infill")
"""The names --tasks takes (eval.bench runs them)."""


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> Config:
        """Check cross-field constraints; returns self."""
        m, t, d = self.model, self.train, self.diffusion
        _require(m.d_model % m.n_head == 0, f"model.d_model={m.d_model} is not divisible by "
                 f"model.n_head={m.n_head}")
        _require((m.d_model // m.n_head) % 2 == 0, "model.d_model / model.n_head must be even "
                 f"for rotary embeddings, got {m.d_model // m.n_head}")
        for name in ("n_layer", "n_head", "d_model", "mlp_ratio", "seq_len"):
            _require(getattr(m, name) >= 1, f"model.{name}={getattr(m, name)}: expected >= 1")
        for name in ("batch_size", "grad_accum", "max_steps", "eval_every", "eval_batches",
                     "log_every"):
            _require(getattr(t, name) >= 1, f"train.{name}={getattr(t, name)}: expected >= 1")
        _require(t.batch_size % t.grad_accum == 0, f"train.batch_size={t.batch_size} is not "
                 f"divisible by train.grad_accum={t.grad_accum}")
        _require(t.lr > 0, f"train.lr={t.lr}: expected > 0")
        _require(0 <= t.ema < 1, f"train.ema={t.ema}: expected 0 <= ema < 1")
        _require(0 <= m.dropout < 1, f"model.dropout={m.dropout}: expected 0 <= dropout < 1")
        _validate_diffusion(d)
        _require(d.elbo_estimator in ("time", "count"),
                 f"diffusion.elbo_estimator={d.elbo_estimator!r}: expected 'time' or 'count'")
        _require(d.train_weighting in ("elbo", "token"),
                 f"diffusion.train_weighting={d.train_weighting!r}: expected 'elbo' or 'token'")
        _require(0 <= d.train_t_min < 1, f"diffusion.train_t_min={d.train_t_min}: expected [0, 1)")
        _require(d.train_t_min < d.train_t_max <= 1, f"diffusion.train_t_max={d.train_t_max}: "
                 f"expected train_t_min={d.train_t_min} < train_t_max <= 1")
        from redraft.diffusion import objective

        obj = objective(d.objective)  # a known name: _validate_diffusion checked it
        _require(d.train_t_max == 1 or d.elbo_estimator == "time" or not obj.count_estimator,
                 f"diffusion.train_t_max={d.train_t_max} clips drawn times: it needs "
                 "diffusion.elbo_estimator 'time', got 'count'")
        _require(0 < d.block_reveal_width <= 1, f"diffusion.block_reveal_width="
                 f"{d.block_reveal_width}: expected 0 < width <= 1")
        if d.block_reveal_width < 1:
            _require(obj.blockwise, f"diffusion.block_reveal_width={d.block_reveal_width} is "
                     f"for objective 'block', got {d.objective!r}")
            _require(d.elbo_estimator == "time", f"diffusion.block_reveal_width="
                     f"{d.block_reveal_width} orders the reveals inside a block: it needs "
                     "diffusion.elbo_estimator 'time' (the count estimator assumes uniform order)")
            _require(not m.time_conditioning, f"diffusion.block_reveal_width="
                     f"{d.block_reveal_width}: a time-conditioned backbone is not supported "
                     "(positions of a block have different times)")
        if d.block_reveal_last:
            _require(obj.blockwise and d.block_shift, "diffusion.block_reveal_last is for "
                     f"objective 'block' with block_shift true, got {d.objective!r} with "
                     f"block_shift={d.block_shift}")
            _require(not m.time_conditioning, "diffusion.block_reveal_last: a time-conditioned "
                     "backbone is not supported (the last position is read at t = 0)")
        if obj.hybrid:
            _require(d.block_size >= 2, f"diffusion.block_size={d.block_size}: a hybrid's "
                     "draft blocks need at least 2 positions")
            _require(d.hybrid_draft_weight >= 0, f"diffusion.hybrid_draft_weight="
                     f"{d.hybrid_draft_weight}: expected >= 0")
            _require(d.hybrid_draft_noise in ("partial", "all"), f"diffusion.hybrid_draft_noise="
                     f"{d.hybrid_draft_noise!r}: expected 'partial' or 'all'")
            _require(d.hybrid_draft_noise == "partial" or d.train_weighting == "token",
                     "diffusion.hybrid_draft_noise 'all' trains at t = 1 only: it needs "
                     "diffusion.train_weighting 'token'")
            _require(0 < d.hybrid_draft_share <= 1, f"diffusion.hybrid_draft_share="
                     f"{d.hybrid_draft_share}: expected 0 < share <= 1")
            _require(not m.time_conditioning, "objective 'hybrid': a time-conditioned backbone "
                     "is not supported (its clean stream is a plain causal LM)")
        if obj.blockwise or obj.hybrid:
            _require(1 <= d.block_size <= m.seq_len and m.seq_len % d.block_size == 0,
                     f"diffusion.block_size={d.block_size}: expected a divisor of model.seq_len="
                     f"{m.seq_len}")
        _require(0 <= self.data.val_fraction < 1,
                 f"data.val_fraction={self.data.val_fraction}: expected 0 <= val_fraction < 1")
        _require(t.precision in ("fp32", "bf16", "auto"),
                 f"train.precision={t.precision!r}: expected 'fp32', 'bf16' or 'auto'")
        _require(t.parallel in ("ddp", "fsdp"),
                 f"train.parallel={t.parallel!r}: expected 'ddp' or 'fsdp'")
        _require(t.save_every >= 0, f"train.save_every={t.save_every}: expected >= 0")
        _require(t.save_every_minutes is None or t.save_every_minutes > 0,
                 f"train.save_every_minutes={t.save_every_minutes}: expected > 0 or null")
        _require(t.keep_checkpoints >= 1, f"train.keep_checkpoints={t.keep_checkpoints}: "
                 "expected >= 1")
        _require(0 <= t.seed <= MAX_TRAIN_SEED, f"train.seed={t.seed}: expected 0 <= seed <= "
                 f"{MAX_TRAIN_SEED}")
        _require(t.grad_clip >= 0, f"train.grad_clip={t.grad_clip}: expected >= 0 (0 disables)")
        _require(t.warmup_steps >= 0, f"train.warmup_steps={t.warmup_steps}: expected >= 0")
        _require(t.weight_decay >= 0, f"train.weight_decay={t.weight_decay}: expected >= 0")
        _require(0 <= t.min_lr_ratio <= 1, f"train.min_lr_ratio={t.min_lr_ratio}: expected "
                 "0 <= min_lr_ratio <= 1")
        for name in ("beta1", "beta2"):
            _require(0 <= getattr(t, name) < 1, f"train.{name}={getattr(t, name)}: expected "
                     "0 <= beta < 1")
        _require(t.threads is None or t.threads >= 1, f"train.threads={t.threads}: expected "
                 ">= 1 or null")
        _require(2 <= self.data.vocab_size <= 2**20, f"data.vocab_size={self.data.vocab_size}: "
                 f"expected 2..{2**20}")
        _require(m.rope_base > 0, f"model.rope_base={m.rope_base}: expected > 0")
        _require(t.time_budget_s is None or t.time_budget_s > 0,
                 f"train.time_budget_s={t.time_budget_s}: expected > 0 or null")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _validate_diffusion(d: DiffusionConfig) -> None:
    from redraft.diffusion import OBJECTIVES, PROCESSES, SCHEDULES

    _require(d.objective in OBJECTIVES, f"diffusion.objective={d.objective!r}: "
             f"expected one of {list(OBJECTIVES)}")
    obj = OBJECTIVES[d.objective]
    _require(d.process in PROCESSES, f"diffusion.process={d.process!r}: expected one of "
             f"{list(PROCESSES)}")
    _require(d.schedule in SCHEDULES, f"diffusion.schedule={d.schedule!r}: expected one of "
             f"{list(SCHEDULES)}")
    _require(0 < d.mask_share < 1, f"diffusion.mask_share={d.mask_share}: expected 0 < "
             "mask_share < 1")
    _require(d.cond_prefix_max >= 0, f"diffusion.cond_prefix_max={d.cond_prefix_max}: "
             "expected >= 0 (0 = no prompt conditioning)")
    _require(0 <= d.cond_dropout <= 1, f"diffusion.cond_dropout={d.cond_dropout}: expected "
             "0 <= cond_dropout <= 1")
    conditioned = [name for name, o in OBJECTIVES.items() if o.prompt_conditioning]
    _require(d.cond_prefix_max == 0 or obj.prompt_conditioning, f"diffusion.cond_prefix_max="
             f"{d.cond_prefix_max} needs objective {' or '.join(map(repr, conditioned))} (a "
             f"masked prompt is the condition dropped), got {d.objective!r}")
    if obj.autoregressive:
        return
    _require(d.process in obj.processes, f"diffusion.objective={d.objective!r} does "
             f"not apply to diffusion.process={d.process!r}: it needs one of "
             f"{list(obj.processes)}")
    eps = SCHEDULES[d.schedule](d.schedule_eps).eps  # raises naming a bad eps
    _require(not (d.process == "mask" and eps > 0), f"diffusion.schedule_eps={eps:g} with "
             f"schedule {d.schedule!r}: the mask process needs alpha(1) = 0 (eps 0, schedule "
             "loglinear or cosine), else x1 is not all masks and the bound is infinite")
    _require(not (obj.parameterisation == "score" and d.process != "mask" and eps == 0),
             f"diffusion.schedule_eps=0 with objective {d.objective!r} and process {d.process!r}: "
             "expected eps > 0 (e.g. 1e-3) so the score and the bound stay finite at t = 1")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise RedraftError(message)


def _check_type(value: Any, tp: Any, name: str) -> Any:
    """Return value converted to tp (int -> float is allowed), or raise naming the key."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, name)
            except RedraftError:
                pass
        raise RedraftError(f"config key {name}={_shown(value)}: expected {_type_name(tp)}")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value) if abs(value) < 2**63 else math.inf
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads "3e-4" (no dot) as a string; accept it as the float it means.
        with contextlib.suppress(ValueError):
            value = float(value)
    if tp is float and type(value) is float and not math.isfinite(value):
        # No setting means anything at inf or nan (train.lr=inf trains to all-NaN weights).
        raise RedraftError(f"config key {name}={value!r}: expected a finite number")
    if tp is int and type(value) is int and not -(2**63) <= value < 2**63:
        raise RedraftError(f"config key {name}={_shown(value)}: expected an integer that fits "
                           "in 64 bits")
    if tp in (int, float, str, bool) and type(value) is tp:
        return value
    raise RedraftError(
        f"config key {name}={_shown(value)} ({type(value).__name__}): expected {_type_name(tp)}"
    )


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} chars)"


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    if not isinstance(values, dict):
        raise RedraftError(f"config section {prefix or '<root>'}: expected a mapping, "
                           f"got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = f" in section {prefix[:-1]!r}" if prefix else ""
        raise RedraftError(f"unknown config key(s) {unknown}{where}: "
                           f"expected one of {sorted(known)}")
    kwargs = {}
    for key, value in values.items():
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _check_type(value, tp, prefix + key)
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build and validate a Config from nested dicts (e.g. parsed YAML or config.json)."""
    return _build(Config, values or {}, "").validate()


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """["train.lr=3e-4", "model.n_layer=2"] -> nested dict; values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.removeprefix("--").partition("=")
        if not sep or not key:
            raise RedraftError(f"override {item!r}: expected section.key=value")
        value = _yaml(raw, f"override {_shown(item)}") if raw.strip() else raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RedraftError(f"override {_shown(item)}: {part!r} was given a value by an "
                                   "earlier override, so it has no keys")
        node[parts[-1]] = value
    return out


def _yaml(text: str, what: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RedraftError(f"{what} is not valid YAML: {e}") from None
    except ValueError as e:  # e.g. an integer past Python's 4300-digit conversion limit
        raise RedraftError(f"{what}: {e}") from None


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge, update wins."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (or defaults when path is None) and apply dotted overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RedraftError(f"config file {str(path)!r} does not exist")
        values = _yaml(read_text(path, "config file"), f"config file {str(path)!r}") or {}
        if not isinstance(values, dict):
            raise RedraftError(f"config file {str(path)!r}: expected a mapping at the top level")
    return config_from_dict(merge(values, parse_overrides(list(overrides))))
