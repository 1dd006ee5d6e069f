"""Checkpoints and shard caches get the permissions the user's umask gives any new file."""

import os
import stat

import pytest

from redraft.config import load_config
from redraft.files import current_umask, file_mode, folder_mode
from redraft.train import train
from tests.conftest import tiny_overrides


@pytest.fixture
def umask():
    def set_umask(mask):
        previous.append(os.umask(mask))
    previous = []
    yield set_umask
    if previous:
        os.umask(previous[0])


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_checkpoints_and_shards_follow_the_umask(corpus, tmp_path, umask, mask):
    umask(mask)
    assert current_umask() == mask and folder_mode() == 0o777 & ~mask
    assert file_mode() == 0o666 & ~mask
    run = tmp_path / "run"
    result = train(load_config(None, tiny_overrides(corpus, run, **{"train.max_steps": 2})))
    folders = [result.checkpoint, *(tmp_path / "cache").iterdir()]
    assert len(folders) >= 2  # the checkpoint and the token shards
    for folder in folders:
        assert _mode(folder) == 0o777 & ~mask, folder  # not mkdtemp's 0o700
        for f in folder.iterdir():
            assert _mode(f) == 0o666 & ~mask, f
    assert _mode(run / "metrics.jsonl") == 0o666 & ~mask
