"""The documentation's examples run, and every public name has an API entry.

- Every ```` ```python ```` fence of README.md, CONTRIBUTING.md and the pages
  under docs/ runs, the fences of one file in order in one fresh namespace,
  in a temporary folder, with the CUDA simulator on (tests/conftest.py sets
  it), so a GPU example runs as a user on a GPU machine would paste it.  The
  guide's ```` ```{code-cell} ```` blocks run in the Sphinx build instead
  (myst-nb, ``nb_execution_raise_on_error``).
- Every script under docs/examples/ runs; one that imports mpi4py runs under
  ``mpiexec -n 2``.
- The numpydoc ``Examples`` sections of the public modules run as doctests.
- Every name in a public module's ``__all__`` (and every tunable of
  ``fastbn.config``) has an entry in docs/reference/, whose anchor Sphinx
  names by the dotted path.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import io
import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SKIP_DIRS = {"_build", "_generated", "generated"}

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,}|~{3,})(?P<info>[^\n]*)\n"
                   r"(?P<body>.*?)^(?P=indent)(?P=ticks)[ \t]*$", re.S | re.M)


def markdown_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "CONTRIBUTING.md"]
    files += sorted(p for p in DOCS.rglob("*.md") if not SKIP_DIRS & set(p.relative_to(DOCS).parts))
    return [f for f in files if f.exists()]


def python_fences(text: str) -> list[str]:
    """The bodies of the ```python fences, in order (not the executed ```{code-cell}s)."""
    return [m["body"] for m in FENCE.finditer(text) if m["info"].strip() in ("python", "py")]


def code_cells(text: str) -> list[str]:
    return [m["body"] for m in FENCE.finditer(text) if m["info"].strip().startswith("{code-cell}")]


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


FENCED = [f for f in markdown_files() if python_fences(f.read_text())]


def test_the_docs_have_examples():
    """The collection itself works: the README and the guide hold examples."""
    assert ROOT / "README.md" in FENCED
    assert sum(len(code_cells(f.read_text())) for f in markdown_files()) > 0


@pytest.fixture
def restore_config():
    """A page may set fastbn.config tunables (the GPU page shrinks the simulator's
    blocks); later tests get the values back."""
    from fastbn import config

    saved = {k: v for k, v in vars(config).items() if k.isupper()}
    yield
    for k, v in saved.items():
        setattr(config, k, v)


@pytest.mark.parametrize("path", FENCED, ids=_rel)
def test_python_fences_run(path, tmp_path, monkeypatch, restore_config):
    monkeypatch.chdir(tmp_path)
    import numba

    from fastbn import config

    if numba.config.ENABLE_CUDASIM:
        # The simulator runs each CUDA thread as a Python thread: blocks of 8 (as the GPU
        # tests use) give the same results as the default 256, in a fraction of the time.
        config.THREADS_PER_BLOCK = 8
    namespace: dict = {"__name__": "__main__"}
    for i, body in enumerate(python_fences(path.read_text()), 1):
        code = compile(body, f"{_rel(path)} (python block {i})", "exec")
        exec(code, namespace)  # noqa: S102  (the documentation's own examples)
    import matplotlib.pyplot as plt

    plt.close("all")


EXAMPLES = sorted((DOCS / "examples").glob("*.py")) if (DOCS / "examples").is_dir() else []


def _mpiexec() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = here if os.path.exists(here) else shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec: pip install 'fastbn[mpi]'")
    return found


@pytest.mark.parametrize("script", EXAMPLES, ids=_rel)
def test_example_scripts_run(script, tmp_path, monkeypatch):
    if "mpi4py" in script.read_text():
        pytest.importorskip("mpi4py")
        env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
        try:
            proc = subprocess.run([_mpiexec(), "-n", "2", sys.executable, str(script)],
                                  capture_output=True, text=True, timeout=300, env=env,
                                  cwd=tmp_path)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"mpiexec -n 2 {_rel(script)} hung:\n{exc.stdout}\n{exc.stderr}")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        printed = proc.stdout
    else:
        monkeypatch.chdir(tmp_path)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            runpy.run_path(str(script), run_name="__main__")
        printed = out.getvalue()
    # A page that shows the script shows what it prints: the output it quotes is
    # this run's, to the character.
    for page in markdown_files():
        text = page.read_text()
        if f"examples/{script.name}" in text and "```text" in text:
            assert printed.strip() in text, (
                f"{_rel(page)} quotes output of {_rel(script)} that it no longer prints:\n"
                f"{printed}")


#: Modules whose docstring examples run as doctests.
DOCTEST_MODULES = [
    "fastbn.functional", "fastbn.reference", "fastbn.formula", "fastbn.distributed",
    "fastbn.dask", "fastbn.nn.norm", "fastbn.nn.layers", "fastbn.nn.sequential",
    "fastbn.nn.losses", "fastbn.nn.optim", "fastbn.nn._module", "fastbn.nn.inference",
    "fastbn.nn.training",
]


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


# --- every public name has an API entry ----------------------------------------------------

API_MODULES = ["fastbn", "fastbn.nn", "fastbn.distributed", "fastbn.dask", "fastbn.reference",
               "fastbn.formula"]
DIRECTIVE = re.compile(
    r"^\.\. (currentmodule|automodule|autodata|autofunction|autoclass)::\s*(\S+)")


def documented_names() -> set[str]:
    """Dotted names that docs/reference/*.rst documents (autosummary entries, auto* directives)."""
    names: set[str] = set()
    for rst in sorted((DOCS / "reference").glob("*.rst")):
        current, in_summary = "", False
        for line in rst.read_text().splitlines():
            m = DIRECTIVE.match(line)
            if m:
                kind, target = m.groups()
                if kind == "currentmodule":
                    current = target
                elif kind == "automodule":
                    names.add(target)
                else:
                    names.add(target if "." in target else f"{current}.{target}")
                in_summary = False
            elif line.startswith(".. autosummary::"):
                in_summary = True
            elif in_summary and line.strip() and not line.strip().startswith(":"):
                if not line.startswith(" "):
                    in_summary = False
                else:
                    names.add(f"{current}.{line.strip()}")
    return names


@pytest.mark.parametrize("module", API_MODULES)
def test_every_public_name_has_an_api_entry(module):
    mod = importlib.import_module(module)
    documented = documented_names()
    missing = [n for n in mod.__all__ if f"{module}.{n}" not in documented]
    assert not missing, f"names of {module}.__all__ without an entry in docs/reference/: {missing}"


def test_every_tunable_has_an_api_entry():
    from fastbn import config

    documented = documented_names()
    tunables = [n for n in vars(config) if n.isupper()]
    missing = [n for n in tunables if f"fastbn.config.{n}" not in documented]
    assert not missing, f"fastbn.config names without an entry in reference/config.rst: {missing}"


def test_the_api_check_sees_a_missing_name(tmp_path):
    """The parser above finds entries, so a name left out would be reported."""
    documented = documented_names()
    assert "fastbn.batch_norm" in documented and "fastbn.nn.BatchNorm" in documented
    assert "fastbn.not_a_name" not in documented


def test_the_gpu_pages_build_without_a_gpu():
    """The docs build needs neither numba-cuda nor a GPU: the GPU pages hold no
    executed cell (their ```python examples run here, on the simulator), and no
    API page imports ``fastbn.cuda``."""
    for page in sorted((DOCS / "cuda").glob("*.md")):
        assert not code_cells(page.read_text()), f"{_rel(page)} has an executed cell"
    for rst in sorted((DOCS / "reference").glob("*.rst")):
        assert "fastbn.cuda" not in rst.read_text(), f"{_rel(rst)} documents fastbn.cuda"
