"""Experiment ``learning-rate``: does batch norm allow higher learning rates?

The tutorial claims that with batch norm one "can use 10-100x higher
learning rate" (its example: Adam at 1e-4 without BN, 1e-2 with).  The
tutorial's MLP with and without batch norm (as in ``convergence``) is trained
at every learning rate of a log grid from 1e-4 to 1 (full: 9 points, half a
decade apart; quick: 5, a decade apart), with SGD (momentum 0.9) and with
Adam, batch 32, for a fixed number of epochs.  Per run: the final validation
accuracy, the final epoch's training loss and whether the run diverged (a
non-finite or exploding loss stops it; see :func:`fastbn.experiments.train.fit`).

Summary: per optimizer and learning rate, the final accuracy of each model
(mean ± std over the seeds that did not diverge) and how many seeds
diverged.  A model "trains" at a learning rate when no seed diverged and the
mean final accuracy is at least ``ok_accuracy`` (90%; 60% on MNIST-1D, where the MLP tops out
near 65-70%); the verdict compares
the largest learning rate at which each model trains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import report, train
from .data import Dataset

NAME = "learning-rate"
MODELS = ("BN", "no BN")
OPTIMIZERS = ("SGD", "Adam")
SPREAD = "error bars: ±1 std over the seeds that did not diverge"


def lr_grid(points: int) -> tuple[float, ...]:
    """``points`` learning rates evenly spaced in log from 1e-4 to 1."""
    return tuple(float(f"{v:.3g}") for v in np.logspace(-4, 0, points))


@dataclass(frozen=True)
class Config:
    mode: str = "full"
    dataset: str = "digits"
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    lrs: tuple[float, ...] = lr_grid(9)
    optimizers: tuple[str, ...] = OPTIMIZERS
    epochs: int = 20
    batch_size: int = 32
    ok_accuracy: float = 0.9
    max_train: int | None = None
    max_val: int | None = None


def make_config(mode: str = "full", seed: int = 0, dataset: str = "digits") -> Config:
    """Full: 9 rates x 2 optimizers x 2 models x 5 seeds, 20 epochs (MNIST: 3 seeds,
    5 epochs on 20,000 images); quick: 5 rates, 2 seeds, 5 epochs (MNIST: 2,000
    images); tiny: 2 rates, 2 seeds, 1 epoch on 200 images.  MNIST-1D: 5 seeds x 30
    epochs (quick: 2 x 5), and a model "trains" from 60% validation accuracy."""
    if dataset == "mnist1d":
        seeds = tuple(range(seed, seed + (5 if mode == "full" else 2)))
        if mode == "full":
            return Config(mode, dataset, seeds, lr_grid(9), epochs=30, ok_accuracy=0.6)
        if mode == "quick":
            return Config(mode, dataset, seeds, lr_grid(5), epochs=5, ok_accuracy=0.6)
        return Config(mode, dataset, seeds, (1e-3, 1.0), epochs=1, ok_accuracy=0.6,
                      max_train=200, max_val=100)
    mnist = dataset != "digits"
    n_seeds = (3 if mnist else 5) if mode == "full" else 2
    seeds = tuple(range(seed, seed + n_seeds))
    if mode == "full":
        return Config(mode, dataset, seeds, lr_grid(9), epochs=5 if mnist else 20,
                      max_train=20000 if mnist else None)
    if mode == "quick":
        return Config(mode, dataset, seeds, lr_grid(5), epochs=5,
                      max_train=2000 if mnist else None, max_val=2000 if mnist else None)
    return Config(mode, dataset, seeds, (1e-3, 1.0), epochs=1, max_train=200, max_val=100)


def run(config: Config, data: Dataset, *, progress: bool = True) -> list[dict]:
    """One row per (optimizer, model, learning rate, seed)."""
    data = data.subset(config.max_train, config.max_val)
    rows = []
    total = len(config.optimizers) * len(MODELS) * len(config.lrs) * len(config.seeds)
    bar = report.progress(total, NAME, progress)
    for opt_name in config.optimizers:
        for lr in config.lrs:
            for model_name in MODELS:
                for seed in config.seeds:
                    init_rng, order_rng = train.seed_rngs(seed, "init", "order")
                    model = train.mlp(data.num_features, data.num_classes,
                                      bn=model_name == "BN", rng=init_rng)
                    result = train.fit(model, train.optimizer(opt_name, model, lr), data,
                                       epochs=config.epochs, batch_size=config.batch_size,
                                       rng=order_rng, flatten=True, eval_epochs=False)
                    final = train.Run().final if result.diverged else result.final
                    rows.append({"dataset": data.name, "optimizer": opt_name,
                                 "model": model_name, "lr": lr, "seed": seed,
                                 "epochs_run": len(result.history),
                                 "train_loss": final["train_loss"],
                                 "val_accuracy": final["val_accuracy"],
                                 "diverged": result.diverged})
                    bar.update()
    bar.close()
    return rows


def _cells(rows, opt_name, lr, model_name):
    mine = [r for r in rows if (r["optimizer"], r["lr"], r["model"]) == (opt_name, lr, model_name)]
    acc = report.mean_std(r["val_accuracy"] for r in mine)
    diverged = sum(bool(r["diverged"]) for r in mine)
    return acc, diverged, len(mine)


def summarize(rows: list[dict], config: Config) -> tuple[list[dict], list[str]]:
    table, lines = [], []
    for opt_name in config.optimizers:
        best = {}
        for lr in config.lrs:
            row = {"optimizer": opt_name, "lr": f"{lr:g}"}
            for model_name in MODELS:
                (m, s, _), div, n = _cells(rows, opt_name, lr, model_name)
                row[f"{model_name} acc %"] = report.pm(m, s, ".1f", 100)
                row[f"{model_name} diverged"] = f"{div}/{n}"
                if div == 0 and m >= config.ok_accuracy:
                    best[model_name] = lr
            table.append(row)
        lines.append(_verdict(opt_name, best, config))
    return table, lines


def _verdict(opt_name: str, best: dict, config: Config) -> str:
    ok = f"{config.ok_accuracy:.0%}"
    bn, no = best.get("BN"), best.get("no BN")
    head = f"Claim 'BN allows 10-100x higher learning rates' ({opt_name}):"
    if bn is None:
        return f"{head} NOT REPRODUCED -- with BN no rate reached {ok} without diverging."
    if no is None:
        return (f"{head} REPRODUCED in direction -- BN trains up to lr {bn:g}; without BN no "
                f"rate of the grid reached {ok} without diverging.")
    ratio = bn / no
    word = ("REPRODUCED" if ratio >= 10 * (1 - 1e-9) else
            "NOT REPRODUCED (higher, but less than 10x)" if ratio > 1 else
            "NOT REPRODUCED (not higher)")
    return (f"{head} {word} -- largest rate reaching {ok} with no seed diverging: "
            f"{bn:g} with BN vs {no:g} without ({ratio:.3g}x).")


def plot(rows: list[dict], config: Config, path: str, caption: str) -> None:
    plt = report.pyplot()
    fig, axes = plt.subplots(1, len(config.optimizers), figsize=(5 * len(config.optimizers), 4.2),
                             sharey=True, squeeze=False)
    for ax, opt_name in zip(axes[0], config.optimizers, strict=True):
        for k, (model_name, color) in enumerate(zip(MODELS, ("C0", "C3"), strict=True)):
            stats = [_cells(rows, opt_name, lr, model_name) for lr in config.lrs]
            lrs = np.array(config.lrs) * (1.0 + 0.04 * (k - 0.5))   # dodge the error bars
            mean = np.array([100 * s[0][0] for s in stats])
            std = np.array([100 * s[0][1] for s in stats])
            ax.errorbar(lrs, mean, yerr=std, color=color, marker="o", ms=4, capsize=3,
                        label=model_name)
            div = [(x, d, n) for x, (_, d, n) in zip(lrs, stats, strict=True) if d]
            if div:
                ax.scatter([x for x, _, _ in div], [2.0] * len(div), marker="x", color=color,
                           s=50, label=f"{model_name}: diverged (k/n seeds)")
                for x, d, n in div:
                    ax.annotate(f"{d}/{n}", (x, 2.0), textcoords="offset points",
                                xytext=(0, 6 + 9 * k), ha="center", fontsize=7, color=color)
        ax.axhline(100 * config.ok_accuracy, color="0.5", ls=":",
                   label=f"'trains': {config.ok_accuracy:.0%}")
        ax.set_xscale("log")
        ax.set_ylim(0, 102)
        ax.set(xlabel="learning rate", title=f"{opt_name}" +
               (" (momentum 0.9)" if opt_name == "SGD" else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    axes[0][0].set_ylabel(f"validation accuracy after {config.epochs} epochs (%)")
    fig.suptitle(f"Does batch norm allow higher learning rates? MLP on {config.dataset}, "
                 f"batch {config.batch_size}, {len(config.seeds)} seeds", fontsize=10)
    report.save_figure(fig, path, caption)
