"""Experiment ``placement``: the tutorial's best practices for where batch norm goes.

The tutorial's "Best Practices" give three pieces of advice:

1. "Dense -> BatchNorm -> Activation": batch norm between the dense layer
   and its activation;
2. ``use_bias=False`` on that dense layer: "the bias in the Dense layer is
   redundant (beta serves the same purpose)";
3. "Batch norm + dropout can both be used", its example being
   ``Dense(relu) -> BatchNorm -> Dropout(0.3)`` per hidden layer.

The tutorial's MLP (hidden 256-128-64, as in the other experiments) is
trained in six variants (:data:`VARIANTS`), each hidden layer being

==========================  ====================================================
``no norm``                 ``Dense -> ReLU``
``BN -> ReLU``              ``Dense(use_bias=False) -> BatchNorm -> ReLU``
``BN -> ReLU, bias``        ``Dense -> BatchNorm -> ReLU`` (the bias kept)
``ReLU -> BN``              ``Dense -> ReLU -> BatchNorm``
``ReLU -> BN -> Dropout``   ``Dense -> ReLU -> BatchNorm -> Dropout(0.3)``
                            (the tutorial's dropout example)
``BN -> ReLU -> Dropout``   ``Dense(use_bias=False) -> BatchNorm -> ReLU ->
                            Dropout(0.3)``
==========================  ====================================================

followed by ``Dense(64, classes)``.  ``BatchNorm -> ReLU`` is the fused
``BatchNorm(C, activation="relu")``, the same function in one pass.  Every
variant of a seed starts from the same weights: the dense layers have the
same shapes in all six, they draw their weights from the seed's "init"
stream in the same order, and a bias starts at zero without drawing from
it.  The variants of a seed also see the same batch order (the "order"
stream); the dropout masks come from a third stream.  Training: Adam (lr
1e-3, the tutorial's optimizer), batch 32.  After every epoch, in eval mode:
the validation loss and accuracy, and the loss and accuracy on the whole
training set.  Their differences are the train/validation gaps: in
accuracy (training minus validation) and in loss (validation minus
training).

In every variant with hidden biases, each optimizer step also records, per
hidden dense layer, the largest ``|grad bias|`` over the largest ``|grad
weight|``.  Under batch norm the bias's gradient is zero in exact arithmetic
(batch norm subtracts each feature's batch mean, so a constant added before
it changes nothing); in float32 it is rounding.  Where a ReLU sits between
the dense layer and the batch norm (``ReLU -> BN``), or without batch norm,
the bias does change the output, and its gradient is the reference for a
bias that matters.  Per epoch: the largest and the smallest of these ratios
over the epoch's steps and the hidden layers, and the largest ``|bias|``.

Summary, per variant: the validation accuracy after the first and the last
epoch, the final training accuracy and the two gaps (mean ± std over
seeds), and the largest bias-gradient ratio over training.  The verdicts
compare variants of the same seed (paired differences over seeds); a
difference counts when it exceeds twice its standard error.  The bias's
gradient counts as zero when the ratio stays at most :data:`ROUNDING_RATIO`
(1,000 float32 epsilons) at every step of every seed.  Dropout
"combines" with BN when it narrows the loss gap without lowering the
validation accuracy; the loss gap, not the accuracy gap, because on digits
the training accuracy saturates at 100 %, where the accuracy gap is just the
validation error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..nn import BatchNorm, Dense, Dropout, ReLU, Sequential
from . import report, train
from .data import Dataset

NAME = "placement"
SPREAD = "bands: ±1 std over seeds"

#: The dropout rate of the tutorial's example.
DROPOUT = 0.3

#: A bias-gradient ratio at most this (1,000 float32 epsilons) counts as rounding, zero.
ROUNDING_RATIO = 1000 * float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class Variant:
    """One way of building the hidden layers.

    ``order``: ``"none"`` (``Dense -> ReLU``), ``"bn-relu"`` (``Dense -> BN ->
    ReLU``, fused) or ``"relu-bn"`` (``Dense -> ReLU -> BN``); ``bias``: the
    hidden dense layers' bias; ``dropout``: the rate of a ``Dropout`` closing
    each hidden layer (0: none).
    """

    name: str
    order: str
    bias: bool
    dropout: float = 0.0

    @property
    def layers(self) -> str:
        """One hidden layer, as text."""
        dense = "Dense" if self.bias else "Dense(use_bias=False)"
        body = {"none": "ReLU", "bn-relu": "BN -> ReLU", "relu-bn": "ReLU -> BN"}[self.order]
        tail = f" -> Dropout({self.dropout:g})" if self.dropout else ""
        return f"{dense} -> {body}{tail}"


#: The six variants, in the order of the tables.
VARIANTS = (
    Variant("no norm", "none", True),
    Variant("BN -> ReLU", "bn-relu", False),
    Variant("BN -> ReLU, bias", "bn-relu", True),
    Variant("ReLU -> BN", "relu-bn", True),
    Variant("ReLU -> BN -> Dropout", "relu-bn", True, DROPOUT),
    Variant("BN -> ReLU -> Dropout", "bn-relu", False, DROPOUT),
)
BY_NAME = {v.name: v for v in VARIANTS}

#: The three comparisons (the figure's panels): variant names.
COMPARISONS = {
    "placement": ("BN -> ReLU", "ReLU -> BN", "no norm"),
    "bias": ("BN -> ReLU", "BN -> ReLU, bias"),
    "dropout": ("ReLU -> BN", "ReLU -> BN -> Dropout", "BN -> ReLU", "BN -> ReLU -> Dropout"),
}

#: A fixed color per variant, in every panel.
COLORS = {"BN -> ReLU": "C0", "ReLU -> BN": "C1", "no norm": "C3", "BN -> ReLU, bias": "C2",
          "ReLU -> BN -> Dropout": "C5", "BN -> ReLU -> Dropout": "C4"}


@dataclass(frozen=True)
class Config:
    mode: str = "full"
    dataset: str = "digits"
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    variants: tuple[str, ...] = tuple(v.name for v in VARIANTS)
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    hidden: tuple[int, ...] = train.HIDDEN
    max_train: int | None = None
    max_val: int | None = None


def make_config(mode: str = "full", seed: int = 0, dataset: str = "digits") -> Config:
    """Full: 6 variants x 5 seeds x 20 epochs on digits (MNIST-1D: 30 epochs; MNIST: 3
    seeds x 5 epochs on 20,000 images); quick: 2 seeds x 3 epochs (MNIST: 2,000 images);
    tiny: 2 seeds x 2 epochs on 200 images."""
    if mode == "full":
        if dataset == "digits":
            return Config(mode, dataset, _seeds(seed, 5), epochs=20)
        if dataset == "mnist1d":
            return Config(mode, dataset, _seeds(seed, 5), epochs=30)
        return Config(mode, dataset, _seeds(seed, 3), epochs=5, max_train=20000)
    if mode == "quick":
        small = dataset not in ("digits", "mnist1d")
        return Config(mode, dataset, _seeds(seed, 2), epochs=3,
                      max_train=2000 if small else None, max_val=2000 if small else None)
    return Config(mode, dataset, _seeds(seed, 2), epochs=2, max_train=200, max_val=100)


def _seeds(first: int, n: int) -> tuple[int, ...]:
    return tuple(range(first, first + n))


def build(variant: Variant | str, num_features: int, num_classes: int, *,
          hidden: tuple[int, ...] = train.HIDDEN, rng: np.random.Generator | None = None,
          dropout_rng: np.random.Generator | None = None) -> Sequential:
    """The MLP with hidden layers built as ``variant`` says (a :class:`Variant` or its name).

    The dense layers draw their weights from ``rng`` in the same order in every
    variant, so one seed gives every variant the same initial weights.
    """
    v = BY_NAME[variant] if isinstance(variant, str) else variant
    layers = []
    width = num_features
    for h in hidden:
        layers.append(Dense(width, h, use_bias=v.bias, rng=rng))
        if v.order == "none":
            layers.append(ReLU())
        elif v.order == "bn-relu":
            layers.append(BatchNorm(h, activation="relu"))
        elif v.order == "relu-bn":
            layers += [ReLU(), BatchNorm(h)]
        else:
            raise ValueError(f"unknown order {v.order!r}")
        if v.dropout:
            layers.append(Dropout(v.dropout, rng=dropout_rng))
        width = h
    layers.append(Dense(width, num_classes, rng=rng))
    return Sequential(*layers)


def hidden_dense(model: Sequential) -> list[Dense]:
    """The hidden dense layers of ``model`` (every Dense but the last)."""
    return [m for m in model if isinstance(m, Dense)][:-1]


def bias_grad_ratios(model: Sequential) -> list[float]:
    """Per hidden dense layer with a bias: ``max|grad bias| / max|grad weight|`` (as the
    last backward left them)."""
    out = []
    for d in hidden_dense(model):
        if d.use_bias:
            w = float(np.abs(d.grads["weight"]).max())
            out.append(float(np.abs(d.grads["bias"]).max()) / w if w > 0 else math.nan)
    return out


class _Recorder:
    """An optimizer that records :func:`bias_grad_ratios` before every step."""

    def __init__(self, opt, model):
        self.opt, self.model = opt, model
        self.ratios: list[float] = []

    def zero_grad(self):
        self.opt.zero_grad()

    def step(self):
        self.ratios += bias_grad_ratios(self.model)
        self.opt.step()


def run(config: Config, data: Dataset, *, progress: bool = True) -> list[dict]:
    """One row per (variant, seed, epoch); a diverged run ends with a NaN row marked so."""
    data = data.subset(config.max_train, config.max_val)
    x_train = data.x_train.reshape(len(data.y_train), -1)
    rows = []
    nan = float("nan")
    bar = report.progress(len(config.seeds) * len(config.variants), NAME, progress)
    for seed in config.seeds:
        for name in config.variants:
            variant = BY_NAME[name]
            init_rng, order_rng, drop_rng = train.seed_rngs(seed, "init", "order", "dropout")
            model = build(variant, data.num_features, data.num_classes, hidden=config.hidden,
                          rng=init_rng, dropout_rng=drop_rng)
            rec = _Recorder(train.optimizer("Adam", model, config.lr), model)
            for epoch in range(1, config.epochs + 1):
                rec.ratios = []
                result = train.fit(model, rec, data, epochs=1, batch_size=config.batch_size,
                                   rng=order_rng, flatten=True)
                base = {"dataset": data.name, "variant": name, "seed": seed, "epoch": epoch}
                if result.diverged:
                    rows.append({**base, "train_loss": nan, "train_eval_loss": nan,
                                 "train_accuracy": nan, "val_loss": nan, "val_accuracy": nan,
                                 "bias_ratio_max": nan, "bias_ratio_min": nan,
                                 "bias_abs_max": nan, "diverged": True})
                    break
                h = result.final
                train_loss, train_acc = train.evaluate(model, x_train, data.y_train)
                ratios = [r for r in rec.ratios if math.isfinite(r)]
                biases = [float(np.abs(d.params["bias"]).max()) for d in hidden_dense(model)
                          if d.use_bias]
                rows.append({**base, "train_loss": h["train_loss"],
                             "train_eval_loss": train_loss, "train_accuracy": train_acc,
                             "val_loss": h["val_loss"], "val_accuracy": h["val_accuracy"],
                             "bias_ratio_max": max(ratios) if ratios else nan,
                             "bias_ratio_min": min(ratios) if ratios else nan,
                             "bias_abs_max": max(biases) if biases else nan,
                             "diverged": False})
            bar.update()
    bar.close()
    return rows


# --- summary ------------------------------------------------------------------------------


def final_rows(rows: list[dict], name: str) -> dict[int, dict]:
    """Per seed, the last row of variant ``name`` (NaN accuracies if it diverged)."""
    out = {}
    for r in rows:
        if r["variant"] == name and (r["seed"] not in out or r["epoch"] > out[r["seed"]]["epoch"]):
            out[r["seed"]] = r
    return out


def _value(row: dict, value: str) -> float:
    if value == "gap":
        return row["train_accuracy"] - row["val_accuracy"]
    if value == "loss_gap":
        return row["val_loss"] - row["train_eval_loss"]
    return row[value]


def stats(rows: list[dict], name: str, value: str, epoch: int | None = None
          ) -> tuple[float, float, int]:
    """Mean, std, n over seeds of ``value`` (a column, ``"gap"`` = train - validation
    accuracy or ``"loss_gap"`` = validation - training loss) of variant ``name``, at
    ``epoch`` (default: the last epoch of each seed)."""
    if epoch is None:
        mine = final_rows(rows, name).values()
    else:
        mine = [r for r in rows if r["variant"] == name and r["epoch"] == epoch]
    return report.mean_std(_value(r, value) for r in mine)


def paired(rows: list[dict], a: str, b: str, value: str = "val_accuracy"
           ) -> tuple[float, float, int]:
    """Mean of ``value(a) - value(b)`` over the seeds where neither diverged, its standard
    error (0 for one seed) and the number of seeds."""
    fa, fb = final_rows(rows, a), final_rows(rows, b)
    d = [_value(fa[s], value) - _value(fb[s], value) for s in fa if s in fb]
    m, sd, n = report.mean_std(d)
    return m, (sd / math.sqrt(n) if n else math.nan), n


def ratio_max(rows: list[dict], name: str) -> float:
    """The largest bias-gradient ratio of variant ``name`` over all its steps and seeds."""
    v = [r["bias_ratio_max"] for r in rows if r["variant"] == name
         and math.isfinite(r["bias_ratio_max"])]
    return max(v) if v else math.nan


def ratio_min(rows: list[dict], name: str) -> float:
    """The smallest bias-gradient ratio of variant ``name`` over all its steps and seeds."""
    v = [r["bias_ratio_min"] for r in rows if r["variant"] == name
         and math.isfinite(r["bias_ratio_min"])]
    return min(v) if v else math.nan


def _diverged(rows, name) -> int:
    return sum(bool(r["diverged"]) for r in rows if r["variant"] == name)


def summarize(rows: list[dict], config: Config) -> tuple[list[dict], list[str]]:
    table = []
    for name in config.variants:
        ratio = ratio_max(rows, name)
        table.append({
            "variant": name,
            "epoch-1 val acc %": report.pm(*stats(rows, name, "val_accuracy", 1)[:2], ".1f", 100),
            "final val acc %": report.pm(*stats(rows, name, "val_accuracy")[:2], ".2f", 100),
            "final train acc %": report.pm(*stats(rows, name, "train_accuracy")[:2], ".2f",
                                           100),
            "train-val acc gap (points)": report.pm(*stats(rows, name, "gap")[:2], ".2f", 100),
            "val-train loss gap (nats)": report.pm(*stats(rows, name, "loss_gap")[:2], ".3f"),
            "max |grad b|/|grad W|": "-" if not math.isfinite(ratio) else f"{ratio:.1e}",
            "diverged": f"{_diverged(rows, name)}/{len(config.seeds)}",
        })
    verdicts = [_placement_verdict(rows), *_bias_verdicts(rows),
                _dropout_verdict(rows, "ReLU -> BN", "the tutorial's example"),
                _dropout_verdict(rows, "BN -> ReLU", "the recommended order")]
    # (a verdict's tag holds no parentheses: generate.parse_claim reads it up to the first ")")
    return table, verdicts


def _acc(rows, name, epoch=None) -> str:
    return report.pm(*stats(rows, name, "val_accuracy", epoch)[:2], ".2f", 100) + " %"


def _diff(d: tuple[float, float, int]) -> str:
    return f"{100 * d[0]:+.2f} points, standard error {100 * d[1]:.2f} over {d[2]} seeds"


def _significant(d: tuple[float, float, int]) -> int:
    """+1 / -1 when the paired difference exceeds twice its standard error, else 0."""
    m, se, _ = d
    if not math.isfinite(m) or abs(m) <= 2 * se or m == 0:
        return 0
    return 1 if m > 0 else -1


def _placement_verdict(rows: list[dict]) -> str:
    d = paired(rows, "BN -> ReLU", "ReLU -> BN")
    e1 = (stats(rows, "BN -> ReLU", "val_accuracy", 1)[0]
          - stats(rows, "ReLU -> BN", "val_accuracy", 1)[0])
    word = {1: "REPRODUCED", 0: "NOT REPRODUCED (within the spread over seeds)",
            -1: "NOT REPRODUCED (ReLU -> BN is better)"}[_significant(d)]
    return (f"Claim 'BN before the activation' (Dense -> BN -> ReLU vs Dense -> ReLU -> BN): "
            f"{word} -- final validation accuracy {_acc(rows, 'BN -> ReLU')} vs "
            f"{_acc(rows, 'ReLU -> BN')} (paired difference {_diff(d)}); after epoch 1 "
            f"{100 * e1:+.2f} points; no normalization: {_acc(rows, 'no norm')}.")


def _bias_verdicts(rows: list[dict]) -> list[str]:
    redundant = ratio_max(rows, "BN -> ReLU, bias")
    needed = [(n, ratio_min(rows, n)) for n in ("ReLU -> BN", "no norm")]
    needed = [(n, r) for n, r in needed if math.isfinite(r)]
    if not math.isfinite(redundant):
        word = "NOT REPRODUCED (no step measured)"
    elif redundant <= ROUNDING_RATIO:
        word = "REPRODUCED"
    else:
        word = "NOT REPRODUCED (the gradient is above rounding)"
    ref = "; ".join(f"{n}: at least {r:.1e}" for n, r in needed)
    grad = (f"Claim 'the bias before BN is redundant' (zero gradient): {word} -- under BN "
            f"the largest |grad bias| over every step is {redundant:.1e} of the largest "
            f"|grad weight| (float32 epsilon {np.finfo(np.float32).eps:.1e}; rounding level "
            f"<= {ROUNDING_RATIO:.1e})" + (f"; where the bias matters, {ref}" if ref else "")
            + ".")
    d = paired(rows, "BN -> ReLU, bias", "BN -> ReLU")
    word = {0: "REPRODUCED", 1: "NOT REPRODUCED (the bias helps)",
            -1: "NOT REPRODUCED (the bias hurts)"}[_significant(d)]
    drift = [r["bias_abs_max"] for r in rows if r["variant"] == "BN -> ReLU, bias"
             and math.isfinite(r["bias_abs_max"])]
    acc = (f"Claim 'the bias before BN is redundant' (same accuracy): {word} -- final "
           f"validation accuracy {_acc(rows, 'BN -> ReLU, bias')} with the bias vs "
           f"{_acc(rows, 'BN -> ReLU')} without, from the same initial weights (paired "
           f"difference {_diff(d)})"
           + (f"; Adam moved the biases to at most |b| = {max(drift):.2g}" if drift else "")
           + ".")
    return [grad, acc]


def _dropout_verdict(rows: list[dict], base: str, tag: str) -> str:
    with_ = f"{base} -> Dropout"
    acc = paired(rows, with_, base)
    gap = paired(rows, with_, base, "gap")
    loss_gap = paired(rows, with_, base, "loss_gap")
    better, narrower = _significant(acc), _significant(loss_gap) < 0
    if narrower and better >= 0:
        word = "REPRODUCED"
    elif narrower:
        word = "PARTLY REPRODUCED (a narrower gap, a lower accuracy)"
    elif better >= 0:
        word = "PARTLY REPRODUCED (no harm, but the gap is not narrower)"
    else:
        word = "NOT REPRODUCED (lower accuracy, no narrower gap)"
    return (f"Claim 'BN and dropout combine' ({tag}, Dense -> {with_}): {word} -- "
            f"with Dropout({DROPOUT:g}) the final validation accuracy is "
            f"{_acc(rows, with_)} vs {_acc(rows, base)} without (paired difference "
            f"{_diff(acc)}); the validation-training loss gap changes by "
            f"{loss_gap[0]:+.3f} nats (standard error {loss_gap[1]:.3f}), the accuracy gap "
            f"by {_diff(gap)}.")


# --- figure -------------------------------------------------------------------------------


def _curve(ax, rows, name, value, scale=100.0, **kw):
    mine = [r for r in rows if r["variant"] == name and not r["diverged"]]
    agg = [g for g in report.aggregate(mine, ["epoch"], value) if g["n"]]
    if agg:
        report.band(ax, [g["epoch"] for g in agg], [scale * g["mean"] for g in agg],
                    [scale * g["std"] for g in agg], label=name, color=COLORS[name],
                    marker=".", **kw)
    return [scale * g["mean"] for g in agg]


def _limits(ax, means: list[list[float]]) -> None:
    """Accuracy axes: from a little below the lowest mean to a little above the highest."""
    values = [v for m in means for v in m]
    if values:
        ax.set_ylim(max(0.0, min(values) - 1.0), min(100.5, max(values) + 1.0))


def plot(rows: list[dict], config: Config, path: str, caption: str) -> None:
    plt = report.pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, 3, figsize=(15, 8.4))
    (ax_p, ax_b, ax_g), (ax_d, ax_gap, ax_f) = axes
    with_gap = [dict(r, loss_gap=r["val_loss"] - r["train_eval_loss"]) for r in rows]

    _limits(ax_p, [_curve(ax_p, rows, n, "val_accuracy") for n in COMPARISONS["placement"]])
    ax_p.set_title("(a) Placement: validation accuracy")

    _limits(ax_b, [_curve(ax_b, rows, "BN -> ReLU", "val_accuracy", lw=4, alpha=0.5),
                   _curve(ax_b, rows, "BN -> ReLU, bias", "val_accuracy", lw=1.2, ls="--")])
    ax_b.set_title("(b) Dense bias before BN: validation accuracy")

    for n in ("BN -> ReLU, bias", "ReLU -> BN", "no norm"):
        for value, ls, lab in (("bias_ratio_max", "-", "largest"),
                               ("bias_ratio_min", ":", "smallest")):
            mine = [r for r in rows if r["variant"] == n and math.isfinite(r[value])]
            agg = report.aggregate(mine, ["epoch"], value)
            if agg:
                ax_g.plot([g["epoch"] for g in agg], [g["mean"] for g in agg], ls=ls,
                          marker=".", color=COLORS[n], label=f"{n}: {lab}")
    ax_g.axhline(float(np.finfo(np.float32).eps), color="0.4", lw=0.8, ls="--",
                 label="float32 epsilon")
    ax_g.set_yscale("log")
    ax_g.set(ylabel="max |grad b| / max |grad W| (mean over seeds)", xlabel="epoch",
             title="(c) Bias gradient / weight gradient (hidden layers)")

    _limits(ax_d, [_curve(ax_d, rows, n, "val_accuracy", ls="--" if "Dropout" in n else "-")
                 for n in COMPARISONS["dropout"]])
    ax_d.set_title(f"(d) BN with and without Dropout({DROPOUT:g}): validation accuracy")

    for n in COMPARISONS["dropout"]:
        _curve(ax_gap, with_gap, n, "loss_gap", scale=1.0, ls="--" if "Dropout" in n else "-")
    ax_gap.axhline(0.0, color="0.5", lw=0.8)
    ax_gap.set(ylabel="validation loss - training loss (nats)",
               title="(e) Generalization gap: loss, eval mode, whole sets")

    names = list(config.variants)
    for i, n in enumerate(names):
        finals = [100 * r["val_accuracy"] for r in final_rows(rows, n).values()
                  if math.isfinite(r["val_accuracy"])]
        if finals:
            ax_f.scatter([i] * len(finals), finals, color=COLORS[n], s=14, alpha=0.6)
            ax_f.errorbar(i + 0.15, np.mean(finals), yerr=np.std(finals, ddof=1)
                          if len(finals) > 1 else 0.0, color=COLORS[n], marker="D", ms=5,
                          capsize=3)
    ax_f.set_xticks(range(len(names)), [n.replace(" -> ", "\n-> ") for n in names],
                    fontsize=7)
    ax_f.set(ylabel="final validation accuracy (%)",
             title=f"(f) After {config.epochs} epochs: seeds (dots), mean ± std")

    for ax in (ax_p, ax_b, ax_d):
        ax.set(xlabel="epoch", ylabel="validation accuracy (%)")
    ax_gap.set_xlabel("epoch")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        if ax is not ax_f:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax is not ax_f:
            ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"The tutorial's best practices: MLP (hidden "
                 f"{'-'.join(map(str, config.hidden))}) on {config.dataset}, Adam lr "
                 f"{config.lr:g}, batch {config.batch_size}, {len(config.seeds)} seeds, same "
                 f"initial weights in every variant", fontsize=10)
    report.save_figure(fig, path, caption)
