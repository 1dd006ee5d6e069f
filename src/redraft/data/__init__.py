"""Text to tokens to batches: tokenizers, corpora, cached token shards, batch iterators."""

from redraft.data.corpus import corpus_id, iter_document_paths, iter_documents
from redraft.data.loading import cache_dir, load_data
from redraft.data.shards import Batches, TokenData, eval_batches, prepare_shards
from redraft.data.tokenizers import Tokenizer, build_tokenizer, load_tokenizer

__all__ = [
    "Batches",
    "TokenData",
    "Tokenizer",
    "build_tokenizer",
    "cache_dir",
    "corpus_id",
    "eval_batches",
    "iter_document_paths",
    "iter_documents",
    "load_data",
    "load_tokenizer",
    "prepare_shards",
]
