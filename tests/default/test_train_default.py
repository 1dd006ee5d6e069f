"""scripts/train_default.py: train the pair with one recipe, then ship both into a package."""

import importlib.util
import json
from pathlib import Path

import pytest

import redraft
from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]


def script():
    spec = importlib.util.spec_from_file_location("train_default",
                                                  ROOT / "scripts" / "train_default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_and_ship_the_pair(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("def f(x):\n    return x + 1\n" * 80)
    overrides = [o for o in tiny_overrides(corpus, tmp_path / "unused", **{
        "data.tokenizer": "byte", "train.max_steps": 3, "train.eval_every": 3})
        if not o.startswith(("diffusion.objective=", "train.out_dir="))]
    pkg = tmp_path / "pkg"
    assert script().main(["train", "--out", str(tmp_path / "runs"), "--ship", "--dest",
                          str(pkg), *overrides]) == 0
    metas = {name: json.loads((pkg / name / "config.json").read_text()) for name in ("mdlm", "ar")}
    assert {n: m["objective"] for n, m in metas.items()} == {"mdlm": "mdlm", "ar": "ar"}
    assert metas["mdlm"]["config"]["model"] == metas["ar"]["config"]["model"]  # one recipe
    assert all(m["weights_dtype"] == "bfloat16" and m["shipped"]["step"] == 3
               for m in metas.values())
    assert redraft.load(pkg / "ar").kind == "ar"
    assert "default-ar: " in capsys.readouterr().out


def test_ship_refuses_swapped_models(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("x = 1\n" * 200)
    from redraft.cli import main

    for objective in ("mdlm", "ar"):
        assert main(["train", *tiny_overrides(corpus, tmp_path / objective, objective,
                                              **{"train.max_steps": 2})]) == 0
    with pytest.raises(SystemExit, match="objective 'ar', expected a diffusion"):
        script().main(["ship", str(tmp_path / "ar"), str(tmp_path / "mdlm"), "--dest",
                       str(tmp_path / "pkg")])
    with pytest.raises(SystemExit, match="objective 'mdlm', expected 'ar'"):  # nothing shipped
        script().main(["ship", str(tmp_path / "mdlm"), str(tmp_path / "mdlm"), "--dest",
                       str(tmp_path / "pkg")])
    assert not (tmp_path / "pkg").exists()
