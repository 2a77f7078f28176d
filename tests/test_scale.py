"""Opt-in: float32 tensors of more than 2**31 elements (64-bit indexing everywhere).

Run with ``python -m pytest tests/test_scale.py -m scale`` on a machine with at
least 20 GB of free memory (peak about 17.2 GB: x and one result of 8.6 GB
each).  Excluded from the default run (``-m 'not perf and not scale'`` in
pyproject.toml): it allocates too much for CI.

The data is a small random block tiled over the whole tensor, so every
channel's statistics are known exactly from the block, and the elements past
index 2**31 are compared with the formula applied to the block.  Batch norm's
backward is called with ``dy = x`` (inputs may alias each other), which keeps
the peak at two tensors.
"""

import numpy as np
import pytest

import fastbn

pytestmark = pytest.mark.scale

N, C, S = 2, 64, 2**24 + 4096        # N * C * S = 2**31 + 2**19 elements
BLOCK = 4096                          # S is a multiple: each channel repeats one block


def _tiled():
    rng = np.random.default_rng(0)
    block = rng.normal(3.0, 2.0, (C, BLOCK)).astype(np.float32)
    x = np.empty((N, C, S), np.float32)
    for n in range(N):
        x[n].reshape(C, S // BLOCK, BLOCK)[:] = block[:, None, :]
    assert x.size > 2**31
    return x, block.astype(np.float64)


def _tail(a):
    """The last 4096 elements of every channel of the last sample (past index 2**31)."""
    return a[-1, :, -BLOCK:]


def test_batch_norm_forward_and_backward_past_2_31():
    x, block = _tiled()
    mean = block.mean(axis=1)
    var = block.var(axis=1)
    rstd = 1.0 / np.sqrt(var + 1e-5)
    expected = (block - mean[:, None]) * rstd[:, None]

    y, m, r = fastbn.batch_norm(x)
    np.testing.assert_allclose(m, mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(r, rstd, rtol=1e-5)
    np.testing.assert_allclose(_tail(y), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(y[0, :, :BLOCK], expected, rtol=1e-4, atol=1e-4)
    del y

    # dy = x: dx = rstd * (x - mean(x) - xhat * mean(x * xhat)) per channel
    dx, dw, db = fastbn.batch_norm_backward(x, x, m, r)
    c1 = (block * ((block - mean[:, None]) * rstd[:, None])).mean(axis=1)
    c2 = block.mean(axis=1)
    xhat = (block - mean[:, None]) * rstd[:, None]
    expected_dx = (block - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
    np.testing.assert_allclose(_tail(dx), expected_dx, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(db, block.sum(axis=1) * (N * S // BLOCK), rtol=1e-5)
    np.testing.assert_allclose(dw, (block * xhat).sum(axis=1) * (N * S // BLOCK), rtol=1e-4,
                               atol=1.0)


def test_layer_norm_in_place_past_2_31():
    x, block = _tiled()
    rows = x.reshape(-1, BLOCK)           # (N * C * S / 4096) rows, each a copy of a block row
    assert rows.shape[0] * BLOCK > 2**31
    mean = block.mean(axis=1)
    rstd = 1.0 / np.sqrt(block.var(axis=1) + 1e-5)
    expected = (block - mean[:, None]) * rstd[:, None]
    y, m, r = fastbn.layer_norm(rows, BLOCK, out=rows)   # in place: one tensor in memory
    assert y is rows
    np.testing.assert_allclose(y[-1], expected[-1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(m[-1], mean[-1], rtol=1e-6)
    np.testing.assert_allclose(r[-1], rstd[-1], rtol=1e-5)
