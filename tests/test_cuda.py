"""GPU kernels (numba-cuda) against fastbn.reference.

In CI these run on the CUDA simulator (tests/conftest.py sets
NUMBA_ENABLE_CUDASIM=1 unless told otherwise) with THREADS_PER_BLOCK = 8 and
chunks of a few blocks, so small inputs span several blocks and a partial
last block.  Tests marked ``gpu`` need real hardware and skip without it.
"""

import numpy as np
import pytest
from _cuda import TPB, d, h, small_blocks  # noqa: F401  (autouse fixture)
from _helpers import assert_close
from numba import cuda

import fastbn
from fastbn import config, reference
from fastbn.cuda import SIMULATOR  # noqa: E402
from fastbn.cuda._reduce import block_sum2  # noqa: E402

gpu = pytest.mark.skipif(SIMULATOR or not cuda.is_available(), reason="needs a real CUDA GPU")








DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("shape,axis", [((4, 3, 5, 2), 1), ((5, 2, 3), -1), ((3 * TPB + 1, 3), 1),
                                        ((2, 3, 9), 1), ((2, 1, 3, 4), -1)], ids=str)
def test_batch_norm(rng, shape, axis, dtype, affine):
    x = rng.normal(2, 3, shape).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    c = shape[axis]
    w = rng.normal(1, 0.3, c).astype(dtype) if affine else None
    b = rng.normal(0, 0.3, c).astype(dtype) if affine else None
    rm, rv = rng.normal(size=c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)
    d_rm, d_rv = d(rm), d(rv)

    y, mean, rstd = fastbn.batch_norm(d(x), d(w), d(b), d_rm, d_rv, axis=axis)
    assert isinstance(y, type(d(x))) and y.dtype == dtype and mean.dtype == dtype
    y_ref, mean_ref, rstd_ref = reference.batch_norm_train(x, w, b, axis=axis)
    erm, erv = reference.update_running_stats(rm, rv, x, 0.1, axis)
    assert_close(h(y), y_ref, dtype)
    assert_close(h(mean), mean_ref, dtype)
    assert_close(h(rstd), rstd_ref, dtype)
    assert_close(h(d_rm), erm, dtype)
    assert_close(h(d_rv), erv, dtype)

    yi, _, _ = fastbn.batch_norm(d(x), d(w), d(b), d_rm, d_rv, training=False, axis=axis)
    assert_close(h(yi), reference.batch_norm_inference(x, h(d_rm), h(d_rv), w, b, axis=axis),
                 dtype)

    sums = np.sqrt(x.size / c)
    for training in (True, False):
        dx, dw, db = fastbn.batch_norm_backward(d(dy), d(x), mean, rstd, d(w),
                                                training=training, axis=axis)
        oracle = (reference.batch_norm_backward_train if training
                  else reference.batch_norm_backward_frozen)
        dx_ref, dw_ref, db_ref = oracle(dy, x, h(mean), h(rstd), w, axis=axis)
        assert_close(h(dx), dx_ref, dtype, scale=4)
        assert_close(h(dw), dw_ref, dtype, scale=sums)
        assert_close(h(db), db_ref, dtype, scale=sums)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("shape,ns", [((5, 7), 7), ((2, 3, 4), (3, 4)), ((3, 3 * TPB + 5), None),
                                      ((TPB * 4 + 1, 2), 2)], ids=str)
def test_layer_and_rms_norm(rng, shape, ns, dtype):
    ns = shape[-1] if ns is None else ns
    nshape = (ns,) if isinstance(ns, int) else ns
    x = rng.normal(1, 2, shape).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    w = rng.normal(1, 0.3, nshape).astype(dtype)
    b = rng.normal(0, 0.3, nshape).astype(dtype)
    rows = x.size // int(np.prod(nshape))

    y, mean, rstd = fastbn.layer_norm(d(x), ns, d(w), d(b))
    y_ref, mean_ref, rstd_ref = reference.layer_norm(x, ns, w, b)
    assert_close(h(y), y_ref, dtype)
    assert_close(h(mean), mean_ref, dtype)
    dx, dw, db = fastbn.layer_norm_backward(d(dy), d(x), ns, mean, rstd, d(w))
    dx_ref, dw_ref, db_ref = reference.layer_norm_backward(dy, x, ns, h(mean), h(rstd), w)
    assert_close(h(dx), dx_ref, dtype, scale=4)
    assert_close(h(dw), dw_ref, dtype, scale=np.sqrt(rows))
    assert_close(h(db), db_ref, dtype, scale=np.sqrt(rows))

    y, rstd = fastbn.rms_norm(d(x), ns, d(w))
    y_ref, rstd_ref = reference.rms_norm(x, ns, w)
    assert_close(h(y), y_ref, dtype)
    dx, dw = fastbn.rms_norm_backward(d(dy), d(x), ns, rstd, d(w))
    dx_ref, dw_ref = reference.rms_norm_backward(dy, x, ns, h(rstd), w)
    assert_close(h(dx), dx_ref, dtype, scale=4)
    assert_close(h(dw), dw_ref, dtype, scale=np.sqrt(rows))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("shape,groups,axis", [((2, 4, 5), 2, 1), ((2, 5, 4), 2, -1),
                                               ((3, 6, 2, 3), 3, 1), ((2, 2, 5, 6), 6, -1),
                                               ((1, 4, 3 * TPB + 1), 4, 1), ((3, 6), 2, 1)],
                         ids=str)
def test_group_and_instance_norm(rng, shape, groups, axis, dtype):
    x = rng.normal(-1, 2, shape).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    c = shape[axis]
    w = rng.normal(1, 0.3, c).astype(dtype)
    b = rng.normal(0, 0.3, c).astype(dtype)

    y, mean, rstd = fastbn.group_norm(d(x), groups, d(w), d(b), axis=axis)
    y_ref, mean_ref, rstd_ref = reference.group_norm(x, groups, w, b, axis=axis)
    assert h(mean).shape == (shape[0], groups)
    assert_close(h(y), y_ref, dtype)
    assert_close(h(mean), mean_ref, dtype)
    assert_close(h(rstd), rstd_ref, dtype)
    dx, dw, db = fastbn.group_norm_backward(d(dy), d(x), groups, mean, rstd, d(w), axis=axis)
    dx_ref, dw_ref, db_ref = reference.group_norm_backward(dy, x, groups, h(mean), h(rstd), w,
                                                           axis=axis)
    sums = np.sqrt(x.size / c)
    assert_close(h(dx), dx_ref, dtype, scale=4)
    assert_close(h(dw), dw_ref, dtype, scale=sums)
    assert_close(h(db), db_ref, dtype, scale=sums)
    if x.size // (shape[0] * c) > 1:
        yi, mi, ri = fastbn.instance_norm(d(x), d(w), d(b), axis=axis)
        assert_close(h(yi), reference.instance_norm(x, w, b, axis=axis)[0], dtype)
        dxi = fastbn.instance_norm_backward(d(dy), d(x), mi, ri, d(w), axis=axis)[0]
        assert_close(h(dxi), reference.instance_norm_backward(dy, x, h(mi), h(ri), w,
                                                              axis=axis)[0], dtype, scale=4)


def test_same_call_works_on_host_and_device(rng):
    x = rng.normal(5, 2, (8, 4, 3, 3)).astype(np.float32)
    rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    y_host, _, _ = fastbn.batch_norm(x, running_mean=rm, running_var=rv)
    d_rm, d_rv = d(np.zeros(4, np.float32)), d(np.ones(4, np.float32))
    y_dev, _, _ = fastbn.batch_norm(d(x), running_mean=d_rm, running_var=d_rv)
    np.testing.assert_allclose(h(y_dev), y_host, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h(d_rm), rm, rtol=1e-6)


def test_large_offset_and_constant_channel(rng):
    x = (1e4 + rng.normal(size=(16, 3, 20))).astype(np.float32)
    x[:, 1] = 7.5
    bias = np.array([0.5, -2.0, 3.0], np.float32)
    y, _, _ = fastbn.batch_norm(d(x), None, d(bias))
    y = h(y)
    y_ref, _, _ = reference.batch_norm_train(x, None, bias)
    assert np.abs(y - y_ref).max() < 1e-4
    assert np.all(y[:, 1] == -2.0)


def test_out_argument(rng):
    x = rng.normal(size=(4, 6, 5)).astype(np.float32)
    out = cuda.device_array_like(x)
    y, _, _ = fastbn.group_norm(d(x), 3, out=out)
    assert y is out
    np.testing.assert_allclose(h(out), reference.group_norm(x, 3)[0], rtol=1e-5, atol=1e-5)


def test_errors(rng):
    x = rng.normal(size=(4, 3, 5)).astype(np.float32)
    with pytest.raises(TypeError, match="host"):
        fastbn.batch_norm(d(x), np.ones(3, np.float32))
    with pytest.raises(TypeError, match="GPU array"):
        fastbn.batch_norm(x, d(np.ones(3, np.float32)))
    with pytest.raises(TypeError, match="float32"):
        fastbn.batch_norm(d(x.astype(np.int32)))
    with pytest.raises(ValueError, match="weight"):
        fastbn.batch_norm(d(x), d(np.ones(4, np.float32)))
    with pytest.raises(ValueError, match="more than 1 value"):
        fastbn.batch_norm(d(x[:1, :, :1]))
    with pytest.raises(ValueError, match="running_mean and running_var are required"):
        fastbn.batch_norm(d(x), training=False)
    with pytest.raises(ValueError, match="num_groups"):
        fastbn.group_norm(d(x), 2)
    with pytest.raises(ValueError, match="normalized_shape"):
        fastbn.layer_norm(d(x), 4)
    with pytest.raises(ValueError, match="eps"):
        fastbn.layer_norm(d(x), 5, eps=0)
    d_rm = d(np.zeros(3, np.float32))
    before = h(d_rm).tobytes()
    with pytest.raises(ValueError):
        fastbn.batch_norm(d(x), d(np.ones(2, np.float32)), None, d_rm, d(np.ones(3, np.float32)))
    assert h(d_rm).tobytes() == before


@cuda.jit
def _sum_kernel(a, b, out):
    sa = cuda.shared.array(config.CUDA_MAX_THREADS, np.float64)
    sb = cuda.shared.array(config.CUDA_MAX_THREADS, np.float64)
    i = cuda.threadIdx.x
    ta, tb = block_sum2(a[i], b[i], sa, sb)
    if i == 0:
        out[0] = ta
        out[1] = tb


@pytest.mark.parametrize("n", [1, 5, 8, 13])
def test_block_sum2_through_a_wrapper_kernel(n):
    a = np.arange(1.0, n + 1)
    b = a * a
    out = cuda.device_array(2)
    _sum_kernel[1, n](d(a), d(b), out)
    assert h(out).tolist() == [a.sum(), b.sum()]


@gpu
def test_real_gpu_matches_cpu_on_a_large_input(rng):  # pragma: no cover - hardware only
    x = rng.normal(3, 2, (32, 64, 28, 28)).astype(np.float32)
    y_gpu, m_gpu, r_gpu = fastbn.batch_norm(cuda.to_device(x))
    y_cpu, m_cpu, r_cpu = fastbn.batch_norm(x)
    np.testing.assert_allclose(h(y_gpu), y_cpu, rtol=1e-5, atol=1e-5)


@gpu
def test_cupy_and_torch_interop(rng):  # pragma: no cover - hardware only
    x = rng.normal(size=(8, 4, 6)).astype(np.float32)
    expected = reference.batch_norm_train(x)[0]
    for mod in ("cupy", "torch"):
        lib = pytest.importorskip(mod)
        t = lib.asarray(x) if mod == "cupy" else lib.from_numpy(x).cuda()
        y, _, _ = fastbn.batch_norm(t)
        np.testing.assert_allclose(h(y), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,axis", [((4, 3, 5, 2), 1), ((5, 2, 3), -1)], ids=str)
def test_batch_norm_epilogue(rng, shape, axis):
    x = rng.normal(size=shape)
    res = rng.normal(size=shape)
    dy = rng.normal(size=shape)
    c = shape[axis]
    w, b = rng.normal(1, 0.3, c), rng.normal(0, 0.3, c)
    y, mean, rstd = fastbn.batch_norm(d(x), d(w), d(b), axis=axis, activation="relu",
                                      residual=d(res))
    y_ref = np.maximum(reference.batch_norm_train(x, w, b, axis=axis)[0] + res, 0)
    assert_close(h(y), y_ref, np.float64)
    d_dres = cuda.device_array_like(x)
    dx, dw, db = fastbn.batch_norm_backward(d(dy), d(x), mean, rstd, d(w), axis=axis,
                                            activation="relu", y=y, dresidual=d_dres)
    g = dy * (y_ref > 0)
    dx_ref, dw_ref, _ = reference.batch_norm_backward_train(g, x, h(mean), h(rstd), w, axis=axis)
    assert_close(h(dx), dx_ref, np.float64, scale=4)
    assert_close(h(dw), dw_ref, np.float64, scale=4)
    np.testing.assert_array_equal(h(d_dres), g)


def test_float16_is_computed_in_float32(rng):
    x = rng.normal(1, 2, (4, 3, 10)).astype(np.float16)
    dy = rng.normal(size=x.shape).astype(np.float16)
    rm, rv = np.zeros(3, np.float16), np.ones(3, np.float16)
    d_rm, d_rv = d(rm), d(rv)
    y, mean, rstd = fastbn.batch_norm(d(x), None, None, d_rm, d_rv)
    assert y.dtype == np.float16 and mean.dtype == np.float32
    y_cpu, mean_cpu, rstd_cpu = fastbn.batch_norm(x, None, None, rm, rv)
    np.testing.assert_allclose(h(y).astype(np.float32), y_cpu.astype(np.float32), atol=2e-3)
    np.testing.assert_allclose(h(d_rm).astype(np.float32), rm.astype(np.float32), atol=1e-3)
    dx, dw, _ = fastbn.batch_norm_backward(d(dy), d(x), mean, rstd)
    assert dx.dtype == np.float16 and dw.dtype == np.float32
    dx_cpu, dw_cpu, _ = fastbn.batch_norm_backward(dy, x, mean_cpu, rstd_cpu)
    np.testing.assert_allclose(h(dx).astype(np.float32), dx_cpu.astype(np.float32), atol=2e-3)
    np.testing.assert_allclose(h(dw), dw_cpu, rtol=1e-3, atol=1e-3)

    yl, ml, rl = fastbn.layer_norm(d(x), 10)
    np.testing.assert_allclose(h(yl).astype(np.float32),
                               fastbn.layer_norm(x, 10)[0].astype(np.float32), atol=2e-3)
    dxl = fastbn.layer_norm_backward(d(dy), d(x), 10, ml, rl)[0]
    assert dxl.dtype == np.float16
    yg, mg, rg = fastbn.group_norm(d(x), 3)
    out = cuda.device_array(x.shape, np.float16)
    assert fastbn.group_norm(d(x), 3, out=out)[0] is out
    np.testing.assert_allclose(h(yg).astype(np.float32),
                               fastbn.group_norm(x, 3)[0].astype(np.float32), atol=2e-3)
    with pytest.raises(TypeError, match="dy"):
        fastbn.batch_norm_backward(d(dy.astype(np.float32)), d(x), mean, rstd)


# float16 running statistics with float32 x are still refused on the GPU (issue 9).
@pytest.mark.parametrize("stats_dtype", [np.float32, np.float64],
                         ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("axis", [1, -1])
def test_non_finite_batch_skips_its_channels_like_the_cpu(stats_dtype, axis):
    """The running-statistics policy for NaN/inf batches holds on both backends."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 4, 7)).astype(np.float32)
    x[2, 1, 3] = np.nan
    x[4, 3, 0] = np.inf
    x = np.ascontiguousarray(np.moveaxis(x, 1, axis))
    rm = rng.normal(size=4).astype(stats_dtype)
    rv = rng.uniform(0.5, 2, 4).astype(stats_dtype)
    cpu_rm, cpu_rv = rm.copy(), rv.copy()
    with pytest.warns(RuntimeWarning, match="2 of 4 channels"):
        y_cpu, _, _ = fastbn.batch_norm(x, None, None, cpu_rm, cpu_rv, axis=axis)
    d_rm, d_rv = d(rm), d(rv)
    with pytest.warns(RuntimeWarning, match="2 of 4 channels"):
        y, _, _ = fastbn.batch_norm(d(x), None, None, d_rm, d_rv, axis=axis)
    for got, cpu, old in ((h(d_rm), cpu_rm, rm), (h(d_rv), cpu_rv, rv)):
        np.testing.assert_array_equal(got[[1, 3]], old[[1, 3]])  # bit for bit
        np.testing.assert_allclose(got, cpu, rtol=1e-5)
    np.testing.assert_array_equal(np.isnan(h(y)), np.isnan(y_cpu))
