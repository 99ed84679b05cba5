"""Imports run one way: no module under gnerf/ imports method_configs, scripts or benchmarks, and no
module under gnerf/ reaches itself again through the modules it imports (a package's own __init__ aside)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP_LAYERS = ("method_configs", "scripts", "benchmarks")


def _modules():
    mods = {}
    for path in sorted((ROOT / "gnerf").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        mods[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return mods


def _imports(name, path, mods):
    """Every module ``name`` imports, at module level or inside functions (``from p import m`` counts as p.m)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names}
    return out


def test_gnerf_imports_nothing_from_the_layers_above_it():
    mods = _modules()
    upward = {m: sorted(i for i in _imports(m, p, mods) if i.split(".")[0] in TOP_LAYERS) for m, p in mods.items()}
    assert not {m: v for m, v in upward.items() if v}


def test_no_import_cycles_in_gnerf():
    mods = _modules()
    graph = {m: {i for i in _imports(m, p, mods) if i in mods and i != m} for m, p in mods.items()}

    def reaches_itself(start):
        seen, todo = set(), [start]
        while todo:
            here = todo.pop()
            for there in graph[here] - seen:
                if not (start.startswith(there + ".") or here.startswith(there + ".")):  # a package's own __init__
                    seen.add(there)
                    todo.append(there)
        return start in seen

    assert [m for m in graph if reaches_itself(m)] == []
