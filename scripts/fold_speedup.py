"""Inference time of a model against its folded twin (``fastbn.nn.fold_batch_norm``).

The tutorial's MLP (Dense -> BN+ReLU blocks) and the small CNN (Conv2d -> BN ->
ReLU blocks), float32, in eval mode, at several batch sizes.  The two models
are timed interleaved in one process, medians of ``--repeats`` rounds of
``--calls`` calls each, warm caches (the same input every call); the max
difference of their outputs is printed too.

    python scripts/fold_speedup.py [--repeats 7] [--calls 20] [--blas-threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from fastbn.experiments import train
from fastbn.nn import fold_batch_norm


def _time(model, x, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        model.forward(x)
    return (time.perf_counter() - t0) / calls


def _trained(model, x):
    for _ in range(3):  # running statistics that are not the initial ones
        model.forward(x)
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="limit BLAS to this many threads (threadpoolctl); default: as is")
    args = ap.parse_args()
    if args.blas_threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.blas_threads, user_api="blas")
    rng = np.random.default_rng(0)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"float32, eval mode, medians of {args.repeats} x {args.calls} calls, interleaved, "
          f"warm caches; BLAS threads: {args.blas_threads or 'default'}")
    print(f"{'model':<34} {'batch':>5} {'unfolded ms':>11} {'folded ms':>9} {'speedup':>7} "
          f"{'max |diff|':>10}")
    cases = [("tutorial MLP 784-256-128-64-10", lambda: train.mlp(
        784, 10, bn=True, rng=np.random.default_rng(0)), lambda n: (n, 784), (32, 256, 1024)),
             ("small CNN on 1x28x28", lambda: train.cnn(
                 (1, 28, 28), 10, norm="BN", rng=np.random.default_rng(0)),
              lambda n: (n, 1, 28, 28), (32, 256))]
    for name, build, shape, batches in cases:
        for n in batches:
            x = rng.normal(size=shape(n)).astype(np.float32)
            model = _trained(build().train(), x)
            folded = fold_batch_norm(model)
            diff = float(np.abs(folded.forward(x) - model.forward(x)).max())
            _time(model, x, 2)
            _time(folded, x, 2)
            t = {"model": [], "folded": []}
            for _ in range(args.repeats):
                t["model"].append(_time(model, x, args.calls))
                t["folded"].append(_time(folded, x, args.calls))
            a, b = (float(np.median(t[k])) * 1e3 for k in ("model", "folded"))
            print(f"{name:<34} {n:>5} {a:>11.3f} {b:>9.3f} {a / b:>6.2f}x {diff:>10.2e}",
                  flush=True)


if __name__ == "__main__":
    main()
