"""Issue 26, the loaders' doors: options on a redraft export keep the native path (never remote
code), every weights file loaded is verified or said to be unverified, train.init_from takes
what redraft.load takes, and misleading messages name the real problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import redraft
from redraft.checkpoint import build_model, save_checkpoint
from redraft.cli import main
from redraft.config import Config
from redraft.data.tokenizers import CharTokenizer
from redraft.errors import RedraftError

CHARS = sorted(set("the cat sat on a mat.\n"))


def _checkpoint(base: Path, objective: str = "mdlm", seed: int = 0) -> Path:
    cfg = Config()
    cfg.model.n_layer, cfg.model.n_head, cfg.model.d_model, cfg.model.seq_len = 2, 2, 32, 32
    cfg.diffusion.objective = objective
    tok = CharTokenizer(CHARS)
    torch.manual_seed(seed)
    model = build_model(cfg, tok.vocab_size).eval()
    return save_checkpoint(base / objective, 1, cfg, model, tok)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory) -> Path:
    pytest.importorskip("safetensors")
    from redraft.export import export_model

    out = tmp_path_factory.mktemp("exp") / "hf"
    export_model(redraft.load(ckpt), out)
    return out


def _weights(model) -> dict:
    return {k: v.clone() for k, v in model.backbone.state_dict().items()}


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- item 4: options on a redraft export keep the native path ---------------------------------

def test_device_option_keeps_the_native_loader(exported):
    plain = redraft.load(f"hf:{exported}")
    for spec, kw in ((f"hf:{exported}?device=cpu", {}), (f"hf:{exported}", {"device": "cpu"}),
                     (f"hf:{exported}?trust_remote_code=0", {})):
        model = redraft.load(spec, **kw)
        assert model.config is not None and model.objective.name == "mdlm"  # native, not HF
        assert _same(_weights(model), _weights(plain))


@pytest.mark.parametrize("option", ["kind=masked", "seq_len=16", "mask_id=3", "shift=1",
                                    "revision=main"])
def test_other_options_on_an_export_are_refused_without_remote_code_advice(exported, option):
    with pytest.raises(RedraftError) as e:
        redraft.load(f"hf:{exported}?{option}")
    text = str(e.value)
    assert "read natively" in text and option.split("=")[0] in text
    assert "trust_remote_code=1" not in text


def test_trust_remote_code_on_an_export_is_refused_and_names_the_file(exported):
    with pytest.raises(RedraftError, match="without running its modeling_redraft.py"):
        redraft.load(f"hf:{exported}?trust_remote_code=1")
    with pytest.raises(RedraftError, match="only device= does"):
        redraft.load(f"hf:{exported}", seq_len=8)


def test_bad_device_on_an_export_is_one_clear_error(exported):
    with pytest.raises(RedraftError, match="device 'nonsense'"):
        redraft.load(f"hf:{exported}?device=nonsense")
    with pytest.raises(RedraftError, match="hf option 'bogus'"):
        redraft.load(f"hf:{exported}?bogus=1")


@pytest.mark.parametrize("command", ["sample", "eval", "export"])
def test_cli_doors_take_options_on_an_export(exported, tmp_path, capsys, command):
    spec = f"hf:{exported}?device=cpu"
    argv = {"sample": ["sample", spec, "--steps", "2", "--length", "8", "--json"],
            "eval": ["eval", spec, "--corpus", str(_corpus(tmp_path)), "--max-batches", "1",
                     "--json"],
            "export": ["export", spec, str(tmp_path / "again")]}[command]
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    rest = [str(tmp_path / "other")] if command == "export" else argv[2:]  # a free target
    assert main([command, f"hf:{exported}?kind=causal", *rest]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "read natively" in err and "trust_remote_code=1" not in err


def _corpus(tmp_path: Path, repeat: int = 60) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("the cat sat on a mat.\n" * repeat)
    return path


def test_remote_code_advice_names_the_file_it_runs(tmp_path):
    pytest.importorskip("transformers")
    from redraft.hf.testing import tiny_masked

    folder = tiny_masked(tmp_path / "m")
    auto = json.loads((folder / "config.json").read_text())["auto_map"]
    module = next(iter(auto.values())).split(".")[0]
    with pytest.raises(RedraftError) as e:
        redraft.load(f"hf:{folder}")
    assert "trust_remote_code=1" in str(e.value)
    assert str(folder / f"{module}.py") in str(e.value) and "runs that Python" in str(e.value)


# --- item 11: messages that name the real problem -------------------------------------------

def test_hf_spec_messages_name_the_real_problem(ckpt, tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    _offline(monkeypatch)
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    cases = {
        "/nonexistent/folder": "no such folder",
        f"{tmp_path}/missing": "no such folder",
        "./missing": "no such folder",
        "a/b/c": "no such folder",
        str(tmp_path / "empty"): "has no config.json",
        str(tmp_path / "file"): "got a file",
        str(ckpt): "is a redraft checkpoint",
        str(ckpt.parent): "is a redraft run folder",
    }
    for path, want in cases.items():
        with pytest.raises(RedraftError) as e:
            redraft.load(f"hf:{path}")
        text = str(e.value)
        assert want in text, (path, text)
        assert "Repo id must" not in text and "Unrecognized model" not in text
    # the hint works: the same path without hf: loads
    assert redraft.load(ckpt.parent).objective.name == "mdlm"


def _offline(monkeypatch):
    """No network: the hub's client reads HF_HUB_OFFLINE once, at import."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_hub_id_that_does_not_load_says_there_is_no_local_folder(monkeypatch):
    pytest.importorskip("transformers")
    _offline(monkeypatch)
    with pytest.raises(RedraftError, match="nor is there a local folder 'no-such-owner/x'"):
        redraft.load("hf:no-such-owner/x")


def test_cli_hf_run_folder_is_one_line(ckpt, capsys):
    pytest.importorskip("transformers")
    assert main(["sample", f"hf:{ckpt.parent}", "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "without the hf: prefix" in err


# --- item 11: train.init_from takes every redraft.load spec of a redraft model ---------------

def _train(tmp_path: Path, init_from: str, repeat: int = 60, **extra):
    from redraft.config import load_config
    from redraft.train import train
    from tests.conftest import tiny_overrides

    corpus = _corpus(tmp_path, repeat)
    values = {"train.init_from": init_from, "train.max_steps": 1, "train.lr": 1e-12,
              "train.warmup_steps": 1, "train.ema": 0, **extra}
    return train(load_config(None, tiny_overrides(corpus, tmp_path / "run", **values)))


def test_init_from_an_export_loads_it(exported, ckpt, tmp_path):
    result = _train(tmp_path, f"hf:{exported}")
    got = redraft.load(result.checkpoint).backbone.state_dict()
    want = redraft.load(ckpt).backbone.state_dict()
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)


def test_init_from_default_loads_it(tmp_path):
    from redraft.default import shipped

    try:
        folder = shipped("default")
    except RedraftError:
        pytest.skip("this install has no default model")
    meta = json.loads((folder / "config.json").read_text())
    model = {f"model.{k}": v for k, v in meta["config"]["model"].items()
             if k in ("n_layer", "n_head", "d_model", "mlp_ratio", "seq_len", "tie_weights",
                      "time_conditioning")}
    result = _train(tmp_path, "default", 2000, **model, **{"train.batch_size": 1,
                                                      "train.eval_every": 1000,
                                                      "data.tokenizer": "byte"})
    got = redraft.load(result.checkpoint).backbone.state_dict()
    want = redraft.load("default").backbone.state_dict()
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)


@pytest.mark.parametrize("case", ["missing", "hf-missing", "hf-run", "hf-causal", "hf-option"])
def test_init_from_refuses_with_the_reason(ckpt, exported, tmp_path, case):
    spec = {"missing": str(tmp_path / "nope"), "hf-missing": f"hf:{tmp_path / 'nope'}",
            "hf-run": f"hf:{ckpt.parent}", "hf-causal": "causal",
            "hf-option": f"hf:{exported}?seq_len=8"}[case]
    want = {"missing": "no checkpoint at", "hf-missing": "no such folder",
            "hf-run": "without the hf: prefix", "hf-causal": "not a folder redraft exported",
            "hf-option": "does not apply"}[case]
    if case == "hf-causal":
        pytest.importorskip("transformers")
        from redraft.hf.testing import tiny_causal

        spec = f"hf:{tiny_causal(tmp_path / 'c')}"
    with pytest.raises(RedraftError) as e:
        _train(tmp_path, spec)
    assert want in str(e.value) and "init_from takes" in str(e.value)
    assert not (tmp_path / "run").exists()  # refused before anything was written


# --- item 5: every weights file loaded is verified, or stderr says it is not ------------------

def _copy(folder: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(folder, to)
    return to


def _flip_last_byte(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[-1] ^= 0x01  # inside the last tensor's data: the file still parses
    file.write_bytes(bytes(data))


def _edit_json(file: Path, edit) -> None:
    config = json.loads(file.read_text())
    edit(config)
    file.write_text(json.dumps(config))


def test_a_files_map_without_the_weights_entry_says_unverified(ckpt, tmp_path, capsys):
    run = tmp_path / "run"
    folder = _copy(ckpt, run / ckpt.name)
    _edit_json(folder / "config.json", lambda c: c["files"].pop("model.safetensors"))
    _flip_last_byte(folder / "model.safetensors")
    for spec in (folder, run):
        capsys.readouterr()
        redraft.load(spec)
        err = capsys.readouterr().err
        assert "lists no checksum of model.safetensors: loaded unverified" in err
    # the CLI says it too, one line, and still runs
    assert main(["sample", str(folder), "--steps", "2", "--length", "8", "--json"]) == 0
    assert "model.safetensors: loaded unverified" in capsys.readouterr().err


def test_resume_says_which_file_is_unverified(ckpt, tmp_path, capsys):
    from redraft.checkpoint import load_checkpoint, load_train_state, save_checkpoint

    ck = load_checkpoint(ckpt)
    folder = save_checkpoint(tmp_path / "run", 3, ck.config, ck.model, ck.tokenizer,
                             train_state={"step": 3})
    _edit_json(folder / "config.json", lambda c: c["files"].pop("train_state.pt"))
    capsys.readouterr()
    assert load_train_state(folder)["step"] == 3
    assert "lists no checksum of train_state.pt" in capsys.readouterr().err


def test_a_checksummed_checkpoint_loads_without_a_note(ckpt, capsys):
    capsys.readouterr()
    redraft.load(ckpt)
    assert "unverified" not in capsys.readouterr().err


def test_default_model_is_verified(capsys):
    from redraft.checkpoint import loaded_files, read_meta
    from redraft.default import shipped

    try:
        folder = shipped("default")
    except RedraftError:
        pytest.skip("this install has no default model")
    assert set(loaded_files(folder)) <= set(read_meta(folder)["files"])
    capsys.readouterr()
    redraft.load("default")
    assert "unverified" not in capsys.readouterr().err


def test_init_from_verifies_the_weights(ckpt, tmp_path):
    folder = _copy(ckpt, tmp_path / "src" / ckpt.name)
    _flip_last_byte(folder / "model.safetensors")
    with pytest.raises(RedraftError, match="does not match its SHA-256"):
        _train(tmp_path, str(folder))
    with pytest.raises(RedraftError, match="every checkpoint in .* is damaged"):
        _train(tmp_path, str(folder.parent))
    assert not (tmp_path / "run").exists()


def test_exports_carry_checksums_and_are_verified(exported, tmp_path, capsys):
    from redraft.checkpoint import loaded_files, sha256_file

    files = json.loads((exported / "config.json").read_text())["redraft_export"]["files"]
    assert set(files) == set(loaded_files(exported)) >= {"model.safetensors"}
    assert all(sha256_file(exported / n) == h for n, h in files.items())

    damaged = _copy(exported, tmp_path / "damaged")
    _flip_last_byte(damaged / "model.safetensors")
    with pytest.raises(RedraftError, match="export .* model.safetensors does not match"):
        redraft.load(f"hf:{damaged}")
    with pytest.raises(RedraftError, match="does not match its SHA-256"):
        _train(tmp_path, f"hf:{damaged}")
    assert main(["sample", f"hf:{damaged}", "--steps", "2"]) == 2
    assert "does not match" in capsys.readouterr().err

    unlisted = _copy(damaged, tmp_path / "unlisted")
    _edit_json(unlisted / "config.json",
               lambda c: c["redraft_export"]["files"].pop("model.safetensors"))
    capsys.readouterr()
    redraft.load(f"hf:{unlisted}")
    assert "lists no checksum of model.safetensors: loaded unverified" in capsys.readouterr().err

    old = _copy(exported, tmp_path / "old")  # an export written before checksums
    _edit_json(old / "config.json", lambda c: c["redraft_export"].pop("files"))
    redraft.load(f"hf:{old}")
    assert "has no checksums" in capsys.readouterr().err


# --- item 10: an hf: model's default length is a short completion, not its whole context -----

def test_default_length_rule(ckpt):
    from redraft.hf import DEFAULT_NEW_TOKENS
    from redraft.request import fit

    # the canvas when no length is asked: request.fit with the model's default_new_tokens
    assert fit(5, 0, 131_072, default_new=DEFAULT_NEW_TOKENS) == 5 + DEFAULT_NEW_TOKENS
    assert fit(60, 0, 100, default_new=DEFAULT_NEW_TOKENS) == 100  # what room is left
    native = redraft.load(ckpt)
    assert native.default_new_tokens is None  # redraft's own fill their canvas
    assert fit(3, 0, native.seq_len, default_new=native.default_new_tokens) == native.seq_len


def test_sample_hf_without_length_generates_the_default(tmp_path, capsys, monkeypatch):
    pytest.importorskip("transformers")
    import redraft.hf.loaders
    from redraft.hf.testing import tiny_causal, tiny_gemma

    monkeypatch.setattr(redraft.hf.loaders, "DEFAULT_NEW_TOKENS", 6)  # 256 takes minutes on a CPU
    gemma = tiny_gemma(tmp_path / "g", sharpen=10.0)
    assert main(["sample", f"hf:{gemma}", "--prompt", "ab", "--steps", "2", "--json"]) == 0
    sample = json.loads(capsys.readouterr().out)["samples"][0]
    model = redraft.load(f"hf:{gemma}")
    assert model.seq_len == 512 and len(model.encode(sample)) <= 2 + 6
    api = model.generate("ab", steps=2)  # the Python door: the same default
    assert len(api.tokens[0]) <= 2 + 6 and api.texts[0] == sample
    causal = redraft.load(f"hf:{tiny_causal(tmp_path / 'c')}")
    assert len(causal.generate("ab").tokens[0]) == 2 + 6
    causal.default_new_tokens = 1000  # capped by the context
    assert len(causal.generate("ab").tokens[0]) == causal.seq_len


def test_server_default_max_tokens_for_hf_models(tmp_path, monkeypatch):
    pytest.importorskip("fastapi")
    pytest.importorskip("transformers")
    from redraft.hf import DEFAULT_NEW_TOKENS
    from redraft.hf.testing import tiny_gemma
    from redraft.serve.schemas import CompletionRequest, to_work

    model = redraft.load(f"hf:{tiny_gemma(tmp_path / 'g')}", name="g")
    work = to_work(CompletionRequest(prompt="ab"), model, "ab", "", max_steps=64)
    assert work.length == len(work.prefix) + DEFAULT_NEW_TOKENS < model.seq_len
    work = to_work(CompletionRequest(prompt="ab", max_tokens=400), model, "ab", "", 64)
    assert work.length == len(work.prefix) + 400  # asked: as asked


def test_sample_help_states_the_default(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    assert "256 new tokens" in " ".join(capsys.readouterr().out.split())


def test_an_export_or_hf_folder_without_hf_prefix_says_so(exported, tmp_path, capsys):
    with pytest.raises(RedraftError, match="is a folder redraft exported, not a redraft "
                                           "checkpoint: load it as 'hf:"):
        redraft.load(exported)
    other = tmp_path / "gpt"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(RedraftError, match="is a Hugging Face model folder"):
        redraft.load(other)
    with pytest.raises(RedraftError, match="init_from=.*load it as 'hf:"):
        _train(tmp_path, str(exported))


def test_meta_device_is_refused(exported):
    with pytest.raises(RedraftError, match="device 'meta' holds no data"):
        redraft.load(f"hf:{exported}?device=cpu&device=meta")


def test_files_map_names_only_the_folders_own_files(exported, tmp_path):
    bad = _copy(exported, tmp_path / "bad")
    _edit_json(bad / "config.json",
               lambda c: c["redraft_export"]["files"].__setitem__("../../etc/passwd", "0" * 64))
    with pytest.raises(RedraftError, match="not a file of the folder"):
        redraft.load(f"hf:{bad}")


def test_export_advice_says_what_remote_code_runs(ckpt, tmp_path, capsys):
    out = tmp_path / "hf"
    assert main(["export", str(ckpt), str(out)]) == 0
    err = capsys.readouterr().err
    assert "trust_remote_code=True" in err and str(out / "modeling_redraft.py") in err
    card = (out / "README.md").read_text()
    assert "runs this folder's `modeling_redraft.py`" in card


def test_init_from_a_hub_id_says_to_download_it(tmp_path):
    with pytest.raises(RedraftError, match="not a local folder: download it first"):
        _train(tmp_path, "hf:someone/some-export")
