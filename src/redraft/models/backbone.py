"""What a network must offer for redraft's samplers, losses and server to drive it.

The samplers, the serving batcher and the likelihood code only use this interface, so a
different network (a block-causal variant, a Hugging Face model behind an adapter) plugs in
without touching them. models.Transformer is the reference implementation.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Backbone(Protocol):
    """tokens (B, L) [+ t (B,)] [+ a KV cache, per-row positions] -> logits (B, L, V)."""

    vocab_size: int
    causal: bool
    """Causal backbones are the AR twin's: they take a KV cache (`new_cache`)."""

    @property
    def seq_len(self) -> int:
        """The longest sequence (canvas) it accepts."""

    @property
    def time_conditioned(self) -> bool:
        """Whether it needs t (a model that infers t from the masks does not)."""

    @property
    def device(self) -> torch.device: ...

    def __call__(self, x: torch.Tensor, t: torch.Tensor | None = None, cache: Any = None,
                 positions: torch.Tensor | None = None) -> torch.Tensor: ...

    def new_cache(self, batch: int) -> Any:
        """An empty KV cache for `batch` rows (causal backbones)."""
