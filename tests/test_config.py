import pytest

from redraft.config import load_config, parse_overrides
from redraft.errors import RedraftError


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.lr=3e-4", "model.n_layer=2", "train.time_budget_s=5"])
    assert cfg.train.lr == 3e-4
    assert cfg.model.n_layer == 2
    assert cfg.train.time_budget_s == 5.0
    assert isinstance(cfg.train.time_budget_s, float)


def test_yaml_file_then_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  d_model: 64\n  n_head: 2\ntrain:\n  lr: 1e-3\n")
    cfg = load_config(path, ["--model.d_model=32"])
    assert cfg.model.d_model == 32 and cfg.model.n_head == 2 and cfg.train.lr == 1e-3


@pytest.mark.parametrize("override, needle", [
    (["train.foo=1"], "unknown config key(s) ['foo']"),
    (["nosection.x=1"], "unknown config key(s) ['nosection']"),
    (["train.lr=fast"], "train.lr='fast'"),
    (["model.n_layer=2.5"], "model.n_layer=2.5"),
    (["train.progress=1"], "expected bool"),
    (["model.d_model=100", "model.n_head=3"], "not divisible"),
    (["diffusion.objective=gan"], "diffusion.objective='gan'"),
    (["train.batch_size=0"], "train.batch_size=0"),
    (["model=3"], "expected a mapping"),
    (["noequals"], "expected section.key=value"),
])
def test_bad_config_is_named(override, needle):
    with pytest.raises(RedraftError) as e:
        load_config(None, override)
    assert needle in str(e.value)


def test_bad_yaml_files(tmp_path):
    with pytest.raises(RedraftError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(RedraftError, match="not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(RedraftError, match="mapping at the top level"):
        load_config(lst)


def test_parse_overrides_nested():
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}
