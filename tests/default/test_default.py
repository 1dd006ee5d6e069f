import json
import shutil
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file

import redraft
from redraft import default
from redraft.checkpoint import load_checkpoint, sha256_file
from redraft.cli import main, parser
from redraft.default.shipping import ship
from redraft.errors import RedraftError
from tests.conftest import tiny_overrides


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("ship")
    corpus = base / "corpus.txt"
    corpus.write_text("def f(x):\n    return x + 1\n" * 80)
    assert main(["train", *tiny_overrides(corpus, base / "run", "mdlm", **{
        "data.tokenizer": "byte", "train.max_steps": 4, "train.eval_every": 4})]) == 0
    return base / "run"


def test_ship_stores_bf16_and_loads_the_rounded_weights_exactly(trained, tmp_path):
    dest = ship(trained, tmp_path / "pkg" / "mdlm")
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "model.safetensors",
                                                      "redraft_tokenizer.json"]
    meta = json.loads((dest / "config.json").read_text())
    assert meta["weights_dtype"] == "bfloat16" and meta["step"] == 4
    assert meta["config"]["data"]["cache_dir"] is None  # the training machine's folder is gone
    facts = meta["shipped"]
    assert facts["step"] == 4 and facts["objective"] == "mdlm" and facts["train_seconds"] > 0
    assert facts["tokens_seen"] == 4 * 8 * 32 and facts["source"].endswith("run/ckpt-00000004")
    assert all(t.dtype == torch.bfloat16 for t in load_file(dest / "model.safetensors").values())
    assert meta["files"]["model.safetensors"] == sha256_file(dest / "model.safetensors")

    original = load_checkpoint(trained).model.state_dict()
    shipped = load_checkpoint(dest)
    assert shipped.meta["weights_dtype"] == "bfloat16"
    for name, tensor in shipped.model.state_dict().items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, original[name].to(torch.bfloat16).float()), name


def test_ship_replaces_a_previous_copy_and_refuses_a_shipped_one(trained, tmp_path):
    dest = tmp_path / "mdlm"
    dest.mkdir()
    (dest / "stale.txt").write_text("old")
    ship(trained, dest)
    assert not (dest / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["mdlm"]  # no temporary folder left
    with pytest.raises(RedraftError, match="already a shipped copy"):
        ship(dest, tmp_path / "again")
    with pytest.raises(RedraftError, match="dtype 'int8'"):
        ship(trained, tmp_path / "x", dtype="int8")


def test_weights_must_have_the_declared_dtype(trained, tmp_path):
    dest = ship(trained, tmp_path / "mdlm")
    weights = dest / "model.safetensors"
    save_file({k: v.float() for k, v in load_file(weights).items()}, str(weights))
    meta = json.loads((dest / "config.json").read_text())
    meta["files"]["model.safetensors"] = sha256_file(weights)
    (dest / "config.json").write_text(json.dumps(meta))
    with pytest.raises(RedraftError, match="is torch.float32, expected torch.bfloat16"):
        load_checkpoint(dest)
    meta["weights_dtype"] = "int4"
    (dest / "config.json").write_text(json.dumps(meta))
    with pytest.raises(RedraftError, match="weights_dtype 'int4'"):
        load_checkpoint(dest)


def test_load_default_names_the_shipped_pair():
    m, ar = redraft.load(), redraft.load("default-ar")
    assert (m.name, m.kind, m.objective.name) == ("default", "diffusion", "mdlm")
    assert (ar.name, ar.kind) == ("default-ar", "ar")
    assert m.path == default.FOLDER / "mdlm" and ar.path == default.FOLDER / "ar"
    assert m.tokenizer.vocab_size == ar.tokenizer.vocab_size
    # Twins: the same backbone shape (the AR twin trained with dropout 0.1, which changes no
    # inference computation).
    assert replace(m.config.model, dropout=0.0) == replace(ar.config.model, dropout=0.0)
    assert next(m.backbone.parameters()).dtype == torch.float32
    out = m.infill("def f(x):\n    <|mask:6|>\n", steps=6, seed=1)
    assert out.text.startswith("def f(x):\n    ") and len(out.tokens[0]) == 14 + 6 + 1
    assert "Model card" in default.card() or "model card" in default.card().lower()


def test_a_folder_is_still_reachable_by_path(tmp_path, monkeypatch):
    shutil.copytree(default.FOLDER / "ar", tmp_path / "default")
    monkeypatch.chdir(tmp_path)
    assert redraft.load("./default").name == "default"  # the folder, by its path
    assert redraft.load("default").kind == "diffusion"  # the name: the shipped model


def test_a_missing_default_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(default, "FOLDER", tmp_path)
    with pytest.raises(RedraftError, match="has no default model"):
        redraft.load()
    assert default.shipped("runs/x") is None


def test_commands_default_to_the_shipped_model(capsys):
    p = parser()
    assert p.parse_args(["sample"]).checkpoint == "default"
    assert p.parse_args(["eval"]).checkpoint == "default"
    assert p.parse_args(["serve"]).checkpoints == ["default", "default-ar"]
    assert p.parse_args(["serve", "runs/x"]).checkpoints == ["runs/x"]
    assert main(["sample", "--length", "12", "--steps", "3", "--prompt", "def ", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"][0].startswith("def ")


def test_training_time_comes_from_the_metrics_when_the_state_is_left_behind(trained, tmp_path):
    from redraft.checkpoint import list_checkpoints

    ckpt = list_checkpoints(trained)[-1]
    copy = tmp_path / "copied" / ckpt.name
    shutil.copytree(ckpt, copy, ignore=shutil.ignore_patterns("train_state.pt"))
    assert ship(copy, tmp_path / "a").joinpath("config.json").is_file()
    assert json.loads((tmp_path / "a" / "config.json").read_text())["shipped"][
        "train_seconds"] is None  # nothing says
    records = [{"step": 2, "elapsed_s": 1.5}, {"step": 4, "elapsed_s": 3.5},
               {"step": 6, "elapsed_s": 9.0}]  # step 6: after this checkpoint (a later resume)
    (copy.parent / "metrics.jsonl").write_text(
        "\n".join(json.dumps(r) for r in records) + "\n{torn")
    ship(copy, tmp_path / "b")
    assert json.loads((tmp_path / "b" / "config.json").read_text())["shipped"][
        "train_seconds"] == 3.5
