"""The shipped default models (redraft.load(), "default-ar") give valid JSON for a small
schema, with several step rules, and fill a JSON skeleton."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("interegular")
pytest.importorskip("outlines_core")

import redraft  # noqa: E402

SCHEMA = {"type": "object",
          "properties": {"name": {"type": "string", "maxLength": 8},
                         "age": {"type": "integer"},
                         "role": {"enum": ["admin", "user"]}},
          "required": ["name", "age", "role"], "additionalProperties": False}
C = {"type": "json_schema", "schema": SCHEMA}


def _valid(text: str) -> None:
    doc = json.loads(text)
    assert set(doc) == {"name", "age", "role"}, doc
    assert isinstance(doc["age"], int) and doc["role"] in ("admin", "user")
    assert isinstance(doc["name"], str) and len(doc["name"]) <= 8


@pytest.fixture(scope="module")
def default():
    return redraft.load()


@pytest.mark.parametrize("sampler", ["ancestral", "confidence", "threshold"])
def test_default_model_gives_valid_json(default, sampler):
    out = default.generate("user = ", max_new_tokens=48, num_samples=2, steps=12, seed=1,
                           sampler=sampler, constraint=C)
    for text in out.completions:
        _valid(text)


def test_default_ar_twin_gives_valid_json():
    out = redraft.load("default-ar").generate("user = ", max_new_tokens=48, num_samples=2,
                                              constraint=C)
    for text in out.completions:
        _valid(text)


def test_default_model_fills_a_json_skeleton(default):
    out = default.infill('{"name": "<|mask:<=8|>", "age": <|mask:<=3|>, "role": "<|mask:<=5|>"}',
                         num_samples=2, steps=8, constraint=C)
    for text in out.texts:
        _valid(text)
