"""Hypothesis properties of batch norm that hold for any input."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastbn

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def batches(draw, dtype=np.float64):
    """(x, axis): ndim 2-4, a few channels, values with a spread per channel."""
    ndim = draw(st.integers(2, 4))
    shape = draw(hnp.array_shapes(min_dims=ndim, max_dims=ndim, min_side=2, max_side=6))
    axis = draw(st.sampled_from([1, -1]))
    seed = draw(st.integers(0, 2**32 - 1))
    loc = draw(st.floats(-1e3, 1e3))
    scale = draw(st.floats(1e-2, 1e2))
    rng = np.random.default_rng(seed)
    return rng.normal(loc, scale, shape).astype(dtype), axis


def _per_channel(a, axis):
    return np.moveaxis(a, axis, -1).reshape(-1, a.shape[axis])


@SETTINGS
@given(batches())
def test_zero_mean_unit_variance(case):
    x, axis = case
    eps = 1e-12
    y, _, _ = fastbn.batch_norm(x, axis=axis, eps=eps)
    yc = _per_channel(y, axis)
    var = _per_channel(x, axis).var(0)
    np.testing.assert_allclose(yc.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(yc.var(0), var / (var + eps), rtol=1e-9)


@SETTINGS
@given(batches(), st.floats(-1e4, 1e4))
def test_per_channel_shift_leaves_y_unchanged(case, shift):
    x, axis = case
    c = x.shape[axis]
    shape = [1] * x.ndim
    shape[axis] = c
    shifted = x + (shift * np.arange(1, c + 1)).reshape(shape)
    y, _, _ = fastbn.batch_norm(x, axis=axis)
    y_shifted, _, _ = fastbn.batch_norm(shifted, axis=axis)
    np.testing.assert_allclose(y_shifted, y, atol=1e-6)


@SETTINGS
@given(batches(), st.integers(0, 2**32 - 1))
def test_dx_sums_to_zero_over_reduced_axes(case, seed):
    x, axis = case
    rng = np.random.default_rng(seed)
    c = x.shape[axis]
    w = rng.normal(size=c)
    dy = rng.normal(size=x.shape)
    _, mean, rstd = fastbn.batch_norm(x, w, axis=axis)
    dx, _, _ = fastbn.batch_norm_backward(dy, x, mean, rstd, w, axis=axis)
    dxc = _per_channel(dx, axis)
    # y is invariant to a per-channel shift of x, so dx is orthogonal to it
    scale = np.abs(_per_channel(dy, axis)).sum(0) * np.abs(w) * rstd
    assert np.all(np.abs(dxc.sum(0)) <= 1e-9 * (1 + scale))


@SETTINGS
@given(batches(np.float32))
def test_float32_matches_float64_computation(case):
    x, axis = case
    y32, _, _ = fastbn.batch_norm(x, axis=axis)
    y64, _, _ = fastbn.batch_norm(x.astype(np.float64), axis=axis)
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-4)


@SETTINGS
@given(batches(), st.floats(-1e4, 1e4))
def test_layer_and_group_norm_properties(case, shift):
    x, axis = case
    d = x.shape[-1]
    y, _, _ = fastbn.layer_norm(x, d, eps=1e-12)
    var = x.var(axis=-1, keepdims=True)
    np.testing.assert_allclose(y.mean(axis=-1), 0, atol=1e-9)
    np.testing.assert_allclose(y.var(axis=-1, keepdims=True), var / (var + 1e-12), rtol=1e-9)
    np.testing.assert_allclose(fastbn.layer_norm(x + shift, d)[0], fastbn.layer_norm(x, d)[0],
                               atol=1e-6)
    dy = np.random.default_rng(0).normal(size=x.shape)
    _, mean, rstd = fastbn.layer_norm(x, d)
    dx = fastbn.layer_norm_backward(dy, x, d, mean, rstd)[0]
    assert np.all(np.abs(dx.sum(axis=-1)) <= 1e-9 * (1 + np.abs(dy).sum(-1) * rstd))

    yg, _, _ = fastbn.group_norm(x, 1, axis=axis)
    np.testing.assert_allclose(fastbn.group_norm(x + shift, 1, axis=axis)[0], yg, atol=1e-6)
    c = x.shape[axis]
    groups = c if x.size // (x.shape[0] * c) > 1 else 1  # instance norm needs spatial > 1
    _, mean_g, rstd_g = fastbn.group_norm(x, groups, axis=axis)
    dxg = fastbn.group_norm_backward(dy, x, groups, mean_g, rstd_g, axis=axis)[0]
    per_group = np.moveaxis(dxg, axis, 1).reshape(x.shape[0], groups, -1).sum(-1)
    assert np.all(np.abs(per_group) <= 1e-8 * (1 + np.abs(dy).sum() * rstd_g.max()))


@SETTINGS
@given(batches())
def test_rms_norm_unit_mean_square(case):
    x, _ = case
    y, _ = fastbn.rms_norm(x, x.shape[-1], eps=1e-30)
    np.testing.assert_allclose((y * y).mean(axis=-1), 1, rtol=1e-9)
