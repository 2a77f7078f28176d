"""The asv suite runs: every benchmark class, its CPU and NumPy backends, small inputs.

(asv itself times them; this only checks that each one sets up and runs, so a
broken benchmark is caught by the tests rather than by a maintainer's
``asv continuous`` run.)
"""

import inspect
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_norms  # noqa: E402

CLASSES = [c for _, c in inspect.getmembers(bench_norms, inspect.isclass)
           if issubclass(c, bench_norms._Case) and c is not bench_norms._Case]


@pytest.mark.parametrize("backend", ["numpy_formula", "numpy", "cpu", "cpu_out"])
@pytest.mark.parametrize("cls", CLASSES, ids=[c.__name__ for c in CLASSES])
def test_benchmark_runs(cls, backend):
    for layout in cls.params[2]:
        case = cls()
        if backend == "cpu_out" and not cls.has_out:
            with pytest.raises(NotImplementedError):  # asv: skipped
                case.setup(backend, "float32", layout, "small")
            continue
        case.setup(backend, "float32", layout, "small")
        for name in dir(case):
            if name.startswith(("time_", "peakmem_")):
                getattr(case, name)(backend, "float32", layout, "small")
        assert case.track_gbps(backend, "float32", layout, "small") > 0


def test_backends_include_the_numpy_formula():
    assert bench_norms.BACKENDS[:4] == ["numpy_formula", "numpy", "cpu", "cpu_out"]


def test_regression_subset_is_cpu_float32_without_peakmem():
    from benchmarks import regression

    classes = [c for _, c in inspect.getmembers(regression, inspect.isclass)
               if c.__name__.startswith("Regression")]
    assert len(classes) == len(CLASSES)
    for cls in classes:
        assert cls.params[:2] == [["cpu"], ["float32"]]
        methods = [n for n, v in inspect.getmembers(cls) if inspect.isfunction(v)]
        assert any(n.startswith("time_") for n in methods)
        assert not any(n.startswith("peakmem_") or n == "track_gbps" for n in methods)
