"""Masked batch norm on the GPU (numba-cuda; the CUDA simulator in CI) against the
float64 oracles and the CPU kernels."""

import numpy as np
import pytest
from _cuda import TPB, d, h, small_blocks  # noqa: F401  (autouse fixture)
from _helpers import assert_close, make
from numba import cuda

import fastbn
from fastbn import reference as R
from fastbn.cuda import SIMULATOR

gpu = pytest.mark.skipif(SIMULATOR or not cuda.is_available(), reason="needs a real CUDA GPU")


def _mask(rng, x_shape, axis, p=0.7):
    ax = axis % len(x_shape)
    m = rng.random(x_shape[:ax] + x_shape[ax + 1:]) < p
    m.reshape(-1)[:2] = True
    return m


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("shape,axis", [((3, 2, 3 * TPB + 1), 1), ((4, 3 * TPB, 3), -1),
                                        ((2 * TPB + 3, 3), 1), ((2, 3, 4, 5), 1),
                                        ((2, 3, 4, 3), -1)], ids=str)
@pytest.mark.parametrize("device_mask", [False, True], ids=["host-mask", "device-mask"])
def test_matches_reference_and_cpu(rng, shape, axis, dtype, device_mask):
    x = make(rng, shape, dtype, loc=3, scale=2)
    dy = make(rng, shape, dtype)
    c = shape[axis]
    w, b = make(rng, c, dtype), make(rng, c, dtype)
    mask = _mask(rng, shape, axis)
    m = d(mask) if device_mask else mask
    rm, rv = d(np.zeros(c, dtype)), d(np.ones(c, dtype))
    y, mean, rstd = fastbn.batch_norm(d(x), d(w), d(b), rm, rv, axis=axis, mask=m)
    yr, mr, rr = R.batch_norm_train_masked(x, mask, w, b, axis=axis)
    assert_close(h(y), yr, dtype)
    assert_close(h(mean), mr, dtype)
    assert_close(h(rstd), rr, dtype)
    erm, erv = R.update_running_stats_masked(np.zeros(c), np.ones(c), x, mask, axis=axis)
    assert_close(h(rm), erm, dtype)
    assert_close(h(rv), erv, dtype)
    dx, dw, db = fastbn.batch_norm_backward(d(dy), d(x), mean, rstd, d(w), axis=axis, mask=m)
    ex, ew, eb = R.batch_norm_backward_train_masked(dy, x, mask, h(mean), h(rstd), w, axis=axis)
    assert_close(h(dx), ex, dtype)
    assert_close(h(dw), ew, dtype, scale=10)
    assert_close(h(db), eb, dtype, scale=10)
    # the CPU kernels give the same numbers to rounding
    cy, _, _ = fastbn.batch_norm(x, w, b, axis=axis, mask=mask)
    assert_close(h(y), cy, dtype)


def test_fused_epilogue_on_the_device(rng):
    shape = (3, 2, 2 * TPB + 1)
    x, res, dy = (make(rng, shape, np.float64) for _ in range(3))
    mask = _mask(rng, shape, 1)
    y, mean, rstd = fastbn.batch_norm(d(x), axis=1, mask=mask, activation="relu",
                                      residual=d(res))
    yr, _, _ = R.batch_norm_train_masked(x, mask)
    np.testing.assert_allclose(h(y), np.maximum(yr + res, 0), rtol=1e-12, atol=1e-12)
    dres = cuda.device_array(shape, np.float64)
    dx, _, _ = fastbn.batch_norm_backward(d(dy), d(x), mean, rstd, mask=mask,
                                          activation="relu", y=y, dresidual=dres)
    g = dy * (h(y) > 0)
    np.testing.assert_array_equal(h(dres), g)
    ex, _, _ = R.batch_norm_backward_train_masked(g, x, mask, h(mean), h(rstd))
    np.testing.assert_allclose(h(dx), ex, rtol=1e-10, atol=1e-12)


def test_large_offset_and_constant_channel(rng):
    x = make(rng, (4, 2, 3 * TPB), np.float32, loc=1e4)
    x[:, 1] = 7.0
    mask = _mask(rng, (4, 2, 3 * TPB), 1)
    b = np.array([0.5, -1.5], np.float32)
    y, mean, rstd = fastbn.batch_norm(d(x), None, d(b), mask=mask)
    _, mr, rr = R.batch_norm_train_masked(x, mask, None, b)
    assert_close(h(mean), mr, np.float32, scale=1e3)
    np.testing.assert_allclose(h(rstd)[0], rr[0], rtol=1e-4)
    assert np.all(h(y)[:, 1] == b[1])


def test_bad_masks_raise_and_change_nothing(rng):
    x = make(rng, (4, 3, 10), np.float32)
    rm0, rv0 = make(rng, 3, np.float32), np.abs(make(rng, 3, np.float32)) + 0.5
    rm, rv = d(rm0), d(rv0)
    with pytest.raises(ValueError, match=r"mask.*\(4, 10\)"):
        fastbn.batch_norm(d(x), None, None, rm, rv, mask=d(np.ones((4, 3), bool)))
    with pytest.raises(TypeError, match="mask"):
        fastbn.batch_norm(d(x), None, None, rm, rv, mask=d(np.ones((4, 10), np.int8)))
    one = np.zeros((4, 10), bool)
    one[1, 1] = True
    with pytest.raises(ValueError, match="more than 1 valid value"):
        fastbn.batch_norm(d(x), None, None, rm, rv, mask=one)
    np.testing.assert_array_equal(h(rm), rm0)
    np.testing.assert_array_equal(h(rv), rv0)


@gpu
def test_real_gpu_masked_matches_cpu_on_a_large_input(rng):  # pragma: no cover - hardware
    for shape, axis in (((32, 256, 200), 1), ((32, 200, 256), -1)):
        x = make(rng, shape, np.float32, loc=2)
        mask = np.arange(200)[None, :] < rng.integers(120, 201, 32)[:, None]
        y, mean, _ = fastbn.batch_norm(d(x), axis=axis, mask=mask)
        cy, cmean, _ = fastbn.batch_norm(x, axis=axis, mask=mask)
        np.testing.assert_allclose(h(mean), cmean, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(h(y), cy, rtol=1e-4, atol=1e-4)
