"""The oracle itself: statistics from first principles, gradients by finite differences."""

import numpy as np
import pytest
from _helpers import numerical_grad

from fastbn import reference


@pytest.mark.parametrize("shape,axis", [((5, 3), 1), ((4, 3, 2, 3), 1), ((3, 2, 2, 4), -1)])
def test_moments_from_first_principles(rng, shape, axis):
    x = rng.normal(size=shape)
    count, mean, m2 = reference.moments(x, axis)
    channels = x.shape[axis]
    for c in range(channels):
        values = np.take(x, c, axis=axis).ravel()
        assert count == values.size
        assert mean[c] == pytest.approx(sum(values) / values.size, rel=1e-14)
        assert m2[c] == pytest.approx(sum((v - mean[c]) ** 2 for v in values), rel=1e-12)


@pytest.mark.parametrize("shape,axis", [((6, 3), 1), ((3, 2, 2, 3), 1), ((2, 3, 2, 3), -1)])
def test_backward_train_matches_finite_differences(rng, shape, axis):
    x = rng.normal(size=shape)
    channels = x.shape[axis]
    w = rng.normal(size=channels)
    b = rng.normal(size=channels)
    g = rng.normal(size=shape)  # loss = sum(g * y)

    def loss():
        return np.sum(g * reference.batch_norm_train(x, w, b, axis=axis)[0])

    _, mean, rstd = reference.batch_norm_train(x, w, b, axis=axis)
    dx, dw, db = reference.batch_norm_backward_train(g, x, mean, rstd, w, axis=axis)
    np.testing.assert_allclose(dx, numerical_grad(loss, x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dw, numerical_grad(loss, w), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(db, numerical_grad(loss, b), rtol=1e-5, atol=1e-7)


def test_backward_frozen_matches_finite_differences(rng):
    x = rng.normal(size=(4, 3, 5))
    rm, rv = rng.normal(size=3), rng.uniform(0.5, 2, size=3)
    w, b = rng.normal(size=3), rng.normal(size=3)
    g = rng.normal(size=x.shape)

    def loss():
        return np.sum(g * reference.batch_norm_inference(x, rm, rv, w, b))

    rstd = 1 / np.sqrt(rv + 1e-5)
    dx, dw, db = reference.batch_norm_backward_frozen(g, x, rm, rstd, w)
    np.testing.assert_allclose(dx, numerical_grad(loss, x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dw, numerical_grad(loss, w), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(db, numerical_grad(loss, b), rtol=1e-5, atol=1e-7)


def test_running_stats_rule():
    x = np.arange(12.0).reshape(4, 3)  # per channel: 4 values, spaced by 3
    rm, rv = reference.update_running_stats(np.ones(3), np.ones(3), x, momentum=0.25)
    mean = x.mean(axis=0)
    unbiased = x.var(axis=0, ddof=1)
    np.testing.assert_allclose(rm, 0.75 + 0.25 * mean)
    np.testing.assert_allclose(rv, 0.75 + 0.25 * unbiased)


@pytest.mark.parametrize("op", ["layer", "rms", "group-first", "group-last"])
def test_other_norms_backward_match_finite_differences(rng, op):
    if op in ("layer", "rms"):
        x = rng.normal(size=(3, 2, 4))
        ns = (2, 4)
        w, b = rng.normal(size=ns), rng.normal(size=ns)
    else:
        axis = 1 if op == "group-first" else -1
        x = rng.normal(size=(2, 4, 3) if axis == 1 else (2, 3, 4))
        w, b = rng.normal(size=4), rng.normal(size=4)
    g = rng.normal(size=x.shape)
    if op == "layer":
        def loss():
            return np.sum(g * reference.layer_norm(x, ns, w, b)[0])
        _, mean, rstd = reference.layer_norm(x, ns, w, b)
        dx, dw, db = reference.layer_norm_backward(g, x, ns, mean, rstd, w)
    elif op == "rms":
        def loss():
            return np.sum(g * reference.rms_norm(x, ns, w)[0])
        _, rstd = reference.rms_norm(x, ns, w)
        dx, dw = reference.rms_norm_backward(g, x, ns, rstd, w)
        db = None
    else:
        def loss():
            return np.sum(g * reference.group_norm(x, 2, w, b, axis=axis)[0])
        _, mean, rstd = reference.group_norm(x, 2, w, b, axis=axis)
        dx, dw, db = reference.group_norm_backward(g, x, 2, mean, rstd, w, axis=axis)
    np.testing.assert_allclose(dx, numerical_grad(loss, x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dw, numerical_grad(loss, w), rtol=1e-5, atol=1e-7)
    if db is not None:
        np.testing.assert_allclose(db, numerical_grad(loss, b), rtol=1e-5, atol=1e-7)
