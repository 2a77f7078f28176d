"""Experiment ``sync-bn``: data-parallel training with SyncBatchNorm equals one process.

Run under MPI: ``mpiexec -n K fastbn experiment sync-bn [--quick]``.  The
tutorial's MLP (hidden 256-128-64, each ``Dense(use_bias=False) ->
BatchNorm -> ReLU``) is trained with SGD (momentum 0.9) on a global batch
of 32 split over the K ranks (uneven when K does not divide 32), with
:class:`fastbn.nn.SyncBatchNorm` and one gradient ``Allreduce`` per step;
then, on rank 0, the same model (same initialization, same batches) with
:class:`fastbn.nn.BatchNorm` on the whole global batch in one process.
Synchronized batch norm sees the global batch, so the two loss curves must
agree to rounding: float64 ~1e-12, float32 to float32 rounding (which the
different summation orders amplify over the steps).  Each configuration runs
for every seed; the seconds per step are medians over the steps.

The loss of the data-parallel run is the global mean: each rank's mean loss
weighted by its share of the batch (``n_r / B``), summed over the ranks.
With one process (no ``mpiexec``) the experiment still runs (K = 1).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..nn import BatchNorm, Dense, ReLU, Sequential, SoftmaxCrossEntropy, SyncBatchNorm
from ..nn.optim import SGD
from . import report, train
from .data import Dataset

NAME = "sync-bn"
SPREAD = "lines: every seed"
DTYPES = ("float64", "float32")


@dataclass(frozen=True)
class Config:
    mode: str = "full"
    dataset: str = "digits"
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 300
    batch_size: int = 32
    lr: float = 0.05


def make_config(mode: str = "full", seed: int = 0, dataset: str = "digits") -> Config:
    """Full: 3 seeds x 300 steps (about 7 epochs of digits); quick: 2 seeds x 60 steps;
    tiny: 2 seeds x 4 steps."""
    if mode == "full":
        return Config(mode, dataset, (seed, seed + 1, seed + 2), 300)
    if mode == "quick":
        return Config(mode, dataset, (seed, seed + 1), 60)
    return Config(mode, dataset, (seed, seed + 1), 4)


def _comm():
    from mpi4py import MPI

    return MPI.COMM_WORLD


def _model(sync_comm, num_features, num_classes, dtype, seed):
    """The tutorial's MLP; SyncBatchNorm over ``sync_comm`` or BatchNorm when None."""
    rng = train.seed_rngs(seed, "init")[0]
    layers, width = [], num_features
    for h in train.HIDDEN:
        norm = (BatchNorm(h, dtype=dtype) if sync_comm is None
                else SyncBatchNorm(h, comm=sync_comm, dtype=dtype))
        layers += [Dense(width, h, use_bias=False, rng=rng, dtype=dtype), norm, ReLU()]
        width = h
    layers.append(Dense(width, num_classes, rng=rng, dtype=dtype))
    return Sequential(*layers)


def _slices(batch: int, ranks: int) -> list[slice]:
    """Rank r's rows of a global batch: as even as possible, the first ranks one more."""
    edges = np.cumsum([0] + [batch // ranks + (r < batch % ranks) for r in range(ranks)])
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _train(model, x, y, batches, comm, lr):
    """SGD on ``batches`` (index arrays of the global batch); returns the per-step global
    loss and seconds.  With ``comm``, this rank trains on its slice of each batch and
    the gradients are summed over the ranks (one Allreduce of every parameter's
    gradient per step); without, one process takes the whole batch."""
    crit = SoftmaxCrossEntropy()
    opt = SGD(model, lr, momentum=0.9)
    ranks = 1 if comm is None else comm.Get_size()
    rank = 0 if comm is None else comm.Get_rank()
    mine = _slices(len(batches[0]), ranks)[rank]
    grads = [g for m in model.modules() for g in m.grads.values()]
    flat = np.empty(sum(g.size for g in grads))
    summed = np.empty_like(flat)
    losses, seconds = [], []
    for idx in batches:
        if comm is not None:
            comm.Barrier()
        start = time.perf_counter()
        share = len(idx[mine]) / len(idx)
        loss = crit(model(x[idx[mine]]), y[idx[mine]]) * share
        model.backward(crit.backward() * share)
        if comm is not None:
            k = 0
            for g in grads:
                flat[k:k + g.size] = g.ravel()
                k += g.size
            flat_loss = np.array([loss])
            comm.Allreduce(flat, summed)
            comm.Allreduce(flat_loss.copy(), flat_loss)
            loss = float(flat_loss[0])
            k = 0
            for g in grads:
                g[...] = summed[k:k + g.size].reshape(g.shape)
                k += g.size
        opt.step()
        seconds.append(time.perf_counter() - start)
        losses.append(float(loss))
    return losses, seconds


def run(config: Config, data: Dataset, *, progress: bool = True) -> list[dict]:
    """One row per (dtype, seed, step); rank 0's rows (the other ranks return [])."""
    comm = _comm()
    rank, ranks = comm.Get_rank(), comm.Get_size()
    x_all = data.x_train.reshape(len(data.y_train), -1)
    rows = []
    bar = report.progress(len(DTYPES) * len(config.seeds), NAME, progress and rank == 0)
    for dtype_name in DTYPES:
        dtype = np.dtype(dtype_name)
        x = x_all.astype(dtype)
        for seed in config.seeds:
            order = train.seed_rngs(seed, "order")[0]
            batches = [order.choice(len(x), config.batch_size, replace=False)
                       for _ in range(config.steps)]
            sync = _model(comm, x.shape[1], data.num_classes, dtype, seed)
            _train(sync, x, data.y_train, batches[:2], comm, 0.0)  # warm-up: load kernels
            sync = _model(comm, x.shape[1], data.num_classes, dtype, seed)
            loss_sync, sec_sync = _train(sync, x, data.y_train, batches, comm, config.lr)
            comm.Barrier()
            if rank == 0:  # the reference: one process, the whole global batch
                single = _model(None, x.shape[1], data.num_classes, dtype, seed)
                loss_one, sec_one = _train(single, x, data.y_train, batches, None, config.lr)
                for step, (ls, lo, ts, to) in enumerate(zip(loss_sync, loss_one, sec_sync,
                                                            sec_one, strict=True), 1):
                    rows.append({"dtype": dtype_name, "seed": seed, "step": step,
                                 "ranks": ranks, "loss_sync": ls, "loss_single": lo,
                                 "rel_diff": abs(ls - lo) / abs(lo), "step_s_sync": ts,
                                 "step_s_single": to})
            comm.Barrier()
            bar.update()
    bar.close()
    return rows


def summarize(rows: list[dict], config: Config) -> tuple[list[dict], list[str]]:
    table, lines = [], []
    if not rows:
        return table, lines
    ranks = rows[0]["ranks"]
    for dtype_name in DTYPES:
        mine = [r for r in rows if r["dtype"] == dtype_name]
        worst = max(r["rel_diff"] for r in mine)
        sync_s = float(np.median([r["step_s_sync"] for r in mine]))
        one_s = float(np.median([r["step_s_single"] for r in mine]))
        final = np.mean([r["loss_sync"] for r in mine if r["step"] == config.steps])
        table.append({"dtype": dtype_name, "ranks": ranks,
                      "max relative loss difference": f"{worst:.2e}",
                      f"ms/step, {ranks} ranks (SyncBatchNorm)": f"{1e3 * sync_s:.3f}",
                      "ms/step, 1 process (BatchNorm)": f"{1e3 * one_s:.3f}",
                      "final loss": f"{final:.4f}"})
        bound = 1e-9 if dtype_name == "float64" else 1e-2
        word = "REPRODUCED" if worst <= bound else "NOT REPRODUCED"
        lines.append(f"{dtype_name}: data-parallel SyncBatchNorm on {ranks} rank(s) equals one "
                     f"process on the global batch: {word} -- largest relative difference "
                     f"between the loss curves {worst:.2e} over {config.steps} steps x "
                     f"{len(config.seeds)} seeds (bound {bound:g}).")
    return table, lines


def plot(rows: list[dict], config: Config, path: str, caption: str) -> None:
    plt = report.pyplot()
    fig, (ax_loss, ax_diff) = plt.subplots(1, 2, figsize=(10, 4.2))
    ranks = rows[0]["ranks"] if rows else 1
    for seed in config.seeds:
        mine = [r for r in rows if r["dtype"] == "float64" and r["seed"] == seed]
        steps = [r["step"] for r in mine]
        ax_loss.plot(steps, [r["loss_single"] for r in mine], color="C0", lw=2.5, alpha=0.5,
                     label="1 process, BatchNorm" if seed == config.seeds[0] else None)
        ax_loss.plot(steps, [r["loss_sync"] for r in mine], color="C3", lw=0.8, ls="--",
                     label=f"{ranks} ranks, SyncBatchNorm" if seed == config.seeds[0] else None)
        for dtype_name, color in zip(DTYPES, ("C2", "C1"), strict=True):
            mine = [r for r in rows if r["dtype"] == dtype_name and r["seed"] == seed]
            ax_diff.plot([r["step"] for r in mine], [max(r["rel_diff"], 1e-18) for r in mine],
                         color=color, lw=0.8,
                         label=dtype_name if seed == config.seeds[0] else None)
    ax_loss.set(xlabel="step", ylabel="training loss (float64 run)", yscale="log",
                title="Loss curves (every seed)")
    ax_diff.set(xlabel="step", ylabel="|loss_sync - loss_single| / loss_single",
                yscale="log", title="Relative difference")
    for ax in (ax_loss, ax_diff):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Synchronized batch norm: MLP (hidden {'-'.join(map(str, train.HIDDEN))}) "
                 f"on {config.dataset}, global batch {config.batch_size} over {ranks} ranks, "
                 f"SGD lr {config.lr:g}", fontsize=10)
    report.save_figure(fig, path, caption)


def launcher() -> str:
    """How the run was launched, for the caption: ``mpiexec -n K `` (K > 1)."""
    size = _comm().Get_size()
    return f"mpiexec -n {size} " if size > 1 else ""


def writes_here() -> bool:
    """Only rank 0 writes the CSV and the figure and prints the summary."""
    return _comm().Get_rank() == 0


def overhead(shape=(32, 64, 56, 56), repeats: int = 30) -> dict:
    """Median seconds of one forward + backward of SyncBatchNorm and of BatchNorm on
    this rank's ``shape`` (float32), interleaved; every rank must call it."""
    comm = _comm()
    rng = np.random.default_rng(comm.Get_rank())
    x = rng.normal(size=shape).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    layers = {"BatchNorm": BatchNorm(shape[1]), "SyncBatchNorm": SyncBatchNorm(shape[1],
                                                                               comm=comm)}
    times: dict[str, list[float]] = {name: [] for name in layers}
    for _ in range(repeats + 3):
        for name, layer in layers.items():
            comm.Barrier()
            start = time.perf_counter()
            layer(x)
            layer.backward(dy)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t[3:])) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    """``mpiexec -n K python -m fastbn.experiments.sync_bn [--csv PATH]``: the cost of
    synchronizing, printed by rank 0 (and appended to a CSV with ``--csv``)."""
    import argparse
    import datetime
    import os

    parser = argparse.ArgumentParser(
        prog="mpiexec -n K python -m fastbn.experiments.sync_bn",
        description="Time one forward + backward of SyncBatchNorm and of BatchNorm per rank.")
    parser.add_argument("--csv", metavar="PATH", help="append one row per layer to a CSV")
    args = parser.parse_args(argv)
    result = overhead()
    comm = _comm()
    if comm.Get_rank() == 0:
        c = 64
        print(f"{comm.Get_size()} ranks, (32, 64, 56, 56) float32 per rank, forward + backward "
              f"(median of 30, interleaved):")
        for name, seconds in result.items():
            print(f"  {name:14s} {1e3 * seconds:8.3f} ms")
        extra = result["SyncBatchNorm"] - result["BatchNorm"]
        print(f"  overhead       {1e3 * extra:8.3f} ms "
              f"({100 * extra / result['BatchNorm']:+.1f}%)")
        print(f"  sent per rank: forward 3 int64 + {2 * c} float64 ({24 + 16 * c} bytes), "
              f"backward 3 int64 + {2 * c} float64 ({24 + 16 * c} bytes)")
        if args.csv:
            import numba

            old = report.read_csv(args.csv) if os.path.exists(args.csv) else []
            run = 1 + max((int(r["run"]) for r in old), default=0)
            rows = [{"run": run, "ranks": comm.Get_size(), "layer": name,
                     "median_ms": 1e3 * seconds, "numba_threads": numba.get_num_threads(),
                     "bytes_sent_per_call": 24 + 16 * c, "cpu": report.cpu_name(),
                     "cores": os.cpu_count(), "date": datetime.date.today().isoformat()}
                    for name, seconds in result.items()]
            report.write_csv(old + rows, args.csv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
