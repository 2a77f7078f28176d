"""CPU group norm and instance norm against fastbn.reference, and the equivalences
that tie the normalizations together."""

import numba
import numpy as np
import pytest
from _helpers import assert_close, make, numerical_grad

import fastbn
from fastbn import reference

# (shape, groups, axis): ndim 2-5, channels first and last, 1 < G < C, G = 1, G = C,
# spatial sizes on both sides of the row-kernel threshold.
CASES = [
    ((4, 6), 3, 1),
    ((3, 6, 10), 2, 1),
    ((3, 10, 6), 3, -1),
    ((2, 6, 4, 5), 3, 1),
    ((2, 4, 5, 6), 6, -1),
    ((2, 6, 2, 3, 6), 2, 1),
    ((2, 2, 3, 4, 6), 1, -1),
    ((3, 4, 40), 4, 1),
]
ODD = [
    ((2, 1, 3), 1, 1),       # C = 1
    ((1, 4, 1, 2), 2, 1),    # N = 1
    ((2, 6, 1, 1), 3, 1),    # spatial size 1
    ((2, 1, 1, 6), 3, -1),
]
DTYPES = [np.float32, np.float64]


def _params(rng, c, dtype, affine):
    if not affine:
        return None, None
    return rng.normal(1, 0.5, c), rng.normal(0, 0.5, c)


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,groups,axis", CASES + ODD, ids=str)
def test_group_norm(rng, kernel_config, shape, groups, axis, dtype, affine):
    x = make(rng, shape, dtype, loc=-3.0, scale=2.0)
    dy = make(rng, shape, dtype)
    c = shape[axis]
    w, b = _params(rng, c, dtype, affine)

    y, mean, rstd = fastbn.group_norm(x, groups, w, b, axis=axis)
    y_ref, mean_ref, rstd_ref = reference.group_norm(x, groups, w, b, axis=axis)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert mean.shape == rstd.shape == (shape[0], groups) and mean.dtype == x.dtype
    assert_close(y, y_ref, dtype)
    assert_close(mean, mean_ref, dtype)
    assert_close(rstd, rstd_ref, dtype)

    dx, dw, db = fastbn.group_norm_backward(dy, x, groups, mean, rstd, w, axis=axis)
    dx_ref, dw_ref, db_ref = reference.group_norm_backward(dy, x, groups, mean, rstd, w,
                                                           axis=axis)
    assert dx.shape == x.shape and dw.shape == db.shape == (c,)
    sums = np.sqrt(x.size / c)
    assert_close(dx, dx_ref, dtype, scale=4)
    assert_close(dw, dw_ref, dtype, scale=sums)
    assert_close(db, db_ref, dtype, scale=sums)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,axis", [((3, 4, 5), 1), ((2, 5, 5, 4), -1), ((2, 4, 40), 1)],
                         ids=str)
def test_instance_norm(rng, kernel_config, shape, axis, dtype):
    x = make(rng, shape, dtype, loc=1.0)
    dy = make(rng, shape, dtype)
    c = shape[axis]
    w, b = rng.normal(1, 0.5, c), rng.normal(0, 0.5, c)
    y, mean, rstd = fastbn.instance_norm(x, w, b, axis=axis)
    y_ref, mean_ref, _ = reference.instance_norm(x, w, b, axis=axis)
    assert mean.shape == (shape[0], c)
    assert_close(y, y_ref, dtype)
    assert_close(mean, mean_ref, dtype)
    dx, dw, db = fastbn.instance_norm_backward(dy, x, mean, rstd, w, axis=axis)
    dx_ref, dw_ref, _ = reference.instance_norm_backward(dy, x, mean, rstd, w, axis=axis)
    assert_close(dx, dx_ref, dtype, scale=4)
    assert_close(dw, dw_ref, dtype, scale=np.sqrt(x.size / c))


@pytest.mark.parametrize("axis", [1, -1])
def test_gradient_matches_finite_differences(rng, axis):
    shape = (2, 4, 3, 2) if axis == 1 else (2, 3, 2, 4)
    x = rng.normal(size=shape)
    w, b = rng.normal(size=4), rng.normal(size=4)
    g = rng.normal(size=shape)

    def loss():
        return np.sum(g * fastbn.group_norm(x, 2, w, b, axis=axis)[0])

    _, mean, rstd = fastbn.group_norm(x, 2, w, b, axis=axis)
    dx, dw, db = fastbn.group_norm_backward(g, x, 2, mean, rstd, w, axis=axis)
    np.testing.assert_allclose(dx, numerical_grad(loss, x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dw, numerical_grad(loss, w), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(db, numerical_grad(loss, b), rtol=1e-5, atol=1e-7)


# --- equivalences that hold up to rounding ----------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_layer_norm_equals_group_norm_with_one_group(rng, dtype):
    x = make(rng, (3, 4, 5, 6), dtype, loc=2.0)
    dy = make(rng, x.shape, dtype)
    y_gn, mean_gn, rstd_gn = fastbn.group_norm(x, 1)
    y_ln, mean_ln, rstd_ln = fastbn.layer_norm(x, (4, 5, 6))
    assert_close(y_gn, y_ln, dtype)
    assert_close(mean_gn[:, 0], mean_ln, dtype)
    assert_close(rstd_gn[:, 0], rstd_ln, dtype)
    dx_gn = fastbn.group_norm_backward(dy, x, 1, mean_gn, rstd_gn)[0]
    dx_ln = fastbn.layer_norm_backward(dy, x, (4, 5, 6), mean_ln, rstd_ln)[0]
    assert_close(dx_gn, dx_ln, dtype, scale=4)


@pytest.mark.parametrize("axis", [1, -1])
def test_instance_norm_equals_group_norm_with_c_groups(rng, axis):
    x = make(rng, (3, 4, 5, 6), np.float64)
    c = x.shape[axis]
    w, b = rng.normal(size=c), rng.normal(size=c)
    y_in, mean_in, rstd_in = fastbn.instance_norm(x, w, b, axis=axis)
    y_gn, mean_gn, rstd_gn = fastbn.group_norm(x, c, w, b, axis=axis)
    assert np.array_equal(y_in, y_gn) and np.array_equal(mean_in, mean_gn)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("axis", [1, -1])
def test_batch_norm_on_one_sample_equals_instance_norm(rng, dtype, axis):
    x = make(rng, (1, 5, 6, 7) if axis == 1 else (1, 6, 7, 5), dtype, loc=4.0)
    dy = make(rng, x.shape, dtype)
    w, b = rng.normal(size=5), rng.normal(size=5)
    y_bn, mean_bn, rstd_bn = fastbn.batch_norm(x, w, b, axis=axis)
    y_in, mean_in, rstd_in = fastbn.instance_norm(x, w, b, axis=axis)
    assert_close(y_bn, y_in, dtype)
    assert_close(mean_bn, mean_in[0], dtype)
    assert_close(rstd_bn, rstd_in[0], dtype)
    dx_bn, dw_bn, db_bn = fastbn.batch_norm_backward(dy, x, mean_bn, rstd_bn, w, axis=axis)
    dx_in, dw_in, db_in = fastbn.instance_norm_backward(dy, x, mean_in, rstd_in, w, axis=axis)
    assert_close(dx_bn, dx_in, dtype, scale=4)
    assert_close(dw_bn, dw_in, dtype, scale=7)
    assert_close(db_bn, db_in, dtype, scale=7)


# --- hard cases ----------------------------------------------------------------------


@pytest.mark.parametrize("view", ["transposed", "strided"])
def test_non_contiguous_views(rng, view):
    base = make(rng, (4, 6, 8, 10), np.float32)
    x = base.transpose(0, 1, 3, 2) if view == "transposed" else base[:, :, ::2, 1::3]
    assert not x.flags.c_contiguous
    y, mean, rstd = fastbn.group_norm(x, 3)
    assert_close(y, reference.group_norm(x, 3)[0], np.float32)
    dy = make(rng, x.shape, np.float32)
    dx, dw, _ = fastbn.group_norm_backward(dy, x, 3, mean, rstd)
    dx_ref, dw_ref, _ = reference.group_norm_backward(dy, x, 3, mean, rstd)
    assert_close(dx, dx_ref, np.float32, scale=4)
    assert_close(dw, dw_ref, np.float32, scale=8)


@pytest.mark.parametrize("axis", [1, -1])
def test_float16_and_out(rng, axis):
    x = make(rng, (2, 4, 3, 3) if axis == 1 else (2, 3, 3, 4), np.float16)
    y, mean, _ = fastbn.group_norm(x, 2, axis=axis)
    assert y.dtype == np.float16 and mean.dtype == np.float32
    assert_close(y, reference.group_norm(x, 2, axis=axis)[0], np.float16)
    out = np.empty_like(x)
    assert fastbn.group_norm(x, 2, axis=axis, out=out)[0] is out
    assert np.array_equal(out, y)


@pytest.mark.parametrize("axis", [1, -1])
def test_large_offset_constant_group_and_nan(kernel_config, rng, axis):
    shape = (3, 4, 50) if axis == 1 else (3, 50, 4)
    x = (1e4 + rng.normal(size=shape)).astype(np.float32)
    y, _, _ = fastbn.group_norm(x, 2, axis=axis)
    assert np.abs(y - reference.group_norm(x, 2, axis=axis)[0]).max() < 1e-5

    const = np.full(shape, -3.5, np.float32)
    bias = np.arange(4, dtype=np.float64)
    y, mean, _ = fastbn.group_norm(const, 2, None, bias, axis=axis)
    assert np.array_equal(np.moveaxis(y, axis, -1), np.broadcast_to(
        bias.astype(np.float32), np.moveaxis(y, axis, -1).shape))
    assert np.all(mean == -3.5)

    nan = x.copy()
    np.moveaxis(nan, axis, 1)[1, 3, 7] = np.nan   # sample 1, channel 3 -> group 1
    y, mean, rstd = fastbn.group_norm(nan, 2, axis=axis)
    ym = np.moveaxis(y, axis, 1)
    assert np.all(np.isnan(ym[1, 2:])) and np.all(np.isfinite(ym[1, :2]))
    assert np.all(np.isfinite(ym[[0, 2]]))
    dx, dw, _ = fastbn.group_norm_backward(np.ones_like(nan), nan, 2, mean, rstd, axis=axis)
    assert np.all(np.isfinite(np.moveaxis(dx, axis, 1)[[0, 2]]))
    assert np.all(np.isfinite(dw[:2]))


@pytest.mark.parametrize("shape", [(2, 40, 40, 64), (3, 300, 32), (9, 17, 13, 8)], ids=str)
def test_channels_last_fused_matches_split_exactly(rng, shape, monkeypatch):
    """Channels-last forward takes the fused whole-sample path or the split path by
    batch size and thread count; both must give the same bits."""
    x = make(rng, shape, np.float32, loc=3)
    monkeypatch.setattr(fastbn.config, "SERIAL_MAX_ELEMENTS", 0)
    results = []
    for max_bytes in (1 << 30, 0):  # fused, then split
        monkeypatch.setattr(fastbn.config, "FUSED_CHANNEL_MAX_BYTES", max_bytes)
        results.append(fastbn.group_norm(x, 4, axis=-1))
    for a, b in zip(*results, strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("shape,axis", [((2, 64, 40, 40), 1), ((2, 40, 40, 64), -1),
                                        ((1, 2, 70000), 1)], ids=str)
def test_identical_for_any_thread_count(rng, shape, axis):
    x = make(rng, shape, np.float32, loc=3)
    dy = make(rng, shape, np.float32)
    g = 2 if shape[axis] == 2 else 32
    before = numba.get_num_threads()
    results = []
    try:
        for n in sorted({1, 2, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(n)
            y, mean, rstd = fastbn.group_norm(x, g, axis=axis)
            results.append((y, mean, rstd,
                            *fastbn.group_norm_backward(dy, x, g, mean, rstd, axis=axis)))
    finally:
        numba.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert np.array_equal(a, b)


# --- bad input -----------------------------------------------------------------------

BAD = [
    (dict(num_groups=4), ValueError, ["num_groups 4", "6 channels"]),
    (dict(num_groups=0), ValueError, ["num_groups"]),
    (dict(num_groups=-2), ValueError, ["num_groups"]),
    (dict(num_groups=2.0), TypeError, ["num_groups"]),
    (dict(x=np.ones((2, 6, 1), np.float32), num_groups=6), ValueError,
     ["more than 1 value per group"]),
    (dict(x=np.ones(6, np.float32)), ValueError, ["at least 2 dimensions"]),
    (dict(x=np.ones((2, 6, 5), np.int64)), TypeError, ["x", "int64"]),
    (dict(weight=np.ones(5)), ValueError, ["weight", "(5,)"]),
    (dict(bias=np.ones(7)), ValueError, ["bias", "(7,)"]),
    (dict(eps=-1.0), ValueError, ["eps"]),
    (dict(axis=0), ValueError, ["axis"]),
    (dict(axis=3), ValueError, ["axis 3"]),
]


@pytest.mark.parametrize("changes,exc,words", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input(rng, changes, exc, words):
    kwargs = dict(x=make(rng, (2, 6, 5), np.float32), num_groups=3)
    kwargs.update(changes)
    x = kwargs.pop("x")
    g = kwargs.pop("num_groups")
    with pytest.raises(exc) as info:
        fastbn.group_norm(x, g, **kwargs)
    for word in words:
        assert word in str(info.value)


def test_instance_norm_needs_more_than_one_value(rng):
    with pytest.raises(ValueError, match="more than 1 value per group"):
        fastbn.instance_norm(np.ones((4, 3, 1, 1), np.float32))


def test_bad_backward_input(rng):
    x = make(rng, (2, 6, 5), np.float32)
    _, mean, rstd = fastbn.group_norm(x, 3)
    with pytest.raises(ValueError, match="mean"):
        fastbn.group_norm_backward(x, x, 3, mean.T, rstd)
    with pytest.raises(ValueError, match="num_groups"):
        fastbn.group_norm_backward(x, x, 4, mean, rstd)
    with pytest.raises(TypeError, match="dy"):
        fastbn.group_norm_backward(x.astype(np.float64), x, 3, mean, rstd)
