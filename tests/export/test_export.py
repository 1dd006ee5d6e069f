"""`redraft export`: transformers loads the folder with trust_remote_code and gives redraft's
logits exactly (AR, masked, block), redraft.load("hf:...") gives the same model back, and the
folder is written whole or not at all."""

from __future__ import annotations

import json

import pytest
import torch

import redraft
from redraft.cli import main
from redraft.errors import RedraftError
from redraft.export import export_model, read_exported

transformers = pytest.importorskip("transformers")

TEXT = "the cat sat on\na mat."


def _export(tiny_checkpoints, tmp_path, kind):
    out = tmp_path / f"hf-{kind}"
    assert main(["export", str(tiny_checkpoints[kind]), str(out)]) == 0
    return out


def _inputs(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, model.tokenizer.vocab_size, (3, model.seq_len), generator=g)
    t = torch.rand(3, generator=g) if model.time_conditioned else None
    return x, t


@pytest.mark.parametrize("kind", ["ar", "mdlm", "block"])
def test_transformers_gives_redraft_logits(tiny_checkpoints, tmp_path, remote_code_cache, kind):
    out = _export(tiny_checkpoints, tmp_path, kind)
    assert {"config.json", "model.safetensors", "modeling_redraft.py", "tokenizer.json",
            "tokenizer_config.json", "redraft_tokenizer.json"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    native = redraft.load(tiny_checkpoints[kind])
    assert config["model_type"] == "redraft" and config["objective"] == kind
    assert config["mask_token_id"] == native.tokenizer.mask_id
    assert config["attention"] == {"ar": "causal", "mdlm": "bidirectional",
                                   "block": "block"}[kind]
    assert config["block_size"] == (8 if kind == "block" else None)
    assert config["time_conditioning"] == (kind == "mdlm")

    head = (transformers.AutoModelForCausalLM if kind == "ar"
            else transformers.AutoModelForMaskedLM)
    hf = head.from_pretrained(out, trust_remote_code=True).eval()
    base = transformers.AutoModel.from_pretrained(out, trust_remote_code=True).eval()
    x, t = _inputs(native)
    extra = {"timesteps": t} if t is not None else {}
    with torch.no_grad():
        want = native.backbone(x, t)
        assert torch.equal(hf(input_ids=x, **extra).logits, want)
        assert torch.equal(base(input_ids=x, **extra).logits, want)
        # per-position times (block diffusion's convention) go through as well
        if t is not None:
            tt = t[:, None].expand(-1, x.shape[1])
            assert torch.equal(hf(input_ids=x, timesteps=tt).logits, native.backbone(x, tt))

    tok = transformers.AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    ids = tok(TEXT).input_ids
    assert ids == native.tokenizer.encode(TEXT)
    assert tok.decode(ids) == TEXT
    assert tok.mask_token_id == native.tokenizer.mask_id
    assert tok.eos_token_id == native.tokenizer.eos_id


@pytest.mark.parametrize("kind", ["ar", "mdlm", "block"])
def test_redraft_loads_the_export_back(tiny_checkpoints, tmp_path, kind):
    out = _export(tiny_checkpoints, tmp_path, kind)
    native = redraft.load(tiny_checkpoints[kind])
    back = redraft.load(f"hf:{out}")
    assert back.objective is native.objective and back.kind == native.kind
    assert (back.process is None) == (native.process is None)
    assert back.config.to_dict() == native.config.to_dict()
    x, t = _inputs(native, seed=1)
    with torch.no_grad():
        assert torch.equal(back.backbone(x, t), native.backbone(x, t))
    knobs = {} if kind == "ar" else {"steps": 4}
    assert (back.generate("the ", max_new_tokens=8, seed=3, **knobs).tokens
            == native.generate("the ", max_new_tokens=8, seed=3, **knobs).tokens)
    ck = read_exported(out)
    assert ck.meta["step"] == 1 and ck.meta["params"] == native.backbone.num_params()


def test_causal_export_pads_and_generates(tiny_checkpoints, tmp_path, remote_code_cache):
    """Right padding leaves the real positions' logits as they are; generate() (greedy)
    follows the argmax of redraft's own logits."""
    out = _export(tiny_checkpoints, tmp_path, "ar")
    native = redraft.load(tiny_checkpoints["ar"])
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    ids = [native.tokenizer.eos_id, *native.tokenizer.encode("the cat")]
    padded = torch.tensor([ids, ids[:5] + [native.tokenizer.pad_id] * 3])
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    with torch.no_grad():
        got = hf(input_ids=padded, attention_mask=mask).logits
        assert torch.allclose(got[1, :5], native.backbone(padded[1:, :5])[0], atol=1e-6)
        assert torch.allclose(got[0], native.backbone(padded[:1])[0], atol=1e-6)
        gen = hf.generate(torch.tensor([ids]), max_new_tokens=5, do_sample=False)
        row = list(ids)
        for _ in range(5):
            row.append(int(native.backbone(torch.tensor([row]))[0, -1].argmax()))
    assert gen[0].tolist() == row


def test_export_is_atomic(tiny_checkpoints, tmp_path, monkeypatch):
    out = tmp_path / "hf"
    native = redraft.load(tiny_checkpoints["mdlm"])
    export_model(native, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(RedraftError, match="already exists"):
        export_model(native, out)
    assert main(["export", str(tiny_checkpoints["mdlm"]), str(out)]) == 2

    import safetensors.torch

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError):
        export_model(native, out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old one, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no temporary left behind
    with pytest.raises(OSError):
        export_model(native, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    monkeypatch.undo()
    other = redraft.load(tiny_checkpoints["block"])
    export_model(other, out, overwrite=True)
    assert redraft.load(f"hf:{out}").objective.name == "block"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_other_folders_are_not_taken_for_exports(tiny_checkpoints, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(RedraftError, match="model.safetensors"):  # the hf: loader's, not ours
        redraft.load(f"hf:{plain}")
    with pytest.raises(RedraftError, match="not a folder written by redraft export"):
        read_exported(plain)
    out = tmp_path / "hf"
    export_model(redraft.load(tiny_checkpoints["ar"]), out)
    config = json.loads((out / "config.json").read_text())
    config["redraft_export"]["version"] = 99
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(RedraftError, match="export version 99"):
        redraft.load(f"hf:{out}")
