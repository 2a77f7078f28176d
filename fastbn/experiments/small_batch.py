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

Here, at a much smaller scale, two models (the ``model`` column) on 8x8
digits:

* ``cnn`` -- a small CNN (:func:`fastbn.experiments.train.cnn`: two 3x3 conv
  blocks of 16 and 32 channels, global average pooling, a linear
  classifier; MNIST: 28x28, stride-2 first convolution).  A BN channel's
  batch statistics pool ``B x H x W`` values: at batch 2, 2 x 8x8 = 128 in
  block 1 and 2 x 4x4 = 32 in block 2 (MNIST: 2 x 14x14 and 2 x 7x7).
* ``mlp`` -- the tutorial's MLP of the other experiments
  (:func:`fastbn.experiments.train.mlp`: hidden 256-128-64, each
  ``Dense(use_bias=False) -> Norm -> ReLU``) on the flattened images.  A BN
  channel (feature) pools only ``B`` values: 2 at batch 2, where "small
  batches make the statistics noisy" should bite hardest.

Each is normalized by

* ``BN`` -- ``BatchNorm(C)`` (in the MLP fused with its ReLU,
  ``BatchNorm(C, activation="relu")``, as in the other experiments);
* ``GN`` -- ``GroupNorm(C // 4, C)`` (4 channels per group; in the MLP, 4
  features per group);
* ``LN`` -- CNN: ``GroupNorm(1, C)``, layer norm over (C, H, W) with a
  per-channel affine, as in the GN paper; MLP: ``LayerNorm(C)``, over the
  features;
* ``IN`` -- ``InstanceNorm(C)``, CNN only: in a dense layer each group would
  hold one value (the layer would output its bias alone);
* ``BRN`` -- batch renormalization, ``BatchNorm(C, renorm=True)``, with the
  paper's warm-up: ``rmax`` from 1 to 3 and ``dmax`` from 0 to 5, linearly,
  over the first part of training
  (:class:`fastbn.experiments.train.RenormWarmup`);
* ``GBN`` -- ghost batch norm, ``BatchNorm(C, virtual_batch_size=4)`` (at
  batch 2 and 4 it is BN);
* ``none`` -- convolutions / dense layers with bias, no normalization;

at batch sizes 2, 4, 8, 16 and 32, each for the same number of epochs (so
smaller batches take more steps), with SGD (momentum 0.9) and the learning
rate scaled linearly with the batch size, ``lr = base_lr * B / 32``, as the
GN paper does (base 0.1 for the CNN; 0.05 for the MLP, inside the 0.01-0.1
range where SGD trains it with and without BN in ``learning-rate``, and at
which every MLP norm trains at batch 32).  Both models see the same seeds
(initialization and batch order streams).  The validation error is measured
in eval mode (BN, BRN and GBN use their running statistics).  Summary, per
model: the error in % for each norm and batch size, mean ± std over seeds,
and the verdicts on the claims (a difference counts when it exceeds both
twice its standard error and half a point).  The figure has one panel per
model.
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

#: The models, in the order of the table and the figure's panels.
MODELS = ("cnn", "mlp")
MODEL_LABELS = {"cnn": "CNN", "mlp": "MLP"}

#: The GN paper's ResNet-50 ImageNet validation error (%) by images per GPU.
GN_PAPER_ERROR = {"BN": {32: 23.6, 16: 23.7, 8: 24.8, 4: 27.3, 2: 34.7},
                  "GN": {32: 24.1, 16: 24.2, 8: 24.0, 4: 24.2, 2: 24.1}}


@dataclass(frozen=True)
class Config:
    mode: str = "full"
    dataset: str = "digits"
    seeds: tuple[int, ...] = (0, 1, 2)
    models: tuple[str, ...] = MODELS
    norms: tuple[str, ...] = train.NORMS            # the CNN's
    mlp_norms: tuple[str, ...] = train.MLP_NORMS
    batch_sizes: tuple[int, ...] = BATCH_SIZES
    epochs: int = 20
    base_lr: float = 0.1                             # the CNN's
    mlp_base_lr: float = 0.05
    base_batch: int = 32
    warmup: train.RenormWarmup = field(default_factory=train.RenormWarmup)
    max_train: int | None = None
    max_val: int | None = None

    def model_norms(self, model: str) -> tuple[str, ...]:
        """The normalizations run with ``model``."""
        return self.mlp_norms if model == "mlp" else self.norms

    def model_base_lr(self, model: str) -> float:
        return self.mlp_base_lr if model == "mlp" else self.base_lr

    def lr(self, batch_size: int, model: str = "cnn") -> float:
        """The linear scaling rule: ``base_lr * batch_size / base_batch`` (``model``'s base)."""
        return self.model_base_lr(model) * batch_size / self.base_batch


def make_config(mode: str = "full", seed: int = 0, dataset: str = "digits") -> Config:
    """Full: CNN 7 norms and MLP 6 norms x 5 batch sizes x 5 seeds, 20 epochs (MNIST: 3
    seeds, 8 epochs on 5,000 images); quick: batch sizes 2, 8, 32, 2 seeds, 6 epochs on
    600 images; tiny: CNN with BN, GN and BRN, MLP with BN, GN and LN, at batch 4 and 16,
    2 seeds, 1 epoch on 64 images."""
    mnist = dataset != "digits"
    if mode == "full":
        return Config(mode, dataset, tuple(range(seed, seed + (3 if mnist else 5))),
                      epochs=8 if mnist else 20,
                      max_train=5000 if mnist else None, max_val=2000 if mnist else None)
    if mode == "quick":
        return Config(mode, dataset, tuple(range(seed, seed + 2)), batch_sizes=(2, 8, 32),
                      epochs=6, max_train=600, max_val=1000 if mnist else None)
    return Config(mode, dataset, tuple(range(seed, seed + 2)), norms=("BN", "GN", "BRN"),
                  mlp_norms=("BN", "GN", "LN"), batch_sizes=(4, 16), epochs=1,
                  max_train=64, max_val=100)


def check_data(data: Dataset) -> None:
    """Raise ValueError unless ``data`` holds images: the CNN is 2-D (Conv2d).

    MNIST-1D's 1-D signals ``(N, 1, 40)`` are refused here, before any
    training, rather than deep inside the first convolution.
    """
    if not data.is_image:
        raise ValueError(f"small-batch trains a 2-D CNN (Conv2d) and needs images "
                         f"(N, C, H, W); {data.name} holds 1-D signals of shape "
                         f"{data.sample_shape}. The MLP experiments (convergence, "
                         f"learning-rate, init) take them")


def build(model: str, norm: str, data: Dataset, rng: np.random.Generator | None = None):
    """``model`` ("cnn" or "mlp") with normalization ``norm``, for ``data``."""
    if model == "cnn":
        return train.cnn(data.image_shape, data.num_classes, norm=norm, rng=rng)
    if model == "mlp":
        return train.mlp(data.num_features, data.num_classes, norm=norm, rng=rng)
    raise ValueError(f"unknown model {model!r}; choose from {MODELS}")


def run(config: Config, data: Dataset, *, progress: bool = True) -> list[dict]:
    """One row per (model, norm, batch size, seed).

    ``bn_pool_min`` and ``bn_pool_max``: how many values a BN channel's batch
    statistics pool per step, in the model's BN layer with the fewest and
    with the most (CNN: ``B x H x W`` of block 2 and of block 1; MLP: ``B``),
    whatever the row's norm.

    Raises
    ------
    ValueError
        ``config.models`` has the CNN and ``data`` holds no images (see
        :func:`check_data`).
    """
    if "cnn" in config.models:
        check_data(data)
    data = data.subset(config.max_train, config.max_val)
    rows = []
    for model_name in config.models:   # load Numba's kernels before the timed runs
        for norm in config.model_norms(model_name):
            train.warm_up(build(model_name, norm, data), data, flatten=model_name == "mlp",
                          batch_size=max(config.batch_sizes))
    total = (sum(len(config.model_norms(m)) for m in config.models)
             * len(config.batch_sizes) * len(config.seeds))
    bar = report.progress(total, NAME, progress)
    for model_name in config.models:
        positions = train.norm_positions(
            build(model_name, "BN", data),
            (data.num_features,) if model_name == "mlp" else data.image_shape)
        for norm in config.model_norms(model_name):
            for batch_size in config.batch_sizes:
                for seed in config.seeds:
                    init_rng, order_rng = train.seed_rngs(seed, "init", "order")
                    model = build(model_name, norm, data, rng=init_rng)
                    lr = config.lr(batch_size, model_name)
                    opt = train.optimizer("SGD", model, lr)
                    start = time.perf_counter()
                    result = train.fit(model, opt, data, epochs=config.epochs,
                                       batch_size=batch_size, rng=order_rng,
                                       flatten=model_name == "mlp",
                                       on_step=config.warmup if norm == "BRN" else None,
                                       eval_epochs=False)
                    final = train.Run().final if result.diverged else result.final
                    rows.append({"dataset": data.name, "model": model_name, "norm": norm,
                                 "batch_size": batch_size, "seed": seed, "lr": lr,
                                 "bn_pool_min": batch_size * min(positions),
                                 "bn_pool_max": batch_size * max(positions),
                                 "epochs_run": len(result.history), "steps": result.steps,
                                 "train_loss": final["train_loss"],
                                 "val_accuracy": final["val_accuracy"],
                                 "val_error_pct": 100.0 * (1.0 - final["val_accuracy"]),
                                 "diverged": result.diverged,
                                 "seconds": time.perf_counter() - start})
                    bar.update()
    bar.close()
    return rows


def _cell(rows, model, norm, batch_size):
    mine = [r for r in rows if r["model"] == model and r["norm"] == norm
            and r["batch_size"] == batch_size]
    return (report.mean_std(r["val_error_pct"] for r in mine),
            sum(bool(r["diverged"]) for r in mine), len(mine))


def summarize(rows: list[dict], config: Config) -> tuple[list[dict], list[str]]:
    """One block of rows per model; the verdicts on the claims, per model."""
    table = []
    for model in config.models:
        for norm in config.model_norms(model):
            row = {"model": MODEL_LABELS.get(model, model), "norm": norm}
            for b in sorted(config.batch_sizes, reverse=True):
                (m, s, _), div, n = _cell(rows, model, norm, b)
                row[f"B={b} err %"] = report.pm(m, s) + (f" ({div}/{n} div)" if div else "")
            table.append(row)
    return table, _verdicts(rows, config)


def _verdicts(rows, config: Config) -> list[str]:
    small, large = min(config.batch_sizes), max(config.batch_sizes)
    if small == large:
        return []
    lines = [f"GN paper (ResNet-50, ImageNet): going from {large} to {small} images per "
             f"GPU, BN's error rises by "
             f"{_paper_change('BN', small, large)} points and GN's by "
             f"{_paper_change('GN', small, large)}."]
    for model in config.models:
        lines += _model_verdicts(rows, config, model, small, large)
    return lines


def _model_verdicts(rows, config: Config, model: str, small: int, large: int) -> list[str]:
    norms = config.model_norms(model)
    if "BN" not in norms:
        return []
    label = MODEL_LABELS.get(model, model)
    pool = _pool_text(rows, model, small)
    lines = [f"{label} -- {pool}:" if pool else f"{label}:"]
    prefix = "  "

    def change(norm):
        (m_s, s_s, n_s), _, _ = _cell(rows, model, norm, small)
        (m_l, s_l, n_l), _, _ = _cell(rows, model, norm, large)
        se = math.sqrt(s_s ** 2 / max(n_s, 1) + s_l ** 2 / max(n_l, 1))
        return m_s - m_l, se, m_s, m_l

    d_bn, se_bn, bn_small, bn_large = change("BN")
    if not math.isfinite(d_bn):
        return lines + [prefix + "Claim 'BN needs moderate to large batches': UNDECIDED (no "
                                 "finite error at both ends)."]
    word = ("REPRODUCED" if d_bn > max(2 * se_bn, 0.5) else
            "NOT REPRODUCED (BN's error is lower at the small batch)"
            if d_bn < -max(2 * se_bn, 0.5) else
            "NOT REPRODUCED (no clear change beyond the spread over seeds)")
    lines.append(prefix + f"Claim 'BN needs moderate to large batches': {word} -- BN's "
                          f"error {bn_large:.1f}% at batch {large} vs {bn_small:.1f}% at batch "
                          f"{small} ({d_bn:+.1f} points, standard error {se_bn:.1f}).")
    (_, s_bn, n_bn), _, _ = _cell(rows, model, "BN", small)
    for alt in ("GN", "LN"):
        if alt not in norms:
            continue
        d, _, alt_small, _ = change(alt)
        (_, s_alt, n_alt), _, _ = _cell(rows, model, alt, small)
        if not math.isfinite(alt_small):
            continue
        gap = bn_small - alt_small
        se = math.sqrt(s_bn ** 2 / max(n_bn, 1) + s_alt ** 2 / max(n_alt, 1))
        word = ("REPRODUCED" if gap > max(2 * se, 0.5) else
                "NOT REPRODUCED (BN is better)" if gap < -max(2 * se, 0.5) else
                "NOT REPRODUCED (within the spread over seeds)")
        lines.append(prefix + f"Claim '{alt} beats BN at small batches': {word} -- at batch "
                              f"{small}, {alt} {alt_small:.1f}% vs BN {bn_small:.1f}% error "
                              f"(standard error {se:.1f}); from batch {large} to {small}, "
                              f"{alt}'s error changes by {d:+.1f} points and BN's by "
                              f"{d_bn:+.1f}.")
    return lines


def _paper_change(norm: str, small: int, large: int) -> str:
    ref = GN_PAPER_ERROR[norm]
    if small in ref and large in ref:
        return f"{ref[small] - ref[large]:+.1f}"
    return "n/a"


def _pool(rows, model) -> tuple[int, int] | None:
    """Values per sample that a BN channel of ``model`` pools: (fewest, most) over its
    BN layers, from the rows (None without rows)."""
    for r in rows:
        if r["model"] == model:
            b = r["batch_size"]
            return round(r["bn_pool_min"] / b), round(r["bn_pool_max"] / b)
    return None


def _pool_text(rows, model, batch_size: int) -> str:
    """E.g. "at batch 2, a BN channel pools 128 (block 1) / 32 (block 2) values"."""
    pool = _pool(rows, model)
    if pool is None:
        return ""
    lo, hi = pool
    if lo == hi:
        return f"at batch {batch_size}, a BN channel pools {batch_size * lo} values"
    return (f"at batch {batch_size}, a BN channel pools {batch_size * hi} (block 1) / "
            f"{batch_size * lo} (block 2) values")


def _panel_title(rows, config: Config, model: str) -> str:
    """The model, its learning rate and what a BN channel pools per batch."""
    name = {"cnn": "Small CNN (conv 16, conv 32)",
            "mlp": "MLP 256-128-64 on flattened images"}.get(model, model)
    title = f"{name}, lr = {config.model_base_lr(model):g} x B / {config.base_batch}"
    pool = _pool(rows, model)
    if pool is None:
        return title
    lo, hi = pool
    b = min(config.batch_sizes)
    if lo == hi:
        per = "B values" if lo == 1 else f"{lo}B values"
        at = f"{b * lo}"
    else:
        per = f"{hi}B / {lo}B values (blocks 1/2)"
        at = f"{b * hi}/{b * lo}"
    return f"{title}\na BN channel pools {per} per batch: {at} at B = {b}"


def plot(rows: list[dict], config: Config, path: str, caption: str) -> None:
    plt = report.pyplot()
    n = len(config.models)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n + 1.6, 5.2), squeeze=False)
    sizes = sorted(config.batch_sizes)
    markers = "osD^v<>"
    handles = {}
    for ax, model in zip(axes[0], config.models, strict=True):
        norms = config.model_norms(model)
        for k, norm in enumerate(norms):
            stats = [_cell(rows, model, norm, b) for b in sizes]
            xs = np.array(sizes) * (1.0 + 0.025 * (k - (len(norms) - 1) / 2))
            # one color and marker per norm, the same in every panel
            j = train.NORMS.index(norm) if norm in train.NORMS else k
            handles[norm] = ax.errorbar(
                xs, [s[0][0] for s in stats], yerr=[s[0][1] for s in stats],
                marker=markers[j % len(markers)], color=f"C{j}", ms=4, capsize=3, label=norm,
                ls="--" if norm == "none" else "-")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(b) for b in sizes])
        ax.minorticks_off()
        ax.invert_xaxis()
        ax.set(xlabel="batch size B (samples per step)", ylabel="validation error (%)")
        ax.set_title(_panel_title(rows, config, model), fontsize=10)
        ax.grid(alpha=0.3)
    order = [m for m in train.NORMS if m in handles] + [m for m in handles
                                                        if m not in train.NORMS]
    axes[0, -1].legend([handles[m] for m in order], order, title="normalization", fontsize=8,
                       loc="upper left", bbox_to_anchor=(1.01, 1))
    note = " (IN: CNN only)" if "mlp" in config.models and "IN" in config.norms else ""
    fig.suptitle(f"Which normalization survives small batches? {config.dataset}, SGD "
                 f"momentum 0.9, lr scaled with B, {config.epochs} epochs, "
                 f"{len(config.seeds)} seeds{note}", fontsize=11)
    report.save_figure(fig, path, caption)
