"""Backbones: (xt, t) -> logits."""

from redraft.models.transformer import KVCache, Transformer

__all__ = ["KVCache", "Transformer"]
