"""Dispatch to the GPU backend, whether or not numba-cuda is installed."""

import subprocess
import sys

import numpy as np
import pytest

import fastbn
from fastbn import functional


def test_import_fastbn_does_not_import_cuda():
    code = ("import sys, fastbn, numpy as np; fastbn.batch_norm(np.ones((4, 2)) + np.arange(4)"
            "[:, None]); print('numba.cuda' in sys.modules, 'fastbn.cuda' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False"]


class _FakeDeviceArray:
    """Looks like a GPU array to the dispatcher."""
    __cuda_array_interface__ = {"shape": (4, 3), "typestr": "<f4", "data": (0, False),
                                "version": 3}
    shape = (4, 3)


def test_missing_numba_cuda_says_what_to_install(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *args):
        if name.startswith("fastbn.cuda"):
            raise ImportError("No module named 'numba_cuda'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake)
    monkeypatch.setattr(functional, "_CUDA", [])  # as if no GPU call had run yet
    with pytest.raises(ImportError, match=r"pip install 'fastbn\[cuda\]'"):
        functional.batch_norm(_FakeDeviceArray())


def test_device_weight_with_host_x_is_a_type_error():
    with pytest.raises(TypeError, match="same device"):
        fastbn.batch_norm(np.ones((4, 3), np.float32), _FakeDeviceArray())


def test_import_fastbn_loads_no_mpi_or_dask_and_submodules_load_on_use():
    code = ("import sys, fastbn; print('mpi4py' in sys.modules, 'dask' in sys.modules); "
            "fastbn.distributed.sync_batch_norm; fastbn.dask.moments; fastbn.formula; "
            "print('mpi4py' in sys.modules, 'dask' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False", "False", "False"]
