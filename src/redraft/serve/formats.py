"""`response_format`: OpenAI's structured outputs, and the one place it becomes a constraint.

    {"type": "text"}                                       no constraint
    {"type": "json_object"}                                any JSON object
    {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}, "strict": ...}}
    {"type": "regex", "regex": "..."}                      redraft's extension (and vLLM's)
    {"type": "grammar", "grammar": "..."}                  redraft's extension

Each becomes a `Request.constraint` spec (redraft.constraints), compiled here against the
served model's tokenizer, in the worker thread that validates the body: a schema feature
outside the supported subset, a bad regex, a grammar, or a model kind that cannot be
constrained is a 400 naming it before anything is queued. The compiled constraint is cached
(per spec and tokenizer), so the decoder's own compile at start costs nothing.

`strict` is accepted either way: the output always matches the schema (OpenAI's strict mode);
a json_schema without `schema` is any JSON object, as OpenAI treats it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from redraft.errors import RedraftError
from redraft.serve.limits import HTTPError

_STRICT = ConfigDict(extra="forbid", strict=True)


class TextFormat(BaseModel):
    model_config = _STRICT
    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    model_config = _STRICT
    type: Literal["json_object"]


class JsonSchema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    name: str = Field(min_length=1, max_length=64, description="the schema's name (OpenAI's "
                                                               "rule: required)")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(
        None, alias="schema", description="a JSON Schema in the supported subset (objects, "
        "required properties, enums, arrays, strings with patterns, numbers, integers, "
        "booleans, null, nesting, $defs); none: any JSON object")
    strict: bool | None = Field(None, description="accepted either way: the output always "
                                                  "matches the schema")


class JsonSchemaFormat(BaseModel):
    model_config = _STRICT
    type: Literal["json_schema"]
    json_schema: JsonSchema


class RegexFormat(BaseModel):
    model_config = _STRICT
    type: Literal["regex"]
    regex: str = Field(min_length=1, description="the whole completion matches this regular "
                                                 "expression (redraft's extension)")


class GrammarFormat(BaseModel):
    model_config = _STRICT
    type: Literal["grammar"]
    grammar: str = Field(min_length=1, description="a context-free grammar the completion "
                                                   "matches (redraft's extension)")


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat | RegexFormat | GrammarFormat,
    Field(discriminator="type", description=(
        'structured output: {"type": "text"} (none), {"type": "json_object"}, {"type": '
        '"json_schema", "json_schema": {"name", "schema", "strict"}}, and redraft\'s '
        '{"type": "regex", "regex"} and {"type": "grammar", "grammar"}'))]


def constraint_of(fmt: BaseModel | None) -> dict | None:
    """The Request.constraint spec of a validated response_format (None: unconstrained)."""
    if fmt is None or isinstance(fmt, TextFormat):
        return None
    if isinstance(fmt, JsonSchemaFormat):
        schema = fmt.json_schema.schema_
        return {"type": "json_object"} if schema is None else {"type": "json_schema",
                                                                "schema": schema}
    if isinstance(fmt, RegexFormat):
        return {"type": "regex", "pattern": fmt.regex}
    if isinstance(fmt, GrammarFormat):
        return {"type": "grammar", "grammar": fmt.grammar}
    return {"type": "json_object"}


def check_constraint(spec: dict | None, served) -> None:
    """Compile spec for the served model now (cached for the decoder): a 400 naming
    response_format and what is wrong with it."""
    if spec is None:
        return
    from redraft.constraints import compile_constraint

    try:
        compile_constraint(spec, served.tokenizer)
    except RedraftError as e:
        raise HTTPError(400, f"response_format: {e}", "response_format") from None
