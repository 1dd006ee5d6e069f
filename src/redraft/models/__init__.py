"""Backbones: (xt, t) -> logits."""

from redraft.models.backbone import Backbone
from redraft.models.transformer import KVCache, Transformer

__all__ = ["Backbone", "KVCache", "Transformer"]
