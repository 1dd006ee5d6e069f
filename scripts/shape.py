"""The package's shape in numbers (issue 22's before/after): kind flags tested outside the
decoders and redraft.load, functions with more than 8 parameters, and where the decoding
knobs' defaults and the work/context checks are written.

    python scripts/shape.py [SRC]      # SRC: a src/redraft folder (default: this checkout's)
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

FLAGS = re.compile(r"\.is_ar\b|batches_own_steps|\.blockwise\b|[\"']infills[\"']")
KNOB_DEFAULTS = re.compile(r"\b(steps|temperature|top_k|top_p|block_size|stop_at_eos|guidance|"
                           r"sampler)\s*(?::[^=,)]*)?=\s*(SAMPLE\.\w+|DEFAULTS\.\w+|64|1\.0|None|"
                           r"False|0\.0)")


def main(src: Path) -> None:
    files = sorted(src.rglob("*.py"))
    flags, blockwise, wide = [], [], []
    for f in files:
        rel = f.relative_to(src.parent).as_posix()
        text = f.read_text()
        inside = rel.startswith("redraft/decoders/") or rel == "redraft/model.py"
        for i, line in enumerate(text.splitlines(), 1):
            for m in FLAGS.finditer(line):
                if inside:
                    continue
                (blockwise if m.group() == ".blockwise" else flags).append(f"{rel}:{i}")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
                names = [n for n in names if n not in ("self", "cls")]
                if len(names) > 8:
                    wide.append(f"{rel}:{node.lineno} {node.name}({len(names)})")
    print(f"lines: {sum(len(f.read_text().splitlines()) for f in files)}")
    print(f"model-kind flags (.is_ar, batches_own_steps, 'infills') outside decoders/ and "
          f"model.py: {len(flags)}")
    for x in flags:
        print("   ", x)
    print(f"objective-table .blockwise reads outside decoders/ and model.py: {len(blockwise)}")
    for x in blockwise:
        print("   ", x)
    print(f"functions with more than 8 parameters: {len(wide)}")
    for x in wide:
        print("   ", x)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else
         Path(__file__).resolve().parents[1] / "src" / "redraft")
