"""Experiment ``init``: does batch norm make training less sensitive to initialization?

The tutorial claims that batch norm "reduces dependence on careful weight
initialization" ("without batch norm: must use Xavier/He initialization
carefully").  The tutorial's MLP with and without batch norm (as in
``convergence``) is initialized with every Dense layer's He-normal standard
deviation, ``sqrt(2 / fan_in)``, multiplied by a scale from 0.01 to 10 (a
log grid), and trained with SGD (momentum 0.9, lr 0.01: a rate at which both
models train at scale 1; see ``learning-rate``) at batch 32.  Per run: the
validation accuracy after the first epoch (how fast training gets going),
the final validation accuracy, the final training loss and whether the run
diverged.

Summary: per scale, each model's accuracy after one epoch and at the end
(mean ± std over the seeds that did not diverge) and its diverged count.  A
model "trains" at a scale when no seed diverged and the mean final accuracy
is at least ``ok_accuracy`` (90%; 60% on MNIST-1D); the verdict compares the number of scales
at which each model trains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import report, train
from .data import Dataset

NAME = "init"
MODELS = ("BN", "no BN")
SPREAD = "error bars: ±1 std over the seeds that did not diverge"
SCALES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


@dataclass(frozen=True)
class Config:
    mode: str = "full"
    dataset: str = "digits"
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    scales: tuple[float, ...] = SCALES
    optimizer: str = "SGD"
    lr: float = 0.01
    epochs: int = 20
    batch_size: int = 32
    ok_accuracy: float = 0.9
    max_train: int | None = None
    max_val: int | None = None


def make_config(mode: str = "full", seed: int = 0, dataset: str = "digits") -> Config:
    """Full: 7 scales x 2 models x 5 seeds, 20 epochs (MNIST: 3 seeds, 5 epochs on
    20,000 images); quick: 4 scales, 2 seeds, 6 epochs (MNIST: 2,000 images); tiny:
    2 scales, 2 seeds, 1 epoch on 200 images.  MNIST-1D: 5 seeds x 30 epochs (quick:
    2 x 6), and a model "trains" from 60% validation accuracy."""
    if dataset == "mnist1d":
        seeds = tuple(range(seed, seed + (5 if mode == "full" else 2)))
        if mode == "full":
            return Config(mode, dataset, seeds, SCALES, epochs=30, ok_accuracy=0.6)
        if mode == "quick":
            return Config(mode, dataset, seeds, (0.01, 0.1, 1.0, 10.0), epochs=6,
                          ok_accuracy=0.6)
        return Config(mode, dataset, seeds, (0.1, 1.0), epochs=1, ok_accuracy=0.6,
                      max_train=200, max_val=100)
    mnist = dataset != "digits"
    n_seeds = (3 if mnist else 5) if mode == "full" else 2
    seeds = tuple(range(seed, seed + n_seeds))
    if mode == "full":
        return Config(mode, dataset, seeds, SCALES, epochs=5 if mnist else 20,
                      max_train=20000 if mnist else None)
    if mode == "quick":
        return Config(mode, dataset, seeds, (0.01, 0.1, 1.0, 10.0), epochs=6,
                      max_train=2000 if mnist else None, max_val=2000 if mnist else None)
    return Config(mode, dataset, seeds, (0.1, 1.0), epochs=1, max_train=200, max_val=100)


def run(config: Config, data: Dataset, *, progress: bool = True) -> list[dict]:
    """One row per (model, init scale, seed)."""
    data = data.subset(config.max_train, config.max_val)
    rows = []
    bar = report.progress(len(MODELS) * len(config.scales) * len(config.seeds), NAME, progress)
    for scale in config.scales:
        for model_name in MODELS:
            for seed in config.seeds:
                init_rng, order_rng = train.seed_rngs(seed, "init", "order")
                model = train.mlp(data.num_features, data.num_classes, bn=model_name == "BN",
                                  init_scale=scale, rng=init_rng)
                opt = train.optimizer(config.optimizer, model, config.lr)
                result = train.fit(model, opt, data, epochs=config.epochs,
                                   batch_size=config.batch_size, rng=order_rng, flatten=True)
                first = result.history[0] if result.history else train.Run().final
                final = train.Run().final if result.diverged else result.final
                rows.append({"dataset": data.name, "model": model_name, "init_scale": scale,
                             "seed": seed, "epochs_run": len(result.history),
                             "epoch1_accuracy": first["val_accuracy"],
                             "train_loss": final["train_loss"],
                             "val_accuracy": final["val_accuracy"],
                             "diverged": result.diverged})
                bar.update()
    bar.close()
    return rows


def _cells(rows, scale, model_name, value):
    mine = [r for r in rows if r["init_scale"] == scale and r["model"] == model_name]
    return (report.mean_std(r[value] for r in mine), sum(bool(r["diverged"]) for r in mine),
            len(mine))


def summarize(rows: list[dict], config: Config) -> tuple[list[dict], list[str]]:
    table, trains = [], {m: [] for m in MODELS}
    for scale in config.scales:
        row = {"init scale (x He)": f"{scale:g}"}
        for model_name in MODELS:
            (e1, e1_std, _), _, _ = _cells(rows, scale, model_name, "epoch1_accuracy")
            (m, s, _), div, n = _cells(rows, scale, model_name, "val_accuracy")
            row[f"{model_name} epoch-1 acc %"] = report.pm(e1, e1_std, ".1f", 100)
            row[f"{model_name} final acc %"] = report.pm(m, s, ".1f", 100)
            row[f"{model_name} diverged"] = f"{div}/{n}"
            if div == 0 and m >= config.ok_accuracy:
                trains[model_name].append(scale)
        table.append(row)
    return table, [_verdict(trains, config)]


def _verdict(trains: dict, config: Config) -> str:
    bn, no = trains["BN"], trains["no BN"]
    k = len(config.scales)
    word = ("REPRODUCED" if len(bn) > len(no) else
            "NOT REPRODUCED (equally robust on this grid)" if len(bn) == len(no) else
            "NOT REPRODUCED (BN is more sensitive)")

    def scales(s):
        return ", ".join(f"{v:g}" for v in s) or "none"

    return (f"Claim 'BN reduces dependence on careful initialization': {word} -- final "
            f"accuracy >= {config.ok_accuracy:.0%} with no seed diverging at {len(bn)}/{k} "
            f"scales with BN ({scales(bn)}) vs {len(no)}/{k} without ({scales(no)}).")


def plot(rows: list[dict], config: Config, path: str, caption: str) -> None:
    plt = report.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    panels = (("epoch1_accuracy", "after the first epoch"),
              ("val_accuracy", f"after {config.epochs} epochs"))
    for ax, (value, when) in zip(axes, panels, strict=True):
        for k, (model_name, color) in enumerate(zip(MODELS, ("C0", "C3"), strict=True)):
            stats = [_cells(rows, s, model_name, value) for s in config.scales]
            xs = np.array(config.scales) * (1.0 + 0.05 * (k - 0.5))
            ax.errorbar(xs, [100 * s[0][0] for s in stats], yerr=[100 * s[0][1] for s in stats],
                        color=color, marker="o", ms=4, capsize=3, label=model_name)
            div = [(x, d, n) for x, (_, d, n) in zip(xs, stats, strict=True) if d]
            if div:
                ax.scatter([x for x, _, _ in div], [2.0] * len(div), marker="x", color=color,
                           s=50, label=f"{model_name}: diverged (k/n seeds)")
                for x, d, n in div:
                    ax.annotate(f"{d}/{n}", (x, 2.0), textcoords="offset points",
                                xytext=(0, 6 + 9 * k), ha="center", fontsize=7, color=color)
        ax.axvline(1.0, color="0.7", lw=0.8)
        ax.set_xscale("log")
        ax.set_ylim(0, 102)
        ax.set(xlabel="weight-init scale (x He-normal std)",
               title=f"Validation accuracy {when}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    axes[0].set_ylabel("validation accuracy (%)")
    fig.suptitle(f"Does batch norm reduce sensitivity to initialization? MLP on "
                 f"{config.dataset}, SGD momentum 0.9, lr {config.lr:g}, batch "
                 f"{config.batch_size}, {len(config.seeds)} seeds", fontsize=10)
    report.save_figure(fig, path, caption)
