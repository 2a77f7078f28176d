"""fastbn.dask.moments: chunk by chunk, exact to float64 rounding, on every scheduler."""

import numpy as np
import pytest

da = pytest.importorskip("dask.array")

import fastbn  # noqa: E402
import fastbn.dask  # noqa: E402


def _close(got, want):
    count, mean, m2 = got
    assert count == want[0]
    np.testing.assert_allclose(mean, want[1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m2, want[2], rtol=1e-12)


def _data(shape, dtype=np.float32, offset=1e3):
    return (np.random.default_rng(0).normal(offset, 2.0, shape)).astype(dtype)


@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("chunks", [(5, -1, -1, -1), (3, 2, 4, 5), (-1, -1, -1, -1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_equals_in_memory_moments(axis, chunks, dtype):
    x = _data((13, 6, 7, 9), dtype)
    got = fastbn.dask.moments(da.from_array(x, chunks=chunks), axis=axis)
    _close(got, fastbn.moments(x, axis=axis))
    assert got[1].dtype == np.float64 and got[1].shape == (x.shape[axis],)


def test_empty_and_two_dimensional():
    x = _data((40, 3), np.float64)
    _close(fastbn.dask.moments(da.from_array(x, chunks=(7, 2))), fastbn.moments(x))
    empty = da.zeros((0, 4), chunks=(1, 4))
    count, mean, m2 = fastbn.dask.moments(empty)
    assert count == 0 and np.array_equal(mean, np.zeros(4)) and np.array_equal(m2, np.zeros(4))


def test_a_memmap_larger_than_a_chunk(tmp_path):
    """A dataset on disk, read chunk by chunk."""
    shape = (64, 8, 16, 16)
    path = tmp_path / "data.f32"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=shape)
    mm[:] = _data(shape)
    mm.flush()
    ro = np.memmap(path, dtype=np.float32, mode="r", shape=shape)
    darr = da.from_array(ro, chunks=(8, 8, 16, 16))
    assert darr.numblocks[0] == 8
    _close(fastbn.dask.moments(darr, axis=1), fastbn.moments(np.array(ro), axis=1))


def test_delayed_and_schedulers():
    import dask

    x = _data((20, 4, 6))
    darr = da.from_array(x, chunks=(3, 4, 6))
    want = fastbn.moments(x)
    lazy = fastbn.dask.moments(darr, compute=False)
    for scheduler in ("threads", "sync", "processes"):
        _close(dask.compute(lazy, scheduler=scheduler)[0], want)


def test_distributed_local_cluster():
    distributed = pytest.importorskip("distributed")
    x = _data((30, 5, 8), np.float64)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        got = fastbn.dask.moments(da.from_array(x, chunks=(4, 5, 8)))
    _close(got, fastbn.moments(x))


def test_bad_input():
    with pytest.raises(TypeError, match="dask.array.Array"):
        fastbn.dask.moments(np.ones((4, 3)))
    with pytest.raises(TypeError, match="floating-point"):
        fastbn.dask.moments(da.ones((4, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="out of range"):
        fastbn.dask.moments(da.ones((4, 3)), axis=2)
