"""Structured outputs: constraints (regex, JSON Schema, any JSON object) compiled once per
tokenizer into a token automaton, and the guards the decoders consult.

    compile_constraint(spec, tokenizer) -> Constraint     (cached; compile.py)
    check_schema(schema)                                   (a RedraftError names the feature)
    text_matches(spec, text)                               (validity of a finished text)
    ARGuard      left to right: the tokens a row may draw next (left.py)
    CanvasGuard  any order: the tokens a masked position may take so that the canvas stays
                 completable, and the repair of joint commits (canvas.py)

spec: {"type": "regex", "pattern": str} | {"type": "json_schema", "schema": dict} |
{"type": "json_object"}. See docs/structured.md.
"""

from redraft.constraints.canvas import CanvasGuard
from redraft.constraints.compile import (
    Constraint,
    compile_constraint,
    spec_regex,
    text_matches,
)
from redraft.constraints.left import ARGuard
from redraft.constraints.schema import check_schema

__all__ = ["ARGuard", "CanvasGuard", "Constraint", "check_schema", "compile_constraint",
           "spec_regex", "text_matches"]
