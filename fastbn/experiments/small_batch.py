"""Experiment ``small-batch``: which normalization survives small batches?

The tutorial advises moderate to large batches (32+) for batch norm, whose
statistics get noisy in small batches, and group or layer norm for small
batches.  The reference result is the group-norm paper's (Wu & He 2018,
figure 1 / table 2): ResNet-50 on ImageNet, validation error by images per
GPU,

====================  ======  ======  ======  ======  ======
images per GPU          32      16       8       4       2
====================  ======  ======  ======  ======  ======
BN (error %)           23.6    23.7    24.8    27.3    34.7
GN (error %)           24.1    24.2    24.0    24.2    24.1
====================  ======  ======  ======  ======  ======

Here, at a much smaller scale: a small CNN (:func:`fastbn.experiments.train.cnn`:
two 3x3 conv blocks of 16 and 32 channels, global average pooling, a linear
classifier) on 8x8 digits (MNIST: 28x28, stride-2 first convolution),
normalized by

* ``BN`` -- ``BatchNorm(C)``;
* ``GN`` -- ``GroupNorm(C // 4, C)`` (4 channels per group);
* ``LN`` -- ``GroupNorm(1, C)``: layer norm over (C, H, W), per-channel affine;
* ``IN`` -- ``InstanceNorm(C)``;
* ``BRN`` -- batch renormalization, ``BatchNorm(C, renorm=True)``, with the
  paper's warm-up: ``rmax`` from 1 to 3 and ``dmax`` from 0 to 5, linearly,
  over the first part of training
  (:class:`fastbn.experiments.train.RenormWarmup`);
* ``GBN`` -- ghost batch norm, ``BatchNorm(C, virtual_batch_size=4)`` (at
  batch 2 and 4 it is BN);
* ``none`` -- convolutions with bias, no normalization;

at batch sizes 2, 4, 8, 16 and 32, each for the same number of epochs (so
smaller batches take more steps), with SGD (momentum 0.9) and the learning
rate scaled linearly with the batch size, ``lr = base_lr * B / 32``, as the
GN paper does.  The validation error is measured in eval mode (BN, BRN and
GBN use their running statistics).  Summary: the error in % for each norm
and batch size, mean ± std over seeds, and the verdicts on the claims (a
difference counts when it exceeds both twice its standard error and half a
point).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from . import report, train
from .data import Dataset

NAME = "small-batch"
SPREAD = "error bars: ±1 std over the seeds that did not diverge"
BATCH_SIZES = (2, 4, 8, 16, 32)

#: The GN paper's ResNet-50 ImageNet validation error (%) by images per GPU.
GN_PAPER_ERROR = {"BN": {32: 23.6, 16: 23.7, 8: 24.8, 4: 27.3, 2: 34.7},
                  "GN": {32: 24.1, 16: 24.2, 8: 24.0, 4: 24.2, 2: 24.1}}


@dataclass(frozen=True)
class Config:
    mode: str = "full"
    dataset: str = "digits"
    seeds: tuple[int, ...] = (0, 1, 2)
    norms: tuple[str, ...] = train.NORMS
    batch_sizes: tuple[int, ...] = BATCH_SIZES
    epochs: int = 20
    base_lr: float = 0.1
    base_batch: int = 32
    warmup: train.RenormWarmup = field(default_factory=train.RenormWarmup)
    max_train: int | None = None
    max_val: int | None = None

    def lr(self, batch_size: int) -> float:
        """The linear scaling rule: ``base_lr * batch_size / base_batch``."""
        return self.base_lr * batch_size / self.base_batch


def make_config(mode: str = "full", seed: int = 0, dataset: str = "digits") -> Config:
    """Full: 7 norms x 5 batch sizes x 5 seeds, 20 epochs (MNIST: 3 seeds, 8 epochs on
    5,000 images); quick: batch sizes 2, 8, 32, 2 seeds, 6 epochs on 600 images; tiny: BN,
    GN and BRN at batch 4 and 16, 2 seeds, 1 epoch on 64 images."""
    mnist = dataset != "digits"
    if mode == "full":
        return Config(mode, dataset, tuple(range(seed, seed + (3 if mnist else 5))),
                      epochs=8 if mnist else 20,
                      max_train=5000 if mnist else None, max_val=2000 if mnist else None)
    if mode == "quick":
        return Config(mode, dataset, tuple(range(seed, seed + 2)), batch_sizes=(2, 8, 32),
                      epochs=6, max_train=600, max_val=1000 if mnist else None)
    return Config(mode, dataset, tuple(range(seed, seed + 2)), norms=("BN", "GN", "BRN"),
                  batch_sizes=(4, 16), epochs=1, max_train=64, max_val=100)


def run(config: Config, data: Dataset, *, progress: bool = True) -> list[dict]:
    """One row per (norm, batch size, seed)."""
    data = data.subset(config.max_train, config.max_val)
    rows = []
    for norm in config.norms:   # load Numba's kernels before the timed runs
        train.warm_up(train.cnn(data.image_shape, data.num_classes, norm=norm), data,
                      batch_size=max(config.batch_sizes))
    total = len(config.norms) * len(config.batch_sizes) * len(config.seeds)
    bar = report.progress(total, NAME, progress)
    for norm in config.norms:
        for batch_size in config.batch_sizes:
            for seed in config.seeds:
                init_rng, order_rng = train.seed_rngs(seed, "init", "order")
                model = train.cnn(data.image_shape, data.num_classes, norm=norm, rng=init_rng)
                lr = config.lr(batch_size)
                opt = train.optimizer("SGD", model, lr)
                start = time.perf_counter()
                result = train.fit(model, opt, data, epochs=config.epochs,
                                   batch_size=batch_size, rng=order_rng,
                                   on_step=config.warmup if norm == "BRN" else None,
                                   eval_epochs=False)
                final = train.Run().final if result.diverged else result.final
                rows.append({"dataset": data.name, "norm": norm, "batch_size": batch_size,
                             "seed": seed, "lr": lr, "epochs_run": len(result.history),
                             "steps": result.steps, "train_loss": final["train_loss"],
                             "val_accuracy": final["val_accuracy"],
                             "val_error_pct": 100.0 * (1.0 - final["val_accuracy"]),
                             "diverged": result.diverged,
                             "seconds": time.perf_counter() - start})
                bar.update()
    bar.close()
    return rows


def _cell(rows, norm, batch_size):
    mine = [r for r in rows if r["norm"] == norm and r["batch_size"] == batch_size]
    return (report.mean_std(r["val_error_pct"] for r in mine),
            sum(bool(r["diverged"]) for r in mine), len(mine))


def summarize(rows: list[dict], config: Config) -> tuple[list[dict], list[str]]:
    table = []
    for norm in config.norms:
        row = {"norm": norm}
        for b in sorted(config.batch_sizes, reverse=True):
            (m, s, _), div, n = _cell(rows, norm, b)
            row[f"B={b} err %"] = report.pm(m, s) + (f" ({div}/{n} div)" if div else "")
        table.append(row)
    return table, _verdicts(rows, config)


def _verdicts(rows, config: Config) -> list[str]:
    small, large = min(config.batch_sizes), max(config.batch_sizes)
    if small == large:
        return []

    def change(norm):
        (m_s, s_s, n_s), _, _ = _cell(rows, norm, small)
        (m_l, s_l, n_l), _, _ = _cell(rows, norm, large)
        se = math.sqrt(s_s ** 2 / max(n_s, 1) + s_l ** 2 / max(n_l, 1))
        return m_s - m_l, se, m_s, m_l

    lines = [f"GN paper (ResNet-50, ImageNet): going from {large} to {small} images per "
             f"GPU, BN's error rises by "
             f"{_paper_change('BN', small, large)} points and GN's by "
             f"{_paper_change('GN', small, large)}."]
    if "BN" not in config.norms:
        return lines
    d_bn, se_bn, bn_small, bn_large = change("BN")
    if not math.isfinite(d_bn):
        lines.append("Claim 'BN needs moderate to large batches': UNDECIDED (no finite error "
                     "at both ends).")
        return lines
    word = ("REPRODUCED" if d_bn > max(2 * se_bn, 0.5) else
            "NOT REPRODUCED (BN's error is lower at the small batch)"
            if d_bn < -max(2 * se_bn, 0.5) else
            "NOT REPRODUCED (no clear change beyond the spread over seeds)")
    lines.append(f"Claim 'BN needs moderate to large batches': {word} -- BN's error "
                 f"{bn_large:.1f}% at batch {large} vs {bn_small:.1f}% at batch {small} "
                 f"({d_bn:+.1f} points, standard error {se_bn:.1f}).")
    (_, s_bn, n_bn), _, _ = _cell(rows, "BN", small)
    for alt in ("GN", "LN"):
        if alt not in config.norms:
            continue
        d, _, alt_small, _ = change(alt)
        (_, s_alt, n_alt), _, _ = _cell(rows, alt, small)
        if not math.isfinite(alt_small):
            continue
        gap = bn_small - alt_small
        se = math.sqrt(s_bn ** 2 / max(n_bn, 1) + s_alt ** 2 / max(n_alt, 1))
        word = ("REPRODUCED" if gap > max(2 * se, 0.5) else
                "NOT REPRODUCED (BN is better)" if gap < -max(2 * se, 0.5) else
                "NOT REPRODUCED (within the spread over seeds)")
        lines.append(f"Claim '{alt} beats BN at small batches': {word} -- at batch {small}, "
                     f"{alt} {alt_small:.1f}% vs BN {bn_small:.1f}% error (standard error "
                     f"{se:.1f}); from batch {large} to {small}, {alt}'s error changes by "
                     f"{d:+.1f} points and BN's by {d_bn:+.1f}.")
    return lines


def _paper_change(norm: str, small: int, large: int) -> str:
    ref = GN_PAPER_ERROR[norm]
    if small in ref and large in ref:
        return f"{ref[small] - ref[large]:+.1f}"
    return "n/a"


def plot(rows: list[dict], config: Config, path: str, caption: str) -> None:
    plt = report.pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 5))
    sizes = sorted(config.batch_sizes)
    markers = "osD^v<>"
    for k, norm in enumerate(config.norms):
        stats = [_cell(rows, norm, b) for b in sizes]
        xs = np.array(sizes) * (1.0 + 0.025 * (k - (len(config.norms) - 1) / 2))
        ax.errorbar(xs, [s[0][0] for s in stats], yerr=[s[0][1] for s in stats],
                    marker=markers[k % len(markers)], ms=4, capsize=3, label=norm,
                    ls="--" if norm == "none" else "-")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.invert_xaxis()
    ax.set(xlabel="batch size (images per step)", ylabel="validation error (%)",
           title=f"Which normalization survives small batches? Small CNN on {config.dataset},\n"
                 f"SGD momentum 0.9, lr = {config.base_lr:g} x B / {config.base_batch}, "
                 f"{config.epochs} epochs, {len(config.seeds)} seeds")
    ax.grid(alpha=0.3)
    ax.legend(title="normalization", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    report.save_figure(fig, path, caption)
