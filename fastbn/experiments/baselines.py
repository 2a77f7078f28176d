"""Experiment ``baselines``: our MNIST-1D models beside the MNIST-1D paper's baselines.

Greydanus and Kobak (ICML 2024) report the test accuracy of four models on
MNIST-1D's 4,000 training and 1,000 test signals: logistic regression 32%,
an MLP 68%, a CNN 94% and a GRU 91% (:data:`~fastbn.experiments.data.MNIST1D_BASELINES`).
Before the other experiments lean on MNIST-1D, this one checks that our
data and our layers give the same numbers, by training the paper's models
with the paper's protocol, as the mnist1d repository's ``notebooks/models.py``
and ``notebooks/train.py`` define them:

* ``logistic regression`` -- ``Dense(40, 10)``;
* ``MLP`` -- ``Dense(40, 100) -> ReLU -> Dense(100, 100) -> ReLU ->
  Dense(100, 10)`` (the repository's ``MLPBase`` adds the second layer's
  output to its input, a residual connection, which ``fastbn.nn`` cannot
  express; ours is the plain MLP);
* ``CNN`` -- :func:`~fastbn.experiments.train.cnn1d`: three convolutions
  of 25 channels (kernels 5, 3, 3, stride 2, padding 1) with ReLUs, then a
  linear layer;
* ``MLP BN`` and ``CNN BN`` -- the same with batch norm before each ReLU
  (the layer before it without bias), which the paper does not have.

Protocol (the repository's ``get_model_args``): Adam at lr 1e-2 (PyTorch's
other defaults), batch 100, 8,000 steps (200 epochs of 40 batches), no
weight decay.  Two differences: our batches come from a fresh shuffle every
epoch (the repository walks the training set in order) and our weights are
He-normal (PyTorch's layers default to a uniform draw a third as wide).
The validation set is MNIST-1D's 1,000 test signals, evaluated after every
epoch.  The paper's GRU is not trained (``fastbn.nn``
has no recurrent layer).

Summary: per model, the final and the best validation accuracy, as mean ±
std over the seeds, beside the paper's number.  Verdict: our model "matches"
the paper's when its final accuracy is within ``tolerance`` (3 points) or
twice its std over the seeds of the paper's value, whichever is larger.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..nn import Dense, Sequential
from . import report, train
from .data import MNIST1D_BASELINES, Dataset

NAME = "baselines"
DATA = "mnist1d"
#: The models, the paper's first.
MODELS = ("logistic regression", "MLP", "CNN", "MLP BN", "CNN BN")
#: The paper's model each of ours stands beside.
PAPER = {"logistic regression": "logistic regression", "MLP": "MLP", "CNN": "CNN",
         "MLP BN": "MLP", "CNN BN": "CNN"}
SPREAD = "bands: ±1 std over seeds (the loss: x/÷ its geometric std)"


@dataclass(frozen=True)
class Config:
    mode: str = "full"
    dataset: str = "mnist1d"
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    epochs: int = 200
    batch_size: int = 100
    lr: float = 1e-2
    hidden: tuple[int, ...] = (100, 100)
    tolerance: float = 0.03
    models: tuple[str, ...] = MODELS
    max_train: int | None = None
    max_val: int | None = None

    @property
    def steps(self) -> int:
        """Training steps of a run on MNIST-1D's 4,000 signals."""
        return self.epochs * (4000 // self.batch_size)


def make_config(mode: str = "full", seed: int = 0, dataset: str = "mnist1d") -> Config:
    """Full: 5 seeds x 200 epochs (the repository's 8,000 steps); quick: 2 seeds x 25 epochs;
    tiny: 2 seeds x 2 epochs on 200 samples."""
    if mode == "full":
        return Config(mode, dataset, tuple(range(seed, seed + 5)))
    if mode == "quick":
        return Config(mode, dataset, (seed, seed + 1), epochs=25)
    return Config(mode, dataset, (seed, seed + 1), epochs=2, batch_size=50, max_train=200,
                  max_val=100)


def check_data(data: Dataset) -> None:
    """The CNN needs 1-D signals ``(N, 1, L)``."""
    if data.x_train.ndim != 3:
        raise ValueError(f"baselines trains MNIST-1D's 1-D CNN and needs 1-D signals "
                         f"(N, 1, L); {data.name} has samples of shape "
                         f"{data.x_train.shape[1:]} (use --data mnist1d)")


def build(model_name: str, data: Dataset, hidden: tuple[int, ...] = (100, 100), rng=None):
    """The network of ``model_name`` (:data:`MODELS`)."""
    if model_name == "logistic regression":
        return Sequential(Dense(data.num_features, data.num_classes, rng=rng))
    if model_name in ("MLP", "MLP BN"):
        return train.mlp(data.num_features, data.num_classes, bn=model_name == "MLP BN",
                         hidden=hidden, rng=rng)
    if model_name in ("CNN", "CNN BN"):
        return train.cnn1d(data.x_train.shape[-1], data.num_classes,
                           bn=model_name == "CNN BN", rng=rng)
    raise ValueError(f"unknown model {model_name!r}; choose from {MODELS}")


def run(config: Config, data: Dataset, *, progress: bool = True) -> list[dict]:
    """One row per (model, seed, epoch); a diverged run ends with a NaN row marked so."""
    check_data(data)
    data = data.subset(config.max_train, config.max_val)
    rows: list[dict] = []
    bar = report.progress(len(config.seeds) * len(config.models), NAME, progress)
    for seed in config.seeds:
        for model_name in config.models:
            init_rng, order_rng = train.seed_rngs(seed, "init", "order")
            model = build(model_name, data, config.hidden, init_rng)
            opt = train.optimizer("Adam", model, config.lr)
            flat = not model_name.startswith("CNN")
            result = train.fit(model, opt, data, epochs=config.epochs,
                               batch_size=config.batch_size, rng=order_rng, flatten=flat)
            base = {"dataset": data.name, "model": model_name, "seed": seed}
            for h in result.history:
                rows.append({**base, "epoch": h["epoch"], "train_loss": h["train_loss"],
                             "val_loss": h["val_loss"], "val_accuracy": h["val_accuracy"],
                             "diverged": False})
            if result.diverged:
                rows.append({**base, "epoch": result.diverged_epoch, "train_loss": math.nan,
                             "val_loss": math.nan, "val_accuracy": math.nan,
                             "diverged": True})
            bar.update()
    bar.close()
    return rows


def accuracies(rows: list[dict], model: str, config: Config) -> tuple[list[float], list[float]]:
    """Per seed of ``model``: the final and the best validation accuracy (NaN if it
    diverged)."""
    final, best = [], []
    for seed in config.seeds:
        mine = sorted((r for r in rows if r["model"] == model and r["seed"] == seed),
                      key=lambda r: r["epoch"])
        if not mine or mine[-1]["diverged"]:
            final.append(math.nan)
            best.append(math.nan)
            continue
        final.append(mine[-1]["val_accuracy"])
        best.append(max(r["val_accuracy"] for r in mine))
    return final, best


def summarize(rows: list[dict], config: Config) -> tuple[list[dict], list[str]]:
    table, lines = [], []
    for model in config.models:
        final, best = accuracies(rows, model, config)
        (m, s, _), (bm, bs, _) = report.mean_std(final), report.mean_std(best)
        paper = MNIST1D_BASELINES[PAPER[model]]
        table.append({"model": model, "final val acc %": report.pm(m, s, ".1f", 100),
                      "best val acc %": report.pm(bm, bs, ".1f", 100),
                      "paper %": f"{100 * paper:.0f}" + ("" if PAPER[model] == model
                                                         else f" ({PAPER[model]})"),
                      "final - paper": f"{100 * (m - paper):+.1f}"})
    for model in config.models:
        if PAPER[model] == model:
            lines.append(_verdict(rows, model, config))
    return table, lines


def _verdict(rows, model: str, config: Config) -> str:
    final, _ = accuracies(rows, model, config)
    m, s, n = report.mean_std(final)
    paper = MNIST1D_BASELINES[model]
    allowed = max(config.tolerance, 2 * s) if math.isfinite(s) else config.tolerance
    close = math.isfinite(m) and abs(m - paper) <= allowed
    word = ("REPRODUCED" if close else
            "NOT REPRODUCED (lower)" if math.isfinite(m) and m < paper else
            "NOT REPRODUCED (higher)" if math.isfinite(m) else
            "NOT REPRODUCED (diverged)")
    return (f"Claim 'the MNIST-1D paper reports {100 * paper:.0f}% test accuracy for its "
            f"{model}' (ours, {n} seeds): {word} -- final validation accuracy "
            f"{report.pm(m, s, '.1f', 100)}% after {config.epochs} epochs vs the paper's "
            f"{100 * paper:.0f}% (difference {100 * (m - paper):+.1f} points; a match needs "
            f"{100 * allowed:.1f}).")


def plot(rows: list[dict], config: Config, path: str, caption: str) -> None:
    plt = report.pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.4))
    ok = [r for r in rows if not r["diverged"]]
    colors = {"logistic regression": "0.4", "MLP": "C3", "CNN": "C1", "MLP BN": "C0",
              "CNN BN": "C2"}
    for model in config.models:
        mine = [r for r in ok if r["model"] == model]
        agg = [g for g in report.aggregate(mine, ["epoch"], "val_accuracy") if g["n"]]
        report.band(ax_acc, [g["epoch"] for g in agg], [100 * g["mean"] for g in agg],
                    [100 * g["std"] for g in agg], label=model, color=colors[model])
        # the loss spans decades: its band is the geometric mean times/divided by the
        # geometric std over seeds, so it stays above zero on the log axis
        logs = [{**r, "log_loss": math.log(max(r["train_loss"], 1e-30))} for r in mine]
        agg = [g for g in report.aggregate(logs, ["epoch"], "log_loss") if g["n"]]
        x = [g["epoch"] for g in agg]
        mu = [g["mean"] for g in agg]
        sd = [g["std"] if math.isfinite(g["std"]) else 0.0 for g in agg]
        ax_loss.plot(x, [math.exp(m) for m in mu], label=model, color=colors[model])
        ax_loss.fill_between(x, [math.exp(m - s) for m, s in zip(mu, sd, strict=True)],
                             [math.exp(m + s) for m, s in zip(mu, sd, strict=True)],
                             color=colors[model], alpha=0.2, linewidth=0)
    for model, acc in MNIST1D_BASELINES.items():
        if model in config.models:
            ax_acc.axhline(100 * acc, color=colors[model], ls=":", lw=1)
    ax_loss.set_yscale("log")
    ax_loss.set(xlabel="epoch (40 steps)", ylabel="training loss (cross-entropy, nats)",
                title="Training loss")
    ax_acc.set(xlabel="epoch (40 steps)", ylabel="validation accuracy (%)",
               title="Validation accuracy (dotted: the paper's)", ylim=(0, 100))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"MNIST-1D baselines: the paper's models and protocol (Adam lr "
                 f"{config.lr:g}, batch {config.batch_size}, {config.epochs} epochs), "
                 f"{len(config.seeds)} seeds", fontsize=10)
    report.save_figure(fig, path, caption)
