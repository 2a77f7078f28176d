"""GPU launch geometry (issue 9): every grid within CUDA's limits, no empty launches.

CUDA caps a grid at 2**31 - 1 blocks along x and 65,535 along y and z, and
refuses a grid with no blocks; the simulator enforces neither.  Here the
limits in ``fastbn.config`` are patched down to 2 blocks per dimension, so
these small inputs need more blocks than the grid may hold and the kernels'
grid-stride loops do the rest: every op and pass must still match the CPU,
and every launch (recorded through :func:`fastbn.cuda.check_launch`, which
each launch passes) must have every dimension in ``1..limit``.  Empty inputs
must launch nothing without work and give the CPU's results.
"""

from types import SimpleNamespace

import numpy as np
import pytest
from _cuda import TPB, d, small_blocks  # noqa: F401  (autouse fixture)
from _helpers import assert_close

import fastbn
import fastbn.cuda as fcuda  # noqa: E402
from fastbn import config
from fastbn.cuda import _kernels as K  # noqa: E402
from fastbn.cuda import _stats  # noqa: E402

LIMIT = 2
DTYPES = [np.float32, np.float64]
ids = lambda t: np.dtype(t).name  # noqa: E731




def _recorder(monkeypatch):
    grids = []
    check = fcuda.check_launch

    def record(grid, block):
        grids.append(tuple(grid) if isinstance(grid, tuple) else (grid,))
        check(grid, block)

    monkeypatch.setattr(fcuda, "check_launch", record)
    return grids


@pytest.fixture
def launches(monkeypatch):
    """Grid limits of LIMIT blocks per dimension; the grids of every launch that runs."""
    for name in ("CUDA_MAX_GRID_X", "CUDA_MAX_GRID_Y", "CUDA_MAX_GRID_Z"):
        monkeypatch.setattr(config, name, LIMIT)
    return _recorder(monkeypatch)


def assert_legal(grids):
    assert grids, "nothing was launched"
    for grid in grids:
        assert 1 <= len(grid) <= 3 and all(0 < g <= LIMIT for g in grid), grid


def _dev(a):
    return d(a) if isinstance(a, np.ndarray) else a


def _copy(a):
    return a.copy() if isinstance(a, np.ndarray) else a


def _host(a):
    return np.asarray(a) if isinstance(a, np.ndarray) else a.copy_to_host()


def same_as_cpu(fn, *args, scale=1.0, **kw):
    """``fn`` on host arrays and on device copies: every result and every array argument
    written in place (running statistics, ``dresidual``) must agree.  Returns the
    host results."""
    h_args, h_kw = [_copy(a) for a in args], {k: _copy(v) for k, v in kw.items()}
    d_args, d_kw = [_dev(a) for a in args], {k: _dev(v) for k, v in kw.items()}
    host, dev = fn(*h_args, **h_kw), fn(*d_args, **d_kw)
    host = host if isinstance(host, tuple) else (host,)
    dev = dev if isinstance(dev, tuple) else (dev,)
    assert len(host) == len(dev)
    pairs = list(zip(host, dev, strict=True))
    pairs += [(h, dv) for h, dv in zip(h_args, d_args, strict=True) if isinstance(h, np.ndarray)]
    pairs += [(h_kw[k], d_kw[k]) for k in h_kw if isinstance(h_kw[k], np.ndarray)]
    for h, dv in pairs:
        h, dv = np.asarray(h), _host(dv)
        assert dv.shape == h.shape and dv.dtype == h.dtype
        assert_close(dv, h, h.dtype, scale=scale)
    return host


# --- every op and pass under tiny grid limits -------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
@pytest.mark.parametrize("shape,axis", [((4, 3, 5, 2), 1), ((3, 4, 20), -1), ((6, 19), 1)],
                         ids=["rows", "channels-last", "2d"])
def test_batch_norm(rng, launches, shape, axis, dtype):
    x = rng.normal(2, 3, shape).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    res = rng.normal(size=shape).astype(dtype)
    c = shape[axis]
    w = rng.normal(1, 0.3, c).astype(dtype)
    b = rng.normal(0, 0.3, c).astype(dtype)
    rm, rv = rng.normal(size=c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)
    sums = np.sqrt(x.size / c)

    y, mean, rstd = same_as_cpu(fastbn.batch_norm, x, w, b, rm, rv, axis=axis)
    same_as_cpu(fastbn.batch_norm, x, None, None, rm, rv, axis=axis)
    same_as_cpu(fastbn.batch_norm, x, w, b, rm, rv, training=False, axis=axis)
    yr, mr, rr = same_as_cpu(fastbn.batch_norm, x, w, b, axis=axis, activation="relu",
                             residual=res)
    for training in (True, False):
        same_as_cpu(fastbn.batch_norm_backward, dy, x, mean, rstd, w, training=training,
                    axis=axis, scale=sums)
        same_as_cpu(fastbn.batch_norm_backward, dy, x, mr, rr, w, training=training, axis=axis,
                    activation="relu", y=yr, dresidual=np.zeros_like(x), scale=sums)
    assert_legal(launches)


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
def test_layer_and_rms_norm(rng, launches, dtype):
    shape = (7, 3 * TPB + 5)   # rows of two chunks; dweight tiles of 4 x 3 blocks
    x = rng.normal(1, 2, shape).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    w = rng.normal(1, 0.3, shape[1]).astype(dtype)
    b = rng.normal(0, 0.3, shape[1]).astype(dtype)
    sums = np.sqrt(shape[0])

    _, mean, rstd = same_as_cpu(fastbn.layer_norm, x, shape[1], w, b)
    same_as_cpu(fastbn.layer_norm_backward, dy, x, shape[1], mean, rstd, w, scale=sums)
    _, rstd = same_as_cpu(fastbn.rms_norm, x, shape[1], w)
    same_as_cpu(fastbn.rms_norm_backward, dy, x, shape[1], rstd, w, scale=sums)
    assert_legal(launches)


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
@pytest.mark.parametrize("shape,groups,axis", [((2, 4, 7), 2, 1), ((2, 5, 20), 4, -1)],
                         ids=["channels-first", "channels-last"])
def test_group_and_instance_norm(rng, launches, shape, groups, axis, dtype):
    x = rng.normal(-1, 2, shape).astype(dtype)
    dy = rng.normal(size=shape).astype(dtype)
    c = shape[axis]
    w = rng.normal(1, 0.3, c).astype(dtype)
    b = rng.normal(0, 0.3, c).astype(dtype)
    sums = np.sqrt(x.size / c)

    _, mean, rstd = same_as_cpu(fastbn.group_norm, x, groups, w, b, axis=axis)
    same_as_cpu(fastbn.group_norm_backward, dy, x, groups, mean, rstd, w, axis=axis,
                scale=sums)
    _, mean, rstd = same_as_cpu(fastbn.instance_norm, x, w, b, axis=axis)
    same_as_cpu(fastbn.instance_norm_backward, dy, x, mean, rstd, w, axis=axis, scale=sums)
    assert_legal(launches)


def test_the_inputs_need_more_blocks_than_the_limits(rng, monkeypatch):
    """With CUDA's own limits the same inputs ask for more than LIMIT blocks along x and
    along y, so the tests above do exercise the grid-stride loops."""
    grids = _recorder(monkeypatch)
    x = rng.normal(size=(3, 4, 20)).astype(np.float32)
    _, mean, rstd = fastbn.batch_norm(d(x), axis=-1)       # channels-last: column tiles
    fastbn.batch_norm_backward(d(x), d(x), mean, rstd, axis=-1)
    x = rng.normal(size=(7, 3 * TPB + 5)).astype(np.float32)
    _, mean, rstd = fastbn.layer_norm(d(x), x.shape[1])   # rows of chunks; dweight tiles
    fastbn.layer_norm_backward(d(x), d(x), x.shape[1], mean, rstd)
    assert max(g[0] for g in grids) > LIMIT
    assert max(g[1] for g in grids if len(g) > 1) > LIMIT


# --- the launch helpers --------------------------------------------------------------------


def test_check_launch_refuses_empty_and_oversized_grids(launches):
    fcuda.check_launch((LIMIT, LIMIT), TPB)
    for grid in (0, LIMIT + 1, (1, 0), (1, LIMIT + 1), (1, 1, LIMIT + 1), (1, 1, 1, 1)):
        with pytest.raises(AssertionError):
            fcuda.check_launch(grid, TPB)
    with pytest.raises(AssertionError):
        fcuda.check_launch(1, config.CUDA_MAX_THREADS + 1)


def test_launches_are_capped_and_empty_ones_skipped(launches):
    a = d(np.zeros(5 * TPB + 3))
    K.fill[1000, TPB](a, 2.0)                    # capped at LIMIT blocks, grid-strided
    assert np.all(a.copy_to_host() == 2.0)
    K.fill[0, TPB](a, 3.0)                       # no blocks: nothing runs
    K.fill[fcuda.grid_1d(0)](a, 3.0)
    assert np.all(a.copy_to_host() == 2.0)
    assert launches == [(LIMIT,)]
    assert fcuda.grid_1d(0)[0] == 0 and fcuda.grid_stride(0)[0] == 0
    assert fcuda.grid_1d(10**12)[0] == LIMIT and fcuda.grid_stride(10**12)[0] <= LIMIT
    assert fcuda.grid_2d(10**12, 10**9)[0] == (LIMIT, LIMIT)
    assert fcuda.grid_blocks(10**12)[0] == LIMIT


def test_default_limits_are_cudas():
    assert (config.CUDA_MAX_GRID_X, config.CUDA_MAX_GRID_Y, config.CUDA_MAX_GRID_Z) == (
        2**31 - 1, 65535, 65535)


def test_channels_last_batch_norm_of_a_large_batch_fits_cudas_grid():
    """The issue's case, geometry only: (256, 128, 128, 64) channels-last is a column
    view of 4.2 M rows, far more row blocks than gridDim.y may hold."""
    x3 = SimpleNamespace(shape=(1, 256 * 128 * 128, 64))
    rows, nqb, grid, tpb = _stats._tiles(x3)
    assert nqb > 65535 and grid[1] == 65535 and 0 < grid[0] <= 2**31 - 1
    assert fcuda.grid_blocks(10**10)[0] == 2**31 - 1


# --- empty inputs ----------------------------------------------------------------------------

EMPTY_BN = [((0, 3), 1), ((0, 3, 4), 1), ((0, 4, 3), -1), ((2, 3, 0), 1), ((2, 0, 3), -1)]


@pytest.mark.parametrize("shape,axis", EMPTY_BN, ids=str)
def test_empty_batch_norm(launches, shape, axis):
    x = np.zeros(shape, np.float32)
    c = shape[axis]
    w, b = np.ones(c, np.float32), np.zeros(c, np.float32)
    rm, rv = np.arange(c, dtype=np.float32), np.full(c, 2.0, np.float32)
    # inference: y empty, the statistics from the running ones
    same_as_cpu(fastbn.batch_norm, x, w, b, rm, rv, training=False, axis=axis)
    same_as_cpu(fastbn.batch_norm, x, None, None, rm, rv, training=False, axis=axis)
    # backward: dx empty, dweight = dbias = 0
    mean, rstd = np.zeros(c, np.float32), np.ones(c, np.float32)
    for training in (True, False):
        same_as_cpu(fastbn.batch_norm_backward, x, x, mean, rstd, w, training=training,
                    axis=axis)
        same_as_cpu(fastbn.batch_norm_backward, x, x, mean, rstd, None, training=training,
                    axis=axis, activation="relu", y=x, dresidual=np.zeros_like(x))
    for grid in launches:   # only the per-channel launches, each with work
        assert all(0 < g <= LIMIT for g in grid)
    # training needs more than one value per channel, on the GPU as on the CPU
    with pytest.raises(ValueError, match="more than 1 value"):
        fastbn.batch_norm(d(x), axis=axis)


@pytest.mark.parametrize("shape", [(0, 5), (2, 0, 5), (3, 0)], ids=str)
def test_empty_layer_and_rms_norm(launches, shape):
    x = np.zeros(shape, np.float32)
    n = shape[-1]
    lead = shape[:-1]
    w, b = np.ones(n, np.float32), np.zeros(n, np.float32)
    mean, rstd = np.zeros(lead, np.float32), np.ones(lead, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):   # D = 0: mean and rstd are NaN
        same_as_cpu(fastbn.layer_norm, x, n, w, b)
        same_as_cpu(fastbn.rms_norm, x, n, w)
    same_as_cpu(fastbn.layer_norm_backward, x, x, n, mean, rstd, w)
    same_as_cpu(fastbn.rms_norm_backward, x, x, n, rstd, w)
    for grid in launches:
        assert all(0 < g <= LIMIT for g in grid)


def test_empty_rows_launch_nothing(launches):
    """No rows: every output is empty, so no kernel runs at all."""
    x = d(np.zeros((0, 5), np.float32))
    w, b = d(np.ones(5, np.float32)), d(np.zeros(5, np.float32))
    y, mean, rstd = fastbn.layer_norm(x, 5, w, b)
    y, rstd = fastbn.rms_norm(x, 5, w)
    assert y.shape == (0, 5) and rstd.shape == (0,)
    assert launches == []


@pytest.mark.parametrize("shape,axis", [((0, 4, 5), 1), ((0, 5, 4), -1)], ids=str)
def test_empty_batch_group_norm(launches, shape, axis):
    x = np.zeros(shape, np.float32)
    w, b = np.ones(4, np.float32), np.zeros(4, np.float32)
    stats = np.zeros((0, 2), np.float32)
    same_as_cpu(fastbn.group_norm, x, 2, w, b, axis=axis)
    same_as_cpu(fastbn.instance_norm, x, w, b, axis=axis)
    same_as_cpu(fastbn.group_norm_backward, x, x, 2, stats, stats, w, axis=axis)
    for grid in launches:
        assert all(0 < g <= LIMIT for g in grid)


def test_empty_spatial_group_norm_backward(launches):
    x = np.zeros((2, 4, 0), np.float32)
    stats = np.ones((2, 2), np.float32)
    same_as_cpu(fastbn.group_norm_backward, x, x, 2, stats, stats, np.ones(4, np.float32))
