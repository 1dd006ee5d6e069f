"""From a data config to a tokenizer and cached token shards: what training, evaluation and
benchmarks all start from."""

from __future__ import annotations

import os
from pathlib import Path

from redraft.config import DataConfig
from redraft.data.corpus import iter_documents
from redraft.data.shards import TokenData, prepare_shards
from redraft.data.tokenizers import Tokenizer, build_tokenizer


def cache_dir(cfg: DataConfig) -> Path:
    """Where token shards are cached: data.cache_dir, else $REDRAFT_CACHE, else
    ~/.cache/redraft."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir)
    return Path(os.environ.get("REDRAFT_CACHE", Path.home() / ".cache" / "redraft"))


def load_data(cfg: DataConfig, seq_len: int,
              tokenizer: Tokenizer | None = None) -> tuple[Tokenizer, TokenData]:
    """(tokenizer, TokenData) for a data config; builds the tokenizer unless one is given."""
    if tokenizer is None:
        tokenizer = build_tokenizer(
            cfg.tokenizer,
            texts=lambda: iter_documents(cfg.corpus, cfg.text_field),
            vocab_size=cfg.vocab_size,
            path=cfg.tokenizer_path,
        )
    data = prepare_shards(cfg.corpus, tokenizer, cache_dir(cfg), val_fraction=cfg.val_fraction,
                          text_field=cfg.text_field, seq_len=seq_len,
                          shuffle_documents=cfg.shuffle_documents)
    return tokenizer, data
