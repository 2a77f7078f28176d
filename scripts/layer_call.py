"""Time one forward + backward of the BatchNorm and LayerNorm layers, per call.

Three candidates take turns in one loop: the fastbn.nn layer (``layer(x)``
then ``layer.backward(dy)``), the functional calls it makes
(``fastbn.batch_norm`` / ``fastbn.layer_norm`` and their backward), and
torch.nn's layer with autograd (``y = layer(x); y.backward(dy)``, input
gradient on).  Warm caches, float32, medians of ``--repeats`` timed calls,
on as many torch threads as Numba threads.  Needs torch.

    python scripts/layer_call.py [--shapes 32x256 128x1024] [--repeats 2000]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numba
import numpy as np
import torch

import fastbn
from fastbn import nn


def cases(shape: tuple[int, int]):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, np.float32)
    dy = rng.standard_normal(shape, np.float32)
    c = shape[1]
    w, b = np.ones(c, np.float32), np.zeros(c, np.float32)
    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    tdy = torch.from_numpy(dy)

    bn = nn.BatchNorm(c)

    def bn_layer():
        bn(x)
        bn.backward(dy)

    def bn_functional():
        _, mean, rstd = fastbn.batch_norm(x, w, b, rm, rv, training=True)
        fastbn.batch_norm_backward(dy, x, mean, rstd, w)

    tbn = torch.nn.BatchNorm1d(c)

    def bn_torch():
        tx.grad = None
        tbn(tx).backward(tdy)

    ln = nn.LayerNorm(c)

    def ln_layer():
        ln(x)
        ln.backward(dy)

    def ln_functional():
        _, mean, rstd = fastbn.layer_norm(x, c, w, b)
        fastbn.layer_norm_backward(dy, x, c, mean, rstd, w)

    tln = torch.nn.LayerNorm(c)

    def ln_torch():
        tx.grad = None
        tln(tx).backward(tdy)

    return {"BatchNorm": (bn_layer, bn_functional, bn_torch),
            "LayerNorm": (ln_layer, ln_functional, ln_torch)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=["32x256", "128x1024"])
    ap.add_argument("--repeats", type=int, default=2000)
    args = ap.parse_args()
    torch.set_num_threads(numba.get_num_threads())
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"numba {numba.get_num_threads()} threads, torch {torch.__version__} "
          f"{torch.get_num_threads()} threads; float32, warm caches, "
          f"medians of {args.repeats} calls")
    print(f"{'layer':<10} {'shape':<10} {'layer us':>9} {'functional us':>14} {'torch us':>9} "
          f"{'layer overhead':>15} {'torch/layer':>12}")
    for spec in args.shapes:
        shape = tuple(int(s) for s in spec.split("x"))
        for name, fns in cases(shape).items():
            for fn in fns:
                for _ in range(20):
                    fn()
            samples: list[list[float]] = [[], [], []]
            for _ in range(args.repeats):
                for i, fn in enumerate(fns):
                    t0 = time.perf_counter()
                    fn()
                    samples[i].append(time.perf_counter() - t0)
            layer, func, tor = (float(np.median(s)) * 1e6 for s in samples)
            print(f"{name:<10} {spec:<10} {layer:>9.1f} {func:>14.1f} {tor:>9.1f} "
                  f"{layer - func:>12.1f} us {tor / layer:>11.2f}x", flush=True)


if __name__ == "__main__":
    main()
