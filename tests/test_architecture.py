"""The import rule of the architecture (docs/architecture.md), enforced on the source:

    datasets <- models <- benchmarks <- benchmarks.cli -> leaderboard

* no import cycle between modules, function-local imports included (a cycle hidden inside a
  function is still a cycle);
* a package imports only layers below it; only ``benchmarks.cli`` (and the root package's
  Python API) imports ``leaderboard``;
* ``leaderboard`` reads records and MLflow: it may import ``benchmarks.tracking`` and the
  evaluation vocabulary (protocols, significance), and nothing it imports, directly or not,
  reaches ``models`` or the training code;
* no private name (``_x``) is imported from another module.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("datasets", "models", "benchmarks", "leaderboard")
LAYER = {"errors": 0, "datasets": 1, "models": 2, "benchmarks": 3, "benchmarks.cli": 4}
LEADERBOARD_MAY_IMPORT = ("errors", "datasets", "benchmarks.tracking", "benchmarks.evaluation.protocols",
                          "benchmarks.evaluation.significance", "leaderboard")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "recboard"


def import_graph(root: Path = ROOT) -> tuple[dict, list]:
    """({module: {imported recboard modules}}, [(module, private name, from module)])."""
    files = [p for pkg in PACKAGES for p in (root / pkg).rglob("*.py")] + [root / "errors.py"]
    modules = {module_name(p, root) for p in files}
    graph, private = {}, []
    for path in files:
        name = module_name(path, root)
        edges = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module]
                for alias in node.names:   # "from recboard.x import y" may name a module y
                    if f"{node.module}.{alias.name}"[len("recboard."):] in modules:
                        targets.append(f"{node.module}.{alias.name}")
                    elif alias.name.startswith("_") and node.module.startswith("recboard."):
                        private.append((name, alias.name, node.module))
            for target in targets:
                if target.startswith("recboard."):
                    target = target[len("recboard."):]
                    if target in modules and target != name:
                        edges.add(target)
    return graph, private


def layer_of(module: str) -> int | None:
    best = None
    for prefix, layer in LAYER.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, layer)
    return best[1] if best else None


def cycles(graph: dict) -> list:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def reachable(graph: dict, start: str) -> set:
    seen, todo = set(), [start]
    while todo:
        for w in graph.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def violations(graph: dict, private: list) -> list:
    found = [f"import cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if module.startswith("leaderboard"):
                if not target.startswith(LEADERBOARD_MAY_IMPORT):
                    found.append(f"{module} imports {target}: the leaderboard reads records and MLflow only")
            elif target.startswith("leaderboard"):
                if not module.startswith("benchmarks.cli"):
                    found.append(f"{module} imports {target}: only benchmarks.cli imports the leaderboard")
            elif layer_of(target) > layer_of(module):
                found.append(f"{module} imports {target}: a back-edge against datasets <- models <- benchmarks <- cli")
    for module in (m for m in graph if m.startswith("leaderboard")):
        for target in sorted(reachable(graph, module)):
            if target.startswith(("models", "benchmarks.training", "benchmarks.experiments", "benchmarks.cli")):
                found.append(f"{module} reaches {target}: the leaderboard must not depend on models or training")
    found += [f"{m} imports the private name {n} from {src}" for m, n, src in private]
    return found


def test_the_import_rule_holds():
    graph, private = import_graph()
    assert len(graph) > 40   # the whole package was read
    assert violations(graph, private) == []


@pytest.mark.parametrize("source, target, expected", [
    ("datasets/batches.py", "from recboard.models import registry", "back-edge"),
    ("benchmarks/config.py", "from recboard.leaderboard import render", "only benchmarks.cli imports the leaderboard"),
    ("leaderboard/render.py", "from recboard.models.registry import MODELS", "reads records and MLflow only"),
    ("benchmarks/evaluation/metrics.py", "from recboard.benchmarks.training import runner", "import cycle"),
    ("benchmarks/tracking/store.py", "from recboard.benchmarks.config import _field_types", "private name"),
])
def test_a_back_edge_a_cycle_or_a_private_import_would_fail(tmp_path, source, target, expected):
    import shutil
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.npz"))
    shutil.copy(ROOT / "errors.py", tmp_path / "errors.py")
    path = tmp_path / source
    path.write_text(f"{target}\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
    problems = violations(*import_graph(tmp_path))
    assert any(expected in p for p in problems), problems
