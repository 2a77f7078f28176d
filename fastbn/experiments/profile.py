"""How much of a training step is normalization, with fastbn's kernels vs the NumPy formula?

``python -m fastbn.experiments.profile [--batch-size 32] [--steps N] [--image-size 8]
[--blas-threads 1] [--csv PATH]``

Trains the small CNN of the ``small-batch`` experiment
(:func:`fastbn.experiments.train.cnn`) on random images for ``--steps`` SGD
steps, with BN and with GN, once on fastbn's kernels and once on the
vectorized NumPy expressions a NumPy user would write instead
(:data:`NUMPY_FORMULA`: ``(x - mean) / sqrt(var + eps) * w + b`` and its
gradient, in x's dtype).  The NumPy versions take the place of
``fastbn.functional`` inside ``fastbn.nn.norm`` (whose layers call
``F.batch_norm``, ``F.group_norm``, ... at call time) through
:func:`numpy_backend`.  Steps of the two backends alternate, so drift in
the machine's speed hits both alike.

Every step is timed whole (forward, loss, backward, optimizer step) with
``time.perf_counter``, and the norm layers' forward and backward calls inside
it through a timing shim on those layers (:class:`NormTimer`).  The table
reports the medians over the steps after a warm-up: step ms, norm ms (all
norm layers' forward + backward in one step) and the norm share of the step
(the median of the per-step ratios).  ``--csv PATH`` appends the rows, with
the run's settings and date, to a tidy CSV (the documentation's profile page
and its threads page are generated from ``docs/experiments/profile.csv``).

BLAS is limited to one thread by default, as in the experiments
(:func:`fastbn.experiments.train.single_threaded_blas`); ``--blas-threads 0``
leaves OpenBLAS's default, whose worker threads keep spinning after each
matrix product and compete with Numba's parallel kernels for the cores (on 2
cores, at 28x28 images, that made fastbn's norm layers about 30x slower).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

__all__ = ["NUMPY_FORMULA", "numpy_backend", "NormTimer", "profile", "main"]


# --- the NumPy formula: what a NumPy user writes ------------------------------------------


def _stats_dtype(dtype) -> np.dtype:
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def _channel_layout(x, axis):
    ax = axis % x.ndim
    reduce = tuple(i for i in range(x.ndim) if i != ax)
    shape = [1] * x.ndim
    shape[ax] = x.shape[ax]
    return ax, reduce, tuple(shape)


def batch_norm(x, weight=None, bias=None, running_mean=None, running_var=None, *,
               training=True, momentum=0.1, eps=1e-5, axis=1, out=None, activation=None,
               residual=None):
    """:func:`fastbn.batch_norm` as NumPy expressions in x's dtype."""
    ax, red, shape = _channel_layout(x, axis)
    if training:
        mean = x.mean(axis=red)
        var = x.var(axis=red)
        if running_mean is not None:
            m = x.size // x.shape[ax]
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean
            running_var[...] = (1 - momentum) * running_var + momentum * var * (m / (m - 1))
    else:
        mean, var = running_mean, running_var
    mean = np.asarray(mean).astype(x.dtype, copy=False)
    var = np.asarray(var).astype(x.dtype, copy=False)
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + x.dtype.type(eps))
    if weight is not None:
        y = y * np.asarray(weight).astype(x.dtype, copy=False).reshape(shape)
    if bias is not None:
        y = y + np.asarray(bias).astype(x.dtype, copy=False).reshape(shape)
    if residual is not None:
        y = y + residual
    if activation == "relu":
        y = np.maximum(y, 0)
    if out is not None:
        out[...] = y
        y = out
    sd = _stats_dtype(x.dtype)
    return y, mean.astype(sd), (1 / np.sqrt(var + x.dtype.type(eps))).astype(sd)


def batch_norm_backward(dy, x, mean, rstd, weight=None, *, training=True, axis=1,
                        activation=None, y=None, dresidual=None):
    """:func:`fastbn.batch_norm_backward` as NumPy expressions in x's dtype."""
    _, red, shape = _channel_layout(x, axis)
    if activation == "relu":
        dy = dy * (y > 0)
    if dresidual is not None:
        dresidual[...] = dy
    mean = np.asarray(mean).astype(x.dtype, copy=False).reshape(shape)
    rstd = np.asarray(rstd).astype(x.dtype, copy=False).reshape(shape)
    xhat = (x - mean) * rstd
    dbias = dy.sum(axis=red)
    dweight = (dy * xhat).sum(axis=red)
    dy_hat = dy if weight is None else dy * np.asarray(weight).astype(x.dtype).reshape(shape)
    if training:
        dx = (dy_hat - dy_hat.mean(axis=red, keepdims=True)
              - xhat * (dy_hat * xhat).mean(axis=red, keepdims=True)) * rstd
    else:
        dx = dy_hat * rstd
    sd = _stats_dtype(x.dtype)
    return dx.astype(x.dtype, copy=False), dweight.astype(sd), dbias.astype(sd)


def _channels_first(a, axis):
    return a if axis % a.ndim == 1 else np.moveaxis(a, -1, 1)


def group_norm(x, num_groups, weight=None, bias=None, *, eps=1e-5, axis=1, out=None):
    """:func:`fastbn.group_norm` as NumPy expressions in x's dtype."""
    xc = _channels_first(x, axis)
    n, c = xc.shape[:2]
    shape = (1, c) + (1,) * (xc.ndim - 2)
    xg = xc.reshape(n, num_groups, -1)
    mean = xg.mean(axis=-1, keepdims=True)
    var = xg.var(axis=-1, keepdims=True)
    y = ((xg - mean) / np.sqrt(var + x.dtype.type(eps))).reshape(xc.shape)
    if weight is not None:
        y = y * np.asarray(weight).astype(x.dtype, copy=False).reshape(shape)
    if bias is not None:
        y = y + np.asarray(bias).astype(x.dtype, copy=False).reshape(shape)
    if xc is not x:
        y = np.moveaxis(y, 1, -1)
    if out is not None:
        out[...] = y
        y = out
    sd = _stats_dtype(x.dtype)
    return (y, mean.reshape(n, num_groups).astype(sd),
            (1 / np.sqrt(var + x.dtype.type(eps))).reshape(n, num_groups).astype(sd))


def group_norm_backward(dy, x, num_groups, mean, rstd, weight=None, *, axis=1):
    """:func:`fastbn.group_norm_backward` as NumPy expressions in x's dtype."""
    xc, dyc = _channels_first(x, axis), _channels_first(dy, axis)
    n, c = xc.shape[:2]
    shape = (1, c) + (1,) * (xc.ndim - 2)
    red = (0,) + tuple(range(2, xc.ndim))
    mean = np.asarray(mean).astype(x.dtype, copy=False).reshape(n, num_groups, 1)
    rstd = np.asarray(rstd).astype(x.dtype, copy=False).reshape(n, num_groups, 1)
    xhat = ((xc.reshape(n, num_groups, -1) - mean) * rstd).reshape(xc.shape)
    dbias = dyc.sum(axis=red)
    dweight = (dyc * xhat).sum(axis=red)
    dy_hat = dyc if weight is None else dyc * np.asarray(weight).astype(x.dtype).reshape(shape)
    dg = dy_hat.reshape(n, num_groups, -1)
    xg = xhat.reshape(n, num_groups, -1)
    dx = ((dg - dg.mean(axis=-1, keepdims=True)
           - xg * (dg * xg).mean(axis=-1, keepdims=True)) * rstd).reshape(xc.shape)
    if xc is not x:
        dx = np.moveaxis(dx, 1, -1)
    sd = _stats_dtype(x.dtype)
    return dx.astype(x.dtype, copy=False), dweight.astype(sd), dbias.astype(sd)


#: The NumPy-formula versions, by ``fastbn.functional`` name.
NUMPY_FORMULA = {
    "batch_norm": batch_norm,
    "batch_norm_backward": batch_norm_backward,
    "group_norm": group_norm,
    "group_norm_backward": group_norm_backward,
}


@contextmanager
def numpy_backend() -> Iterator[dict]:
    """Within the block, ``fastbn.nn``'s norm layers compute with :data:`NUMPY_FORMULA`.

    Patches the name ``F`` in ``fastbn.nn.norm`` with a namespace holding
    ``fastbn.functional``'s functions, those of :data:`NUMPY_FORMULA`
    replaced by wrappers that count their calls.  Yields the counts (by
    name), so a caller can check the patch took effect.
    """
    from .. import functional
    from ..nn import norm as norm_module

    calls = dict.fromkeys(NUMPY_FORMULA, 0)

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    namespace = {k: getattr(functional, k) for k in dir(functional) if not k.startswith("__")}
    namespace.update({k: counted(k, fn) for k, fn in NUMPY_FORMULA.items()})
    saved = norm_module.F
    norm_module.F = types.SimpleNamespace(**namespace)
    try:
        yield calls
    finally:
        norm_module.F = saved


# --- timing ---------------------------------------------------------------------------------


class NormTimer:
    """A timing shim on the norm layers of a model: their forward and backward calls
    add their ``time.perf_counter`` durations to :attr:`seconds`.

    Installed as instance attributes over the layers' bound methods, removed
    by :meth:`remove` (or on leaving a ``with`` block).
    """

    def __init__(self, model) -> None:
        from ..nn import norm as norm_module

        self.seconds = 0.0
        self.layers = [m for m in model.modules()
                       if type(m).__module__ == norm_module.__name__]
        for layer in self.layers:
            for name in ("forward", "backward"):
                setattr(layer, name, self._timed(getattr(layer, name)))

    def _timed(self, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
        return timed

    def remove(self) -> None:
        for layer in self.layers:
            for name in ("forward", "backward"):
                layer.__dict__.pop(name, None)

    def __enter__(self) -> NormTimer:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def profile(norms=("BN", "GN"), *, batch_size: int = 32, steps: int = 200, warmup: int = 20,
            image_size: int = 8, seed: int = 0) -> list[dict]:
    """Time training steps of the small CNN; one row per (norm, backend).

    Returns rows with ``norm``, ``backend`` ("fastbn" or "numpy formula"),
    ``batch_size``, ``image_size``, ``steps``, ``step_ms``, ``norm_ms``,
    ``norm_share_pct`` (medians over the timed steps) and ``norm_calls``.
    """
    from ..nn import SoftmaxCrossEntropy
    from . import train

    rng = np.random.default_rng(seed)
    x = rng.random((batch_size, 1, image_size, image_size), dtype=np.float32)
    y = rng.integers(0, 10, batch_size)
    rows = []
    for norm in norms:
        runs = {}
        for backend in ("fastbn", "numpy formula"):
            model = train.cnn((1, image_size, image_size), 10, norm=norm,
                              rng=np.random.default_rng(seed))
            runs[backend] = (model, train.optimizer("SGD", model, 0.01), NormTimer(model), [],
                             [])
        crit = SoftmaxCrossEntropy()
        counts = {}
        try:
            for i in range(warmup + steps):
                for backend, (model, opt, timer, step_s, norm_s) in runs.items():
                    with (numpy_backend() if backend != "fastbn" else _nothing()) as calls:
                        timer.seconds = 0.0
                        start = time.perf_counter()
                        loss = crit(model(x), y)
                        opt.zero_grad()
                        model.backward(crit.backward())
                        opt.step()
                        elapsed = time.perf_counter() - start
                    if calls is not None:
                        counts[backend] = counts.get(backend, 0) + sum(calls.values())
                    if i >= warmup:
                        step_s.append(elapsed)
                        norm_s.append(timer.seconds)
                    if not np.isfinite(loss):
                        raise FloatingPointError(f"{norm}/{backend}: the loss is not finite")
        finally:
            for _, _, timer, _, _ in runs.values():
                timer.remove()
        if not counts.get("numpy formula"):
            raise RuntimeError("the NumPy-formula backend was never called: fastbn.nn.norm "
                               "no longer computes through the name F")
        for backend, (_, _, timer, step_s, norm_s) in runs.items():
            rows.append({"norm": norm, "backend": backend, "batch_size": batch_size,
                         "image_size": image_size, "steps": steps,
                         "step_ms": 1e3 * statistics.median(step_s),
                         "norm_ms": 1e3 * statistics.median(norm_s),
                         "norm_share_pct": 100 * statistics.median(
                             n / s for n, s in zip(norm_s, step_s, strict=True)),
                         "norm_layers": len(timer.layers)})
    return rows


@contextmanager
def _nothing():
    yield None


@contextmanager
def _blas_limit(threads: int):
    """Limit BLAS to ``threads`` (0: unchanged); yields a description for the header."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield "default (threadpoolctl not installed)"
        return
    if threads <= 0:
        yield "default"
        return
    with threadpool_limits(limits=threads, user_api="blas"):
        yield str(threads)


def format_rows(rows: list[dict]) -> str:
    from .report import format_table

    table = [{"norm": r["norm"], "backend": r["backend"], "step ms": f"{r['step_ms']:.3f}",
              "norm ms": f"{r['norm_ms']:.3f}", "norm share %": f"{r['norm_share_pct']:.1f}"}
             for r in rows]
    lines = [format_table(table)]
    for norm in dict.fromkeys(r["norm"] for r in rows):
        by = {r["backend"]: r for r in rows if r["norm"] == norm}
        if {"fastbn", "numpy formula"} <= set(by):
            f, n = by["fastbn"], by["numpy formula"]
            lines.append(f"{norm}: fastbn's norm layers are {n['norm_ms'] / f['norm_ms']:.2f}x "
                         f"as fast as the NumPy formula; the whole step "
                         f"{n['step_ms'] / f['step_ms']:.2f}x.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fastbn.experiments.profile",
        description="How much of a training step of the small CNN is normalization, with "
                    "fastbn's kernels vs the NumPy formula.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per backend")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    parser.add_argument("--image-size", type=int, default=8,
                        help="side of the random square images (8: digits, 28: MNIST)")
    parser.add_argument("--norms", nargs="+", default=["BN", "GN"], choices=["BN", "GN", "LN",
                                                                            "IN"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blas-threads", type=int, default=1, metavar="N",
                        help="limit BLAS to N threads, as the experiments do (default 1; 0: "
                             "leave BLAS's own default, whose spinning threads compete with "
                             "Numba's)")
    parser.add_argument("--csv", metavar="PATH",
                        help="append the rows (with this run's settings and date) to a CSV")
    args = parser.parse_args(argv)
    if args.batch_size < 2 or args.steps < 1 or args.warmup < 0 or args.image_size < 4:
        parser.error("need --batch-size >= 2, --steps >= 1, --warmup >= 0, --image-size >= 4")
    import numba

    with _blas_limit(args.blas_threads) as blas:
        rows = profile(tuple(args.norms), batch_size=args.batch_size, steps=args.steps,
                       warmup=args.warmup, image_size=args.image_size, seed=args.seed)
    print(f"small CNN, batch {args.batch_size}, {args.image_size}x{args.image_size} images, "
          f"float32, medians of {args.steps} steps, {numba.get_num_threads()} Numba threads, "
          f"BLAS threads: {blas}")
    print(format_rows(rows))
    if args.csv:
        append_csv(rows, args.csv, blas_threads=args.blas_threads,
                   numba_threads=numba.get_num_threads())
    return 0


def append_csv(rows: list[dict], path: str, **settings) -> None:
    """Append ``rows`` with ``settings`` and today's date to the tidy CSV at ``path``.

    The columns of an existing file must match (one table, one schema).
    """
    import datetime
    import os

    from .report import cpu_name, read_csv, write_csv

    today = datetime.date.today().isoformat()
    new = [dict(r, **settings, cpu=cpu_name(), cores=os.cpu_count(), date=today) for r in rows]
    old = read_csv(path) if os.path.exists(path) else []
    if old and list(old[0]) != list(new[0]):
        raise ValueError(f"{path} has columns {list(old[0])}; this run writes {list(new[0])}")
    write_csv(old + new, path)


if __name__ == "__main__":
    sys.exit(main())
