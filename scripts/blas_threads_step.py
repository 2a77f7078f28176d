"""Time one training step of the tutorial's MLP with NumPy's default BLAS threads and with one.

Why ``Sequential.fit`` limits BLAS to one thread (threadpoolctl): OpenBLAS's
worker threads spin for a while after each matrix product, and on a machine
with few cores they take the cores from the threads of fastbn's Numba
kernels.  Interleaved, medians of ``--repeats`` rounds, warm caches (the same
batch every step).  Needs threadpoolctl.

    python scripts/blas_threads_step.py [--model mlp|cnn] [--batch 32] [--features 784]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from fastbn.experiments import train
from fastbn.nn import Adam, SoftmaxCrossEntropy


def step_time(model, opt, crit, x, y, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        out = model.forward(x)
        crit(out, y)
        opt.zero_grad()
        model.backward(crit.backward())
        opt.step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--features", type=int, default=784)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, args.batch)
    if args.model == "mlp":
        x = rng.normal(size=(args.batch, args.features)).astype(np.float32)
        model = train.mlp(args.features, 10, bn=True, rng=np.random.default_rng(0))
        name = "-".join(map(str, (args.features, *train.HIDDEN, 10))) + " MLP with BN"
    else:
        x = rng.normal(size=(args.batch, 1, 28, 28)).astype(np.float32)
        model = train.cnn((1, 28, 28), 10, norm="BN", rng=np.random.default_rng(0))
        name = "small CNN with BN on 1x28x28"
    opt, crit = Adam(model, lr=1e-3), SoftmaxCrossEntropy()
    step_time(model, opt, crit, x, y, 10)  # compile and settle
    times: dict[str, list[float]] = {"default": [], "one": []}
    for _ in range(args.repeats):
        times["default"].append(step_time(model, opt, crit, x, y, args.steps))
        with threadpool_limits(limits=1, user_api="blas"):
            times["one"].append(step_time(model, opt, crit, x, y, args.steps))
    blas = [f"{i['internal_api']} {i['num_threads']} threads" for i in threadpool_info()
            if i["user_api"] == "blas"]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"BLAS: {', '.join(blas)}")
    print(f"{name}, batch {args.batch}, "
          f"median of {args.repeats} x {args.steps} steps, warm caches")
    med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    print(f"default BLAS threads: {med['default']:.2f} ms/step")
    print(f"one BLAS thread:      {med['one']:.2f} ms/step")
    print(f"ratio: {med['default'] / med['one']:.2f}x")


if __name__ == "__main__":
    main()
