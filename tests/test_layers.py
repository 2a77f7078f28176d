"""The import rules between fastbn's layers, checked on the source.

Every module under ``fastbn/`` is parsed with :mod:`ast`; nothing is
imported.  The rules are those of ``docs/developer/map.md``:

- ``functional`` (the public API) sits on ``_checks`` (validation), which
  sits on the array primitives of ``cpu/`` and ``cuda/``; the kernel packages
  import only ``config``, ``_cache``, ``_device`` and their own modules.
- ``nn`` sits on ``functional`` and ``_checks`` and never imports a kernel
  package; ``experiments`` sit on ``nn``; ``distributed`` and ``dask`` sit on
  ``functional`` and ``_checks``.
- The tools (``bench``, ``bench_cuda``, ``check``, ``warmup``, ``cli``, ``__main__``) may
  import everything, and nothing but a tool imports a tool.
- Outside ``fastbn/cuda/``, CUDA is imported only inside a function, so
  ``import fastbn`` never imports it; at module level fastbn imports only the
  standard library, NumPy and Numba (its runtime dependencies).  Imports under
  ``if TYPE_CHECKING:`` never run, so they are exempt from these two rules
  (not from the layers).
- The import graph (lazy imports included) has no cycle.

A failure names the module, the line and the import that breaks the rule.
Change a rule here and in ``docs/developer/map.md`` together.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "fastbn"

#: Modules that import nothing from fastbn.
LEAVES = ("config", "_device", "_cache", "reference", "formula")
TOOLS = ("bench", "bench_cuda", "check", "warmup", "cli", "__main__")
PACKAGES = ("cpu", "cuda", "nn", "experiments")

#: What each layer may import from fastbn: layer names, or dotted module names
#: for a single module of a layer.  A layer may always import its own modules.
ALLOWED: dict[str, set[str]] = {
    **{leaf: set() for leaf in LEAVES},
    # the package's __init__: the public functions; nn, dask, ... load lazily
    # through importlib in its __getattr__
    "fastbn": {"functional", "config", "reference"},
    "_checks": {"_device", "config", "fastbn.cpu._arrays"},
    "functional": {"_checks", "_device", "config", "cpu", "cuda"},
    "cpu": {"config", "_cache", "_device"},
    "cuda": {"config", "_device"},
    # distributed: SyncBatchNorm's training passes call distributed.sync_batch_norm
    "nn": {"functional", "_checks", "config", "distributed"},
    "experiments": {"nn", "config", "reference", "formula"},
    "distributed": {"functional", "_checks", "_device", "config"},
    "dask": {"functional", "_checks", "_device", "config"},
    "tools": {"*"},
}

#: (importing module, imported module): why the code is right as it is.
EXCEPTIONS = {
    ("fastbn.experiments.profile", "fastbn.functional"):
        "it swaps fastbn.nn.norm's F namespace for the NumPy formula and back",
}

#: Third-party roots a module may import at module level (outside any function).
RUNTIME = {"numpy", "numba"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    """The layer of a dotted module name under fastbn."""
    parts = module.split(".")
    if len(parts) == 1:
        return "fastbn"
    if parts[1] in PACKAGES:
        return parts[1]
    if parts[1] in TOOLS:
        return "tools"
    return parts[1]


class Import:
    """One import of a fastbn module or a third-party package, as written in the source.

    ``lazy``: inside a function (runs when the function is called).  ``typing``: under
    ``if TYPE_CHECKING:``, never run (it still counts for the layers).
    """

    def __init__(self, module: str, target: str, node: ast.stmt, lazy: bool, typing: bool):
        self.module, self.target, self.lineno = module, target, node.lineno
        self.lazy, self.typing = lazy, typing
        self.text = ast.unparse(node)

    @property
    def at_import(self) -> bool:
        """Whether importing the module runs this import."""
        return not (self.lazy or self.typing)

    def where(self) -> str:
        path = MODULES[self.module].relative_to(REPO)
        return f"{path}:{self.lineno} ({self.module}): `{self.text}`"


def imports(module: str) -> list[Import]:
    """Every import in ``module``: fastbn targets as dotted module names (a name
    imported from a package is its submodule when one exists), others by name."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool, typing: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), lazy, True)
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), lazy, typing)
                continue
            if isinstance(child, ast.Import):
                found.extend(Import(module, a.name, child, lazy, typing) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    source = ".".join(base + ([child.module] if child.module else []))
                else:
                    source = child.module
                for a in child.names:
                    sub = f"{source}.{a.name}"
                    # `from numba import cuda` imports numba.cuda, a module
                    is_module = sub in MODULES or sub == "numba.cuda"
                    found.append(Import(module, sub if is_module else source, child, lazy,
                                        typing))
            visit(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                    ast.Lambda)), typing)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), False, False)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``typing.TYPE_CHECKING``."""
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


ALL_IMPORTS = [imp for module in MODULES for imp in imports(module)]
FASTBN_IMPORTS = [imp for imp in ALL_IMPORTS if imp.target.split(".")[0] == "fastbn"]


def allowed(imp: Import) -> bool:
    src, dst = layer(imp.module), layer(imp.target)
    if src == dst or (imp.module, imp.target) in EXCEPTIONS:
        return True
    rule = ALLOWED[src]
    return "*" in rule or dst in rule or imp.target in rule


def test_every_module_has_a_layer():
    unknown = sorted(m for m in MODULES if layer(m) not in ALLOWED)
    assert not unknown, (
        f"modules without a layer: {unknown}; add them to ALLOWED in tests/test_layers.py "
        "and to docs/developer/map.md")


def test_fastbn_imports_follow_the_layers():
    broken = [f"{imp.where()} imports {imp.target}; {layer(imp.module)} may import only "
              f"{sorted(ALLOWED[layer(imp.module)]) or 'nothing from fastbn'} (and its own "
              "modules)"
              for imp in FASTBN_IMPORTS if not allowed(imp)]
    assert not broken, "\n".join(broken)


def test_exceptions_are_still_needed():
    """An exception that no import uses any more is stale: remove it."""
    used = {(imp.module, imp.target) for imp in FASTBN_IMPORTS}
    stale = sorted(set(EXCEPTIONS) - used)
    assert not stale, f"stale entries in EXCEPTIONS: {stale}"


def test_only_tools_import_tools():
    broken = [f"{imp.where()} imports the tool {imp.target}"
              for imp in FASTBN_IMPORTS
              if layer(imp.target) == "tools" and layer(imp.module) != "tools"]
    assert not broken, "\n".join(broken)


def test_cuda_is_imported_lazily_outside_the_cuda_package():
    """``import fastbn`` (and every module outside fastbn/cuda/) never imports CUDA."""
    broken = [f"{imp.where()} imports {imp.target} at module level; import it inside "
              "the function that needs it"
              for imp in ALL_IMPORTS
              if imp.at_import and layer(imp.module) != "cuda"
              and (imp.target == "numba.cuda" or imp.target.startswith(("numba.cuda.",
                                                                         "fastbn.cuda")))]
    assert not broken, "\n".join(broken)


def test_optional_dependencies_are_imported_lazily():
    """At module level: the standard library, NumPy, Numba and fastbn only."""
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    broken = [f"{imp.where()} imports the optional {imp.target} at module level; import "
              "it inside the function that needs it"
              for imp in ALL_IMPORTS
              if imp.at_import
              and imp.target.split(".")[0] not in stdlib | RUNTIME | {"fastbn"}]
    assert not broken, "\n".join(broken)


def test_no_import_cycle():
    """Lazy imports count: a cycle through a function-level import is still a circle.
    (``if TYPE_CHECKING:`` imports never run, so they make no cycle.)"""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in FASTBN_IMPORTS:
        if imp.target in MODULES and imp.target != imp.module and not imp.typing:
            graph[imp.module].add(imp.target)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := walk(start)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_map_lists_every_module():
    """docs/developer/map.md has a line for every module of fastbn/."""
    text = (REPO / "docs" / "developer" / "map.md").read_text(encoding="utf-8")
    missing = [str(p.relative_to(PACKAGE)) for p in MODULES.values()
               if str(p.relative_to(PACKAGE)) not in text]
    assert not missing, f"modules missing from docs/developer/map.md: {missing}"
