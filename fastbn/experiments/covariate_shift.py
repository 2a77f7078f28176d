"""Experiment ``covariate-shift``: Ioffe & Szegedy (2015), Figure 1, on a sigmoid MLP.

The paper motivates batch norm by *internal covariate shift*: while a
network trains, the distribution of each layer's input keeps moving, and the
layers after it must keep adapting.  Its Figure 1 trains a network of 3 fully
connected hidden layers of 100 sigmoid units on MNIST (batch 60, weights
"initialized to small random Gaussian values", 50,000 steps), with and
without batch norm in each hidden layer, and shows (a) the test accuracy
against the training step and (b, c) the 15th, 50th and 85th percentiles of
the input to a typical sigmoid of the last hidden layer: without batch norm
they move "both in their mean and the variance", with it they stay stable.

The same network here: ``Dense(use_bias=False) -> BatchNorm -> Sigmoid``
per hidden layer with batch norm, ``Dense -> Sigmoid`` without, then
``Dense(100, 10)`` and :class:`~fastbn.nn.SoftmaxCrossEntropy` on the
logits.  Every weight, the output layer's included, is drawn from
``N(0, init_std**2)`` (``init_std = 0.1``); biases start at 0.  Plain SGD (no
momentum) at ``lr`` 0.5, a rate at which both models train, batch 60, on a
fresh shuffle of the training set every epoch (the last incomplete batch
dropped); both models of one seed see the same batches.

At regular checkpoints (step 0, then steps spaced both geometrically and
linearly up to ``steps``):

* ``kind="accuracy"`` -- the validation accuracy and loss (eval mode: batch
  norm uses its running statistics) and the mean training loss of the
  batches since the previous checkpoint;
* ``kind="percentile"`` -- the 15th, 50th and 85th percentiles of the input
  to sigmoid ``unit`` (0 by default, the same index for every seed) of the
  last hidden layer, over a fixed evaluation batch of validation samples
  (the first ``eval_batch`` of a class-stratified subset).  The input to the
  sigmoid is what the network computes in training: with batch norm, its
  output normalized with the evaluation batch's own statistics (the running
  statistics are left untouched), so the step-0 value is not that of the
  untrained running statistics;
* ``kind="drift"`` and ``kind="spread"`` (``unit="all"``) -- how far all 100
  units of that layer moved since the start of a window: per unit, the
  distance ``|p(t) - p(start)|`` of each percentile ``p`` from its value at
  the window's start, in units of the unit's spread (85th minus 15th
  percentile) at the last checkpoint, averaged over the 100 units
  (``drift``); and the geometric mean over the units of
  ``spread(t) / spread(start)`` (``spread``).  Two windows (column
  ``since``): from step 0, and the second half of training (from the first
  checkpoint at or after ``steps / 2``).

Summary: per model, the final validation accuracy, the accuracy at
``early_step``, the steps until the validation accuracy first reaches
``target_accuracy``, and for both windows the largest drift over the
window's checkpoints and the final spread ratio, as mean ± std over seeds.
Verdicts: batch norm trains faster (the no-BN model needs at least twice
the steps to the target) and reaches higher accuracy (by more than twice the
standard error of the difference); without batch norm the sigmoid's input
drifts, with it it stays put (without BN, the largest median drift and the
factor by which the spread changed, ``|log(ratio)|``, are both at least
twice those with BN).

The full run trains the paper's 50,000 steps on digits and MNIST-1D (4
seeds, about 6 minutes on 2 cores) and 30,000 on MNIST (3 seeds), what fits
in about 8 minutes; ``steps`` is in the configuration, the CSV and the
figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..nn import SGD, BatchNorm, Dense, Sequential, Sigmoid, SoftmaxCrossEntropy
from . import report, train
from .data import Dataset

NAME = "covariate-shift"
MODELS = ("BN", "no BN")
SPREAD = "bands: ±1 std over seeds; (b, c): the first seed"
PERCENTILES = (15, 50, 85)
#: The paper's number of training steps.
PAPER_STEPS = 50_000


@dataclass(frozen=True)
class Config:
    mode: str = "full"
    dataset: str = "digits"
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    steps: int = 50_000
    hidden: tuple[int, ...] = (100, 100, 100)
    init_std: float = 0.1
    lr: float = 0.5
    batch_size: int = 60
    unit: int = 0
    eval_batch: int = 1000
    n_geometric: int = 30
    n_linear: int = 21
    early_step: int = 500
    target_accuracy: float = 0.9
    factor: float = 2.0
    max_train: int | None = None
    max_val: int | None = None

    @property
    def checkpoints(self) -> tuple[int, ...]:
        """Step 0, ``n_geometric`` steps spaced geometrically from 1 and ``n_linear``
        spaced linearly from 0, to ``steps``, and ``early_step`` (duplicates merged)."""
        geo = np.geomspace(1, self.steps, self.n_geometric).round().astype(int)
        lin = np.linspace(0, self.steps, self.n_linear).round().astype(int)
        early = min(self.early_step, self.steps)
        return tuple(sorted({0, early, self.steps, *geo.tolist(), *lin.tolist()}))

    @property
    def half(self) -> int:
        """The start of the second-half window: the first checkpoint at or after steps / 2."""
        return min(s for s in self.checkpoints if s >= self.steps / 2)


def make_config(mode: str = "full", seed: int = 0, dataset: str = "digits") -> Config:
    """Full: 4 seeds x 50,000 steps, the paper's (MNIST: 3 seeds x 30,000 steps); quick:
    2 seeds x 1,000 steps (MNIST: on 6,000 images); tiny: 2 seeds x 40 steps on 200
    images."""
    mnist = dataset not in ("digits", "mnist1d")
    target = 0.5 if dataset == "mnist1d" else 0.9
    if mode == "full":
        return Config(mode, dataset, _seeds(seed, 3 if mnist else 4),
                      steps=30_000 if mnist else PAPER_STEPS, target_accuracy=target)
    if mode == "quick":
        return Config(mode, dataset, _seeds(seed, 2), steps=1000, n_geometric=12,
                      n_linear=11, target_accuracy=target,
                      max_train=6000 if mnist else None, max_val=2000 if mnist else None)
    return Config(mode, dataset, _seeds(seed, 2), steps=40, n_geometric=5, n_linear=3,
                  eval_batch=100, early_step=10, target_accuracy=target, max_train=200,
                  max_val=100)


def _seeds(first: int, n: int) -> tuple[int, ...]:
    return tuple(range(first, first + n))


# --- the network ------------------------------------------------------------------------


def network(num_features: int, num_classes: int, *, bn: bool,
            hidden: tuple[int, ...] = (100, 100, 100), init_std: float = 0.1,
            rng: np.random.Generator | None = None) -> Sequential:
    """The paper's sigmoid MLP, with or without batch norm in each hidden layer.

    Hidden layers: ``Dense(use_bias=False) -> BatchNorm -> Sigmoid`` with
    ``bn``, ``Dense -> Sigmoid`` without; then ``Dense(hidden[-1],
    num_classes)`` (the logits).  Every weight is ``N(0, init_std**2)``:
    :class:`~fastbn.nn.Dense`'s He-normal draw with ``scale = init_std /
    sqrt(2 / fan_in)``.
    """
    layers = []
    width = num_features
    for h in hidden:
        scale = init_std / math.sqrt(2.0 / width)
        if bn:
            layers += [Dense(width, h, use_bias=False, scale=scale, rng=rng), BatchNorm(h),
                       Sigmoid()]
        else:
            layers += [Dense(width, h, scale=scale, rng=rng), Sigmoid()]
        width = h
    layers.append(Dense(width, num_classes, scale=init_std / math.sqrt(2.0 / width), rng=rng))
    return Sequential(*layers)


def sigmoid_input(model: Sequential, x: np.ndarray) -> np.ndarray:
    """The input of the model's last :class:`~fastbn.nn.Sigmoid` for the batch ``x``.

    Computed in training mode (batch norm normalizes with ``x``'s own
    statistics), with every batch-norm layer's running statistics restored
    afterwards, so that measuring does not change the model.
    """
    saved = [(layer, {k: v.copy() for k, v in layer.buffers.items()})
             for layer in model.modules() if isinstance(layer, BatchNorm)]
    was_training = model.training
    model.train()
    last = None
    try:
        for layer in model:
            if isinstance(layer, Sigmoid):
                last = x
            x = layer(x)
    finally:
        for layer, buffers in saved:
            for k, v in buffers.items():
                layer.buffers[k][...] = v
        model.train(was_training)
    if last is None:
        raise ValueError("sigmoid_input: the model has no Sigmoid layer")
    return last


def _g(v: float) -> float:
    """A measured value rounded to 6 significant digits (keeps the CSV small)."""
    return float(f"{float(v):.6g}")


# --- the experiment ---------------------------------------------------------------------


def run(config: Config, data: Dataset, *, progress: bool = True) -> list[dict]:
    """Rows of kind accuracy / percentile per (model, seed, checkpoint), and of kind
    drift / spread per (model, seed, window, checkpoint in the window)."""
    data = data.subset(config.max_train, config.max_val)
    x_train = data.x_train.reshape(len(data.y_train), -1)
    x_val = data.x_val.reshape(len(data.y_val), -1)
    y_train, y_val = data.y_train, data.y_val
    probe = data.subset(None, config.eval_batch, seed=1).x_val
    probe = probe.reshape(len(probe), -1)
    steps_per_epoch = len(y_train) // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch size {config.batch_size} exceeds the {len(y_train)} "
                         f"training samples")
    checkpoints = config.checkpoints
    rows: list[dict] = []
    bar = report.progress(len(config.seeds) * len(MODELS), NAME, progress)
    crit = SoftmaxCrossEntropy()
    for seed in config.seeds:
        for model_name in MODELS:
            init_rng, order_rng = train.seed_rngs(seed, "init", "order")
            model = network(data.num_features, data.num_classes, bn=model_name == "BN",
                            hidden=config.hidden, init_std=config.init_std, rng=init_rng)
            opt = SGD(model, config.lr)
            base = {"dataset": data.name, "model": model_name, "seed": seed}
            pct = []  # per checkpoint: (3, units) percentiles of the last sigmoid's input
            losses: list[float] = []
            order = np.empty(0, dtype=np.int64)
            step, diverged = 0, False
            model.train()
            with np.errstate(all="ignore"):
                for ck in checkpoints:
                    while step < ck and not diverged:
                        i = step % steps_per_epoch
                        if i == 0:
                            order = order_rng.permutation(len(y_train))
                        idx = order[i * config.batch_size:(i + 1) * config.batch_size]
                        loss = float(crit(model(x_train[idx]), y_train[idx]))
                        if not math.isfinite(loss):
                            diverged = True
                            break
                        losses.append(loss)
                        opt.zero_grad()
                        model.backward(crit.backward())
                        opt.step()
                        step += 1
                    if diverged:
                        rows.append({**base, "kind": "accuracy", "step": step,
                                     "val_accuracy": math.nan, "val_loss": math.nan,
                                     "train_loss": math.nan, "diverged": True})
                        break
                    val_loss, val_acc = train.evaluate(model, x_val, y_val)
                    rows.append({**base, "kind": "accuracy", "step": ck,
                                 "val_accuracy": val_acc, "val_loss": _g(val_loss),
                                 "train_loss": _g(np.mean(losses)) if losses else math.nan,
                                 "diverged": False})
                    losses = []
                    p = np.percentile(sigmoid_input(model, probe).astype(np.float64),
                                      PERCENTILES, axis=0)
                    pct.append(p)
                    for q, v in zip(PERCENTILES, p[:, config.unit], strict=True):
                        rows.append({**base, "kind": "percentile", "step": ck,
                                     "unit": config.unit, "percentile": q, "value": _g(v)})
            if not diverged:
                rows += _drift_rows(base, np.array(pct), checkpoints, config.half)
            bar.update()
    bar.close()
    return rows


def _drift_rows(base: dict, pct: np.ndarray, checkpoints: tuple[int, ...],
                half: int) -> list[dict]:
    """The drift and spread rows of one run from its percentiles ``(checkpoints, 3, units)``."""
    spread = pct[:, 2] - pct[:, 0]                               # (checkpoints, units)
    scale = np.maximum(spread[-1], 1e-12)                        # the final spread per unit
    rows = []
    for since in (0, half):
        i0 = checkpoints.index(since)
        for i in range(i0, len(checkpoints)):
            drift = (np.abs(pct[i] - pct[i0]) / scale).mean(axis=1)      # (3,)
            for q, v in zip(PERCENTILES, drift, strict=True):
                rows.append({**base, "kind": "drift", "step": checkpoints[i], "unit": "all",
                             "percentile": q, "since": since, "value": _g(v)})
            ratio = np.exp(np.mean(np.log(np.maximum(spread[i], 1e-12)
                                          / np.maximum(spread[i0], 1e-12))))
            rows.append({**base, "kind": "spread", "step": checkpoints[i], "unit": "all",
                         "since": since, "value": _g(ratio)})
    return rows


# --- the summary ------------------------------------------------------------------------


def _of(rows, kind, model, **match):
    return [r for r in rows if r["kind"] == kind and r["model"] == model
            and all(_same(r.get(k), v) for k, v in match.items())]


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def _final_step(config: Config) -> int:
    return config.checkpoints[-1]


def _early(config: Config) -> int:
    """The checkpoint of ``early_step`` (the last step if the run is shorter)."""
    return min(config.early_step, config.steps)


def accuracy_at(rows, model, step, config) -> tuple[float, float, int]:
    """Mean, std and count over seeds of the validation accuracy at ``step``."""
    return report.mean_std(r["val_accuracy"] for r in _of(rows, "accuracy", model, step=step))


def steps_to_target(rows, model, config) -> dict[int, float]:
    """Per seed, the first checkpoint at which the validation accuracy reaches the target
    (NaN: never)."""
    out = {}
    for seed in config.seeds:
        mine = sorted(_of(rows, "accuracy", model, seed=seed), key=lambda r: r["step"])
        hit = [r["step"] for r in mine if r["val_accuracy"] >= config.target_accuracy]
        out[seed] = float(hit[0]) if hit else math.nan
    return out


def drift_stats(rows, model, since, config) -> dict[str, list[float]]:
    """Per seed: the largest drift of each percentile over the window, and the final
    spread ratio ``spread(end) / spread(since)``."""
    out = {f"p{q}": [] for q in PERCENTILES}
    out["spread"] = []
    for seed in config.seeds:
        for q in PERCENTILES:
            mine = _of(rows, "drift", model, seed=seed, since=since, percentile=q)
            if mine:
                out[f"p{q}"].append(max(r["value"] for r in mine))
        mine = _of(rows, "spread", model, seed=seed, since=since, step=_final_step(config))
        if mine:
            out["spread"].append(mine[0]["value"])
    return out


def _ratio_text(m: float, s: float) -> str:
    return report.pm(m, s, ".2f") + "x" if math.isfinite(m) else "-"


def summarize(rows: list[dict], config: Config) -> tuple[list[dict], list[str]]:
    final, early = _final_step(config), _early(config)
    table = []
    for model in MODELS:
        hits = steps_to_target(rows, model, config)
        reached = [v for v in hits.values() if math.isfinite(v)]
        m, s, _ = report.mean_std(reached)
        row = {"model": model,
               f"acc % @ {final}": report.pm(*accuracy_at(rows, model, final, config)[:2],
                                             ".1f", 100),
               f"acc % @ {early}": report.pm(*accuracy_at(rows, model, early, config)[:2],
                                             ".1f", 100),
               f"steps to {config.target_accuracy:.0%}":
                   (report.pm(m, s, ".0f") if reached else "never")
                   + (f" ({len(reached)}/{len(hits)})" if len(reached) < len(hits) else "")}
        for since, label in ((0, "since 0"), (config.half, "2nd half")):
            d = drift_stats(rows, model, since, config)
            p15, p50, p85 = (report.mean_std(d[f"p{q}"])[0] for q in PERCENTILES)
            row[f"drift p15/p50/p85 {label}"] = f"{p15:.2f} / {p50:.2f} / {p85:.2f}"
            row[f"spread x {label}"] = _ratio_text(*report.mean_std(d["spread"])[:2])
        table.append(row)
    return table, [_accuracy_verdict(rows, config),
                   _drift_verdict(rows, config, 0, "from step 0"),
                   _drift_verdict(rows, config, config.half,
                                  f"second half, from step {config.half}")]


def _accuracy_verdict(rows, config: Config) -> str:
    final = _final_step(config)
    target = config.target_accuracy
    hits = {m: steps_to_target(rows, m, config) for m in MODELS}
    # a run that never reaches the target counts as taking longer than the whole run
    mean_steps = {m: float(np.mean([v if math.isfinite(v) else math.inf
                                    for v in hits[m].values()])) for m in MODELS}
    speedup = mean_steps["no BN"] / mean_steps["BN"] if mean_steps["BN"] > 0 else math.nan
    faster = math.isfinite(mean_steps["BN"]) and speedup >= config.factor
    (bn, bn_s, bn_n), (no, no_s, no_n) = (accuracy_at(rows, m, final, config)
                                          for m in MODELS)
    se = math.sqrt(bn_s ** 2 / max(bn_n, 1) + no_s ** 2 / max(no_n, 1))
    higher = bn - no > 2 * se
    word = ("REPRODUCED" if faster and higher else
            "PARTLY REPRODUCED (faster, but not higher accuracy)" if faster else
            "PARTLY REPRODUCED (higher accuracy, not 2x faster)" if higher else
            "NOT REPRODUCED")

    def steps(m):
        reached = [v for v in hits[m].values() if math.isfinite(v)]
        if not reached:
            return f"never within {final} steps"
        text = f"{np.mean(reached):.0f} steps"
        return text + (f" ({len(reached)}/{len(hits[m])} seeds reach it)"
                       if len(reached) < len(hits[m]) else "")

    if math.isfinite(speedup):
        ratio = f"{speedup:.1f}x fewer with BN"
    elif math.isfinite(mean_steps["BN"]) and mean_steps["BN"] > 0:
        ratio = f"at least {final / mean_steps['BN']:.0f}x fewer with BN"
    else:
        ratio = "no ratio: not every seed with BN reaches it"
    return (f"Claim 'BN trains faster and reaches higher accuracy' (Figure 1a): {word} -- "
            f"{target:.0%} validation accuracy after {steps('BN')} with BN vs {steps('no BN')} "
            f"without ({ratio}); at step {final}: {report.pm(bn, bn_s, '.1f', 100)} % with BN "
            f"vs {report.pm(no, no_s, '.1f', 100)} % without (difference "
            f"{100 * (bn - no):+.1f} points, 2 SE = {200 * se:.1f}).")


def _drift_verdict(rows, config: Config, since: int, tag: str) -> str:
    stats = {m: drift_stats(rows, m, since, config) for m in MODELS}
    median = {m: report.mean_std(stats[m]["p50"])[0] for m in MODELS}
    spread = {m: report.mean_std(stats[m]["spread"])[0] for m in MODELS}
    change = {m: abs(math.log(spread[m])) if spread[m] > 0 else math.nan for m in MODELS}
    k = config.factor
    moves = median["no BN"] >= k * median["BN"]
    widens = change["no BN"] >= k * change["BN"]
    word = ("REPRODUCED" if moves and widens else
            "PARTLY REPRODUCED (the median drifts more without BN; the spread does not "
            "change more)" if moves else
            "PARTLY REPRODUCED (the spread changes more without BN; the median does not "
            "drift more)" if widens else
            "NOT REPRODUCED")
    return (f"Claim 'without BN the input distribution of a last-layer sigmoid drifts; with "
            f"BN it stays put' ({tag}): {word} -- largest median drift, mean over the "
            f"{config.hidden[-1]} units, in units of the final 15-85 spread: "
            f"{median['no BN']:.3f} without BN vs {median['BN']:.3f} with; spread at the end "
            f"/ at the start: {spread['no BN']:.3g}x without vs {spread['BN']:.3g}x with "
            f"(a 'drifts' needs {k:g}x the BN value in both).")


# --- the figure -------------------------------------------------------------------------


def _series(rows, kind, model, value="value", **match):
    """Steps and per-step mean and std over seeds of ``value``."""
    by_step: dict[float, list[float]] = {}
    for r in _of(rows, kind, model, **match):
        by_step.setdefault(float(r["step"]), []).append(r[value])
    steps = sorted(by_step)
    stats = [report.mean_std(by_step[s]) for s in steps]
    return (np.array(steps), np.array([m for m, _, _ in stats]),
            np.array([s for _, s, _ in stats]))


def plot(rows: list[dict], config: Config, path: str, caption: str) -> None:
    plt = report.pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.6))
    colors = {"BN": "C0", "no BN": "C3"}
    seed = config.seeds[0]

    def steps_axis(ax):
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(0, config.steps)
        ax.set_xlabel("training step (symlog)")
        ax.grid(alpha=0.3)

    ax = axes[0, 0]
    for model in MODELS:
        x, m, s = _series(rows, "accuracy", model, "val_accuracy")
        report.band(ax, x, 100 * m, 100 * s, model, color=colors[model])
    ax.set(ylabel="validation accuracy (%)", title="(a) validation accuracy", ylim=(0, 100))
    ax.legend(fontsize=8, loc="lower right")
    steps_axis(ax)

    lo, hi = math.inf, -math.inf
    for ax, model, letter in ((axes[0, 1], "no BN", "b"), (axes[0, 2], "BN", "c")):
        for q, style in zip(PERCENTILES, (":", "-", "--"), strict=True):
            mine = sorted(_of(rows, "percentile", model, seed=seed, percentile=q),
                          key=lambda r: r["step"])
            xs = [r["step"] for r in mine]
            ys = [r["value"] for r in mine]
            if ys:
                lo, hi = min(lo, *ys), max(hi, *ys)
            ax.plot(xs, ys, style, color=colors[model], label=f"{q}th percentile")
        ax.set(ylabel="input to the sigmoid",
               title=f"({letter}) {model}: unit {config.unit} of the last hidden layer")
        ax.legend(fontsize=8, loc="best")
        steps_axis(ax)
    if math.isfinite(lo):
        pad = 0.05 * (hi - lo or 1.0)
        for ax in axes[0, 1:]:
            ax.set_ylim(lo - pad, hi + pad)

    ax = axes[1, 0]
    for model in MODELS:
        x, m, s = _series(rows, "drift", model, since=0, percentile=50)
        report.band(ax, x, m, s, model, color=colors[model])
    ax.set(ylabel="|median(t) - median(0)| / final spread",
           title="(d) median drift from step 0 (all units)")
    ax.legend(fontsize=8, loc="upper left")
    steps_axis(ax)

    ax = axes[1, 1]
    for model in MODELS:
        for q, style in ((15, ":"), (85, "--")):
            x, m, s = _series(rows, "drift", model, since=0, percentile=q)
            ax.plot(x, m, style, color=colors[model], label=f"{model}, {q}th")
    ax.set(ylabel="|p(t) - p(0)| / final spread",
           title="(e) 15th, 85th percentile drift (all units)")
    ax.legend(fontsize=8, loc="upper left")
    steps_axis(ax)

    ax = axes[1, 2]
    for model in MODELS:
        x, m, s = _series(rows, "spread", model, since=0)
        report.band(ax, x, m, s, model, color=colors[model])
    ax.set_yscale("log")
    ax.set(ylabel="spread(t) / spread(0)  (15th-85th)",
           title="(f) spread / spread at step 0 (all units)")
    ax.legend(fontsize=8, loc="upper left")
    steps_axis(ax)

    fig.suptitle(f"Internal covariate shift (Ioffe & Szegedy 2015, Fig. 1): 3 x 100 sigmoid "
                 f"MLP on {config.dataset}, SGD lr {config.lr:g}, batch {config.batch_size}, "
                 f"weights N(0, {config.init_std:g}²), {config.steps:,} steps "
                 + ("(as the paper)" if config.steps == PAPER_STEPS
                    else f"(the paper: {PAPER_STEPS:,})")
                 + f", {len(config.seeds)} seeds", fontsize=10)
    report.save_figure(fig, path, caption)
