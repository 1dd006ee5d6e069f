"""The shipped configs load, and every corpus they name is one a new user has: `stdlib`, or a
file under data/ that the one-line download in docs/training.md writes (never ../shared)."""

from pathlib import Path

import pytest

from redraft.config import load_config
from redraft.data.corpus import DOWNLOADS

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_configs_exist():
    assert {"shakespeare-mdlm.yaml", "shakespeare-ar.yaml", "stdlib-mdlm.yaml"} <= {
        p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_loads_and_names_a_reachable_corpus(path):
    cfg = load_config(path)  # validates every key and value
    corpus = cfg.data.corpus
    if corpus == "stdlib":
        return
    assert corpus.startswith("data/"), corpus
    tail = corpus[len("data/"):]
    assert tail in DOWNLOADS, f"{corpus}: no download known for it"
    training = (ROOT / "docs" / "training.md").read_text()
    assert f"curl -fL -o {corpus} {DOWNLOADS[tail]}" in training
