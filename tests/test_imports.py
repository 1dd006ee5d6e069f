"""The package's import graph has no cycle, and every module imports on its own.

Edges are every `import redraft.x` / `from redraft.x import y` anywhere in a module (function
level included: a lazy import that closes a loop is still a loop in the design), to the module
named and, for `from package import submodule`, to that submodule as well.
"""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MODULES = {
    ".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): p
    for p in sorted((SRC / "redraft").rglob("*.py"))
}


def _edges(name: str, path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in MODULES:
                out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names
                    if f"{node.module}.{a.name}" in MODULES}
    out.discard(name)
    return out


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_import_graph_has_no_cycle():
    graph = {name: _edges(name, path) for name, path in MODULES.items()}
    assert len(graph) > 40  # the walk found the package
    assert "redraft.data" in graph["redraft.train"]  # edges are seen
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


# The layers, lowest first: a module imports only from layers below its own (or from its own
# package). The kind of a model is decided in `model` (redraft.load) from the decoders and
# scorers below it; what uses models (evaluation, training, serving, the CLI) sits above.
LAYERS = [
    ("errors",),
    ("files", "validate", "display", "distributed", "diffusion", "signals"),
    ("config", "request"),
    ("data", "models", "losses"),
    ("checkpoint", "sampling", "scoring", "likelihood"),
    ("hf", "runs"),
    ("export", "default"),
    ("decoders",),
    ("model",),
    ("eval", "train", "serve"),
    ("lm_eval", "demo", "distill"),  # distill reuses train's loop pieces
    ("cli",),
    ("entry",),  # the console script: signal handlers before anything heavy is imported
    ("__main__", ""),  # "": the package itself (redraft.load, lazily)
]
RANK = {f"redraft.{n}" if n else "redraft": i for i, names in enumerate(LAYERS) for n in names}


def _package(name: str) -> str:
    return ".".join(name.split(".")[:2])


def test_imports_follow_the_layers():
    graph = {name: _edges(name, path) for name, path in MODULES.items()}
    unplaced = sorted({_package(n) for n in graph} - set(RANK))
    assert not unplaced, f"modules with no layer: {unplaced}"
    upward = [f"{a} -> {b}" for a, edges in graph.items() for b in edges
              if _package(a) != _package(b) and RANK[_package(b)] >= RANK[_package(a)]]
    assert not upward, f"imports that do not run down the layers: {upward}"


def test_layer_check_sees_an_upward_import():
    assert RANK["redraft.eval"] > RANK["redraft.model"] > RANK["redraft.decoders"]
    assert RANK["redraft.checkpoint"] < RANK["redraft.default"]  # checkpoint never asks it


def test_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_evaluation_does_not_import_training():
    closure, todo = set(), ["redraft.likelihood"]
    while todo:
        name = todo.pop()
        if name not in closure:
            closure.add(name)
            todo += _edges(name, MODULES[name])
    assert "redraft.train" not in closure


def test_every_module_imports():
    """Each module imports (in one fresh interpreter; the graph test covers the order)."""
    names = [n for n in MODULES if n != "redraft.__main__"]
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)"
    subprocess.run([sys.executable, "-c", code, *names], check=True,
                   env={"PYTHONPATH": str(SRC)}, timeout=300)


def test_import_redraft_is_light():
    """`import redraft` (the CLI's first step) does not import torch; redraft.load does."""
    code = ("import sys, redraft; assert 'torch' not in sys.modules; "
            "redraft.load; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(SRC)},
                   timeout=120)
    assert importlib.import_module("redraft").load.__module__ == "redraft.model"
