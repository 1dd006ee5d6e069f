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
default count for masked models, time otherwise: eval/conditional.py), seed, device, and the
generation knobs steps, sampler, block_size (diffusion) used by generate_until; stderr_file
(a JSONL path) keeps each scored request's standard error.

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

log = logging.getLogger("redraft.lm_eval")

NAME = "redraft"


def register() -> None:
    """Put "redraft" in the harness's model registry (lazily: the class is imported when the
    harness asks for it). The harness's own models are registered first, since its registry
    loads them only when it finds itself empty. Idempotent."""
    import lm_eval.models  # noqa: F401  (registers "hf", "vllm", ... as placeholders)

    model_registry.register(NAME, target="redraft.lm_eval:RedraftLM")


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
                 progress: bool = True, **unknown):
        super().__init__()
        from redraft.model import Model, load

        if unknown:
            raise RedraftError(f"unknown redraft model_args {sorted(unknown)}: expected "
                               "pretrained, mc_samples, estimator, seed, device, steps, "
                               "sampler, block_size, stderr_file")
        if not isinstance(mc_samples, int) or mc_samples < 1:
            raise RedraftError(f"mc_samples={mc_samples!r}: expected an integer >= 1")
        self.model: Model = pretrained if isinstance(pretrained, Model) else load(
            str(pretrained), device=_device(device))
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
            tmp.write_text("".join(json.dumps(e) + "\n" for e in self.stderrs))
            os.replace(tmp, self.stderr_file)

    def _bar(self, requests, what: str):
        from redraft.display import progress_bar

        return progress_bar(requests, desc=f"redraft {what}", enabled=self.progress)


register()


def main(argv: list[str] | None = None) -> int:
    """The harness's CLI with "redraft" registered; --model redraft unless another is named."""
    from lm_eval.__main__ import cli_evaluate

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
        cli_evaluate()
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
