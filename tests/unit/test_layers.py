"""The package's import graph, read with `ast` (imports inside functions included): no cycles, and
every import goes down the layers (src/mnist_pipeline/__init__.py names them)."""

from __future__ import annotations

import ast
from pathlib import Path

from support import ROOT

PACKAGE = ROOT / "src" / "mnist_pipeline"
# Bottom to top. A module may import from its own layer or a lower one, except that `data` and
# `model` share a layer without importing each other.
LAYERS = {"config": 0, "atomic": 0, "data": 1, "model": 1, "tracking": 2, "training": 3,
          "serving": 4, "cli": 5, "__main__": 5}
APART = {"data", "model"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """{module: the package's modules it imports}, from every import statement in every file."""
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolved against this module's package
                    package = name.split(".") if is_package else name.split(".")[:-1]
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                # `from package import module` imports the module; `from module import name` the module
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            targets |= {n for n in names if n in modules and n != name}
        graph[name] = targets
    return graph


def layer(module: str) -> tuple[str, int]:
    part = module.split(".")[1] if "." in module else "__init__"
    return part, LAYERS.get(part, -1)


def layering_breaks(graph: dict[str, set[str]]) -> list[str]:
    breaks = []
    for source, targets in sorted(graph.items()):
        (part, rank) = layer(source)
        for target in sorted(targets):
            (other, other_rank) = layer(target)
            if other == "__init__" or part == other:
                continue
            if rank < 0 or other_rank < 0:
                breaks.append(f"{source} -> {target}: a module outside the layers (add it to LAYERS)")
            elif other_rank > rank or (other_rank == rank and {part, other} <= APART):
                breaks.append(f"{source} ({part}) -> {target} ({other}): imports upwards or sideways")
    return breaks


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), and self-imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle_and_keeps_its_layers():
    graph = import_graph(PACKAGE)
    found_cycles, breaks = cycles(graph), layering_breaks(graph)
    edges = sum(len(t) for t in graph.values())
    by_layer: dict[int, list[str]] = {}
    for part, rank in {layer(m) for m in graph if "." in m}:
        by_layer.setdefault(rank, []).append(part)
    print(f"\nimport graph: {len(graph)} modules, {edges} imports between them (inside functions included)")
    for rank in sorted(by_layer):
        print(f"  layer {rank}: {', '.join(sorted(by_layer[rank]))}")
    print(f"cycles: {len(found_cycles)}; layering breaks: {len(breaks)}")
    assert found_cycles == [], found_cycles
    assert breaks == [], "\n".join(breaks)
    assert len(graph) > 30 and edges > 50, "the graph was read"


def test_the_checker_finds_cycles_and_upward_imports(tmp_path):
    """The same checker on a small package with both faults: it must report them."""
    root = tmp_path / "mnist_pipeline"
    for folder in ("data", "serving", "tracking"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "config.py").write_text("def f():\n    from mnist_pipeline.serving import registry\n")
    (root / "serving" / "registry.py").write_text("from mnist_pipeline.tracking.store import x\n")
    (root / "tracking" / "store.py").write_text("from . import runs\n")
    (root / "tracking" / "runs.py").write_text("def g():\n    from mnist_pipeline.tracking import store\n")
    (root / "data" / "fetch.py").write_text("import mnist_pipeline.config\nfrom mnist_pipeline.model import cnn\n")
    (root / "model").mkdir()
    (root / "model" / "cnn.py").write_text("")
    graph = import_graph(root)
    assert graph["mnist_pipeline.config"] == {"mnist_pipeline.serving.registry"}, "an import inside a function"
    assert cycles(graph) == [["mnist_pipeline.tracking.runs", "mnist_pipeline.tracking.store"]]
    assert layering_breaks(graph) == [
        "mnist_pipeline.config (config) -> mnist_pipeline.serving.registry (serving): imports upwards or sideways",
        "mnist_pipeline.data.fetch (data) -> mnist_pipeline.model.cnn (model): imports upwards or sideways"]
