"""JSON Schema -> regex, for the subset a regular language can hold exactly.

outlines-core writes the regex (`build_regex_from_schema`); it silently ignores some keywords
(minimum, multipleOf, uniqueItems, ...), and an ignored keyword is a promise broken, so
`check_schema` first walks the schema and refuses, by name, every keyword outside the subset
below (OpenAI's structured outputs subset, less what a regex cannot say):

    type (object, array, string, number, integer, boolean, null, or a list of them),
    properties, required, additionalProperties (false only), enum, const, items,
    minItems / maxItems, anyOf, $defs / definitions with local $ref (not recursive),
    strings: pattern, minLength / maxLength, format (date, time, date-time, uuid, email, uri),
    and the annotations title, description, $schema, $id, $comment, default, examples.
"""

from __future__ import annotations

import json

from redraft.errors import RedraftError

TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
FORMATS = ("date", "time", "date-time", "uuid", "email", "uri")
ANNOTATIONS = {"title", "description", "$schema", "$id", "$comment", "default", "examples"}
KEYWORDS = ANNOTATIONS | {"type", "properties", "required", "additionalProperties", "enum",
                          "const", "items", "minItems", "maxItems", "anyOf", "$defs",
                          "definitions", "$ref", "pattern", "minLength", "maxLength", "format"}
REASONS = {  # why some common keywords are refused
    "minimum": "numeric bounds are not a regular language here",
    "maximum": "numeric bounds are not a regular language here",
    "exclusiveMinimum": "numeric bounds are not a regular language here",
    "exclusiveMaximum": "numeric bounds are not a regular language here",
    "multipleOf": "divisibility is not supported",
    "uniqueItems": "a regular language cannot compare items",
    "oneOf": "exactly-one-of is not regular; use anyOf",
    "allOf": "intersections are not supported; merge the schemas",
    "not": "negation is not supported",
    "if": "conditionals are not supported",
    "patternProperties": "keys by pattern are not supported; list the properties",
    "prefixItems": "tuples are not supported",
}


def _bad(path: str, what: str) -> RedraftError:
    return RedraftError(f"json_schema: {what} at {path or '/'} is not supported by redraft's "
                        "structured outputs (see docs/structured.md for the subset)")


def _resolve(root: dict, ref: str, path: str) -> tuple[dict, str]:
    if not isinstance(ref, str) or not ref.startswith("#"):
        raise _bad(path, f"$ref {ref!r} (only local references, #/$defs/NAME)")
    node: object = root
    for part in [p for p in ref[1:].split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise RedraftError(f"json_schema: $ref {ref!r} at {path or '/'} points nowhere")
        node = node[part]
    if not isinstance(node, dict):
        raise RedraftError(f"json_schema: $ref {ref!r} at {path or '/'} is not a schema")
    return node, ref


def check_schema(schema: dict) -> None:
    """Raise a RedraftError naming the first feature outside the supported subset."""
    if not isinstance(schema, dict):
        raise RedraftError(f"json_schema: expected a JSON object (dict), got "
                           f"{type(schema).__name__}")
    _walk(schema, schema, "", ())


def _walk(root: dict, node, path: str, refs: tuple[str, ...]) -> None:
    if isinstance(node, bool):
        raise _bad(path, f"the boolean schema {str(node).lower()}")
    if not isinstance(node, dict):
        raise RedraftError(f"json_schema: expected a schema (object) at {path or '/'}, got "
                           f"{node!r}")
    for key in node:
        if key not in KEYWORDS:
            why = REASONS.get(key, "an unknown or unsupported keyword")
            raise _bad(path, f"keyword {key!r} ({why})")
    if "$ref" in node:
        target, ref = _resolve(root, node["$ref"], path)
        if ref in refs:
            raise _bad(path, f"recursive $ref {ref!r} (a recursive schema has no bounded "
                             "regular form)")
        _walk(root, target, f"{path}/$ref", (*refs, ref))
    kinds = node.get("type")
    if kinds is not None:
        for k in kinds if isinstance(kinds, list) else [kinds]:
            if k not in TYPES:
                raise _bad(path, f"type {k!r} (expected one of {list(TYPES)})")
    if "additionalProperties" in node and node["additionalProperties"] is not False:
        raise _bad(path, "additionalProperties other than false (extra keys of any shape)")
    fmt = node.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise _bad(path, f"format {fmt!r} (supported: {list(FORMATS)})")
    if "pattern" in node:
        if not isinstance(node["pattern"], str):
            raise RedraftError(f"json_schema: pattern at {path or '/'} must be a string")
        from redraft.constraints.automaton import regex_fsm

        regex_fsm(node["pattern"].removeprefix("^").removesuffix("$"))
    for key in ("minLength", "maxLength", "minItems", "maxItems"):
        if key in node and (isinstance(node[key], bool) or not isinstance(node[key], int)
                            or node[key] < 0):
            raise RedraftError(f"json_schema: {key}={node[key]!r} at {path or '/'}: expected "
                               "an integer >= 0")
    if "enum" in node and (not isinstance(node["enum"], list) or not node["enum"]):
        raise RedraftError(f"json_schema: enum at {path or '/'} must be a non-empty list")
    if "required" in node:
        req, props = node["required"], node.get("properties", {})
        if not isinstance(req, list) or any(r not in props for r in req):
            raise RedraftError(f"json_schema: required at {path or '/'} must list names of "
                               "its properties")
    props = node.get("properties", {})
    if not isinstance(props, dict):
        raise RedraftError(f"json_schema: properties at {path or '/'} must be an object")
    for name, sub in props.items():
        _walk(root, sub, f"{path}/properties/{name}", refs)
    if "items" in node:
        _walk(root, node["items"], f"{path}/items", refs)
    if "anyOf" in node:
        if not isinstance(node["anyOf"], list) or not node["anyOf"]:
            raise RedraftError(f"json_schema: anyOf at {path or '/'} must be a non-empty list")
        for i, sub in enumerate(node["anyOf"]):
            _walk(root, sub, f"{path}/anyOf/{i}", refs)
    for defs in ("$defs", "definitions"):
        if defs in node and not isinstance(node[defs], dict):
            raise RedraftError(f"json_schema: {defs} at {path or '/'} must be an object")


def schema_regex(schema: dict, whitespace: str | None = None) -> str:
    """The regex of a checked schema (outlines-core), one optional space between tokens."""
    check_schema(schema)
    try:
        from outlines_core.json_schema import build_regex_from_schema
    except ImportError:
        raise RedraftError("json_schema constraints need outlines-core: pip install "
                           "'redraft[structured]'") from None
    try:
        return build_regex_from_schema(json.dumps(schema), whitespace)
    except Exception as e:  # outlines-core raises ValueError / its own errors
        raise RedraftError(f"json_schema: not supported: {e}".splitlines()[0]) from None


# Any JSON object: the schema {"type": "object"} (outlines-core nests objects and arrays a few
# levels deep, which keeps the language regular).
OBJECT_SCHEMA = {"type": "object"}
