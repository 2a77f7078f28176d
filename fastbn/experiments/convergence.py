"""Experiment ``convergence``: does batch norm make the tutorial's MLP converge faster?

The tutorial claims that "networks with batch norm train 2-10x faster" and
"typically converge faster and reach higher accuracy".  Its MLP,
``64-256-128-64-10`` (784 inputs on MNIST), is trained with Adam (lr 1e-3, the
tutorial's) at batch 32, with batch norm placed as the tutorial advises
(``Dense(use_bias=False) -> BatchNorm -> ReLU``, the BN and ReLU fused) and
without it (``Dense -> ReLU``), on the same seeds, batch orders and
initializations.  After every epoch: the training loss (mean over the epoch's
batches), the validation accuracy (eval mode: BN uses its running statistics)
and the training seconds.

On MNIST-1D (``--data mnist1d``), where the MLP does not saturate the task,
the run also trains the MNIST-1D paper's CNN (:func:`~fastbn.experiments.train.cnn1d`)
with and without batch norm (models ``"CNN BN"`` and ``"CNN no BN"``) under
the same optimizer, batch and epochs, so that the claim is tested on a
convolutional network too.

Summary: per model, the epochs and seconds until the validation accuracy
first reaches the target (95% on digits, 97% on MNIST; on MNIST-1D 60% for
the MLP and 80% for the CNN), and the final accuracy, as mean ± std over
seeds; then the verdict on the two claims
(a difference in accuracy counts when it exceeds twice its standard error).
Seconds depend on the machine and on what else runs on it; epochs do not.
The seconds count training steps only (not the evaluations), after an
untimed warm-up step that loads Numba's compiled kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import report, train
from .data import Dataset

NAME = "convergence"
#: The MLP pair, trained on every dataset.
MODELS = ("BN", "no BN")
#: The CNN pair, trained on MNIST-1D as well.
CNN_MODELS = ("CNN BN", "CNN no BN")
SPREAD = "bands: ±1 std over seeds"


@dataclass(frozen=True)
class Config:
    mode: str = "full"
    dataset: str = "digits"
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    target_accuracy: float = 0.95
    max_train: int | None = None
    max_val: int | None = None
    models: tuple[str, ...] = MODELS
    cnn_target_accuracy: float = 0.8

    def target(self, model: str) -> float:
        """The target accuracy of ``model`` (the CNN pair has its own)."""
        return self.cnn_target_accuracy if model in CNN_MODELS else self.target_accuracy

    @property
    def pairs(self) -> list[tuple[str, str, str]]:
        """``(label, with BN, without BN)`` per architecture trained."""
        out = [("MLP", *MODELS)]
        if set(CNN_MODELS) <= set(self.models):
            out.append(("CNN", *CNN_MODELS))
        return out


def make_config(mode: str = "full", seed: int = 0, dataset: str = "digits") -> Config:
    """Full: 10 seeds x 30 epochs on digits (5 seeds x 15 epochs on MNIST's 60k images;
    MNIST-1D: 10 seeds x 60 epochs, the MLP and the CNN); quick: 2 seeds, 15 epochs
    (MNIST: 3 epochs on 6,000 images; MNIST-1D: 4 epochs); tiny: 2 seeds, 2 epochs, 200
    images."""
    if dataset == "mnist1d":
        both = MODELS + CNN_MODELS
        if mode == "full":
            return Config(mode, dataset, _seeds(seed, 10), 60, target_accuracy=0.6,
                          models=both)
        if mode == "quick":
            return Config(mode, dataset, _seeds(seed, 2), 4, target_accuracy=0.6,
                          models=both)
        return Config(mode, dataset, _seeds(seed, 2), 2, target_accuracy=0.6, max_train=200,
                      max_val=100, models=both)
    mnist = dataset != "digits"
    target = 0.97 if mnist else 0.95
    if mode == "full":
        return Config(mode, dataset, _seeds(seed, 5 if mnist else 10), 15 if mnist else 30,
                      target_accuracy=target)
    if mode == "quick":
        return Config(mode, dataset, _seeds(seed, 2), 3 if mnist else 15, target_accuracy=target,
                      max_train=6000 if mnist else None, max_val=2000 if mnist else None)
    return Config(mode, dataset, _seeds(seed, 2), 2, target_accuracy=target, max_train=200,
                  max_val=100)


def _seeds(first: int, n: int) -> tuple[int, ...]:
    return tuple(range(first, first + n))


def run(config: Config, data: Dataset, *, progress: bool = True) -> list[dict]:
    """One row per (model, seed, epoch); a diverged run ends with a NaN row marked so."""
    data = data.subset(config.max_train, config.max_val)
    rows = []
    for model_name in config.models:  # so that the first run's seconds do not include Numba's
        train.warm_up(build(model_name, data), data, flatten=model_name in MODELS,
                      batch_size=config.batch_size)
    bar = report.progress(len(config.seeds) * len(config.models), NAME, progress)
    for seed in config.seeds:
        for model_name in config.models:
            init_rng, order_rng = train.seed_rngs(seed, "init", "order")
            model = build(model_name, data, init_rng)
            opt = train.optimizer("Adam", model, config.lr)
            result = train.fit(model, opt, data, epochs=config.epochs,
                               batch_size=config.batch_size, rng=order_rng,
                               flatten=model_name in MODELS)
            base = {"dataset": data.name, "model": model_name, "seed": seed}
            for h in result.history:
                rows.append({**base, **h, "diverged": False})
            if result.diverged:
                rows.append({**base, **train.Run().final, "epoch": result.diverged_epoch,
                             "diverged": True})
            bar.update()
    bar.close()
    return rows


def build(model_name: str, data: Dataset, rng=None):
    """The network of ``model_name``: the tutorial's MLP (:data:`MODELS`) or the MNIST-1D
    paper's CNN (:data:`CNN_MODELS`), with or without batch norm."""
    bn = model_name in ("BN", "CNN BN")
    if model_name in CNN_MODELS:
        return train.cnn1d(data.x_train.shape[-1], data.num_classes, bn=bn, rng=rng)
    return train.mlp(data.num_features, data.num_classes, bn=bn, rng=rng)


def per_seed(rows: list[dict], config: Config) -> list[dict]:
    """Per (model, seed): epochs and seconds to the target (NaN if never), final accuracy."""
    out = []
    for model_name in config.models:
        target = config.target(model_name)
        for seed in config.seeds:
            hist = [r for r in rows if r["model"] == model_name and r["seed"] == seed]
            hit = next((r for r in hist if r["val_accuracy"] >= target), None)
            last = hist[-1]
            out.append({"model": model_name, "seed": seed,
                        "epochs_to_target": hit["epoch"] if hit else math.nan,
                        "seconds_to_target": hit["elapsed_s"] if hit else math.nan,
                        "final_accuracy": math.nan if last["diverged"] else last["val_accuracy"],
                        "diverged": bool(last["diverged"])})
    return out


def summarize(rows: list[dict], config: Config) -> tuple[list[dict], list[str]]:
    seeds = per_seed(rows, config)
    several = len(config.pairs) > 1
    table, stats = [], {}
    for model_name in config.models:
        mine = [s for s in seeds if s["model"] == model_name]
        ep = report.mean_std(s["epochs_to_target"] for s in mine)
        sec = report.mean_std(s["seconds_to_target"] for s in mine)
        acc = report.mean_std(s["final_accuracy"] for s in mine)
        stats[model_name] = (ep, sec, acc)
        target = "target" if several else f"{config.target(model_name):.0%}"
        row = {"model": model_name}
        if several:
            row["target"] = f"{config.target(model_name):.0%}"
        row.update({
            f"epochs to {target}": report.pm(ep[0], ep[1]),
            f"seconds to {target}": report.pm(sec[0], sec[1], ".3f"),
            "reached": f"{ep[2]}/{len(mine)}",
            "final val acc %": report.pm(acc[0], acc[1], ".2f", 100),
            "diverged": f"{sum(s['diverged'] for s in mine)}/{len(mine)}",
        })
        table.append(row)
    lines = []
    for label, bn, no in config.pairs:
        lines += verdicts(stats, config, bn, no, tag=label if several else None)
    return table, lines


def verdicts(stats: dict, config: Config, bn: str = "BN", no: str = "no BN",
             tag: str | None = None) -> list[str]:
    """The tutorial's two claims against the measured mean ± std, for the pair ``bn``
    (with batch norm) and ``no`` (without); ``tag`` names the architecture."""
    (ep_bn, sec_bn, acc_bn), (ep_no, sec_no, acc_no) = stats[bn], stats[no]
    n = len(config.seeds)
    target = f"{config.target(bn):.0%}"
    tagged = f" ({tag})" if tag else ""
    lines = []
    if ep_bn[2] < n:
        lines.append(f"Claim 'BN trains 2-10x faster'{tagged}: NOT REPRODUCED -- BN reached "
                     f"{target} in only {ep_bn[2]}/{n} seeds within {config.epochs} epochs.")
    elif ep_no[2] < n:
        lines.append(f"Claim 'BN trains 2-10x faster'{tagged}: REPRODUCED in direction -- BN "
                     f"reached {target} in all seeds ({ep_bn[0]:.1f} epochs), no BN in only "
                     f"{ep_no[2]}/{n} within {config.epochs} epochs.")
    else:
        ratio_ep, ratio_s = ep_no[0] / ep_bn[0], sec_no[0] / sec_bn[0]
        if ratio_ep >= 2:
            word = "REPRODUCED"
        elif ratio_ep > 1:
            word = "NOT REPRODUCED (faster, but less than 2x)"
        else:
            word = "NOT REPRODUCED (BN is not faster)"
        lines.append(f"Claim 'BN trains 2-10x faster'{tagged}: {word} -- epochs to {target}: "
                     f"{ratio_ep:.2f}x fewer with BN; wall seconds: {ratio_s:.2f}x "
                     f"({sec_bn[0]:.2f} s vs {sec_no[0]:.2f} s).")
    diff = acc_bn[0] - acc_no[0]
    se = math.sqrt(acc_bn[1] ** 2 / max(acc_bn[2], 1) + acc_no[1] ** 2 / max(acc_no[2], 1))
    if not math.isfinite(diff):
        word = "UNDECIDED (a model diverged in every seed)"
    elif diff > 2 * se:
        word = "REPRODUCED"
    elif diff < -2 * se:
        word = "NOT REPRODUCED (BN is lower)"
    else:
        word = "NOT REPRODUCED (within the spread over seeds)"
    lines.append(f"Claim 'BN reaches higher accuracy'{tagged}: {word} -- final val accuracy "
                 f"{report.pm(acc_bn[0], acc_bn[1], '.2f', 100)}% vs "
                 f"{report.pm(acc_no[0], acc_no[1], '.2f', 100)}% "
                 f"(difference {100 * diff:+.2f} points, standard error {100 * se:.2f}).")
    return lines


def plot(rows: list[dict], config: Config, path: str, caption: str) -> None:
    plt = report.pyplot()
    pairs = config.pairs
    fig, axes = plt.subplots(len(pairs), 2, figsize=(10, 4.2 * len(pairs)), squeeze=False)
    ok = [r for r in rows if not r["diverged"]]
    for (label, *pair), (ax_loss, ax_acc) in zip(pairs, axes, strict=True):
        for model_name, color in zip(pair, ("C0", "C3"), strict=True):
            mine = [r for r in ok if r["model"] == model_name]
            for ax, value, scale in ((ax_loss, "train_loss", 1.0),
                                     (ax_acc, "val_accuracy", 100.0)):
                agg = [g for g in report.aggregate(mine, ["epoch"], value) if g["n"]]
                report.band(ax, [g["epoch"] for g in agg], [scale * g["mean"] for g in agg],
                            [scale * g["std"] for g in agg], label=model_name, color=color,
                            marker=".")
        target = config.target(pair[0])
        ax_acc.axhline(100 * target, color="0.5", ls=":", label=f"target {target:.0%}")
        ax_loss.set_yscale("log")
        prefix = f"{label}: " if len(pairs) > 1 else ""
        ax_loss.set(xlabel="epoch", ylabel="training loss (cross-entropy, nats)",
                    title=f"{prefix}training loss")
        ax_acc.set(xlabel="epoch", ylabel="validation accuracy (%)",
                   title=f"{prefix}validation accuracy")
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3)
            ax.legend()
    nets = f"MLP (hidden {_widths()})" + (" and MNIST-1D's CNN" if len(pairs) > 1 else "")
    fig.suptitle(f"Does batch norm speed up convergence? {nets} on "
                 f"{config.dataset}, Adam lr {config.lr:g}, batch {config.batch_size}, "
                 f"{len(config.seeds)} seeds", fontsize=10)
    report.save_figure(fig, path, caption)


def _widths() -> str:
    return "-".join(str(w) for w in train.HIDDEN)
