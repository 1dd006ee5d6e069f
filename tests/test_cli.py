"""End to end through the command line, in-process, plus every bad input the CLI must name."""

import json

import pytest

from redraft.cli import main
from tests.conftest import tiny_overrides


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def trained(tmp_path_factory, corpus):
    base = tmp_path_factory.mktemp("cli")
    runs = {}
    for objective in ("mdlm", "ar"):
        assert main(["train", *tiny_overrides(corpus, base / objective, objective)]) == 0
        runs[objective] = base / objective
    return runs


def test_train_sample_eval_end_to_end(trained, capsys):
    code, out, _ = run(capsys, "sample", str(trained["mdlm"]), "--steps", "8", "--prompt",
                       "the ", "--suffix", ".", "--num-samples", "2", "--json")
    assert code == 0
    samples = json.loads(out)["samples"]
    assert len(samples) == 2 and all(s.startswith("the ") and s.endswith(".") for s in samples)

    code, out, _ = run(capsys, "sample", str(trained["ar"]), "--prompt", "the ", "--json",
                       "--temperature", "0.8", "--top-k", "5", "--top-p", "0.9")
    assert code == 0 and json.loads(out)["samples"][0].startswith("the ")

    code, out, _ = run(capsys, "sample", str(trained["mdlm"]), "--steps", "4", "--show")
    assert code == 0 and "=== sample 0 ===" in out

    for objective in ("mdlm", "ar"):
        code, out, _ = run(capsys, "eval", str(trained[objective]), "--json", "--samples", "2")
        assert code == 0
        report = json.loads(out)
        assert report["objective"] == objective and report["bits_per_byte"] > 0
        assert abs(report["bits_per_token"] - report["nats_per_token"] / 0.6931471805599453) \
            < 1e-9


def test_bad_sampling_inputs(trained, capsys):
    code, _, err = run(capsys, "sample", str(trained["mdlm"]), "--prompt", "the cat " * 10)
    assert code == 2 and "does not fit" in err
    with pytest.raises(SystemExit) as e:
        main(["sample", str(trained["mdlm"]), "--steps", "0"])
    assert e.value.code == 2
    assert "0 is not >= 1" in capsys.readouterr().err
    code, _, err = run(capsys, "sample", str(trained["mdlm"]), "--prompt", "€uro")
    assert code == 2 and "'€'" in err
    code, _, err = run(capsys, "sample", str(trained["ar"]), "--suffix", "cat")
    assert code == 2 and "needs a diffusion model" in err


@pytest.mark.parametrize("case", ["unknown_key", "wrong_type", "missing_corpus", "empty_corpus",
                                  "short_corpus"])
def test_bad_training_inputs_fail_cleanly(tmp_path, corpus, capsys, case):
    out_dir = tmp_path / "run"
    extra, needle = {
        "unknown_key": ({"train.colour": 1}, "unknown config key(s) ['colour']"),
        "wrong_type": ({"train.max_steps": "many"}, "train.max_steps='many'"),
        "missing_corpus": ({"data.corpus": str(tmp_path / "nope.txt")}, "nope.txt"),
        "empty_corpus": ({"data.corpus": str(_write(tmp_path / "empty.txt", ""))}, "empty"),
        "short_corpus": ({"data.corpus": str(_write(tmp_path / "short.txt", "abc" * 10))},
                         "fewer than one sequence"),
    }[case]
    code, _, err = run(capsys, "train", *tiny_overrides(corpus, out_dir, **extra))
    assert code == 2, err
    assert needle in err
    assert not out_dir.exists()  # nothing half-written


def test_bad_checkpoint_path(tmp_path, capsys):
    code, _, err = run(capsys, "eval", str(tmp_path))
    assert code == 2 and "no checkpoint" in err


def _write(path, text):
    path.write_text(text)
    return path
