"""The package layout rules, checked on the source with ``ast`` (nothing is imported).

- imports run one way: no cycle among gnerf's modules, function-level imports included;
- nothing under gnerf/ imports the top-level method_configs, scripts, benchmarks or experiments;
- among those, the timing suite (benchmarks/) imports nothing from experiments/, and nothing imports scripts/;
- no file under gnerf/ is over 350 lines, no function over 60 without a reason in its docstring.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gnerf"
MAX_LINES = 400  # in ruff format's layout
MAX_FUNCTION_LINES = 60
TOP_LEVEL = ("method_configs", "scripts", "benchmarks", "experiments")

# Exceptions to the rules, each with its reason (none today; add one only with a reason here):
KNOWN_CYCLE_EDGES: Set[Tuple[str, str]] = set()
KNOWN_UPWARD_IMPORTS: Set[Tuple[str, str]] = set()
KNOWN_LONG_FILES: Set[str] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> Dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(name: str, path: Path, modules: Set[str]) -> Iterator[str]:
    """Every module that ``path`` (module ``name``) imports anywhere in its body.

    ``from pkg import sub`` counts as importing ``pkg.sub`` when that is a module, else ``pkg``; the
    package ``__init__`` that Python runs on the way is not counted, so a package may re-export its modules.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from ..y import z
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if sub in modules else base


def _graph() -> Tuple[Dict[str, Set[str]], Set[Tuple[str, str]]]:
    """(edges between gnerf's modules, (module, top-level module) pairs)."""
    modules = _modules()
    edges: Dict[str, Set[str]] = {m: set() for m in modules}
    upward: Set[Tuple[str, str]] = set()
    for name, path in modules.items():
        for target in _imported(name, path, set(modules)):
            if target.split(".")[0] in TOP_LEVEL:
                upward.add((name, target))
            elif target in modules and target != name:
                edges[name].add(target)
    return edges, upward


def _cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_gnerf_imports_have_no_cycles():
    edges, _ = _graph()
    for a, b in KNOWN_CYCLE_EDGES:
        edges.get(a, set()).discard(b)
    assert _cycles(edges) == []


def test_gnerf_imports_nothing_from_the_top_level():
    _, upward = _graph()
    upward = {(m, t) for m, t in upward if (m, t) not in KNOWN_UPWARD_IMPORTS}
    assert upward == set()


def _top_level_imports(folder: str) -> Set[Tuple[str, str]]:
    """(file, top-level package) for every import of a top-level package by the files under ``folder``."""
    out = set()
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            out |= {(str(path.relative_to(ROOT)), n.split(".")[0]) for n in names if n.split(".")[0] in TOP_LEVEL}
    return out


def test_the_top_level_packages_import_one_way():
    """experiments/ may use the timing suite's helpers; benchmarks/ never imports experiments/; no one imports scripts/."""
    assert (ROOT / "experiments" / "__init__.py").is_file() and (ROOT / "benchmarks" / "__init__.py").is_file()
    found = {(f, t) for top in TOP_LEVEL for f, t in _top_level_imports(top)}
    assert {(f, t) for f, t in found if f.startswith("benchmarks/") and t == "experiments"} == set()
    assert {(f, t) for f, t in found if t == "scripts"} == set()


def test_no_gnerf_file_is_over_the_line_limit():
    long = {
        str(p.relative_to(ROOT)): n
        for p in sorted(PACKAGE.rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert {p: n for p, n in long.items() if p not in KNOWN_LONG_FILES} == {}


def _long_functions(source: str) -> List[Tuple[str, int]]:
    """Functions over MAX_FUNCTION_LINES whose docstring gives no reason (a line starting ``Long:``)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            doc = ast.get_docstring(node) or ""
            if n > MAX_FUNCTION_LINES and not any(line.strip().startswith("Long:") for line in doc.splitlines()):
                out.append((node.name, n))
    return out


def test_no_gnerf_function_is_long_without_a_reason():
    long = {str(p.relative_to(ROOT)): f for p in sorted(PACKAGE.rglob("*.py")) if (f := _long_functions(p.read_text()))}
    assert long == {}


def test_the_function_checker_sees_a_long_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert _long_functions(f"def f():\n{body}\n") == [("f", MAX_FUNCTION_LINES + 1)]
    assert _long_functions(f'def f():\n    """Long: a reason."""\n{body}\n') == []


def test_the_checker_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
