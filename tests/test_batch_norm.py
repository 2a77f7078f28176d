"""CPU batch norm against fastbn.reference: the parametrized matrix and the hard cases."""

import threading

import numba
import numpy as np
import pytest
from _helpers import assert_close, make, numerical_grad

import fastbn
from fastbn import reference

# (shape, axis): ndim 2-5, channels first and last; inner sizes on both sides of
# config.ROW_KERNEL_MIN_INNER so the row and the column kernels both run.
CASES = [
    ((6, 5), 1),
    ((7, 5), -1),
    ((4, 5, 40), 1),
    ((4, 40, 5), -1),
    ((3, 5, 4, 6), 1),
    ((3, 4, 6, 5), -1),
    ((2, 5, 3, 4, 4), 1),
    ((2, 3, 4, 4, 5), -1),
]
ODD = [
    ((2, 1), 1),             # C = 1, N = 2
    ((2, 1, 1, 1), 1),       # spatial size 1
    ((2, 3, 1, 1), -1),
    ((1, 1, 64), 1),         # N = 1, C = 1, one long row
    ((2, 7, 1), 1),
    ((5, 2, 33), 1),         # just past the row-kernel threshold
]
DTYPES = [np.float32, np.float64]


def _params(rng, c, affine):
    if not affine:
        return None, None
    return rng.normal(1, 0.5, c), rng.normal(0, 0.5, c)


def _scale(x, axis):
    """atol multiplier for per-channel sums of ~m terms."""
    return np.sqrt(x.size / x.shape[axis])


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,axis", CASES + ODD, ids=str)
def test_forward_train(rng, kernel_config, shape, axis, dtype, affine):
    x = make(rng, shape, dtype, loc=3.0, scale=2.0)
    c = shape[axis]
    w, b = _params(rng, c, affine)
    rm = rng.normal(size=c).astype(dtype)
    rv = rng.uniform(0.5, 2, c).astype(dtype)
    expected_rm, expected_rv = reference.update_running_stats(rm, rv, x, 0.1, axis)

    y, mean, rstd = fastbn.batch_norm(x, w, b, rm, rv, axis=axis)

    y_ref, mean_ref, rstd_ref = reference.batch_norm_train(x, w, b, axis=axis)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert mean.dtype == rstd.dtype == x.dtype and mean.shape == rstd.shape == (c,)
    assert_close(y, y_ref, dtype)
    assert_close(mean, mean_ref, dtype)
    assert_close(rstd, rstd_ref, dtype)
    assert_close(rm, expected_rm, dtype)
    assert_close(rv, expected_rv, dtype)


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,axis", CASES + ODD, ids=str)
def test_inference(rng, kernel_config, shape, axis, dtype, affine):
    x = make(rng, shape, dtype, loc=1.0)
    c = shape[axis]
    w, b = _params(rng, c, affine)
    rm = rng.normal(size=c).astype(dtype)
    rv = rng.uniform(0.5, 2, c).astype(dtype)
    rm0, rv0 = rm.copy(), rv.copy()

    y, mean, rstd = fastbn.batch_norm(x, w, b, rm, rv, training=False, axis=axis)

    assert_close(y, reference.batch_norm_inference(x, rm, rv, w, b, axis=axis), dtype)
    assert_close(mean, rm0, dtype)
    assert_close(rstd, 1 / np.sqrt(rv0.astype(np.float64) + 1e-5), dtype)
    assert np.array_equal(rm, rm0) and np.array_equal(rv, rv0)


@pytest.mark.parametrize("training", [True, False], ids=["train", "frozen"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,axis", CASES + ODD, ids=str)
def test_backward(rng, kernel_config, shape, axis, dtype, affine, training):
    x = make(rng, shape, dtype, loc=-2.0, scale=3.0)
    dy = make(rng, shape, dtype)
    w, _ = _params(rng, shape[axis], affine)
    _, mean, rstd = fastbn.batch_norm(x, w, axis=axis)

    dx, dw, db = fastbn.batch_norm_backward(dy, x, mean, rstd, w, training=training, axis=axis)

    oracle = (reference.batch_norm_backward_train if training
              else reference.batch_norm_backward_frozen)
    dx_ref, dw_ref, db_ref = oracle(dy, x, mean, rstd, w, axis=axis)
    assert dx.dtype == x.dtype and dx.shape == x.shape
    assert dw.dtype == db.dtype == x.dtype and dw.shape == db.shape == (shape[axis],)
    assert_close(dx, dx_ref, dtype, scale=4)
    assert_close(dw, dw_ref, dtype, scale=_scale(x, axis))
    assert_close(db, db_ref, dtype, scale=_scale(x, axis))


@pytest.mark.parametrize("shape,axis", [((4, 3), 1), ((3, 2, 2, 3), 1), ((2, 3, 3, 2), -1)])
def test_gradient_matches_finite_differences(rng, shape, axis):
    x = rng.normal(size=shape)
    c = shape[axis]
    w, b = rng.normal(size=c), rng.normal(size=c)
    g = rng.normal(size=shape)

    def loss():
        return np.sum(g * fastbn.batch_norm(x, w, b, axis=axis)[0])

    _, mean, rstd = fastbn.batch_norm(x, w, b, axis=axis)
    dx, dw, db = fastbn.batch_norm_backward(g, x, mean, rstd, w, axis=axis)
    np.testing.assert_allclose(dx, numerical_grad(loss, x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dw, numerical_grad(loss, w), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(db, numerical_grad(loss, b), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("axis", [1, -1])
def test_running_stats_over_several_steps(rng, axis):
    shape = (8, 4, 6, 6) if axis == 1 else (8, 6, 6, 4)
    rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    erm, erv = np.zeros(4), np.ones(4)
    for step in range(5):
        x = make(rng, shape, np.float32, loc=step, scale=1 + step)
        fastbn.batch_norm(x, running_mean=rm, running_var=rv, momentum=0.3, axis=axis)
        erm, erv = reference.update_running_stats(erm, erv, x, 0.3, axis)
    assert_close(rm, erm, np.float32)
    assert_close(rv, erv, np.float32)


@pytest.mark.parametrize("momentum", [0.0, 1.0])
def test_momentum_bounds(rng, momentum):
    x = make(rng, (10, 3), np.float64)
    rm, rv = np.full(3, 7.0), np.full(3, 9.0)
    fastbn.batch_norm(x, running_mean=rm, running_var=rv, momentum=momentum)
    if momentum == 0.0:
        assert np.array_equal(rm, np.full(3, 7.0)) and np.array_equal(rv, np.full(3, 9.0))
    else:
        np.testing.assert_allclose(rm, x.mean(0), rtol=1e-14)
        np.testing.assert_allclose(rv, x.var(0, ddof=1), rtol=1e-14)


@pytest.mark.parametrize("view", ["transposed", "strided", "negative", "fortran"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_non_contiguous_views(rng, view, dtype):
    base = make(rng, (6, 8, 10, 4), dtype, loc=2.0)
    x = {
        "transposed": base.transpose(0, 3, 1, 2),   # (6, 4, 8, 10), channels on axis 1
        "strided": base[::2, :, ::3, :],
        "negative": base[::-1, :, :, ::-1],
        "fortran": np.asfortranarray(base),
    }[view]
    assert not x.flags.c_contiguous
    dy = make(rng, x.shape, dtype)[..., ::-1]
    y, mean, rstd = fastbn.batch_norm(x)
    y_ref, mean_ref, rstd_ref = reference.batch_norm_train(x)
    assert_close(y, y_ref, dtype)
    dx, dw, db = fastbn.batch_norm_backward(dy, x, mean, rstd)
    dx_ref, dw_ref, db_ref = reference.batch_norm_backward_train(dy, x, mean, rstd)
    assert_close(dx, dx_ref, dtype, scale=4)
    assert_close(dw, dw_ref, dtype, scale=_scale(x, 1))


@pytest.mark.parametrize("axis", [1, -1])
def test_float16(rng, axis):
    shape = (4, 3, 5, 5) if axis == 1 else (4, 5, 5, 3)
    x = make(rng, shape, np.float16, loc=1.0)
    w = rng.normal(1, 0.1, 3).astype(np.float16)
    rm, rv = np.zeros(3, np.float16), np.ones(3, np.float16)
    y, mean, rstd = fastbn.batch_norm(x, w, None, rm, rv, axis=axis)
    assert y.dtype == np.float16 and mean.dtype == rstd.dtype == np.float32
    y_ref, _, _ = reference.batch_norm_train(x, w, axis=axis)
    assert_close(y, y_ref, np.float16)
    erm, erv = reference.update_running_stats(np.zeros(3), np.ones(3), x, 0.1, axis)
    assert_close(rm, erm, np.float16)
    assert_close(rv, erv, np.float16)
    dy = make(rng, shape, np.float16)
    dx, dw, db = fastbn.batch_norm_backward(dy, x, mean, rstd, w, axis=axis)
    assert dx.dtype == np.float16 and dw.dtype == np.float32
    dx_ref, dw_ref, _ = reference.batch_norm_backward_train(dy, x, mean, rstd, w, axis=axis)
    assert_close(dx, dx_ref, np.float16)
    assert_close(dw, dw_ref, np.float16, scale=5)
    yi, _, _ = fastbn.batch_norm(x, w, None, rm, rv, training=False, axis=axis)
    assert yi.dtype == np.float16


@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_out_argument(rng, dtype, axis):
    x = make(rng, (4, 6, 7, 5), dtype)
    expected = fastbn.batch_norm(x, axis=axis)[0]
    out = np.empty_like(x)
    y, _, _ = fastbn.batch_norm(x, out=out, axis=axis)
    assert y is out and np.array_equal(out, expected)
    # a non-contiguous out is filled through a temporary
    big = np.zeros((4, 6, 7, 10), dtype)
    y, _, _ = fastbn.batch_norm(x, out=big[..., ::2], axis=axis)
    assert np.array_equal(big[..., ::2], expected) and not big[..., 1::2].any()
    # in place
    x2 = x.copy()
    y, _, _ = fastbn.batch_norm(x2, out=x2, axis=axis)
    assert y is x2 and np.array_equal(x2, expected)


def test_large_offset_float32_is_float64_accurate(rng):
    """Mean 1e4, std 1: E[x^2] - E[x]^2 in float32 would lose every digit."""
    shape = (16, 3, 32, 32)
    x = (1e4 + rng.normal(size=shape)).astype(np.float32)
    for axis, xx in ((1, x), (-1, np.ascontiguousarray(np.moveaxis(x, 1, -1)))):
        y, mean, rstd = fastbn.batch_norm(xx, axis=axis)
        y_ref, mean_ref, rstd_ref = reference.batch_norm_train(xx, axis=axis)
        assert np.abs(y - y_ref).max() < 1e-5  # float32 output rounding, nothing more
        np.testing.assert_allclose(rstd, rstd_ref, rtol=1e-6)


def test_large_offset_float64(rng):
    x = 1e8 + rng.normal(size=(64, 4, 100))
    y, _, rstd = fastbn.batch_norm(x)
    y_ref, _, rstd_ref = reference.batch_norm_train(x)
    np.testing.assert_allclose(y, y_ref, atol=1e-7)  # bound set by x's own rounding at 1e8
    np.testing.assert_allclose(rstd, rstd_ref, rtol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,axis", [((8, 3, 40), 1), ((8, 5, 3), -1), ((9, 3), 1)], ids=str)
def test_constant_channel_gives_bias(kernel_config, shape, axis, dtype):
    c = shape[axis]
    x = np.full(shape, 123.456, dtype)
    bias = np.arange(c, dtype=np.float64)
    y, mean, rstd = fastbn.batch_norm(x, np.full(c, 2.0), bias, axis=axis)
    assert np.all(np.isfinite(y))
    ym = np.moveaxis(y, axis, -1)
    assert np.array_equal(ym, np.broadcast_to(bias.astype(dtype), ym.shape))
    assert np.array_equal(mean, np.full(c, x.flat[0]))
    dx, dw, db = fastbn.batch_norm_backward(np.ones(shape, dtype), x, mean, rstd, axis=axis)
    assert np.all(np.isfinite(dx)) and np.all(dw == 0)


@pytest.mark.parametrize("shape,axis", [((6, 4, 40), 1), ((6, 7, 4), -1), ((12, 4), 1)], ids=str)
def test_nan_stays_in_its_channel(kernel_config, rng, shape, axis):
    x = make(rng, shape, np.float32)
    xm = np.moveaxis(x, axis, -1)
    xm[..., 2].flat[3] = np.nan
    y, mean, rstd = fastbn.batch_norm(x, axis=axis)
    ym = np.moveaxis(y, axis, -1)
    assert np.all(np.isnan(ym[..., 2]))
    others = [0, 1, 3]
    assert np.all(np.isfinite(ym[..., others]))
    assert np.isnan(mean[2]) and np.all(np.isfinite(mean[others]))
    dx, dw, db = fastbn.batch_norm_backward(np.ones_like(x), x, mean, rstd, axis=axis)
    assert np.all(np.isfinite(np.moveaxis(dx, axis, -1)[..., others]))
    assert np.all(np.isfinite(dw[others]))


def test_empty_batch_in_inference():
    x = np.empty((0, 3, 4, 4), np.float32)
    y, mean, rstd = fastbn.batch_norm(x, running_mean=np.zeros(3, np.float32),
                                      running_var=np.ones(3, np.float32), training=False)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert mean.shape == rstd.shape == (3,)


def test_keras_momentum_mapping(rng):
    """Keras' BatchNormalization(momentum=0.99) is momentum=0.01 here."""
    x = make(rng, (32, 4), np.float64)
    rm, rv = np.zeros(4), np.ones(4)
    fastbn.batch_norm(x, running_mean=rm, running_var=rv, momentum=1 - 0.99)
    np.testing.assert_allclose(rm, 0.99 * 0 + 0.01 * x.mean(0))
    np.testing.assert_allclose(rv, 0.99 * 1 + 0.01 * x.var(0, ddof=1))


@pytest.mark.parametrize("shape,axis", [((64, 16, 40, 40), 1), ((64, 20, 20, 16), -1),
                                        ((2, 3, 70000), 1), ((4096, 48), 1)], ids=str)
def test_identical_for_any_thread_count(rng, shape, axis):
    x = make(rng, shape, np.float32, loc=5)
    dy = make(rng, shape, np.float32)
    results = []
    before = numba.get_num_threads()
    try:
        for n in sorted({1, 2, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(n)
            y, mean, rstd = fastbn.batch_norm(x, axis=axis)
            results.append((y, mean, rstd, *fastbn.batch_norm_backward(dy, x, mean, rstd,
                                                                       axis=axis)))
    finally:
        numba.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert np.array_equal(a, b)


def test_concurrent_calls_from_threads(rng):
    """Eight Python threads launching parallel kernels at once: no abort, same answers."""
    x = make(rng, (32, 16, 24, 24), np.float32)
    xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    dy = make(rng, x.shape, np.float32)
    expected = fastbn.batch_norm(x)[0], fastbn.batch_norm(xl, axis=-1)[0]
    _, mean, rstd = fastbn.batch_norm(x)
    expected_dx = fastbn.batch_norm_backward(dy, x, mean, rstd)[0]
    failures = []
    barrier = threading.Barrier(8)

    def work(i):
        try:
            barrier.wait()
            for _ in range(5):
                y = fastbn.batch_norm(x)[0] if i % 2 else fastbn.batch_norm(xl, axis=-1)[0]
                assert np.array_equal(y, expected[0] if i % 2 else expected[1])
                dx = fastbn.batch_norm_backward(dy, x, mean, rstd)[0]
                assert np.array_equal(dx, expected_dx)
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert numba.threading_layer() in ("omp", "tbb", "workqueue")


_THREADS_SCRIPT = """
import os, sys, threading
import numba
if sys.argv[1] == "config":
    numba.config.THREADING_LAYER = "workqueue"   # the user's choice, in code
before = numba.config.THREADING_LAYER
import numpy as np
import fastbn
assert numba.config.THREADING_LAYER == before, "importing fastbn changed Numba's settings"
x = np.random.default_rng(0).normal(size=(64, 32, 40, 40)).astype(np.float32)
expected = fastbn.batch_norm(x)[0]
failures = []
def work():
    try:
        for _ in range(3):
            assert np.array_equal(fastbn.batch_norm(x)[0], expected)
    except Exception as exc:
        failures.append(exc)
threads = [threading.Thread(target=work) for _ in range(6)]
[t.start() for t in threads]
[t.join() for t in threads]
assert not failures, failures
assert numba.config.THREADING_LAYER == before
print(numba.threading_layer())
"""


@pytest.mark.parametrize("choice", ["numba-default", "config", "environment"])
def test_threading_layer_is_the_users_choice(choice):
    """Importing fastbn changes no Numba setting: Numba's default priority (tbb, omp,
    workqueue) or the user's own choice stands, and concurrent calls never abort, even
    on ``workqueue`` (fastbn serialises its launches there)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_THREADING")}
    if choice == "environment":
        env["NUMBA_THREADING_LAYER"] = "workqueue"
    run = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT, choice], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    layer = run.stdout.split()[-1]
    if choice == "numba-default":
        assert layer in ("tbb", "omp", "workqueue")
    else:
        assert layer == "workqueue"


# --- mergeable statistics ------------------------------------------------------------


@pytest.mark.parametrize("axis", [1, -1])
def test_moments_of_pieces_equal_the_whole(rng, axis):
    x = make(rng, (30, 4, 9) if axis == 1 else (30, 9, 4), np.float64, loc=50)
    count, mean, m2 = fastbn.moments(x, axis=axis)
    ref_count, ref_mean, ref_m2 = reference.moments(x, axis)
    assert count == ref_count
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-14)
    np.testing.assert_allclose(m2, ref_m2, rtol=1e-12)
    merged = fastbn.moments(x[:0], axis=axis)  # empty piece
    for piece in (x[:7], x[7:8], x[8:]):
        merged = fastbn.merge_moments(merged, fastbn.moments(piece, axis=axis))
    assert merged[0] == count
    np.testing.assert_allclose(merged[1], mean, rtol=1e-14)
    np.testing.assert_allclose(merged[2], m2, rtol=1e-12)
    mean_s, rstd_s, unbiased = fastbn.moments_to_stats(*merged, eps=1e-5)
    _, bn_mean, bn_rstd = fastbn.batch_norm(x, axis=axis)
    np.testing.assert_allclose(mean_s, bn_mean, rtol=1e-14)
    np.testing.assert_allclose(rstd_s, bn_rstd, rtol=1e-12)
    np.testing.assert_allclose(unbiased, np.moveaxis(x, axis, -1).reshape(-1, 4).var(0, ddof=1),
                               rtol=1e-12)
