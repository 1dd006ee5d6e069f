"""`redraft.load(spec) -> Model`: one object for every kind of model, and the one place that
tells an autoregressive twin from a diffusion model.

    m = redraft.load()                    # the default model, shipped in the package
    m = redraft.load("runs/shakespeare-mdlm")
    print(m.generate("ROMEO:", max_new_tokens=64))
    m.infill("def add(a, b):\\n    <|mask:16|>\\n")
    m.nll(["To be, or not to be"])

A Model holds a backbone (models.Backbone: tokens [+ t] [+ cache] -> logits), its tokenizer,
its objective's entry (diffusion.registry: what the logits mean) and, for diffusion, its noise
process. `redraft sample`, `eval`, `bench`, `serve` and `demo` all go through it; the server
drives the same step states (`start`) that `generate` runs to the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from redraft.config import SAMPLE, Config
from redraft.data import Tokenizer
from redraft.diffusion import Objective, Process, objective
from redraft.errors import RedraftError
from redraft.models import Backbone
from redraft.sampling.categorical import check_knobs
from redraft.sampling.generate import Generation, generate_ar, generate_diffusion
from redraft.sampling.infill import Infill
from redraft.sampling.registry import make_sampler
from redraft.sampling.state import ARState, DiffusionState

LN2 = math.log(2.0)
Prompt = str | Sequence[int]


@dataclass
class Output:
    """What generate / infill return: one entry per row (prompt p's j-th sample is row
    p * num_samples + j, drawn with seed + row)."""

    texts: list[str]
    """Each row's whole text: prompt, generated tokens and suffix (EOS and masks dropped)."""
    completions: list[str]
    """Only what was generated (infill: the spans, joined)."""
    tokens: list[list[int]]
    """Each row's canvas ids (prompt and suffix included)."""
    nfe: int
    """Network calls (a batched call counts once)."""
    seconds: float
    spans: list[list[str]] = field(default_factory=list)
    """infill only: each row's span texts, in template order."""

    def __str__(self) -> str:
        return "\n\n".join(self.texts)

    @property
    def text(self) -> str:
        return self.texts[0]


@dataclass
class Score:
    """nll() of one text: total nats, with its standard error over the Monte Carlo draws."""

    nats: float
    tokens: int
    bytes: int
    stderr: float
    kind: str
    """"exact NLL" (the AR twin) or an upper bound (diffusion: ELBO / score entropy)."""

    @property
    def bits_per_byte(self) -> float:
        return self.nats / LN2 / max(self.bytes, 1)

    @property
    def nats_per_token(self) -> float:
        return self.nats / max(self.tokens, 1)


class Model:
    """A backbone with everything needed to generate, score and serve it."""

    def __init__(self, backbone: Backbone, tokenizer: Tokenizer, trained_with: str | Objective,
                 process: Process | None = None, *, name: str = "model",
                 config: Config | None = None, path: Path | None = None,
                 meta: dict[str, Any] | None = None):
        self.backbone, self.tokenizer = backbone, tokenizer
        self.objective = objective(trained_with)
        if self.objective.autoregressive != (process is None):
            raise RedraftError(f"objective {self.objective.name!r} "
                               + ("takes no noise process" if process is not None
                                  else "needs a noise process"))
        if self.objective.causal != bool(backbone.causal):
            raise RedraftError(f"objective {self.objective.name!r} needs "
                               f"{self.objective.attention} attention")
        self.process, self.name, self.config, self.path = process, name, config, path
        self.meta = meta or {}

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu",
                        name: str | None = None) -> Model:
        """A redraft checkpoint folder, or a run folder (its newest checkpoint)."""
        from redraft.checkpoint import load_checkpoint

        return cls.from_loaded(load_checkpoint(path, device), name)

    @classmethod
    def from_loaded(cls, ck, name: str | None = None) -> Model:
        """The Model of a loaded checkpoint.Checkpoint (a checkpoint, or an export read back)."""
        from redraft.losses import process_of

        obj = objective(ck.config.diffusion.objective)
        process = None if obj.autoregressive else process_of(
            ck.config.diffusion, ck.tokenizer.mask_id, ck.model.vocab_size)
        if name is None:  # the run folder's name
            name = ck.path.parent.name if ck.path.name.startswith("ckpt-") else ck.path.name
        return cls(ck.model, ck.tokenizer, obj, process, name=name, config=ck.config,
                   path=ck.path, meta=ck.meta)

    # --- facts ---------------------------------------------------------------------------

    @property
    def is_ar(self) -> bool:
        return self.objective.autoregressive

    @property
    def kind(self) -> str:
        return "ar" if self.is_ar else "diffusion"

    @property
    def seq_len(self) -> int:
        return self.backbone.seq_len

    @property
    def time_conditioned(self) -> bool:
        return self.backbone.time_conditioned

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    def __repr__(self) -> str:
        process = f", process={self.process.name!r}" if self.process is not None else ""
        return (f"Model({self.name!r}, objective={self.objective.name!r}{process}, "
                f"seq_len={self.seq_len}, vocab={self.tokenizer.vocab_size})")

    # --- text <-> ids --------------------------------------------------------------------

    def encode(self, prompt: Prompt | None) -> list[int]:
        """Ids of a string, or token ids checked against the vocabulary."""
        if prompt is None:
            return []
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt)
        ids = [int(i) for i in prompt]
        bad = [i for i in ids if not 0 <= i < self.tokenizer.vocab_size]
        if bad:
            raise RedraftError(f"token id {bad[0]} is outside the vocabulary of "
                               f"{self.tokenizer.vocab_size}")
        return ids

    def _prompt_list(self, prompts: Prompt | Sequence[Prompt] | None) -> list[list[int]]:
        """One prompt (a string or a list of ids) or a list of prompts -> ids per prompt."""
        if prompts is None or isinstance(prompts, str):
            return [self.encode(prompts)]
        prompts = list(prompts)
        if not prompts or all(isinstance(p, int) for p in prompts):
            return [self.encode(prompts)]
        return [self.encode(p) for p in prompts]

    def _cut(self, row: list[int], stop_at_eos: bool) -> list[int]:
        eos = self.tokenizer.eos_id
        return row[:row.index(eos)] if stop_at_eos and eos in row else row

    # --- the dispatch: one batch of rows sharing a canvas length --------------------------

    def _check_kind(self, **diffusion_only: Any) -> None:
        """The AR twin continues a prefix left to right: diffusion-only knobs are errors."""
        if self.is_ar:
            used = [k for k, v in diffusion_only.items() if v]
            if used:
                raise RedraftError(f"{used[0]} needs a diffusion model: {self.name!r} is the "
                                   "autoregressive twin, which only continues a prefix, left "
                                   "to right")

    def sample(self, prefixes: Sequence[Sequence[int]], *, length: int, seeds: Sequence[int],
               suffixes: Sequence[Sequence[int]] | None = None,
               canvases: Sequence[Sequence[int | None]] | None = None,
               steps: int = SAMPLE.steps, sampler: str | None = SAMPLE.sampler,
               options: dict | None = None, temperature: float = SAMPLE.temperature,
               top_k: int | None = SAMPLE.top_k, top_p: float | None = SAMPLE.top_p,
               block_size: int | None = SAMPLE.block_size,
               stop_at_eos: bool = SAMPLE.stop_at_eos, guidance: float = SAMPLE.guidance,
               on_step: Callable[[int, torch.Tensor], None] | None = None) -> Generation:
        """Rows with canvases of one `length` (prefix, generated tokens, suffix), row r drawn
        with seeds[r]: the AR twin with its KV cache, a diffusion model with its sampler.
        canvases (diffusion): per row a fixed id or None (free) per position, instead of
        prefixes/suffixes. Returns the low-level Generation (tokens (B, length), nfe, ...)."""
        has_suffix = any(len(s) for s in suffixes or [])
        self._check_kind(suffix=has_suffix, infill=canvases is not None, sampler=sampler,
                         options=options, block_size=block_size, guidance=guidance)
        if self.is_ar:
            return generate_ar(self.backbone, bos_id=self.tokenizer.eos_id, batch=len(seeds),
                               length=length, prefix=[list(p) for p in prefixes],
                               temperature=temperature, top_k=top_k, top_p=top_p,
                               seed=list(seeds), banned=self.tokenizer.non_text_ids,
                               on_step=on_step)
        if self.objective.blockwise:
            return self._sample_blocks(prefixes, suffixes, canvases, length, seeds, steps,
                                       sampler, options, temperature, top_k, top_p, block_size,
                                       stop_at_eos, guidance, on_step)
        return generate_diffusion(
            self.backbone, self.process, steps=steps, batch=len(seeds), length=length,
            prefix=None if canvases is not None else [list(p) for p in prefixes],
            suffix=None if canvases is not None else [list(s) for s in suffixes or
                                                      [[]] * len(seeds)],
            canvas=canvases, temperature=temperature, top_k=top_k, top_p=top_p,
            seed=list(seeds), on_step=on_step, sampler=sampler, objective=self.objective,
            options=options, block_size=block_size,
            eos_id=self.tokenizer.eos_id if stop_at_eos else None, guidance=guidance)

    def _sample_blocks(self, prefixes, suffixes, canvases, length, seeds, steps, sampler,
                       options, temperature, top_k, top_p, block_size, stop_at_eos, guidance,
                       on_step) -> Generation:
        """A block-diffusion model: blocks left to right over its exact KV cache
        (sampling/block.py)."""
        from redraft.sampling.block import generate_block

        return generate_block(self.backbone, self.process, on_step=on_step, **self._block_knobs(
            prefixes, suffixes, canvases, length, seeds, steps, sampler, options, temperature,
            top_k, top_p, block_size, stop_at_eos, guidance))

    def _block_knobs(self, prefixes, suffixes, canvases, length, seeds, steps, sampler,
                     options, temperature, top_k, top_p, block_size, stop_at_eos,
                     guidance) -> dict:
        """start_block's arguments for a request (shared by `sample` and `start`, so the
        server's rows are the offline rows). `steps` is the whole canvas's budget, split
        evenly over its blocks (at least one step each); its blocks are the model's own."""
        b = self.backbone.block_size
        if block_size is not None and block_size != b:
            raise RedraftError(f"block_size={block_size}: this block-diffusion model decodes "
                               f"blocks of {b} (its training block size)")
        if guidance:
            raise RedraftError("guidance is not available for block-diffusion models yet")
        if not isinstance(steps, int) or steps < 1:
            raise RedraftError(f"steps={steps!r}: expected an integer >= 1")
        if canvases is None and any(len(s) for s in suffixes or []):
            canvases = [list(p) + [None] * (length - len(p) - len(s)) + list(s)
                        for p, s in zip(prefixes, suffixes, strict=True)]
        n_blocks = -(-length // b)
        return dict(
            steps_per_block=max(1, -(-steps // n_blocks)), batch=len(seeds), length=length,
            prefix=None if canvases is not None else [list(p) for p in prefixes],
            canvas=canvases, shift=self._diffusion_config().block_shift,
            bos_id=self.tokenizer.eos_id, temperature=temperature, top_k=top_k, top_p=top_p,
            seed=list(seeds), sampler=sampler, options=options,
            eos_id=self.tokenizer.eos_id if stop_at_eos else None,
            reveal_width=self._diffusion_config().block_reveal_width,
            reveal_last=self._diffusion_config().block_reveal_last)

    def start(self, prefix: Sequence[int], *, length: int, seeds: Sequence[int],
              suffix: Sequence[int] = (), steps: int = SAMPLE.steps,
              sampler: str | None = SAMPLE.sampler, options: dict | None = None,
              temperature: float = SAMPLE.temperature, top_k: int | None = SAMPLE.top_k,
              top_p: float | None = SAMPLE.top_p, block_size: int | None = SAMPLE.block_size,
              stop_at_eos: bool = SAMPLE.stop_at_eos, guidance: float = SAMPLE.guidance,
              logprobs: int | None = None) -> ARState | DiffusionState:
        """The starting state of one request's rows, for a caller that drives the steps itself
        (the server's batcher): an ARState (draw a token, run the network, repeat), a
        DiffusionState (inputs -> network -> set_logits -> advance) or, for a block-diffusion
        model, a BlockState (calls -> cached network calls -> set_window_logits -> advance).
        Run to the end, each gives what `sample` gives for the same seeds. logprobs (None, or
        k >= 0): record each token's log-probability and the top k (exact for the AR twin; for
        diffusion the denoiser's at the step that committed it, which needs a denoiser model;
        not recorded for block models)."""
        check_knobs(temperature, top_k, top_p)
        if not 1 <= length <= self.seq_len:
            raise RedraftError(f"a canvas of {length} tokens does not fit the model's context "
                               f"of {self.seq_len}")
        self._check_kind(suffix=len(suffix), sampler=sampler, sampler_options=options,
                         block_size=block_size, guidance=guidance)
        if self.objective.blockwise:
            from redraft.sampling.block import start_block

            if logprobs is not None:
                raise RedraftError(f"logprobs: {self.name!r} is a block-diffusion model, which "
                                   "does not record log-probabilities yet")
            if len(prefix) + len(suffix) >= length:
                raise RedraftError(f"a prompt of {len(prefix) + len(suffix)} tokens in a canvas "
                                   f"of {length} leaves nothing to generate")
            return start_block(self.backbone, self.process, **self._block_knobs(
                [list(prefix)] * len(seeds), [list(suffix)] * len(seeds), None, length, seeds,
                steps, sampler, options, temperature, top_k, top_p, block_size, stop_at_eos,
                guidance))
        if self.is_ar:
            if len(prefix) >= length:
                raise RedraftError("the prompt leaves nothing to generate")
            return ARState(self.tokenizer.eos_id, prefix, seeds, length,
                           self.tokenizer.non_text_ids, pad_id=self.tokenizer.mask_id,
                           eos_id=self.tokenizer.eos_id if stop_at_eos else None,
                           logprobs=logprobs)
        if logprobs is not None and not self.objective.denoiser:
            raise RedraftError(f"logprobs: {self.name!r} is a {self.objective.name!r} model, "
                               "whose network outputs scores, not token probabilities")
        rule = make_sampler(sampler, self.process, self.objective, temperature, top_k, top_p,
                            options)
        eos = self.tokenizer.eos_id if stop_at_eos else None
        return DiffusionState(self.process, rule, steps=steps, length=length,
                              prefixes=[list(prefix)] * len(seeds),
                              suffixes=[list(suffix)] * len(seeds), seeds=seeds,
                              block_size=block_size, eos_id=eos, guidance=guidance,
                              device=self.device, logprobs=logprobs)

    def chat_prompt(self, messages: Sequence[dict]) -> str:
        """The prompt of a chat ([{"role", "content"}, ...]) ending where the reply starts: the
        tokenizer's chat template where it has one (Hugging Face models), else redraft's plain
        "role: content" lines."""
        chat = getattr(self.tokenizer, "chat", None)
        if chat is not None and getattr(self.tokenizer, "has_chat_template", False):
            return chat(messages)
        # The server's documented format (serve/schemas.py CHAT_ROLE_FORMAT, CHAT_REPLY_PREFIX)
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "

    # --- the user-facing calls -----------------------------------------------------------

    def generate(self, prompts: Prompt | Sequence[Prompt] | None = None, *,
                 max_new_tokens: int | None = None, length: int | None = None,
                 suffix: Prompt | None = None, num_samples: int = SAMPLE.num_samples,
                 seed: int = SAMPLE.seed, **knobs: Any) -> Output:
        """Continue each prompt (a string, token ids, or a list of either) num_samples times.

        max_new_tokens: tokens to generate after the prompt; or length: the whole canvas
        (prompt + generated + suffix); neither: the model's seq_len. suffix (diffusion): text
        held fixed at the end. knobs: steps, sampler, options, temperature, top_k, top_p,
        block_size, stop_at_eos, guidance, on_step (see `sample`; defaults in
        config.SampleConfig). Row r (prompt r // num_samples) draws from seed + r, so a row's
        result does not depend on the other rows.
        """
        if max_new_tokens is not None and length is not None:
            raise RedraftError("give max_new_tokens or length, not both")
        if not isinstance(num_samples, int) or num_samples < 1:
            raise RedraftError(f"num_samples={num_samples!r}: expected an integer >= 1")
        prompts_ids = self._prompt_list(prompts)
        suf = self.encode(suffix)
        rows = [p for p in prompts_ids for _ in range(num_samples)]
        lengths = []
        for pre in rows:
            if max_new_tokens is not None:
                if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
                    raise RedraftError(f"max_new_tokens={max_new_tokens!r}: expected an "
                                       "integer >= 1")
                n = len(pre) + max_new_tokens + len(suf)
            else:
                n = length if length is not None else self.seq_len
            if n > self.seq_len or len(pre) + len(suf) > n:
                raise RedraftError(f"a prompt of {len(pre) + len(suf)} tokens plus the tokens "
                                   f"to generate does not fit the model's context of "
                                   f"{self.seq_len} (canvas of {n})")
            lengths.append(n)
        stop = knobs.get("stop_at_eos", SAMPLE.stop_at_eos)
        out_rows: list[list[int]] = [[] for _ in rows]
        nfe, seconds = 0, 0.0
        for n in sorted(set(lengths)):  # one batch per canvas length: nothing is padded
            idx = [r for r, m in enumerate(lengths) if m == n]
            gen = self.sample([rows[r] for r in idx], length=n, seeds=[seed + r for r in idx],
                              suffixes=[suf] * len(idx), **knobs)
            for r, toks in zip(idx, gen.tokens.tolist(), strict=True):
                out_rows[r] = toks
            nfe, seconds = nfe + gen.nfe, seconds + gen.seconds
        dec = self.tokenizer.decode
        texts = [dec(self._cut(t, stop)) for t in out_rows]
        completions = [dec(self._cut(t[len(p):len(t) - len(suf)], stop))
                       for t, p in zip(out_rows, rows, strict=True)]
        return Output(texts, completions, out_rows, nfe, seconds)

    def infill(self, template: str | Sequence, *, num_samples: int = SAMPLE.num_samples,
               seed: int = SAMPLE.seed, **knobs: Any) -> Output:
        """Fill every span of a template, e.g. "def f(x):\\n    <|mask:16|>\\n" (<|mask:N|>:
        exactly N tokens; <|mask:<=N|>: at most N, the rest left empty). Diffusion only.
        knobs as for generate."""
        if self.is_ar:
            raise RedraftError(f"infill needs a diffusion model: {self.name!r} is the AR twin, "
                               "which only continues a prefix, left to right")
        if not isinstance(num_samples, int) or num_samples < 1:
            raise RedraftError(f"num_samples={num_samples!r}: expected an integer >= 1")
        spec = Infill.build(template, self.tokenizer, self.seq_len)
        if len(spec.canvas) > self.seq_len:
            raise RedraftError(f"the template takes {len(spec.canvas)} tokens, more than the "
                               f"model's context of {self.seq_len}")
        gen = self.sample([[]] * num_samples, length=len(spec.canvas),
                          seeds=[seed + r for r in range(num_samples)],
                          canvases=[spec.canvas] * num_samples, **knobs)
        rows = gen.tokens.tolist()
        filled = [spec.fill(row, self.tokenizer) for row in rows]
        return Output([f[0] for f in filled], ["".join(f[1]) for f in filled], rows, gen.nfe,
                      gen.seconds, spans=[f[1] for f in filled])

    @torch.no_grad()
    def nll(self, texts: str | Sequence[str], *, samples: int = 16, seed: int = 0,
            estimator: str = "time") -> list[Score]:
        """The negative log-likelihood of each text, in nats (Score): exact for the AR twin
        (the text follows a BOS, as in training); for diffusion the model's bound, estimated
        with `samples` Monte Carlo draws of (t, xt) per text (low-discrepancy t over the draws)
        with its standard error. Each text is scored on its own (seeded by seed + its index),
        so a text's figure does not depend on the others. A text must fit seq_len."""
        from redraft.losses import draw_noise, token_losses

        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(samples, int) or samples < 1:
            raise RedraftError(f"samples={samples!r}: expected an integer >= 1")
        diff = self._diffusion_config()
        out = []
        for i, text in enumerate(texts):
            ids = self.encode(text)
            if not 1 <= len(ids) <= self.seq_len:
                raise RedraftError(f"text {i} has {len(ids)} tokens: expected 1..{self.seq_len} "
                                   "(the model's context)")
            nbytes = len(self.tokenizer.decode(ids).encode("utf-8"))
            x0 = torch.tensor([ids], dtype=torch.long, device=self.device)
            gen = torch.Generator(device=self.device)
            gen.manual_seed(seed + i)
            if self.is_ar:
                nats = token_losses(self.backbone, x0, diff, self.tokenizer.mask_id,
                                    self.tokenizer.eos_id).double().sum().item()
                out.append(Score(nats, len(ids), nbytes, 0.0, self.objective.bound))
                continue
            x0 = x0.expand(samples, -1)
            noise = draw_noise(diff, samples, len(ids), self.tokenizer.mask_id, gen, 0.0,
                               estimator, self.device, self.backbone.vocab_size)
            per = token_losses(self.backbone, x0, diff, self.tokenizer.mask_id,
                               self.tokenizer.eos_id, noise=noise).double().sum(dim=1)
            err = (per.std() / math.sqrt(samples)).item() if samples > 1 else float("nan")
            out.append(Score(per.mean().item(), len(ids), nbytes, err, self.objective.bound))
        return out

    def evaluate(self, corpus: str | None = None, samples: int = 4,
                 max_batches: int | None = None, estimator: str = "time",
                 progress: bool = True) -> dict:
        """Validation figures on the model's own corpus's validation split (or `corpus`): the
        bound (diffusion) or exact NLL (AR) in nats/token, bits/token, bits/byte."""
        from redraft.eval.likelihood import evaluate_model

        return evaluate_model(self, corpus=corpus, samples=samples, max_batches=max_batches,
                              estimator=estimator, progress=progress)

    def _diffusion_config(self):
        """The diffusion section the losses read (a plain default for configless models)."""
        from redraft.config import DiffusionConfig

        if self.config is not None:
            return self.config.diffusion
        cfg = DiffusionConfig(objective=self.objective.name)
        if self.process is not None:
            cfg.process = self.process.name
        return cfg


def load(spec: str | Path = "default", device: str | torch.device = "cpu",
         name: str | None = None, **hf_options: Any) -> Model:
    """A Model from a spec: "default" (the masked-diffusion model shipped in the package, the
    default when no spec is given), "default-ar" (its autoregressive twin), a redraft
    checkpoint folder or run folder (its newest checkpoint), or "hf:<folder or hub
    id>[?key=value&...]": a folder `redraft export` wrote comes back as the native model it
    was; any other is a Hugging Face model (redraft.hf: DiffusionGemma, masked diffusion models
    such as LLaDA / Dream, causal LMs; hf_options as after the `?`).
    """
    from redraft.default import shipped

    spec_str = str(spec)
    if spec_str.startswith("hf:"):
        # A folder written by `redraft export` comes back as the native model it was.
        from redraft.export import is_exported, read_exported

        if not hf_options and "?" not in spec_str and is_exported(spec_str[3:]):
            return Model.from_loaded(read_exported(spec_str[3:], device), name)
        from redraft.hf import load_hf

        return load_hf(spec_str, Model, device=device, name=name, **hf_options)
    if hf_options:
        raise RedraftError(f"{sorted(hf_options)[0]}=...: options like this are for hf: specs")
    folder = shipped(spec)
    if folder is not None:
        return Model.from_checkpoint(folder, device=device, name=name or spec_str)
    return Model.from_checkpoint(spec, device=device, name=name)
