"""The package's layering, read from the source: which module may import which.

Layers, bottom to top::

    errors, validate, registry, predictive, _version     (NumPy only; any layer may use them)
    data (and the facades bayesmf.datasets, bayesmf.splits)
    engines, posterior
    models
    metrics
    experiments
    bayesmf (the root package: lazy attributes only)
    cli, __main__

(the table :data:`LAYERS`; a new top-level module or package fails until it is placed there).

Imports are read with :mod:`ast` from every module of ``bayesmf`` without importing anything. Two
kinds are collected: module-level imports (executed on import, wherever they sit at the top level:
also inside ``if``/``try``) and function-level imports (inside a ``def``, executed when the function
runs: the package's lazy imports, used to keep JAX and matplotlib off ``import bayesmf``). The layer
rules apply to both kinds: a lazy import is still a dependency. The cycle check applies to both as
well: an import cycle hidden behind a lazy import is still a cycle. ``from bayesmf import
__version__`` counts as an import of ``bayesmf._version`` (where it is defined), so any layer may
read the version. ``from bayesmf.x import y`` counts as an import of ``bayesmf.x.y`` when that is a
module, else of ``bayesmf.x``. Importing a submodule also runs its package's ``__init__``; that
implicit edge is not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "bayesmf"

# module or package -> layer; a module belongs to the longest entry that is a prefix of its name.
# A new top-level module or package must be added here (test_every_module_is_in_a_known_layer).
LAYERS = {
    "bayesmf.errors": "base", "bayesmf.validate": "base", "bayesmf.registry": "base",
    "bayesmf.predictive": "base", "bayesmf._version": "base",
    "bayesmf.data": "data", "bayesmf.datasets": "data", "bayesmf.splits": "data", "bayesmf.features": "data",
    "bayesmf.engines": "engines", "bayesmf._compile_cache": "engines",  # configures JAX for the engines
    "bayesmf.posterior": "posterior", "bayesmf.models": "models",
    "bayesmf.metrics": "metrics", "bayesmf.experiments": "experiments",
    "bayesmf": "root", "bayesmf.cli": "top", "bayesmf.__main__": "top",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _layer(module: str) -> str:
    """The layer of ``module`` from :data:`LAYERS`, or ``"unknown"``."""
    owners = [prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")]
    if owners == ["bayesmf"] and module != "bayesmf":
        return "unknown"  # a new top-level module or package: classify it in LAYERS
    return LAYERS[max(owners, key=len)] if owners else "unknown"


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(module-level, function-level) imports of package modules by ``module``."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    top: set[str] = set()
    lazy: set[str] = set()

    def targets(node) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        base = node.module or ""
        if node.level:  # relative import
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(anchor + ([base] if base else []))
        if base == "bayesmf" and all(a.name == "__version__" for a in node.names):
            return ["bayesmf._version"]
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]

    def visit(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found = {t for t in targets(child) if t == "bayesmf" or t.startswith("bayesmf.")}
                (lazy if in_function else top).update(found)
            visit(child, inner)

    visit(tree, False)
    return top, lazy


IMPORTS = {m: _imports(m) for m in MODULES}

# layer -> layers it must never import (module-level or lazily)
FORBIDDEN = {
    "base": {"data", "engines", "posterior", "models", "metrics", "experiments", "root", "top"},
    "data": {"engines", "posterior", "models", "metrics", "experiments", "root", "top"},
    "engines": {"posterior", "models", "metrics", "experiments", "root", "top"},
    "posterior": {"models", "metrics", "experiments", "root", "top"},
    "models": {"metrics", "experiments", "root", "top"},
    "metrics": {"engines", "posterior", "models", "experiments", "root", "top"},
    "experiments": {"top"},
    "root": {"engines", "posterior", "models", "metrics", "experiments", "top"},
}


def _violations() -> list[str]:
    out = []
    for module, (top, lazy) in IMPORTS.items():
        banned = FORBIDDEN.get(_layer(module), set())
        for target in sorted(top | lazy):
            if _layer(target) in banned:
                kind = "module-level" if target in top else "function-level"
                out.append(f"{module} ({_layer(module)}) imports {target} ({_layer(target)}) [{kind}]")
    return out


def _cycles() -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan's algorithm) over
    all import edges, module-level and function-level."""
    graph = {m: sorted(t for t in top | lazy if t in MODULES and t != m)
             for m, (top, lazy) in IMPORTS.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in graph:
        if v not in index:
            strongconnect(v)
    return components


def test_the_parser_sees_the_package():
    assert {"bayesmf.data.ratings", "bayesmf.models.base", "bayesmf.metrics.ranking"} <= set(MODULES)
    top, _ = IMPORTS["bayesmf.models.als"]
    assert "bayesmf.engines.als" in top
    _, lazy = IMPORTS["bayesmf.models.bpmf"]  # BPMF's NUTS and SVI import NumPyro lazily
    assert "bayesmf.posterior.numpyro_inference" in lazy


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_is_in_a_known_layer(module):
    assert _layer(module) != "unknown", f"{module} is in no layer: add it to LAYERS in tests/test_layering.py"
    assert _layer("bayesmf.data.ratings") == "data" and _layer("bayesmf.models.recommend.topk") == "models"
    assert _layer("bayesmf.cli") == "top" and _layer("bayesmf.kernels") == "unknown"


def test_no_layer_imports_a_layer_above_it():
    assert _violations() == []


def test_no_import_cycles():
    assert _cycles() == []


def test_the_checks_catch_a_violation_and_a_cycle(monkeypatch):
    """The checks are not vacuous: an injected upward import and an injected cycle are reported."""
    monkeypatch.setitem(IMPORTS, "bayesmf.data.ratings", ({"bayesmf.models.base"}, set()))
    assert any("bayesmf.data.ratings (data) imports bayesmf.models.base" in v for v in _violations())
    top, lazy = IMPORTS["bayesmf.errors"]
    monkeypatch.setitem(IMPORTS, "bayesmf.errors", (top, lazy | {"bayesmf.validate"}))
    assert ["bayesmf.errors", "bayesmf.validate"] in _cycles()


@pytest.mark.parametrize("package", sorted(m for m, p in MODULES.items() if p.name == "__init__.py"))
def test_every_package_declares_all(package):
    tree = ast.parse(MODULES[package].read_text())
    names = [t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
             for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)]
    assert "__all__" in names, f"{package} has no __all__"


def test_every_exception_class_is_defined_in_errors():
    """Exceptions and warnings live in ``bayesmf/errors.py`` (other modules may re-export them)."""
    elsewhere = []
    for module, path in MODULES.items():
        if module == "bayesmf.errors":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
                if any(b.endswith(("Error", "Warning", "Exception")) for b in bases):
                    elsewhere.append(f"{module}.{node.name}")
    assert elsewhere == []
