"""`redraft sample --json-schema FILE | --regex R`: outputs that match, and every bad input a
clean exit 2 naming the flag."""

import json
import re

import pytest

pytest.importorskip("redraft.constraints")

from redraft.cli import main  # noqa: E402

SCHEMA = {"type": "object", "properties": {"pet": {"enum": ["cat", "dog"]},
                                           "n": {"type": "integer"}},
          "required": ["pet", "n"], "additionalProperties": False}


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("model", ["mdlm", "ar"])
def test_json_schema_and_regex_outputs_match(serve_runs, tmp_path, capsys, model):
    jsonschema = pytest.importorskip("jsonschema")
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    code, out, err = run(capsys, "sample", str(serve_runs[model]), "--json-schema", str(path),
                         "--max-new-tokens", "40", "--steps", "16", "--num-samples", "3",
                         "--json")
    assert code == 0, err
    for text in json.loads(out)["samples"]:
        jsonschema.validate(json.loads(text), SCHEMA)
    code, out, err = run(capsys, "sample", str(serve_runs[model]), "--regex", "(cat|dog)s?",
                         "--prompt", "the ", "--max-new-tokens", "12", "--steps", "8",
                         "--num-samples", "3", "--json")
    assert code == 0, err
    assert all(re.fullmatch("the (cat|dog)s?", s) for s in json.loads(out)["samples"])


def test_bad_constraints_exit_2(serve_runs, tmp_path, capsys):
    run_dir = str(serve_runs["mdlm"])
    with pytest.raises(SystemExit) as e:  # argparse: the two are mutually exclusive
        main(["sample", run_dir, "--json-schema", "x.json", "--regex", "a"])
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err
    files = {"not json": "{'pet': 1}", "a list": "[1, 2]",
             "unsupported": json.dumps({"type": "object", "properties": {
                 "n": {"type": "integer", "multipleOf": 3}}}),
             "bad type": json.dumps({"type": "banana"})}
    needles = {"not json": "is not JSON", "a list": "expected a JSON Schema object",
               "unsupported": "multipleOf", "bad type": "banana"}
    for case, text in files.items():
        path = tmp_path / f"{case}.json"
        path.write_text(text)
        code, out, err = run(capsys, "sample", run_dir, "--json-schema", str(path))
        assert code == 2 and out == "", case
        assert err.startswith("redraft sample: error: --json-schema") and needles[case] in err, err
        assert "Traceback" not in err
    code, _, err = run(capsys, "sample", run_dir, "--json-schema", str(tmp_path / "none.json"))
    assert code == 2 and "cannot be read" in err
    code, _, err = run(capsys, "sample", run_dir, "--regex", "(ab")
    assert code == 2 and err.startswith("redraft sample: error: --regex") and "(ab" in err
