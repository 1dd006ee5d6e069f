"""Token shards (corpus -> train.bin / val.bin on disk) and the batches read from them.

    documents ─► tokenizer ─► doc0 <eos> doc1 <eos> ... ─► [ train ........ | val ... ]

Documents are shuffled (seeded) before they are joined, so the validation tail is a fair
sample, then the stream is cut by token position: the last `val_fraction` of tokens is
validation and nothing from it ever appears in a training batch. Shards live in
`cache_dir/<key>/`, where the key hashes the corpus, the tokenizer and the split settings,
so a second run with the same inputs memory-maps them instead of tokenizing again.

Damage is caught, not trained on: meta.json records a SHA-256 of each shard, checked (with the
largest id, which must be inside the tokenizer's vocabulary) every time the cache is built or
reused; a cache whose meta.json is missing or unreadable, whose files have the wrong size or
checksum, or that holds an out-of-vocabulary id is rebuilt (into a temporary folder renamed
into place, with a warning naming what was wrong). Temporary folders a killed build left are
removed by the next run. Cost: one sequential read of the shards per run (docs/training.md).

Batches are non-overlapping `seq_len` windows of a split that ignore document boundaries
(documents are separated by <eos> inside a window), as in nanoGPT and MDLM's wrapped mode.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import os
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from redraft.data.corpus import corpus_id, iter_documents
from redraft.data.tokenizers import Tokenizer
from redraft.errors import RedraftError
from redraft.files import user_modes

FORMAT_VERSION = 1
_CHUNK_CHARS = 4_000_000  # documents per encode_batch call, by size: parallel yet bounded


@dataclass(frozen=True, eq=False)  # arrays have no single truth value
class TokenData:
    """Memory-mapped (read-only) token splits and their meta.json."""

    train: np.ndarray  # (N_train,) np.memmap, uint16 or uint32
    val: np.ndarray  # (N_val,) np.memmap; an empty array when val_fraction is 0
    meta: dict
    directory: Path

    @property
    def train_bytes_per_token(self) -> float:
        """UTF-8 bytes per train token: bits/byte = (nats/token) / ln 2 / this."""
        return _ratio(self.meta["train_bytes"], self.meta["train_tokens"])

    @property
    def val_bytes_per_token(self) -> float:
        return _ratio(self.meta["val_bytes"], self.meta["val_tokens"])


def prepare_shards(
    spec: str,
    tokenizer: Tokenizer,
    cache_dir: str | Path,
    val_fraction: float = 0.1,
    text_field: str = "text",
    seq_len: int | None = None,
    shuffle_documents: bool = True,
    seed: int = 0,
) -> TokenData:
    """Tokenize corpus `spec` into cached train/val shards (or reuse them) and map them.

    With `seq_len`, each split used must hold at least one window of `seq_len` tokens.
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)):
        raise RedraftError(f"val_fraction {val_fraction!r} must be a number in [0, 1)")
    if not 0 <= val_fraction < 1:
        raise RedraftError(f"val_fraction {val_fraction!r} must be in [0, 1)")
    _check_seed(seed)
    settings = {
        "format_version": FORMAT_VERSION,
        "corpus_id": corpus_id(spec, text_field),
        "tokenizer_fingerprint": tokenizer.fingerprint,
        "val_fraction": float(val_fraction),
        "shuffle_documents": bool(shuffle_documents),
        "seed": int(seed) if shuffle_documents else None,  # unshuffled: seed is irrelevant
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    directory = cache_dir / key
    _clean_stale(cache_dir)
    meta = {**settings, "key": key, "corpus": spec, "text_field": text_field}
    if not directory.exists():
        _write_shards(directory, spec, tokenizer, meta)
        data = _open_shards(directory, key, tokenizer.vocab_size)
    else:
        try:
            data = _open_shards(directory, key, tokenizer.vocab_size)
        except RedraftError as damage:
            warnings.warn(f"{damage}: rebuilding the token shards", stacklevel=2)
            aside = _aside(directory, "damaged")
            try:
                _write_shards(directory, spec, tokenizer, meta)
            except BaseException:
                if not directory.exists():
                    os.replace(aside, directory)  # leave the cache as it was
                raise
            shutil.rmtree(aside, ignore_errors=True)
            data = _open_shards(directory, key, tokenizer.vocab_size)
    if seq_len is not None:
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            raise RedraftError(f"seq_len must be a positive int or None, got {seq_len!r}")
        splits = ["train", "val"] if val_fraction > 0 else ["train"]
        for split in splits:
            n = data.meta[f"{split}_tokens"]
            if n < seq_len:
                raise RedraftError(
                    f"corpus {spec!r} has {n} {split} tokens, fewer than one sequence of "
                    f"seq_len={seq_len}: use a larger corpus or a smaller seq_len"
                )
    return data


def _write_shards(directory: Path, spec: str, tokenizer: Tokenizer, meta: dict) -> None:
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
    docs, doc_bytes = _tokenize(spec, meta["text_field"], tokenizer, dtype)
    order = np.arange(len(docs))
    if meta["shuffle_documents"] and len(docs) >= 2:
        order = np.random.default_rng(meta["seed"]).permutation(len(docs))
    stream = np.concatenate([docs[i] for i in order])
    n_val = int(len(stream) * meta["val_fraction"])
    n_train = len(stream) - n_val
    lengths = [len(docs[i]) for i in order]
    val_bytes = _tail_bytes(stream, n_train, lengths, doc_bytes[order], tokenizer)
    meta.update(
        tokenizer_kind=tokenizer.kind,
        vocab_size=tokenizer.vocab_size,
        dtype=np.dtype(dtype).name,
        n_documents=len(docs),
        train_tokens=n_train,
        val_tokens=n_val,
        train_bytes=int(doc_bytes.sum()) - val_bytes,
        val_bytes=val_bytes,
    )
    # Build in a temp folder and rename it into place, so an interrupted run never leaves a
    # folder that a later run would trust.
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{directory.name}-{_owner()}-", dir=directory.parent))
    try:
        stream[:n_train].tofile(tmp / "train.bin")
        stream[n_train:].tofile(tmp / "val.bin")
        meta["sha256"] = {f"{split}.bin": _digest(tmp / f"{split}.bin", dtype)[0]
                          for split in ("train", "val")}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        try:
            user_modes(tmp)
            os.replace(tmp, directory)
        except OSError:
            # Another process (e.g. another rank) finished the same shards first: use theirs.
            if not (directory / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _tokenize(spec: str, text_field: str, tokenizer: Tokenizer, dtype):
    """Per document: its ids followed by eos, and the UTF-8 size of its text."""
    docs: list[np.ndarray] = []
    doc_bytes: list[int] = []
    chunk: list[str] = []

    def flush():
        for ids in tokenizer.encode_batch(chunk):
            arr = np.empty(len(ids) + 1, dtype=dtype)
            arr[:-1] = ids
            arr[-1] = tokenizer.eos_id
            docs.append(arr)
        chunk.clear()

    size = 0
    for doc in iter_documents(spec, text_field):
        chunk.append(doc)
        doc_bytes.append(len(doc.encode("utf-8")))
        size += len(doc)
        if size >= _CHUNK_CHARS:
            flush()
            size = 0
    flush()
    return docs, np.array(doc_bytes, dtype=np.int64)


def _tail_bytes(stream, n_train: int, lengths: list[int], doc_bytes, tokenizer) -> int:
    """UTF-8 bytes of the text in stream[n_train:] (documents in stream order).

    Whole documents count their source text; the one document cut by the boundary counts
    the decoded text of its validation piece, and train gets the rest of the total.
    """
    ends = np.cumsum(lengths)
    first_val = int(np.searchsorted(ends, n_train, side="right"))  # first doc not all train
    if first_val == len(lengths):
        return 0
    start = int(ends[first_val - 1]) if first_val else 0
    whole = int(doc_bytes[first_val + 1 :].sum())
    if start == n_train:
        return whole + int(doc_bytes[first_val])
    piece = tokenizer.decode(stream[n_train : ends[first_val]])
    return whole + len(piece.encode("utf-8"))


def _owner() -> str:
    """host~pid of this process, in temporary folder names, so a later run knows whether the
    process that made one is gone (then the folder is an interrupted build)."""
    return f"{socket.gethostname().replace('-', '_')}~{os.getpid()}"


def _clean_stale(cache_dir: Path, max_age_s: float = 86_400.0) -> None:
    """Remove temporary folders of builds that died: made by a process of this host that no
    longer runs, or (another host, or an older redraft's name) untouched for a day."""
    host = socket.gethostname().replace("-", "_")
    for tmp in cache_dir.glob(".tmp-*"):
        parts = tmp.name.split("-")
        owner = parts[2] if len(parts) >= 4 else ""
        who, _, pid = owner.partition("~")
        try:
            if who == host and pid.isdigit():
                dead = not _alive(int(pid))
            else:
                dead = time.time() - tmp.stat().st_mtime > max_age_s
        except OSError:
            continue  # already gone
        if dead:
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _aside(directory: Path, why: str) -> Path:
    aside = directory.parent / f".tmp-{directory.name}-{_owner()}-{why}"
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(directory, aside)
    return aside


def _digest(path: Path, dtype, chunk_bytes: int = 1 << 24) -> tuple[str, int]:
    """(SHA-256 hex, largest id or -1 when empty) of a shard, in one sequential read."""
    h, top = hashlib.sha256(), -1
    step = chunk_bytes - chunk_bytes % np.dtype(dtype).itemsize
    with open(path, "rb") as f:
        while chunk := f.read(step):
            h.update(chunk)
            top = max(top, int(np.frombuffer(chunk, dtype=dtype).max()))
    return h.hexdigest(), top


def _open_shards(directory: Path, key: str, vocab_size: int | None = None) -> TokenData:
    """Map the shards after checking meta.json, sizes, checksums and (with vocab_size) that
    every id is below it; a RedraftError says what is wrong."""
    advice = f"delete the folder {str(directory)!r} to rebuild it"
    try:
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        dtype = np.dtype(meta["dtype"])
        sizes = {split: meta[f"{split}_tokens"] for split in ("train", "val")}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RedraftError(f"token shards meta.json is unreadable ({err!r}): {advice}") from err
    if meta.get("format_version") != FORMAT_VERSION or meta.get("key") != key:
        raise RedraftError(
            f"token shards in {str(directory)!r} have format {meta.get('format_version')!r} and "
            f"key {meta.get('key')!r}, expected {FORMAT_VERSION} and {key!r}: {advice}"
        )
    arrays = {}
    for split, n in sizes.items():
        path = directory / f"{split}.bin"
        found = path.stat().st_size if path.is_file() else None
        if found != n * dtype.itemsize:
            raise RedraftError(
                f"{str(path)!r} has {found} bytes, expected {n * dtype.itemsize}: {advice}"
            )
        digest, top = _digest(path, dtype)
        want = (meta.get("sha256") or {}).get(path.name)
        if want is not None and digest != want:
            raise RedraftError(f"{str(path)!r} does not match its SHA-256 in meta.json (the "
                               f"shard is damaged): {advice}")
        if vocab_size is not None and top >= vocab_size:
            raise RedraftError(f"{str(path)!r} holds token id {top}, outside the tokenizer's "
                               f"{vocab_size} ids: {advice}")
        if n == 0:  # mmap cannot map an empty file
            arrays[split] = np.zeros(0, dtype=dtype)
            arrays[split].flags.writeable = False
        else:
            arrays[split] = np.memmap(path, dtype=dtype, mode="r", shape=(n,))
    return TokenData(train=arrays["train"], val=arrays["val"], meta=meta, directory=directory)


class Batches:
    """Deterministic, resumable training batches of `seq_len`-token windows.

    The stream of samples is epoch 0's windows in a seeded random order, then epoch 1's,
    and so on. Epoch 0 uses the windows starting at multiples of seq_len; later epochs
    shift every start by a seeded offset in [0, seq_len) so window boundaries vary. A
    shifted epoch uses (len - seq_len + 1) // seq_len windows, the count that fits for any
    offset, so all shifted epochs have one size and a step maps to (epoch, window) by
    arithmetic. `batch(step, rank, world_size)` is a pure function: resuming is exact.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int = 0):
        for name, value in (("seq_len", seq_len), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RedraftError(f"{name} must be a positive int, got {value!r}")
        _check_seed(seed)
        self.tokens = tokens
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.seed = seed
        self.n_windows = len(tokens) // seq_len
        if self.n_windows == 0:
            raise RedraftError(
                f"{len(tokens)} tokens hold no window of seq_len={seq_len}: "
                "use more data or a smaller seq_len"
            )
        shifted = (len(tokens) - seq_len + 1) // seq_len
        # Too little slack (a single window) means no shifting: every epoch is epoch 0's size.
        self.shift = shifted >= 1
        self.windows_per_shifted_epoch = shifted if self.shift else self.n_windows

    def window_starts(self, epoch: int) -> np.ndarray:
        """Token positions where epoch `epoch`'s windows start, in sample order."""
        return _epoch_starts(
            self.seed, epoch, len(self.tokens), self.seq_len, self.shift and epoch > 0
        )

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        """Rows [(step * world_size + rank) * B, +B) of the sample stream: (B, L) int64.

        So the ranks of one step together hold the world_size=1 batch of B * world_size rows.
        """
        step, rank, world_size = (operator.index(v) for v in (step, rank, world_size))
        if step < 0 or world_size < 1 or not 0 <= rank < world_size:
            raise RedraftError(
                f"batch(step={step}, rank={rank}, world_size={world_size}): expected "
                "step >= 0, world_size >= 1 and 0 <= rank < world_size"
            )
        first = (step * world_size + rank) * self.batch_size
        sample = np.arange(first, first + self.batch_size, dtype=np.int64)
        later = sample - self.n_windows  # position among the samples after epoch 0
        per_epoch = self.windows_per_shifted_epoch
        epoch = np.where(later < 0, 0, 1 + later // per_epoch)
        index = np.where(later < 0, sample, later % per_epoch)
        starts = np.empty(self.batch_size, dtype=np.int64)
        for e in np.unique(epoch):
            chosen = epoch == e
            starts[chosen] = self.window_starts(int(e))[index[chosen]]
        rows = self.tokens[starts[:, None] + np.arange(self.seq_len)]  # (B, L)
        return torch.from_numpy(np.array(rows, dtype=np.int64))


@lru_cache(maxsize=8)
def _epoch_starts(seed: int, epoch: int, n_tokens: int, seq_len: int, shifted: bool):
    rng = np.random.default_rng([seed, epoch])
    offset = int(rng.integers(seq_len)) if shifted else 0
    count = (n_tokens - seq_len + 1) // seq_len if shifted else n_tokens // seq_len
    starts = offset + rng.permutation(count).astype(np.int64) * seq_len
    starts.flags.writeable = False  # shared by every caller through the cache
    return starts


def eval_batches(
    tokens: np.ndarray, seq_len: int, batch_size: int, max_batches: int | None = None
) -> Iterator[torch.Tensor]:
    """The windows tokens[i*L:(i+1)*L] in order, batch_size at a time ((b, L) int64; the last
    batch may be smaller). Covers the first (len // L) * L tokens, at most max_batches."""
    n_windows = len(tokens) // seq_len if seq_len >= 1 else 0
    if n_windows == 0 or batch_size < 1:
        raise RedraftError(
            f"eval_batches: {len(tokens)} tokens with seq_len={seq_len} and "
            f"batch_size={batch_size}; expected at least one window and batch_size >= 1"
        )
    windows = tokens[: n_windows * seq_len].reshape(n_windows, seq_len)
    starts = range(0, n_windows, batch_size)[:max_batches]
    # A generator inside, so bad arguments fail at the call rather than at the first next().
    return (torch.from_numpy(np.array(windows[i : i + batch_size], dtype=np.int64)) for i in starts)


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise RedraftError(f"seed must be a non-negative int, got {seed!r}")


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan
