"""Hugging Face networks behind redraft's Backbone interface (models/backbone.py).

MaskedBackbone: any model whose forward maps input_ids (B, L) to logits (B, L, V) over a
vocabulary with a mask token (LLaDA, Dream, DiffuCoder, ...). It is bidirectional and not
time-conditioned: the masks tell it how noisy the canvas is, so redraft's masked samplers
(mdlm objective, mask process) drive it unchanged. shift=True is Dream's convention, kept from
its AR parent: the logits at position p-1 predict token p, so position p reads row p-1 (and
position 0 its own row, which Dream never asks for since a prompt comes first).

CausalBackbone: an AutoModelForCausalLM as redraft's AR twin: x (B, L) -> next-token logits,
with the model's own KV cache (past_key_values) held in a small box the loop passes back.
"""

from __future__ import annotations

import torch

from redraft.errors import RedraftError


def _logits(out) -> torch.Tensor:
    logits = getattr(out, "logits", None)
    if logits is None:
        logits = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        raise RedraftError("the model's forward did not return logits (B, L, V): redraft needs "
                           "a model that maps input_ids to logits")
    return logits


class _Wrapped:
    """What redraft's evaluation loop asks of a module: train/eval flags, the device."""

    model: torch.nn.Module

    @property
    def training(self) -> bool:
        return self.model.training

    def train(self, mode: bool = True):
        self.model.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def parameters(self):
        return self.model.parameters()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def seq_len(self) -> int:
        return self._seq_len


class MaskedBackbone(_Wrapped):
    causal = False
    time_conditioned = False

    def __init__(self, model, vocab_size: int, seq_len: int, shift: bool = False):
        self.model, self.vocab_size, self._seq_len, self.shift = model, vocab_size, seq_len, shift

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: torch.Tensor | None = None, cache=None,
                 positions: torch.Tensor | None = None) -> torch.Tensor:
        logits = _logits(self.model(input_ids=x)).float()[..., :self.vocab_size]
        if self.shift:
            logits = torch.cat((logits[:, :1], logits[:, :-1]), dim=1)
        return logits

    def new_cache(self, batch: int):
        raise RedraftError("a masked diffusion model has no KV cache")


class _Box:
    """The causal model's past_key_values between calls."""

    def __init__(self):
        self.past = None


class CausalBackbone(_Wrapped):
    causal = True
    time_conditioned = False

    def __init__(self, model, vocab_size: int, seq_len: int):
        import inspect

        self.model, self.vocab_size, self._seq_len = model, vocab_size, seq_len
        # transformers 5 renamed past_key_values to cache (the old name warns)
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: torch.Tensor | None = None, cache: _Box | None = None,
                 positions: torch.Tensor | None = None) -> torch.Tensor:
        if positions is not None:
            raise RedraftError("a Hugging Face causal LM decodes rows at one shared position: "
                               "the server's ragged AR batches are not supported for it")
        if cache is None:
            return _logits(self.model(input_ids=x)).float()[..., :self.vocab_size]
        out = self.model(input_ids=x, use_cache=True, **{self._cache_kw: cache.past})
        cache.past = getattr(out, "cache", None) or out.past_key_values
        return _logits(out).float()[..., :self.vocab_size]

    def new_cache(self, batch: int) -> _Box:
        return _Box()
