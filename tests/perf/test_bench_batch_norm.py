"""Batch norm forward-train and backward: fastbn vs the NumPy reference vs torch."""

import numba
import numpy as np
import pytest

import fastbn
from fastbn import reference

CASES = {
    "nchw-32x64x56x56": ((32, 64, 56, 56), 1),
    "nhwc-32x56x56x64": ((32, 56, 56, 64), -1),
    "nc-256x1024": ((256, 1024), 1),
}
BACKENDS = ["fastbn", "numpy", "torch"]


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    data = {}
    for name, (shape, axis) in CASES.items():
        x = rng.standard_normal(shape, dtype=np.float32)
        dy = rng.standard_normal(shape, dtype=np.float32)
        c = shape[axis]
        w, b = np.ones(c, np.float32), np.zeros(c, np.float32)
        _, mean, rstd = fastbn.batch_norm(x, w, b, axis=axis)
        data[name] = dict(x=x, dy=dy, w=w, b=b, mean=mean, rstd=rstd, axis=axis)
    return data


def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(numba.get_num_threads())  # same thread count as fastbn
    return torch


def _torch_nc(torch, a, axis):
    """A torch view with channels on axis 1 over the same memory (channels-last stays so)."""
    t = torch.from_numpy(a)
    return t if axis == 1 else t.movedim(-1, 1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_train(benchmark, inputs, case, backend):
    d = inputs[case]
    benchmark.group = f"batch_norm forward-train {case} float32"
    if backend == "fastbn":
        benchmark(fastbn.batch_norm, d["x"], d["w"], d["b"], axis=d["axis"])
    elif backend == "numpy":
        benchmark(reference.batch_norm_train, d["x"], d["w"], d["b"], axis=d["axis"])
    else:
        torch = _torch()
        x = _torch_nc(torch, d["x"], d["axis"])
        w, b = torch.from_numpy(d["w"]), torch.from_numpy(d["b"])
        with torch.no_grad():
            benchmark(torch.nn.functional.batch_norm, x, None, None, w, b, training=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_backward(benchmark, inputs, case, backend):
    d = inputs[case]
    benchmark.group = f"batch_norm backward {case} float32"
    if backend == "fastbn":
        benchmark(fastbn.batch_norm_backward, d["dy"], d["x"], d["mean"], d["rstd"], d["w"],
                  axis=d["axis"])
    elif backend == "numpy":
        benchmark(reference.batch_norm_backward_train, d["dy"], d["x"], d["mean"], d["rstd"],
                  d["w"], axis=d["axis"])
    else:
        torch = _torch()
        x = _torch_nc(torch, d["x"], d["axis"])
        dy = _torch_nc(torch, d["dy"], d["axis"])
        w = torch.from_numpy(d["w"])
        mean, rstd = torch.from_numpy(d["mean"]), torch.from_numpy(d["rstd"])
        mask = [True, True, True]
        benchmark(torch.ops.aten.native_batch_norm_backward, dy, x, w, None, None, mean, rstd,
                  True, 1e-5, mask)
