"""Synchronized batch norm under real MPI: ``mpiexec -n 2`` and ``-n 3`` from pytest.

Each run executes ``tests/mpi_worker.py`` on K ranks (MPICH from the ``mpich``
wheel of the ``mpi`` extra): uneven and empty slices, both layouts, float64
(max relative error <= 1e-10 against single-process batch norm on the
concatenated batch) and float32, training and inference, backward, the
global moments, bad inputs raised alike on every rank, and the
SyncBatchNorm layer.  A timeout turns a hang into a failure.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("mpi4py")

WORKER = os.path.join(os.path.dirname(__file__), "mpi_worker.py")


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = here if os.path.exists(here) else shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec: pip install 'fastbn[mpi]'")
    return found


def run_ranks(k: int, *args: str, timeout: int = 300) -> str:
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")  # k ranks, 2 cores
    try:
        proc = subprocess.run([_mpiexec(), "-n", str(k), sys.executable, WORKER, *args],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"mpiexec -n {k} hung for {timeout} s:\n{exc.stdout}\n{exc.stderr}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.parametrize("k", [2, 3])
def test_sync_batch_norm_matches_one_process(k):
    out = run_ranks(k)
    # mpiexec forwards each rank's stdout in chunks that may interleave mid-line
    assert sorted(int(r) for r in re.findall(r"OK (\d+)", out)) == list(range(k)), out


def test_sync_batch_norm_on_device_arrays():
    """The same calls on device arrays (numba-cuda's simulator): only statistics are
    staged through the host."""
    pytest.importorskip("numba_cuda")
    out = run_ranks(2, "--device")
    assert sorted(int(r) for r in re.findall(r"OK (\d+)", out)) == [0, 1], out


def test_not_a_communicator_is_a_type_error():
    import numpy as np

    from fastbn import distributed
    from fastbn.nn import SyncBatchNorm

    with pytest.raises(TypeError, match="mpi4py communicator"):
        distributed.sync_batch_norm(np.ones((4, 3)), comm=object())
    with pytest.raises(TypeError, match="mpi4py communicator"):
        SyncBatchNorm(3, comm=None)
