import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from redraft.data import build_tokenizer, load_tokenizer
from redraft.errors import RedraftError

KINDS = ["char", "byte", "bpe", "hf"]
TEXTS = [
    "Hello world!\n",
    "naïve café — 日本語 🙂\r\n\ttabs",
    "def f(x):\n    return x * 2  # <mask> <eos> </s>\n",
]
GPT2 = Path(__file__).resolve().parents[2].parent / "shared" / "tokenizers" / "gpt2"


def _hf_tokenizer_file(directory: Path) -> Path:
    """A small third-party style tokenizer.json: has </s>, no pad, no mask."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(TEXTS * 5, trainer=trainer)
    path = directory / "tokenizer.json"
    backend.save(str(path))
    return path


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    hf_file = _hf_tokenizer_file(tmp_path_factory.mktemp("hf"))
    return {
        "char": build_tokenizer("char", texts=lambda: TEXTS),
        "byte": build_tokenizer("byte"),
        "bpe": build_tokenizer("bpe", texts=lambda: TEXTS * 5, vocab_size=300),
        "hf": build_tokenizer("hf", path=str(hf_file)),
    }


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_and_specials(tokenizers, kind):
    tok = tokenizers[kind]
    assert tok.kind == kind
    specials = {tok.eos_id, tok.pad_id, tok.mask_id}
    assert tok.mask_id not in {tok.eos_id, tok.pad_id}
    assert all(0 <= i < tok.vocab_size for i in specials)
    if kind == "bpe":
        assert tok.vocab_size <= 300  # the specials count inside the requested size
    for text, ids in zip(TEXTS, tok.encode_batch(TEXTS), strict=True):
        assert ids == tok.encode(text)
        assert tok.decode(ids) == text
        # The texts spell "<mask>", "<eos>" and "</s>": plain text never yields a special id.
        assert not specials.intersection(ids)


@pytest.mark.parametrize("kind", KINDS)
def test_decode_specials_and_mask_text(tokenizers, kind):
    tok = tokenizers[kind]
    a, b = tok.encode("Hello"), tok.encode(" world")
    ids = [tok.mask_id, *a, tok.mask_id, tok.mask_id, *b, tok.eos_id, tok.pad_id]
    assert tok.decode(ids) == "Hello world"
    assert tok.decode(ids, mask_text="_") == "_Hello__ world"
    assert tok.decode(torch.tensor(ids), mask_text="_") == "_Hello__ world"
    assert tok.decode(np.array(ids, dtype=np.uint16)) == "Hello world"
    assert tok.decode([]) == ""
    with pytest.raises(RedraftError, match=str(tok.vocab_size)):
        tok.decode([tok.vocab_size])


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(tokenizers, kind, tmp_path):
    tok = tokenizers[kind]
    tok.save(tmp_path)
    assert (tmp_path / "redraft_tokenizer.json").is_file()
    assert (tmp_path / "tokenizer.json").is_file() == (kind in ("bpe", "hf"))
    loaded = load_tokenizer(tmp_path)
    assert type(loaded) is type(tok) and loaded.kind == kind
    assert loaded.fingerprint == tok.fingerprint
    got = (loaded.vocab_size, loaded.eos_id, loaded.pad_id, loaded.mask_id)
    assert got == (tok.vocab_size, tok.eos_id, tok.pad_id, tok.mask_id)
    assert loaded.encode_batch(TEXTS) == tok.encode_batch(TEXTS)
    ids = [tok.mask_id, *tok.encode(TEXTS[1]), tok.eos_id]
    assert loaded.decode(ids, mask_text="?") == tok.decode(ids, mask_text="?")


def test_fingerprints_differ_and_are_stable_across_processes(tokenizers, tmp_path):
    prints = {kind: tok.fingerprint for kind, tok in tokenizers.items()}
    assert len(set(prints.values())) == len(KINDS)
    assert all(len(p) == 16 for p in prints.values())
    for kind, tok in tokenizers.items():
        (tmp_path / kind).mkdir()
        tok.save(tmp_path / kind)
    script = (
        "import json, sys\nfrom redraft.data import load_tokenizer\n"
        f"print(json.dumps({{k: load_tokenizer(sys.argv[1] + '/' + k).fingerprint "
        f"for k in {KINDS!r}}}))"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": src},
    )
    assert json.loads(out.stdout) == prints


def test_char_vocabulary_and_unknown_character():
    tok = build_tokenizer("char", texts=lambda: ["bca", "ab"])
    assert tok.chars == ["a", "b", "c"]
    assert (tok.eos_id, tok.pad_id, tok.mask_id, tok.vocab_size) == (3, 4, 5, 6)
    assert tok.encode("cab") == [2, 0, 1]
    with pytest.raises(RedraftError, match=r"'é'"):
        tok.encode("abé")


def test_byte_ids():
    tok = build_tokenizer("byte")
    assert (tok.eos_id, tok.pad_id, tok.mask_id, tok.vocab_size) == (256, 257, 258, 259)
    assert tok.encode("é") == [0xC3, 0xA9]
    assert tok.decode([0xC3]) == "\ufffd"  # a cut character decodes with a replacement


def test_hf_adopts_eos_and_adds_mask(tokenizers):
    tok = tokenizers["hf"]
    eos = tok.backend.token_to_id("</s>")
    assert tok.eos_id == tok.pad_id == eos  # no pad token: pad reuses eos
    assert tok.mask_id == tok.vocab_size - 1 == tok.backend.token_to_id("<mask>")


def test_gpt2_folder(tmp_path):
    if not GPT2.is_dir():
        pytest.skip(f"{GPT2} is absent")
    tok = build_tokenizer("hf", path=str(GPT2))
    assert tok.encode("Hello world") == [15496, 995]
    assert (tok.eos_id, tok.mask_id, tok.vocab_size) == (50256, 50257, 50258)
    assert tok.decode([15496, tok.mask_id, 995], mask_text="[M]") == "Hello[M] world"
    tok.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.fingerprint == tok.fingerprint
    assert loaded.encode(TEXTS[1]) == tok.encode(TEXTS[1])


def test_build_errors(tmp_path):
    with pytest.raises(RedraftError, match="'wordpiece'"):
        build_tokenizer("wordpiece")
    with pytest.raises(RedraftError, match="texts is required"):
        build_tokenizer("char")
    with pytest.raises(RedraftError, match="vocab_size 100"):
        build_tokenizer("bpe", texts=lambda: TEXTS, vocab_size=100)
    with pytest.raises(RedraftError, match="does not exist"):
        build_tokenizer("hf", path=str(tmp_path / "nope"))
    with pytest.raises(RedraftError, match="vocab.json"):
        build_tokenizer("hf", path=str(tmp_path))
    with pytest.raises(RedraftError, match="only used with kind 'hf'"):
        build_tokenizer("byte", path="x")


def test_load_errors(tmp_path):
    with pytest.raises(RedraftError, match="redraft_tokenizer.json"):
        load_tokenizer(tmp_path / "missing")
    meta = tmp_path / "redraft_tokenizer.json"
    meta.write_text("{not json")
    with pytest.raises(RedraftError, match="corrupt"):
        load_tokenizer(tmp_path)
    build_tokenizer("byte").save(tmp_path)
    meta.write_text(meta.read_text().replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(RedraftError, match="format_version 99"):
        load_tokenizer(tmp_path)
    bpe = build_tokenizer("bpe", texts=lambda: TEXTS, vocab_size=270)
    bpe.save(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(RedraftError, match="lacks tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("garbage")
    with pytest.raises(RedraftError, match="cannot read tokenizer file"):
        load_tokenizer(tmp_path)
