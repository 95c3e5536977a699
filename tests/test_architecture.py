"""The layout's rules, checked on the source: no import cycles, small modules, front ends stay at the edge."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
FRONT_ENDS = ("cnnlab.cli", "cnnlab.web", "cnnlab.__main__")


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, modules: dict[str, Path], type_hints: bool = False) -> set[str]:
    """Every cnnlab module `path` imports, at the top or inside functions; `from pkg import mod` names `mod`.
    `type_hints`: the imports under `if TYPE_CHECKING:` too (a cycle for type hints is still a cycle)."""
    deps = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree) if type_hints else _runtime_nodes(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cnnlab":
            subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
            deps.update(subs if len(subs) == len(node.names) else [node.module, *subs])
        elif isinstance(node, ast.Import):
            deps.update(a.name for a in node.names if a.name in modules)
    return deps


def _runtime_nodes(tree: ast.AST):
    """Every node except those under `if TYPE_CHECKING:` (imports for type hints only run no code)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", None) == "TYPE_CHECKING":
                todo.extend(child.orelse)
                continue
            todo.append(child)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    # a package's __init__ importing its own children is how packages work, not a cycle
    return {name: {d for d in _imports(path, modules) if d != name and not name.startswith(d + ".")}
            for name, path in modules.items()}


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_only_front_ends_import_front_ends():
    leaks = [f"{name} imports {dep}" for name, deps in _graph().items() for dep in deps
             if dep.startswith(FRONT_ENDS) and not name.startswith(FRONT_ENDS)]
    assert leaks == []


def test_modules_stay_small():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > 400}
    assert long == {}


# --- the package layers: base modules, the core packages in order, the Keras facade above, front ends at the edge
BASE = ("cnnlab.errors", "cnnlab.fsutil", "cnnlab.tensor_file", "cnnlab.backend", "cnnlab.printable", "cnnlab.progress",
        "cnnlab.jsonutil")
CORE = ("datasets", "spec", "backbones", "train", "runs", "explain")


def _full_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {d for d in _imports(path, modules, type_hints=True) if d != name and not name.startswith(d + ".")}
            for name, path in modules.items()}


def _package(module: str) -> str:
    """cnnlab.<core package>, "base", "front end", or "facade" (the Keras-shaped modules and applications/)."""
    parts = module.split(".")
    if module.startswith(BASE) or module == "cnnlab":
        return "base" if module != "cnnlab" else "facade"
    if module.startswith(FRONT_ENDS) or (len(parts) > 1 and parts[1] == "bench"):
        return "front end"
    return f"cnnlab.{parts[1]}" if len(parts) > 1 and parts[1] in CORE else "facade"


def test_no_import_cycles_even_for_type_hints():
    assert _cycles(_full_graph()) == []


def test_packages_form_a_dag():
    edges: dict[str, set[str]] = {}
    for name, deps in _full_graph().items():
        for dep in deps:
            if _package(name) != _package(dep):
                edges.setdefault(_package(name), set()).add(_package(dep))
    for deps in list(edges.values()):
        for dep in deps:
            edges.setdefault(dep, set())
    assert _cycles(edges) == []
    assert not edges.get("base"), edges.get("base")  # the base modules import nothing of cnnlab's above them


def test_the_core_does_not_import_the_facade():
    leaks = [f"{name} imports {dep}" for name, deps in _full_graph().items() for dep in deps
             if _package(name).startswith("cnnlab.") and _package(dep) in ("facade", "front end")]
    assert leaks == []


def test_core_functions_stay_short():
    """About 60 lines at most (a docstring included), so that each reads at a glance."""
    long = {}
    for name, path in _modules().items():
        if not _package(name).startswith("cnnlab."):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 65:
                long[f"{name}.{node.name}"] = node.end_lineno - node.lineno + 1
    assert long == {}
