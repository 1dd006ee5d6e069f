"""JSON Schema: the supported subset compiles to a regex whose matches are valid documents;
everything outside it is refused by name."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("outlines_core")
pytest.importorskip("interegular")

from redraft.constraints import (  # noqa: E402
    check_schema,
    compile_constraint,
    spec_regex,
    text_matches,
)
from redraft.data.tokenizers import ByteTokenizer  # noqa: E402
from redraft.errors import RedraftError  # noqa: E402

TOK = ByteTokenizer()
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Z][a-z]+$"},
        "age": {"type": "integer"},
        "score": {"type": "number"},
        "role": {"enum": ["admin", "user"]},
        "kind": {"const": "person"},
        "nick": {"type": ["string", "null"]},
        "pets": {"type": "array", "items": {"$ref": "#/$defs/pet"}, "maxItems": 2},
        "home": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/place"}]},
        "born": {"type": "string", "format": "date"},
    },
    "required": ["name", "age", "role", "kind"],
    "additionalProperties": False,
    "$defs": {
        "pet": {"type": "object", "properties": {"n": {"type": "string", "maxLength": 3}},
                "required": ["n"]},
        "place": {"type": "object", "properties": {"city": {"type": "string"}},
                  "required": ["city"], "title": "Place", "description": "where"},
    },
}


def test_supported_schema_compiles_and_accepts_valid_documents():
    c = compile_constraint({"type": "json_schema", "schema": PERSON}, TOK)
    good = {"name": "Ada", "age": 36, "score": 1.5e3, "role": "admin", "kind": "person",
            "nick": None, "pets": [{"n": "Rex"}], "home": {"city": "Paris"},
            "born": "1815-12-10"}
    assert c.matches(TOK.encode(json.dumps(good)))
    assert c.matches(TOK.encode(json.dumps({k: good[k] for k in ("name", "age", "role",
                                                                    "kind")})))
    for bad in ({**good, "name": "ada"}, {**good, "role": "root"}, {**good, "age": 1.5},
                {k: v for k, v in good.items() if k != "kind"}, {**good, "extra": 1},
                {**good, "pets": [{"n": "Rexy"}]}, {**good, "born": "1815-13-10"}):
        assert not c.matches(TOK.encode(json.dumps(bad))), bad


def test_json_object_accepts_objects_only():
    regex = spec_regex({"type": "json_object"})
    assert re.fullmatch(regex, json.dumps({"a": [1, {"b": None}], "c": "d"}))
    assert not re.fullmatch(regex, "[1, 2]") and not re.fullmatch(regex, '"x"')


@pytest.mark.parametrize("schema,name", [
    ({"type": "object", "patternProperties": {"^a": {}}}, "patternProperties"),
    ({"if": {"type": "integer"}}, "'if'"),
    ({"type": "integer", "minimum": 3}, "'minimum'"),
    ({"type": "integer", "multipleOf": 3}, "'multipleOf'"),
    ({"type": "array", "uniqueItems": True}, "'uniqueItems'"),
    ({"oneOf": [{"type": "integer"}]}, "'oneOf'"),
    ({"not": {"type": "integer"}}, "'not'"),
    ({"type": "object", "additionalProperties": {"type": "integer"}}, "additionalProperties"),
    ({"type": "tuple"}, "type 'tuple'"),
    ({"type": "string", "format": "ipv4"}, "format 'ipv4'"),
    ({"$ref": "#/$defs/a", "$defs": {"a": {"type": "array", "items": {"$ref": "#/$defs/a"}}}},
     "recursive \\$ref"),
    ({"$ref": "http://example.com/s.json"}, "only local references"),
    ({"$ref": "#/$defs/missing"}, "points nowhere"),
    ({"type": "object", "properties": {"a": {"type": "string", "pattern": "(a)\\1"}}},
     "not supported"),
    ({"type": "object", "properties": {"a": True}}, "boolean schema"),
    ({"type": "object", "required": ["x"], "properties": {}}, "required"),
    ([1, 2], "expected a JSON object"),
])
def test_unsupported_features_are_refused_by_name(schema, name):
    with pytest.raises(RedraftError, match=name):
        check_schema(schema)
    with pytest.raises(RedraftError, match=name):
        compile_constraint({"type": "json_schema", "schema": schema}, TOK)


def test_bad_specs_are_redraft_errors():
    for spec, needle in (({"type": "regex"}, "needs 'pattern'"),
                         ({"type": "regex", "pattern": "["}, "not supported"),
                         ({"type": "regex", "pattern": "a", "x": 1}, "unknown field 'x'"),
                         ({"pattern": "a"}, "expected a dict with a 'type'"),
                         ({"type": "regex", "pattern": "a[^\\s\\S]"}, "matches no string")):
        with pytest.raises(RedraftError, match=needle):
            compile_constraint(spec, TOK)


def test_text_matches_scores_finished_texts():
    spec = {"type": "json_schema", "schema": PERSON}
    assert text_matches(spec, '{"name": "Ada", "age": 3, "role": "user", "kind": "person"}')
    assert not text_matches(spec, '{"name": "Ada", "age": 3}')
    assert text_matches({"type": "regex", "pattern": "é+"}, "éé")
    assert not text_matches({"type": "regex", "pattern": "é+"}, "e")
