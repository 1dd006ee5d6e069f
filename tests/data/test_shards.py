import hashlib
import json
import os
import socket
import warnings

import numpy as np
import pytest
import torch

from redraft.data import Batches, build_tokenizer, eval_batches, iter_documents, prepare_shards
from redraft.data.tokenizers import ByteTokenizer
from redraft.errors import RedraftError

DOCS = [f"document {i}: " + "ünïcødé " * (i % 5) + "x" * (7 * i) for i in range(40)]


@pytest.fixture()
def corpus(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    for i, doc in enumerate(DOCS):
        (root / f"{i:03d}.txt").write_text(doc, encoding="utf-8")
    return str(root)


@pytest.fixture()
def char():
    return build_tokenizer("char", texts=lambda: DOCS)


def _split_docs(tok, tokens):
    """Documents in a token stream, cut at eos."""
    return tok.decode([t if t != tok.eos_id else tok.mask_id for t in tokens], "\0").split("\0")


def test_split_is_a_shuffled_stream_of_all_documents(corpus, char, tmp_path):
    data = prepare_shards(corpus, char, tmp_path / "cache", val_fraction=0.25)
    total = sum(len(doc) + 1 for doc in DOCS)  # chars plus one eos each
    assert len(data.train) + len(data.val) == total
    assert len(data.val) == int(total * 0.25) == data.meta["val_tokens"]
    assert data.train.dtype == np.uint16 and isinstance(data.train, np.memmap)
    stream = np.concatenate([data.train, data.val]).tolist()
    assert stream[-1] == char.eos_id
    docs = _split_docs(char, stream)[:-1]
    assert sorted(docs) == sorted(DOCS) and docs != DOCS
    with pytest.raises(ValueError):
        data.train[0] = 1  # read-only map

    same = prepare_shards(corpus, char, tmp_path / "other", val_fraction=0.25)
    assert np.array_equal(same.train, data.train)
    other_seed = prepare_shards(corpus, char, tmp_path / "cache", val_fraction=0.25, seed=1)
    assert other_seed.directory != data.directory
    assert not np.array_equal(other_seed.train, data.train)


def test_unshuffled_and_single_document(corpus, char, tmp_path):
    data = prepare_shards(corpus, char, tmp_path, shuffle_documents=False)
    stream = np.concatenate([data.train, data.val]).tolist()
    assert _split_docs(char, stream)[:-1] == DOCS
    one = tmp_path / "one.txt"
    one.write_text(DOCS[3])
    data = prepare_shards(str(one), char, tmp_path, val_fraction=0.5)
    assert np.concatenate([data.train, data.val]).tolist() == char.encode(DOCS[3]) + [char.eos_id]


def test_byte_counts_are_exact(corpus, char, tmp_path):
    data = prepare_shards(corpus, char, tmp_path, val_fraction=0.3)
    meta = data.meta
    assert meta["train_bytes"] + meta["val_bytes"] == sum(len(d.encode()) for d in DOCS)
    assert meta["val_bytes"] == len(char.decode(data.val).encode())
    assert meta["train_bytes"] == len(char.decode(data.train).encode())
    assert data.val_bytes_per_token == meta["val_bytes"] / meta["val_tokens"]
    assert meta["n_documents"] == len(DOCS)
    byte = prepare_shards(corpus, build_tokenizer("byte"), tmp_path, val_fraction=0.3)
    val = np.asarray(byte.val)
    assert byte.meta["val_bytes"] == int((val < 256).sum())  # the cut lands between ASCII


def test_no_validation_split(corpus, char, tmp_path):
    data = prepare_shards(corpus, char, tmp_path, val_fraction=0, seq_len=8)
    assert len(data.val) == 0 and data.meta["val_bytes"] == 0
    assert len(data.train) == sum(len(doc) + 1 for doc in DOCS)


def test_cache_is_reused_without_tokenizing(corpus, char, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = prepare_shards(corpus, char, cache)
    mtime = (first.directory / "train.bin").stat().st_mtime_ns

    def fail(texts):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(char, "encode_batch", fail)
    again = prepare_shards(corpus, char, cache)
    assert again.directory == first.directory and again.meta == first.meta
    assert (first.directory / "train.bin").stat().st_mtime_ns == mtime
    assert [p.name for p in cache.iterdir()] == [first.directory.name]  # no temp folder


def test_failed_write_leaves_nothing(corpus, tmp_path):
    narrow = build_tokenizer("char", texts=lambda: ["document"])
    with pytest.raises(RedraftError, match="not in this char tokenizer"):
        prepare_shards(corpus, narrow, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def _damage(directory, how: str, tok):
    if how == "appended":
        with open(directory / "val.bin", "ab") as f:
            f.write(b"\0\0")
    elif how == "flipped":  # in-vocabulary ids changed: only the checksum sees it
        train = np.fromfile(directory / "train.bin", dtype=np.uint16)
        train[5] = (train[5] + 1) % (tok.vocab_size - 3)
        train.tofile(directory / "train.bin")
    elif how == "out_of_vocab":
        train = np.fromfile(directory / "train.bin", dtype=np.uint16)
        train[7] = 60_000
        train.tofile(directory / "train.bin")
        meta = json.loads((directory / "meta.json").read_text())
        del meta["sha256"]  # as an older redraft wrote it: no checksum to catch it first
        (directory / "meta.json").write_text(json.dumps(meta))
    elif how == "no_meta":
        (directory / "meta.json").unlink()
    elif how == "bad_meta":
        (directory / "meta.json").write_text("{not json")
    elif how == "empty_folder":
        for f in directory.iterdir():
            f.unlink()


@pytest.mark.parametrize("how", ["appended", "flipped", "out_of_vocab", "no_meta", "bad_meta",
                                 "empty_folder"])
def test_damaged_cache_is_rebuilt(corpus, char, tmp_path, how):
    tmp_path = tmp_path / "cache"
    data = prepare_shards(corpus, char, tmp_path)
    good = (np.array(data.train), np.array(data.val))
    _damage(data.directory, how, char)
    with pytest.warns(UserWarning, match="rebuilding the token shards") as caught:
        again = prepare_shards(corpus, char, tmp_path)
    expected = {"appended": "has 1", "flipped": "SHA-256", "out_of_vocab": "token id 60000",
                "no_meta": "meta.json is unreadable", "bad_meta": "meta.json is unreadable",
                "empty_folder": "meta.json is unreadable"}[how]
    assert expected in str(caught[0].message)
    assert np.array_equal(again.train, good[0]) and np.array_equal(again.val, good[1])
    assert [p.name for p in tmp_path.iterdir()] == [data.directory.name]  # nothing left over
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and it verifies from now on: no warning
        prepare_shards(corpus, char, tmp_path)


def test_stale_temporary_folders_are_removed(corpus, char, tmp_path):
    tmp_path = tmp_path / "cache"
    tmp_path.mkdir()
    dead = tmp_path / f".tmp-abc-{socket.gethostname().replace('-', '_')}~999999999-x"
    dead.mkdir()
    (dead / "train.bin").write_bytes(b"partial")
    alive = tmp_path / f".tmp-abc-{socket.gethostname().replace('-', '_')}~{os.getpid()}-y"
    alive.mkdir()  # a build still running in this process: kept
    old = tmp_path / ".tmp-abc-legacy"
    old.mkdir()
    os.utime(old, (0, 0))  # an older redraft's name, untouched for decades
    data = prepare_shards(corpus, char, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([data.directory.name,
                                                                 alive.name])


def test_shard_checksums_are_recorded(corpus, char, tmp_path):
    data = prepare_shards(corpus, char, tmp_path)
    for split in ("train", "val"):
        raw = (data.directory / f"{split}.bin").read_bytes()
        assert data.meta["sha256"][f"{split}.bin"] == hashlib.sha256(raw).hexdigest()


def test_bad_arguments_and_short_corpus(corpus, char, tmp_path):
    for bad in (1.0, -0.1, "0.1"):
        with pytest.raises(RedraftError, match="val_fraction"):
            prepare_shards(corpus, char, tmp_path, val_fraction=bad)
    with pytest.raises(RedraftError, match="fewer than one sequence of seq_len=100000"):
        prepare_shards(corpus, char, tmp_path, seq_len=100_000)
    n_val = prepare_shards(corpus, char, tmp_path, val_fraction=0.01).meta["val_tokens"]
    with pytest.raises(RedraftError, match=f"has {n_val} val tokens"):
        prepare_shards(corpus, char, tmp_path, val_fraction=0.01, seq_len=n_val + 1)


def test_large_vocab_uses_uint32(corpus, tmp_path):
    class Wide(ByteTokenizer):
        vocab_size = 70_000

    assert prepare_shards(corpus, Wide(), tmp_path).train.dtype == np.uint32


def test_stdlib_byte_shards(tmp_path):
    data = prepare_shards("stdlib", build_tokenizer("byte"), tmp_path, seq_len=1024)
    assert data.meta["n_documents"] > 300 and data.meta["train_tokens"] > 1_000_000
    assert next(iter_documents("stdlib")).encode() != b""


# -- batches ---------------------------------------------------------------------------


def _positions(n):
    return np.arange(n, dtype=np.uint32)  # token value == its position


def test_batches_are_deterministic():
    tokens = _positions(1000)
    a, b = Batches(tokens, 16, 4, seed=3), Batches(tokens, 16, 4, seed=3)
    for step in (0, 1, 17, 500):
        assert torch.equal(a.batch(step), b.batch(step))
        assert a.batch(step).dtype == torch.int64 and a.batch(step).shape == (4, 16)
    assert not torch.equal(a.batch(0), a.batch(1))
    assert not torch.equal(a.batch(0), Batches(tokens, 16, 4, seed=4).batch(0))


def test_rank_slices_make_the_bigger_batch():
    tokens = _positions(1000)
    single = Batches(tokens, 16, 6)
    ranks = Batches(tokens, 16, 3)
    for step in range(30):  # crosses several epochs of 62 windows
        parts = [ranks.batch(step, rank, 2) for rank in range(2)]
        assert torch.equal(torch.cat(parts), single.batch(step))


def test_epochs_cover_each_window_once_and_shift():
    n, seq_len = 1000, 16
    batches = Batches(_positions(n), seq_len, 5, seed=1)
    n0, n1 = n // seq_len, (n - seq_len + 1) // seq_len
    rows = torch.cat([batches.batch(step) for step in range(40)])  # 200 samples, 3+ epochs
    starts = rows[:, 0].numpy()
    assert np.array_equal(rows - rows[:, :1], np.tile(np.arange(seq_len), (len(rows), 1)))
    assert sorted(starts[:n0]) == list(range(0, n0 * seq_len, seq_len))
    offsets = set()
    for epoch, (lo, hi) in enumerate([(n0, n0 + n1), (n0 + n1, n0 + 2 * n1)], start=1):
        shifted = starts[lo:hi]
        assert len(set(shifted)) == n1 and len({s % seq_len for s in shifted}) == 1
        assert shifted.max() + seq_len <= n
        assert np.array_equal(shifted, batches.window_starts(epoch))
        offsets.add(int(shifted[0] % seq_len))
    assert offsets != {0}


def test_single_window_corpus():
    tokens = _positions(20)
    batches = Batches(tokens, 16, 3)
    assert all(torch.equal(row, torch.arange(16)) for row in batches.batch(5))


def test_batches_errors():
    with pytest.raises(RedraftError, match="no window of seq_len=16"):
        Batches(_positions(10), 16, 2)
    batches = Batches(_positions(100), 8, 2)
    with pytest.raises(RedraftError, match="rank=2"):
        batches.batch(0, rank=2, world_size=2)
    with pytest.raises(RedraftError, match="batch_size"):
        Batches(_positions(100), 8, 0)
    with pytest.raises(RedraftError, match="seed must be a non-negative int, got -1"):
        Batches(_positions(100), 8, 2, seed=-1)


def test_eval_batches_cover_the_windows_in_order():
    tokens = _positions(103)
    got = list(eval_batches(tokens, 10, 4))
    assert [b.shape[0] for b in got] == [4, 4, 2]
    assert torch.equal(torch.cat(got).flatten(), torch.arange(100))
    assert len(list(eval_batches(tokens, 10, 4, max_batches=2))) == 2
    with pytest.raises(RedraftError, match="103 tokens with seq_len=200"):
        eval_batches(tokens, 200, 4)
