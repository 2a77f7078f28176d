"""Bad input raises a clear error before anything is written."""

import numpy as np
import pytest

import fastbn


@pytest.fixture
def setup(rng):
    x = rng.normal(size=(4, 3, 5, 5)).astype(np.float32)
    rm = rng.normal(size=3).astype(np.float32)
    rv = rng.uniform(1, 2, 3).astype(np.float32)
    return x, rm, rv


def _ro(a):
    a = a.copy()
    a.flags.writeable = False
    return a


BAD_FORWARD = [
    # (kwargs changes, exception, words the message must contain)
    (dict(x=np.ones((4, 3, 1, 1), np.float32)[:1, :, :, :]), ValueError,
     ["more than 1 value per channel", "(1, 3, 1, 1)"]),
    (dict(x=np.ones(5, np.float32)), ValueError, ["at least 2 dimensions", "(5,)"]),
    (dict(axis=4), ValueError, ["axis 4", "(4, 3, 5, 5)"]),
    (dict(axis=-5), ValueError, ["axis -5"]),
    (dict(axis=1.0), TypeError, ["axis"]),
    (dict(weight=np.ones(4)), ValueError, ["weight", "(3,)", "(4,)"]),
    (dict(bias=np.ones((3, 1))), ValueError, ["bias", "(3, 1)"]),
    (dict(running_mean=np.zeros(2, np.float32)), ValueError, ["running_mean", "(2,)"]),
    (dict(running_var=np.ones(5, np.float32)), ValueError, ["running_var", "(5,)"]),
    (dict(running_var=None), ValueError, ["running_var", "both or neither"]),
    (dict(x=np.ones((4, 3, 5, 5), np.int64)), TypeError, ["x", "int64"]),
    (dict(x=np.ones((4, 3), complex)), TypeError, ["x", "complex128"]),
    (dict(weight=np.ones(3, np.int32)), TypeError, ["weight", "int32"]),
    (dict(eps=0.0), ValueError, ["eps"]),
    (dict(eps=-1e-5), ValueError, ["eps"]),
    (dict(eps=float("nan")), ValueError, ["eps"]),
    (dict(momentum=1.5), ValueError, ["momentum"]),
    (dict(momentum=-0.1), ValueError, ["momentum"]),
    (dict(momentum=float("nan")), ValueError, ["momentum"]),
    (dict(running_mean="ro"), ValueError, ["running_mean", "read-only"]),
    (dict(running_var="ro"), ValueError, ["running_var", "read-only"]),
    (dict(out=np.empty((4, 3, 5, 4), np.float32)), ValueError, ["out", "(4, 3, 5, 4)"]),
    (dict(out=np.empty((4, 3, 5, 5), np.float64)), ValueError, ["out", "float64"]),
    (dict(out="ro"), ValueError, ["out", "read-only"]),
]


@pytest.mark.parametrize("changes,exc,words", BAD_FORWARD,
                         ids=[f"{next(iter(c))}-{i}" for i, (c, _, _) in enumerate(BAD_FORWARD)])
def test_bad_forward_input(setup, changes, exc, words):
    x, rm, rv = setup
    kwargs = dict(x=x, running_mean=rm, running_var=rv)
    for key, value in changes.items():
        if isinstance(value, str) and value == "ro":
            value = _ro(np.empty_like(x) if key == "out" else kwargs[key])
        kwargs[key] = value
    rm_before, rv_before = rm.copy(), rv.copy()
    x_before = x.copy()
    with pytest.raises(exc) as info:
        fastbn.batch_norm(**kwargs)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    # nothing was written: running statistics bit for bit, x untouched
    assert rm.tobytes() == rm_before.tobytes() and rv.tobytes() == rv_before.tobytes()
    assert x.tobytes() == x_before.tobytes()


def test_inference_requires_running_stats(setup):
    x, rm, _ = setup
    with pytest.raises(ValueError, match="running_mean and running_var are required"):
        fastbn.batch_norm(x, training=False)
    with pytest.raises(ValueError, match="running_var"):
        fastbn.batch_norm(x, running_mean=rm, training=False)


def test_inference_accepts_read_only_stats(setup):
    x, rm, rv = setup
    y, _, _ = fastbn.batch_norm(x, running_mean=_ro(rm), running_var=_ro(rv), training=False)
    assert y.shape == x.shape


def test_training_on_empty_batch_is_an_error():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        fastbn.batch_norm(np.empty((0, 3), np.float32))


BAD_BACKWARD = [
    (dict(dy=np.ones((4, 3, 5, 4), np.float32)), ValueError, ["dy", "(4, 3, 5, 4)"]),
    (dict(dy=np.ones((4, 3, 5, 5), np.float64)), TypeError, ["dy", "float64"]),
    (dict(mean=np.zeros(4, np.float32)), ValueError, ["mean", "(4,)"]),
    (dict(rstd=np.ones((3, 1), np.float32)), ValueError, ["rstd", "(3, 1)"]),
    (dict(weight=np.ones(2)), ValueError, ["weight", "(2,)"]),
    (dict(x=np.ones((4, 3, 5, 5), np.int8)), TypeError, ["x", "int8"]),
    (dict(axis=7), ValueError, ["axis 7"]),
]


@pytest.mark.parametrize("changes,exc,words", BAD_BACKWARD,
                         ids=[next(iter(c)) for c, _, _ in BAD_BACKWARD])
def test_bad_backward_input(setup, changes, exc, words):
    x, _, _ = setup
    _, mean, rstd = fastbn.batch_norm(x)
    kwargs = dict(dy=np.ones_like(x), x=x, mean=mean, rstd=rstd)
    kwargs.update(changes)
    with pytest.raises(exc) as info:
        fastbn.batch_norm_backward(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_error_after_validation_leaves_stats_untouched(setup):
    """A failing call with valid running stats but bad weight changes nothing."""
    x, rm, rv = setup
    before = rm.tobytes(), rv.tobytes()
    with pytest.raises(ValueError):
        fastbn.batch_norm(x, np.ones(3), np.ones(4), rm, rv)
    assert (rm.tobytes(), rv.tobytes()) == before


# --- a batch whose statistics are not finite -------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("stats_dtype", [np.float32, np.float64, np.float16],
                         ids=lambda d: np.dtype(d).name)
def test_non_finite_batch_leaves_running_stats_of_its_channel(rng, bad, stats_dtype):
    """Policy: skip the update of the affected channels and warn (PyTorch writes NaN)."""
    x = rng.normal(size=(8, 4, 5)).astype(np.float32)
    x[3, 1, 2] = bad
    rm = rng.normal(size=4).astype(stats_dtype)
    rv = rng.uniform(0.5, 2, 4).astype(stats_dtype)
    before = rm.copy(), rv.copy()
    with pytest.warns(RuntimeWarning, match="1 of 4 channels"):
        y, _, _ = fastbn.batch_norm(x, None, None, rm, rv)
    np.testing.assert_array_equal(rm[1], before[0][1])
    np.testing.assert_array_equal(rv[1], before[1][1])
    ok = [0, 2, 3]
    ref_rm, ref_rv = before[0][ok].astype(np.float64), before[1][ok].astype(np.float64)
    xs = x[:, ok].transpose(1, 0, 2).reshape(3, -1).astype(np.float64)
    np.testing.assert_allclose(rm[ok], 0.9 * ref_rm + 0.1 * xs.mean(1), rtol=2e-3)
    np.testing.assert_allclose(rv[ok], 0.9 * ref_rv + 0.1 * xs.var(1, ddof=1), rtol=2e-3)
    assert np.isnan(y[:, 1]).all() and np.isfinite(y[:, ok]).all()


def test_finite_batch_does_not_warn(rng):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastbn.batch_norm(rng.normal(size=(8, 4)), None, None, np.zeros(4), np.ones(4))
