"""Text to tokens to batches: tokenizers, corpora, cached token shards, batch iterators."""

from redraft.data.corpus import corpus_id, iter_document_paths, iter_documents
from redraft.data.shards import Batches, TokenData, eval_batches, prepare_shards
from redraft.data.tokenizers import Tokenizer, build_tokenizer, load_tokenizer

__all__ = [
    "Batches",
    "TokenData",
    "Tokenizer",
    "build_tokenizer",
    "corpus_id",
    "eval_batches",
    "iter_document_paths",
    "iter_documents",
    "load_tokenizer",
    "prepare_shards",
]
