"""Layer norm and group norm forward and backward: fastbn vs the NumPy reference vs torch."""

import numba
import numpy as np
import pytest

import fastbn
from fastbn import reference

LAYER = {"4096x1024": (4096, 1024), "8x512x768": (8, 512, 768)}
GROUP = {
    "nchw-32x64x56x56": ((32, 64, 56, 56), 1),
    "nchw-2x64x56x56": ((2, 64, 56, 56), 1),
    "nhwc-32x56x56x64": ((32, 56, 56, 64), -1),
    "nhwc-2x56x56x64": ((2, 56, 56, 64), -1),
}
G = 32
BACKENDS = ["fastbn", "numpy", "torch"]


def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(numba.get_num_threads())  # same thread count as fastbn
    return torch


@pytest.fixture(scope="module")
def layer_inputs():
    rng = np.random.default_rng(0)
    data = {}
    for name, shape in LAYER.items():
        x = rng.standard_normal(shape, dtype=np.float32)
        d = shape[-1]
        w, b = np.ones(d, np.float32), np.zeros(d, np.float32)
        _, mean, rstd = fastbn.layer_norm(x, d, w, b)
        data[name] = dict(x=x, dy=rng.standard_normal(shape, dtype=np.float32), w=w, b=b,
                          mean=mean, rstd=rstd, d=d)
    return data


@pytest.fixture(scope="module")
def group_inputs():
    rng = np.random.default_rng(0)
    data = {}
    for name, (shape, axis) in GROUP.items():
        x = rng.standard_normal(shape, dtype=np.float32)
        c = shape[axis]
        w, b = np.ones(c, np.float32), np.zeros(c, np.float32)
        _, mean, rstd = fastbn.group_norm(x, G, w, b, axis=axis)
        data[name] = dict(x=x, dy=rng.standard_normal(shape, dtype=np.float32), w=w, b=b,
                          mean=mean, rstd=rstd, axis=axis)
    return data


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(LAYER))
def test_layer_norm_forward(benchmark, layer_inputs, case, backend):
    d = layer_inputs[case]
    benchmark.group = f"layer_norm forward {case} float32"
    if backend == "fastbn":
        benchmark(fastbn.layer_norm, d["x"], d["d"], d["w"], d["b"])
    elif backend == "numpy":
        benchmark(reference.layer_norm, d["x"], d["d"], d["w"], d["b"])
    else:
        torch = _torch()
        t = torch.from_numpy
        benchmark(torch.nn.functional.layer_norm, t(d["x"]), (d["d"],), t(d["w"]), t(d["b"]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(LAYER))
def test_layer_norm_backward(benchmark, layer_inputs, case, backend):
    d = layer_inputs[case]
    benchmark.group = f"layer_norm backward {case} float32"
    args = (d["dy"], d["x"], d["d"], d["mean"], d["rstd"], d["w"])
    if backend == "fastbn":
        benchmark(fastbn.layer_norm_backward, *args)
    elif backend == "numpy":
        benchmark(reference.layer_norm_backward, *args)
    else:
        torch = _torch()
        t = torch.from_numpy
        stat_shape = d["x"].shape[:-1] + (1,)
        benchmark(torch.ops.aten.native_layer_norm_backward, t(d["dy"]), t(d["x"]), [d["d"]],
                  t(d["mean"]).reshape(stat_shape), t(d["rstd"]).reshape(stat_shape),
                  t(d["w"]), t(d["b"]), [True, True, True])


def _torch_nc(torch, a, axis):
    """A torch view with channels on axis 1 over the same memory (channels-last stays so)."""
    t = torch.from_numpy(a)
    return t if axis == 1 else t.movedim(-1, 1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(GROUP))
def test_group_norm_forward(benchmark, group_inputs, case, backend):
    d = group_inputs[case]
    benchmark.group = f"group_norm G={G} forward {case} float32"
    if backend == "fastbn":
        benchmark(fastbn.group_norm, d["x"], G, d["w"], d["b"], axis=d["axis"])
    elif backend == "numpy":
        benchmark(reference.group_norm, d["x"], G, d["w"], d["b"], axis=d["axis"])
    else:
        torch = _torch()
        benchmark(torch.nn.functional.group_norm, _torch_nc(torch, d["x"], d["axis"]), G,
                  torch.from_numpy(d["w"]), torch.from_numpy(d["b"]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(GROUP))
def test_group_norm_backward(benchmark, group_inputs, case, backend):
    d = group_inputs[case]
    benchmark.group = f"group_norm G={G} backward {case} float32"
    args = (d["dy"], d["x"], G, d["mean"], d["rstd"], d["w"])
    if backend == "fastbn":
        benchmark(fastbn.group_norm_backward, *args, axis=d["axis"])
    elif backend == "numpy":
        benchmark(reference.group_norm_backward, *args, axis=d["axis"])
    else:
        torch = _torch()
        x = _torch_nc(torch, d["x"], d["axis"])
        n, c = x.shape[0], x.shape[1]
        benchmark(torch.ops.aten.native_group_norm_backward,
                  _torch_nc(torch, d["dy"], d["axis"]), x, torch.from_numpy(d["mean"]),
                  torch.from_numpy(d["rstd"]), torch.from_numpy(d["w"]), n, c,
                  x.numel() // (n * c), G, [True, True, True])
