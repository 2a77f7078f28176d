"""Time whole training steps: fastbn.nn on NumPy matmuls against the same torch.nn model.

The tutorial's MLP (784-256-128-64-10, batch norm + ReLU after each hidden
Dense) and the small CNN (two 3x3 conv blocks with batch norm, 1x28x28
input), at several batch sizes.  Each step is forward, loss, backward and an
Adam update.  Three candidates take turns inside one loop of rounds, so the
machine's drift hits all alike:

- ``fastbn``: fastbn.nn with NumPy's default BLAS threads;
- ``fastbn-1blas``: the same model with BLAS limited to one thread
  (threadpoolctl), as ``Sequential.fit`` does;
- ``torch``: the same layers in torch.nn with autograd, on as many threads
  as Numba uses.

Warm caches (the same batch every step); medians over ``--rounds`` rounds of
``--steps`` steps.  Needs threadpoolctl and torch.

    python scripts/network_step.py [--model mlp cnn] [--batch 32 128 512]
                                   [--rounds 7] [--steps 20] [--csv PATH]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time

import numba
import numpy as np
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from fastbn.experiments import train
from fastbn.nn import Adam, SoftmaxCrossEntropy


def fastbn_step(model, opt, crit, x, y, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        out = model.forward(x)
        crit(out, y)
        opt.zero_grad()
        model.backward(crit.backward())
        opt.step()
    return (time.perf_counter() - t0) / steps


def torch_model(kind: str) -> torch.nn.Module:
    nn = torch.nn
    if kind == "mlp":
        layers: list[nn.Module] = []
        width = 784
        for h in train.HIDDEN:
            layers += [nn.Linear(width, h, bias=False), nn.BatchNorm1d(h), nn.ReLU()]
            width = h
        return nn.Sequential(*layers, nn.Linear(width, 10))
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def torch_step(model, opt, x, y, steps: int) -> float:
    loss_fn = torch.nn.functional.cross_entropy
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", nargs="+", choices=("mlp", "cnn"), default=["mlp", "cnn"])
    ap.add_argument("--batch", nargs="+", type=int, default=[32, 128, 512])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--csv", metavar="PATH", help="append the rows to a CSV file")
    args = ap.parse_args()
    torch.set_num_threads(numba.get_num_threads())
    blas = ", ".join(f"{i['internal_api']} {i['num_threads']} threads" for i in threadpool_info()
                     if i["user_api"] == "blas")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"BLAS: {blas}; numba {numba.get_num_threads()} threads "
          f"({numba.config.THREADING_LAYER}); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"medians of {args.rounds} rounds x {args.steps} steps, interleaved, warm caches")
    print(f"{'model':<5} {'batch':>5} {'fastbn ms':>10} {'1 BLAS ms':>10} {'torch ms':>9} "
          f"{'torch/fastbn':>12} {'torch/1 BLAS':>12}")
    out = []
    for kind in args.model:
        for batch in args.batch:
            rng = np.random.default_rng(0)
            shape = (batch, 784) if kind == "mlp" else (batch, 1, 28, 28)
            x = rng.normal(size=shape).astype(np.float32)
            y = rng.integers(0, 10, batch)
            model = (train.mlp(784, 10, bn=True, rng=np.random.default_rng(0)) if kind == "mlp"
                     else train.cnn((1, 28, 28), 10, norm="BN", rng=np.random.default_rng(0)))
            opt, crit = Adam(model, lr=1e-3), SoftmaxCrossEntropy()
            tm = torch_model(kind)
            topt = torch.optim.Adam(tm.parameters(), lr=1e-3)
            tx, ty = torch.from_numpy(x), torch.from_numpy(y)
            fastbn_step(model, opt, crit, x, y, 5)  # compile and settle
            torch_step(tm, topt, tx, ty, 5)
            times: dict[str, list[float]] = {"fastbn": [], "one": [], "torch": []}
            for _ in range(args.rounds):
                times["fastbn"].append(fastbn_step(model, opt, crit, x, y, args.steps))
                with threadpool_limits(limits=1, user_api="blas"):
                    times["one"].append(fastbn_step(model, opt, crit, x, y, args.steps))
                times["torch"].append(torch_step(tm, topt, tx, ty, args.steps))
            med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
            print(f"{kind:<5} {batch:>5} {med['fastbn']:>10.2f} {med['one']:>10.2f} "
                  f"{med['torch']:>9.2f} {med['torch'] / med['fastbn']:>11.2f}x "
                  f"{med['torch'] / med['one']:>11.2f}x", flush=True)
            out.append({"model": kind, "batch": batch, "fastbn_ms": med["fastbn"],
                        "fastbn_one_blas_ms": med["one"], "torch_ms": med["torch"],
                        "processor": platform.processor() or platform.machine(),
                        "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d")})
    if args.csv:
        new = not os.path.exists(args.csv)
        with open(args.csv, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(out[0]))
            if new:
                w.writeheader()
            w.writerows(out)


if __name__ == "__main__":
    main()
