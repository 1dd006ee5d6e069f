"""Generative perplexity: the judge's reading of real held-out text matches its validation loss."""

import math

import numpy as np
import pytest
import torch

from redraft.checkpoint import load_checkpoint
from redraft.cli import main
from redraft.data import load_data
from redraft.errors import RedraftError
from redraft.eval.judge import HFJudge, RedraftJudge, load_judge, texts_of
from redraft.likelihood import evaluate
from tests.conftest import tiny_overrides


@pytest.fixture(scope="module")
def judge_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("judge")
    corpus = base / "corpus.txt"
    # Varied text, so held-out windows are not copies of training windows.
    words = ["the", "cat", "dog", "sat", "ran", "on", "a", "mat", "log", "big", "red"]
    rng = np.random.default_rng(0)
    corpus.write_text(" ".join(rng.choice(words, size=3000)) + ".")
    assert main(["train", *tiny_overrides(corpus, base / "ar", "ar", **{
        "train.max_steps": 60, "model.seq_len": 48})]) == 0
    return base / "ar"


def test_gen_ppl_of_validation_windows_equals_validation_perplexity(judge_run):
    ck = load_checkpoint(judge_run)
    _, data = load_data(ck.config.data, ck.config.model.seq_len, ck.tokenizer)
    L = ck.config.model.seq_len
    val = np.asarray(data.val)
    val = val[val != ck.tokenizer.eos_id]  # one document: drop its separator
    windows = val[: (len(val) // L) * L]
    nats, _, n = evaluate(ck.model, windows, ck.config, ck.tokenizer.mask_id,
                          ck.tokenizer.eos_id, None)
    judge = load_judge(judge_run)
    assert isinstance(judge, RedraftJudge)
    texts = [ck.tokenizer.decode(w) for w in windows.reshape(n, L)]
    ppl, judge_nats, tokens = judge.gen_ppl(texts)
    assert tokens == n * L
    assert judge_nats == pytest.approx(nats, rel=1e-5)  # same windows: the same number
    assert ppl == pytest.approx(math.exp(nats), rel=1e-5)

    # Real held-out text cut elsewhere (windows shifted by half a context) reads about the same.
    shifted = [ck.tokenizer.decode(val[s:s + L]) for s in range(L // 2, len(val) - L, L)]
    other, _, _ = judge.gen_ppl(shifted)
    assert other == pytest.approx(math.exp(nats), rel=0.1)
    # A longer text is scored in context windows, every token once.
    long_text = ck.tokenizer.decode(val[:3 * L + 5])
    assert judge.score([long_text])[0].tokens == 3 * L + 5
    # Shuffled characters are much less likely than real text.
    shuffled = ["".join(np.random.default_rng(1).permutation(list(t))) for t in texts]
    assert judge.gen_ppl(shuffled)[0] > 1.5 * ppl


def test_texts_of_cuts_at_eos_and_refuses_masks(judge_run):
    tok = load_checkpoint(judge_run).tokenizer
    a, b = tok.encode("the cat"), tok.encode(" sat")
    assert texts_of([a + [tok.eos_id] + b], tok) == ["the cat"]
    with pytest.raises(RedraftError, match="mask"):
        texts_of([a + [tok.mask_id]], tok)


def test_judge_errors(judge_run, tmp_path):
    with pytest.raises(RedraftError, match="does not exist"):
        load_judge(tmp_path / "missing")
    judge = load_judge(judge_run)
    with pytest.raises(RedraftError, match="cannot read"):
        judge.score(["\u2603 snowman"])  # not in the char vocabulary
    with pytest.raises(RedraftError, match="nothing to judge"):
        judge.gen_ppl([""])


def test_hugging_face_judge_matches_transformers_loss(tmp_path):
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"])
    backend.train_from_iterator(["the cat sat on the mat. " * 20], trainer)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=backend,
                                               eos_token="<|endoftext|>")
    eos = backend.token_to_id("<|endoftext|>")
    cfg = transformers.GPT2Config(vocab_size=backend.get_vocab_size(), n_positions=64,
                                  n_embd=32, n_layer=1, n_head=2, bos_token_id=eos,
                                  eos_token_id=eos)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)

    judge = load_judge(tmp_path)
    assert isinstance(judge, HFJudge) and judge.context == 63
    text = "the mat sat on the cat."
    ids = tok(text)["input_ids"]
    with torch.no_grad():
        inputs = torch.tensor([[tok.eos_token_id] + ids])
        loss = model(input_ids=inputs, labels=inputs).loss.item()  # mean over ids
    score = judge.score([text])[0]
    assert score.tokens == len(ids)
    assert score.nll / score.tokens == pytest.approx(loss, rel=1e-5)
