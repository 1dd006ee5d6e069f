from pathlib import Path

import pytest

from redraft.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert cfg.model.seq_len >= 1


def test_configs_exist():
    assert len(CONFIGS) >= 2
