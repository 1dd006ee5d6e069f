"""GemmaModel: a DiffusionGemma as a redraft.Model (generate, sample, start for the server).

Mixed into redraft.model.Model by load_hf, it is a Model like any other for its callers:
`generate` / `sample` return the same objects, and `start` gives the server one request's rows
(hf/gemma.py: GemmaRows), which the engine batches at step level through serve/hf_batch.py.
What it does not have: a likelihood bound (DiffusionGemma is trained without one redraft can
compute), infilling (its canvas always follows the prompt's cache), guidance, and blocks other
than its canvas.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from redraft.diffusion import make_process
from redraft.diffusion.registry import Objective
from redraft.errors import RedraftError
from redraft.sampling.categorical import check_knobs
from redraft.sampling.entropy_bound import EntropyBound
from redraft.sampling.generate import Generation
from redraft.sampling.registry import sampler_options

GEMMA = Objective("diffusion_gemma", "DiffusionGemma: encoder prompt cache, self-conditioned "
                  "decoder over a uniform-noise canvas", "self-conditioned denoiser",
                  "bidirectional", ("uniform",), "none (no likelihood bound)", "entropy_bound")
SAMPLERS = ("entropy_bound", "confidence")


class GemmaBackbone:
    """The facts the rest of redraft reads (vocab, context, device); the network itself is
    driven by hf/gemma.py, not through __call__."""

    causal = False
    time_conditioned = False

    def __init__(self, hf):
        self.hf = hf
        self.vocab_size = hf.config.text_config.vocab_size

    @property
    def seq_len(self) -> int:
        return int(self.hf.config.text_config.max_position_embeddings)

    @property
    def device(self) -> torch.device:
        return self.hf.device

    def __call__(self, *args, **kwargs):
        raise RedraftError("DiffusionGemma's decoder needs its prompt cache and "
                           "self-conditioning: drive it through redraft.hf.gemma")


class GemmaModel:
    """The DiffusionGemma side of a redraft.Model: load_hf mixes it into redraft.model.Model
    (passed in, since redraft.model imports this package and it cannot import that back), so
    the result is a Model whose sample / start / infill / nll / evaluate / chat_prompt are
    these."""

    batches_own_steps = True  # the server's engine hands its requests to serve/hf_batch.py
    infills = False  # each canvas follows the prompt: `redraft bench` skips infilling for it

    def __init__(self, hf, tokenizer, *, name: str, path=None, meta: dict | None = None):
        # Model.__init__ checks redraft's own objective table; DiffusionGemma's entry is its
        # own, so it is not called.
        self.backbone, self.tokenizer, self.objective = GemmaBackbone(hf), tokenizer, GEMMA
        self.process = make_process("uniform", mask_id=tokenizer.mask_id,
                                    vocab_size=self.backbone.vocab_size)
        self.hf, self.name, self.config, self.path = hf, name, None, path
        self.meta = meta or {}
        self.canvas_length = int(hf.config.canvas_length)
        gc = hf.generation_config
        defaults = {"entropy_bound": 0.1, "t_min": 0.4, "t_max": 0.8,
                    "stability_threshold": 1, "confidence_threshold": 0.005}
        sc = getattr(gc, "sampler_config", None)
        if sc is not None:
            defaults["entropy_bound"] = float(getattr(sc, "entropy_bound", None)
                                              or sc.get("entropy_bound"))
        for key in ("t_min", "t_max", "stability_threshold", "confidence_threshold"):
            if getattr(gc, key, None) is not None:
                defaults[key] = getattr(gc, key)
        self.rule_defaults = defaults
        self.default_steps = getattr(gc, "max_denoising_steps", None) or 48

    # --- the rule and the rows -------------------------------------------------------------

    def rule(self, sampler: str | None, options: dict | None, steps: int | None,
             temperature: float) -> EntropyBound:
        """The step rule for these knobs: the model's generation-config defaults, then
        `options` (sampler 'confidence' is the same loop with measure confidence)."""
        name = sampler or "entropy_bound"
        if name not in SAMPLERS:
            raise RedraftError(f"sampler {name!r} does not apply to DiffusionGemma (no mask "
                               f"state): expected one of {list(SAMPLERS)}")
        options = dict(options or {})
        if name == "confidence":
            options = {"measure": options.pop("measure", "confidence"), **options}
            if options["measure"] not in ("confidence", "margin", "entropy"):
                raise RedraftError(f"sampler 'confidence' option measure={options['measure']!r}"
                                   ": expected one of ['confidence', 'margin', 'entropy']")
        opts = sampler_options("entropy_bound", {**self.rule_defaults, **options})
        steps = self.default_steps if steps is None else steps
        if not isinstance(steps, int) or steps < 1:
            raise RedraftError(f"steps={steps!r}: expected an integer >= 1")
        if opts["t_max"] < opts["t_min"]:
            raise RedraftError(f"t_max={opts['t_max']} < t_min={opts['t_min']}: the schedule "
                               "runs from t_max (first step) down to t_min (last)")
        return EntropyBound(steps=steps, temperature=temperature, **opts)

    def _rows(self, prefix: Sequence[int], length: int, seeds: Sequence[int], rule,
              stop_at_eos: bool, noise=None):
        from redraft.hf.gemma import GemmaRows

        if not 1 <= length <= self.seq_len:
            raise RedraftError(f"a canvas of {length} tokens does not fit the model's context "
                               f"of {self.seq_len}")
        tok = self.tokenizer
        return GemmaRows(self.hf, rule, list(prefix), length, list(seeds), bos_id=tok.bos_id,
                         eos_id=tok.eos_id if stop_at_eos else None, placeholder=tok.mask_id,
                         noise=noise)

    def _refuse(self, suffix=False, canvases=False, guidance=0.0, block_size=None,
                top_k=None, top_p=None) -> None:
        if suffix or canvases:
            raise RedraftError("DiffusionGemma writes each canvas after the prompt's cache: it "
                               "cannot hold a suffix or fill a template")
        if guidance:
            raise RedraftError("guidance is not defined for DiffusionGemma")
        if block_size is not None and block_size != self.canvas_length:
            raise RedraftError(f"block_size={block_size}: DiffusionGemma decodes canvases of "
                               f"{self.canvas_length} tokens (its config's canvas_length)")
        if top_k is not None or top_p is not None:
            raise RedraftError("top_k / top_p are not defined for the entropy-bound rule: use "
                               "temperature, t_min, t_max")

    # --- Model's calls ---------------------------------------------------------------------

    def sample(self, prefixes, *, length: int, seeds, suffixes=None, canvases=None,
               steps: int | None = None, sampler: str | None = None, options: dict | None = None,
               temperature: float = 1.0, top_k=None, top_p=None, block_size=None,
               stop_at_eos: bool = False, guidance: float = 0.0,
               on_step: Callable[[int, torch.Tensor], None] | None = None,
               noise=None) -> Generation:
        """As Model.sample. steps: denoising steps per canvas (default: the model's
        max_denoising_steps); rows with the same prefix share one encoder pass. noise: a
        replacement random source for all rows (tests replay transformers' draws)."""
        from redraft.hf.gemma import run

        check_knobs(temperature, top_k, top_p)
        self._refuse(any(len(s) for s in suffixes or []), canvases is not None, guidance,
                     block_size, top_k, top_p)
        rule = self.rule(sampler, options, steps, temperature)
        groups: dict[tuple, list[int]] = {}
        for r, p in enumerate(prefixes):
            groups.setdefault(tuple(p), []).append(r)
        states = [self._rows(p, length, [seeds[r] for r in rows], rule, stop_at_eos, noise)
                  for p, rows in groups.items()]
        calls, seconds = run(self.hf, states, on_step)
        out = torch.empty((len(seeds), length), dtype=torch.long, device=self.device)
        for (_, rows), s in zip(groups.items(), states, strict=True):
            out[rows] = s.view()
        return Generation(out, calls, sum(s.row_nfe for s in states), seconds,
                          max(s.i for s in states))

    def start(self, prefix, *, length: int, seeds, suffix=(), steps: int | None = None,
              sampler=None, options=None, temperature: float = 1.0, top_k=None, top_p=None,
              block_size=None, stop_at_eos: bool = False, guidance: float = 0.0,
              logprobs: int | None = None):
        """One request's rows for the server (encoded at its first tick)."""
        if logprobs is not None:
            raise RedraftError("logprobs: DiffusionGemma does not record log-probabilities yet")
        check_knobs(temperature, top_k, top_p)
        self._refuse(len(suffix), False, guidance, block_size, top_k, top_p)
        rule = self.rule(sampler, options, steps, temperature)
        return self._rows(prefix, length, seeds, rule, stop_at_eos)

    def infill(self, template, **knobs):
        raise RedraftError("DiffusionGemma cannot infill: each canvas follows the prompt's "
                           "cache, so text after a span cannot be held fixed")

    def nll(self, texts, **kw):
        raise RedraftError("DiffusionGemma has no likelihood bound redraft can compute")

    def evaluate(self, *args, **kw):
        raise RedraftError("DiffusionGemma has no likelihood bound redraft can compute: "
                           "`redraft eval` needs a masked-diffusion or causal model; use "
                           "`redraft bench` for its samples' quality and speed")

    def chat_prompt(self, messages) -> str:
        return self.tokenizer.chat(messages)
