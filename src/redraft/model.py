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

from redraft.config import Config
from redraft.data import Tokenizer
from redraft.decoders import Work, for_objective, make_decoder
from redraft.decoders.run import run
from redraft.diffusion import Objective, Process, objective
from redraft.errors import RedraftError
from redraft.models import Backbone
from redraft.request import KNOBS, Request, fit
from redraft.sampling.generate import Generation
from redraft.sampling.infill import Infill
from redraft.sampling.tpf import TPF
from redraft.scoring import Scorer, scorer_for

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
    tpf: TPF | None = None
    """Tokens per forward: new tokens / per-row network evaluations, with the oracle ceiling
    when asked for (oracle=True; redraft.sampling.tpf)."""

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
    """A backbone with everything needed to generate, score and serve it: its decoder (how it
    decodes, redraft.decoders) and its scorer (what nll computes, redraft.scoring), both
    chosen once, here, from the objective's table entry (or by a Hugging Face loader)."""

    def __init__(self, backbone: Backbone, tokenizer: Tokenizer, trained_with: str | Objective,
                 process: Process | None = None, *, name: str = "model",
                 config: Config | None = None, path: Path | None = None,
                 meta: dict[str, Any] | None = None, decoder: str | None = None,
                 scorer: type[Scorer] | None = None, default_new_tokens: int | None = None):
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
        # Tokens to generate when no length is asked (None: the rest of the context, the
        # canvas redraft's models were trained on; Hugging Face models: a short completion).
        self.default_new_tokens = default_new_tokens
        self.decoder = make_decoder(decoder or for_objective(self.objective), self)
        self.scorer = (scorer or scorer_for(self.objective))(self)

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
        """Whether it is a left-to-right model with an exact likelihood (a user-facing fact;
        the package itself asks the decoder and the scorer)."""
        return self.scorer.exact

    @property
    def kind(self) -> str:
        """"ar" (exact left-to-right likelihood) or "diffusion": what its figures mean."""
        return "ar" if self.scorer.exact else "diffusion"

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

    # --- the decoder's rows ----------------------------------------------------------------

    def request(self, request: Request | None = None, **knobs: Any) -> Request:
        """A checked Request: `request` (or the defaults) with `knobs` replacing its values,
        and steps resolved to this model's default when not given."""
        unknown = sorted(set(knobs) - set(KNOBS))
        if unknown:
            raise RedraftError(f"unknown knob {unknown[0]!r}: expected one of {list(KNOBS)}")
        req = (request or Request()).replace(**knobs).check()
        return req.replace(steps=self.decoder.steps(req))

    def sample(self, prefixes: Sequence[Sequence[int]], *, length: int, seeds: Sequence[int],
               suffixes: Sequence[Sequence[int]] | None = None,
               canvases: Sequence[Sequence[int | None]] | None = None,
               on_step: Callable[[int, torch.Tensor], None] | None = None,
               request: Request | None = None, oracle: bool = False,
               **knobs: Any) -> Generation:
        """Rows with canvases of one `length` (prefix, generated tokens, suffix), row r drawn
        with seeds[r], decoded by the model's decoder (the server's lanes, run offline).
        canvases (diffusion): per row a fixed id or None (free) per position, instead of
        prefixes/suffixes. knobs: those of redraft.request.Request (steps, sampler, options,
        temperature, top_k, top_p, block_size, stop_at_eos, guidance, stop, logprobs).
        oracle: also record the oracle TPF ceiling (diffusion; keeps each step's argmax).
        Returns the low-level Generation (tokens (B, length), nfe, ..., tpf)."""
        extra = {k: knobs.pop(k) for k in ("noise",) if k in knobs}  # a decoder's test hook
        req = self.request(request, **knobs)
        n = len(seeds)
        if len(prefixes) != n or (suffixes is not None and len(suffixes) != n) or (
                canvases is not None and len(canvases) != n):
            raise RedraftError(f"{n} seeds given with a different number of prompts")
        suffixes = suffixes or [[]] * n
        groups: dict[tuple, list[int]] = {}  # rows with the same fixed text share a Work
        for r in range(n):
            key = (tuple(canvases[r]),) if canvases is not None else (
                tuple(prefixes[r]), tuple(suffixes[r]))
            groups.setdefault(key, []).append(r)
        works = []
        for rows in groups.values():
            r = rows[0]
            works.append(Work(self.name, [] if canvases is not None else prefixes[r], length,
                              [seeds[i] for i in rows],
                              [] if canvases is not None else suffixes[r],
                              canvas=None if canvases is None else canvases[r], request=req))
        jobs, calls, seconds = run(self, works, on_step, oracle=oracle, **extra)
        tokens = torch.empty((n, length), dtype=torch.long)
        for rows, job in zip(groups.values(), jobs, strict=True):
            tokens[rows] = job.state.current().cpu()
        tpf = sum((job.tpf() for job in jobs[1:]), jobs[0].tpf())
        return Generation(tokens, calls, sum(job.row_nfe for job in jobs), seconds,
                          max(job.state.i for job in jobs), tpf)

    def start(self, prefix: Sequence[int], *, length: int, seeds: Sequence[int],
              suffix: Sequence[int] = (), request: Request | None = None, **knobs: Any):
        """The starting state of one request's rows, for a caller that drives the steps itself
        (see redraft.decoders): run to the end, it gives what `sample` gives for the same
        seeds. knobs: as for `sample`; logprobs (None, or k >= 0): record each token's
        log-probability and the top k (exact for the AR twin; for diffusion the denoiser's at
        the step that committed it, which needs a denoiser model)."""
        work = Work(self.name, prefix, length, seeds, suffix,
                    request=self.request(request, **knobs))
        return self.decoder.start(work)

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
                 suffix: Prompt | None = None, num_samples: int | None = None,
                 seed: int | None = None, request: Request | None = None,
                 on_step: Callable[[int, torch.Tensor], None] | None = None,
                 oracle: bool = False, **knobs: Any) -> Output:
        """Continue each prompt (a string, token ids, or a list of either) num_samples times.

        max_new_tokens: tokens to generate after the prompt; or length: the whole canvas
        (prompt + generated + suffix); neither: the model's seq_len (a Hugging Face model:
        hf.DEFAULT_NEW_TOKENS new tokens, at most the context). suffix (diffusion): text
        held fixed at the end. knobs: those of redraft.request.Request (steps, sampler,
        options, temperature, top_k, top_p, block_size, stop_at_eos, guidance, stop), or a
        whole `request`. Row r (prompt r // num_samples) draws from seed + r, so a row's
        result does not depend on the other rows. The Output's tpf holds the tokens per
        forward; oracle=True adds the oracle ceiling (diffusion, sampling/tpf.py).
        """
        given = {k: v for k, v in (("max_new_tokens", max_new_tokens), ("length", length),
                                   ("num_samples", num_samples), ("seed", seed))
                 if v is not None}
        req = self.request(request, **given, **knobs)
        prompts_ids = self._prompt_list(prompts)
        suf = self.encode(suffix)
        rows = [p for p in prompts_ids for _ in range(req.num_samples)]
        lengths = [fit(len(pre), len(suf), self.seq_len, req.max_new_tokens, req.length,
                       f"model {self.name!r}", self.default_new_tokens) for pre in rows]
        out_rows: list[list[int]] = [[] for _ in rows]
        nfe, seconds, tpf = 0, 0.0, None
        for n in sorted(set(lengths)):  # one batch per canvas length: nothing is padded
            idx = [r for r, m in enumerate(lengths) if m == n]
            gen = self.sample([rows[r] for r in idx], length=n,
                              seeds=[req.seed + r for r in idx], suffixes=[suf] * len(idx),
                              on_step=on_step, request=req, oracle=oracle)
            for r, toks in zip(idx, gen.tokens.tolist(), strict=True):
                out_rows[r] = toks
            nfe, seconds = nfe + gen.nfe, seconds + gen.seconds
            tpf = gen.tpf if tpf is None else tpf + gen.tpf
        return self._output(out_rows, rows, suf, req, nfe, seconds, tpf)

    def _output(self, out_rows, rows, suf, req: Request, nfe: int, seconds: float,
                tpf: TPF | None = None) -> Output:
        dec, stop = self.tokenizer.decode, req.stop_at_eos
        texts = [dec(self._cut(t, stop)) for t in out_rows]
        completions = [dec(self._cut(t[len(p):len(t) - len(suf)], stop))
                       for t, p in zip(out_rows, rows, strict=True)]
        if req.stop:  # the text up to the first stop string (the server's rule)
            completions = [_before_stop(c, req.stop) for c in completions]
            texts = [dec(p) + c + dec(suf) for p, c in zip(rows, completions, strict=True)]
        return Output(texts, completions, out_rows, nfe, seconds, tpf=tpf)

    def infill(self, template: str | Sequence, *, num_samples: int | None = None,
               seed: int | None = None, request: Request | None = None,
               on_step: Callable[[int, torch.Tensor], None] | None = None,
               oracle: bool = False, **knobs: Any) -> Output:
        """Fill every span of a template, e.g. "def f(x):\\n    <|mask:16|>\\n" (<|mask:N|>:
        exactly N tokens; <|mask:<=N|>: at most N, the rest left empty). Diffusion only.
        knobs and oracle as for generate."""
        self.decoder.check_infill()
        given = {k: v for k, v in (("num_samples", num_samples), ("seed", seed))
                 if v is not None}
        req = self.request(request, **given, **knobs)
        spec = Infill.build(template, self.tokenizer, self.seq_len)
        if len(spec.canvas) > self.seq_len:
            raise RedraftError(f"the template takes {len(spec.canvas)} tokens, more than the "
                               f"model's context of {self.seq_len}")
        k = req.num_samples
        gen = self.sample([[]] * k, length=len(spec.canvas),
                          seeds=[req.seed + r for r in range(k)],
                          canvases=[spec.canvas] * k, on_step=on_step, request=req,
                          oracle=oracle)
        rows = gen.tokens.tolist()
        filled = [spec.fill(row, self.tokenizer) for row in rows]
        return Output([f[0] for f in filled], ["".join(f[1]) for f in filled], rows, gen.nfe,
                      gen.seconds, spans=[f[1] for f in filled], tpf=gen.tpf)

    @torch.no_grad()
    def nll(self, texts: str | Sequence[str], *, samples: int = 16, seed: int = 0,
            estimator: str = "time") -> list[Score]:
        """The negative log-likelihood of each text, in nats (Score): exact for the AR twin
        (the text follows a BOS, as in training); for diffusion the model's bound, estimated
        with `samples` Monte Carlo draws of (t, xt) per text (low-discrepancy t over the draws)
        with its standard error. Each text is scored on its own (seeded by seed + its index),
        so a text's figure does not depend on the others. A text must fit seq_len."""
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(samples, int) or samples < 1:
            raise RedraftError(f"samples={samples!r}: expected an integer >= 1")
        out = []
        for i, text in enumerate(texts):
            ids = self.encode(text)
            if not 1 <= len(ids) <= self.seq_len:
                raise RedraftError(f"text {i} has {len(ids)} tokens: expected 1..{self.seq_len} "
                                   "(the model's context)")
            nbytes = len(self.tokenizer.decode(ids).encode("utf-8"))
            gen = torch.Generator(device=self.device)
            gen.manual_seed(seed + i)
            nats, err = self.scorer.nats(ids, samples, gen, estimator)  # (nats, stderr)
            out.append(Score(nats, len(ids), nbytes, err, self.scorer.kind))
        return out

    def evaluate(self, corpus: str | None = None, samples: int = 4,
                 max_batches: int | None = None, estimator: str = "time",
                 progress: bool = True) -> dict:
        """Validation figures on the model's own corpus's validation split (or `corpus`): the
        bound (diffusion) or exact NLL (AR) in nats/token, bits/token, bits/byte."""
        from redraft.likelihood import evaluate_model

        if not self.scorer.available:
            raise RedraftError(f"{self.name!r} has no likelihood bound redraft can compute: "
                               "`redraft eval` needs a masked-diffusion or causal model; use "
                               "`redraft bench` for its samples' quality and speed")

        return evaluate_model(self, corpus=corpus, samples=samples, max_batches=max_batches,
                              estimator=estimator, progress=progress)

    def diffusion_config(self):
        """The diffusion section the losses read (a plain default for configless models)."""
        from redraft.config import DiffusionConfig

        if self.config is not None:
            return self.config.diffusion
        cfg = DiffusionConfig(objective=self.objective.name)
        if self.process is not None:
            cfg.process = self.process.name
        return cfg



def _before_stop(text: str, stop: Sequence[str]) -> str:
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[:min(cuts)] if cuts else text


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
        from redraft.export import read_exported_spec

        exported = read_exported_spec(spec_str, device, hf_options)
        if exported is not None:
            return Model.from_loaded(exported, name)
        from redraft.hf import load_hf

        return load_hf(spec_str, Model, device=device, name=name, **hf_options)
    if hf_options:
        raise RedraftError(f"{sorted(hf_options)[0]}=...: options like this are for hf: specs")
    folder = shipped(spec)
    if folder is not None:
        return Model.from_checkpoint(folder, device=device, name=name or spec_str)
    return Model.from_checkpoint(spec, device=device, name=name)
