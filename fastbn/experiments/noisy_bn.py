"""Experiment ``noisy-bn``: Santurkar et al. (2018), Figure 2, on a ReLU MLP.

Santurkar, Tsipras, Ilyas and Madry ("How does batch normalization help
optimization?", NeurIPS 2018) question the idea that batch norm works by
reducing internal covariate shift.  Their Figure 2 trains a VGG network
three ways: without batch norm ("standard"), with it, and with "noisy" batch
norm, which adds, after every batch-norm layer, noise with a non-zero mean
and a non-unit variance that is re-drawn at every step, so that the layers'
input distributions are "completely unstable".  The noisy network "nearly
matches the performance" of the one with plain batch norm, and its
activations' distributions move more than even the standard network's.

The same comparison here, on :func:`fastbn.experiments.santurkar.network`
(5 hidden ReLU layers of 100 units) in its three kinds, on MNIST-1D by
default (flattened): ``standard`` (``Dense -> ReLU``), ``BN`` (``Dense ->
BatchNorm -> ReLU``) and ``noisy BN`` (``Dense -> BatchNorm -> BatchNoise ->
ReLU``, with :class:`~fastbn.experiments.santurkar.BatchNoise`'s default
distributions: per step and unit a mean from ``U(-0.5, 0.5)`` and a scale
from ``U(1, 1.5)``, and per activation a jitter of standard deviation 0.1
on both).  The three kinds of one seed start from the same weights and see
the same batches.  SGD with momentum 0.9 at ``lr`` 0.05, batch 64, on a
fresh shuffle every epoch (the last incomplete batch dropped).

Measured (rows of ``kind``):

* ``accuracy`` -- at each checkpoint, the validation accuracy and loss and
  the accuracy on a fixed class-stratified subset of ``eval_train``
  training samples (eval mode: batch norm uses its running statistics,
  BatchNoise its expectation), and the mean training loss of the batches
  since the previous checkpoint (with the noise, as trained);
* ``step_change`` -- the stability of the layers' inputs.  For each hidden
  layer in ``layers`` (1-based), its output -- the input of the next
  ``Dense``, after the ReLU, as the network computes it in training: batch
  norm with the batch's own statistics, BatchNoise drawing fresh noise -- on
  a fixed evaluation batch of ``eval_batch`` validation samples, without
  changing the model (:func:`~fastbn.experiments.santurkar.unchanged_state`).
  Per unit, its mean and standard deviation over the batch.  In windows of
  ``window`` consecutive steps (starting at ``window_starts``), the change
  per step ``|mean_j(t + 1) - mean_j(t)|`` (``stat="mean"``) and
  ``|std_j(t + 1) - std_j(t)|`` (``stat="std"``), averaged over the units
  and the window's steps (``value``), and the same divided by the units'
  average standard deviation at the window's start (``relative``);
* ``drift`` -- at each checkpoint, per layer and stat, the distance from
  step 0, ``|mean_j(t) - mean_j(0)|`` (or of the std), averaged over units;
* ``percentile`` -- at each checkpoint, the 15th, 50th and 85th percentiles
  over the evaluation batch of unit ``unit``'s ReLU input (the batch-norm
  output, noise included; the standard network's pre-activation), of each
  layer in ``layers``: the traces of the paper's activation histograms.

Summary: per kind, the final and the best validation accuracy, the final
training accuracy and loss, the per-step changes averaged over the windows,
and the final drift, mean ± std over seeds.  Verdicts: noisy BN trains as
well as BN (its final and its best validation accuracy are at least BN's
minus twice the standard error of the difference); noisy BN's layer inputs
are less stable than the standard network's (its per-step change is at
least ``factor`` = 2 times the standard network's, for the mean and the std
of every layer in ``layers``); and, as a control, BN's are more stable than
the standard network's (the same test the other way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..nn import SGD, ReLU, Sequential, SoftmaxCrossEntropy
from . import report, santurkar, train
from .data import Dataset, stratified_subset

NAME = "noisy-bn"
MODELS = santurkar.KINDS
SPREAD = "bands: ±1 std over seeds; (g-i): the first seed"
DATA = "mnist1d"
PERCENTILES = (15, 50, 85)
STATS = ("mean", "std")


@dataclass(frozen=True)
class Config:
    mode: str = "full"
    dataset: str = "mnist1d"
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    steps: int = 8000
    hidden: tuple[int, ...] = santurkar.HIDDEN
    lr: float = 0.05
    momentum: float = 0.9
    batch_size: int = 64
    layers: tuple[int, ...] = (3, 5)
    unit: int = 0
    eval_batch: int = 500
    eval_train: int = 1000
    window: int = 10
    n_windows: int = 9
    n_geometric: int = 12
    n_linear: int = 41
    factor: float = 2.0
    max_train: int | None = None
    max_val: int | None = None

    @property
    def checkpoints(self) -> tuple[int, ...]:
        """Step 0, ``n_geometric`` steps spaced geometrically from 1 and ``n_linear``
        spaced linearly from 0, to ``steps`` (duplicates merged)."""
        geo = np.geomspace(1, self.steps, self.n_geometric).round().astype(int)
        lin = np.linspace(0, self.steps, self.n_linear).round().astype(int)
        return tuple(sorted({0, self.steps, *geo.tolist(), *lin.tolist()}))

    @property
    def window_starts(self) -> tuple[int, ...]:
        """The first steps of the ``n_windows`` windows, spaced linearly from 0 to
        ``steps - window``."""
        last = self.steps - self.window
        return tuple(sorted({int(s) for s in np.linspace(0, last, self.n_windows).round()}))

    @property
    def measured_steps(self) -> frozenset[int]:
        """Every step at which a window measures the layers' inputs."""
        return frozenset(s + k for s in self.window_starts for k in range(self.window + 1))


def make_config(mode: str = "full", seed: int = 0, dataset: str = "mnist1d") -> Config:
    """Full: 5 seeds x 8,000 steps; quick: 2 seeds x 500 steps (MNIST: 2,000 validation
    images); tiny: 2 seeds x 30 steps on 200 samples."""
    mnist = dataset not in ("digits", "mnist1d")
    if mode == "full":
        return Config(mode, dataset, _seeds(seed, 5))
    if mode == "quick":
        return Config(mode, dataset, _seeds(seed, 2), steps=500, n_windows=6, n_geometric=8,
                      n_linear=11, max_val=2000 if mnist else None)
    return Config(mode, dataset, _seeds(seed, 2), steps=30, window=3, n_windows=3,
                  n_geometric=4, n_linear=4, eval_batch=100, eval_train=100, max_train=200,
                  max_val=100)


def _seeds(first: int, n: int) -> tuple[int, ...]:
    return tuple(range(first, first + n))


def _g(v: float) -> float:
    """A measured value rounded to 6 significant digits (keeps the CSV small)."""
    return float(f"{float(v):.6g}")


# --- the measurement ----------------------------------------------------------------------


def layer_inputs(model: Sequential, x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per hidden layer, input first: ``(relu_input, relu_output)`` for the batch ``x``.

    ``relu_output`` is the input of the next Dense layer.  Computed in
    training mode -- batch norm normalizes with ``x``'s own statistics and
    BatchNoise draws noise -- inside :func:`~fastbn.experiments.santurkar.unchanged_state`,
    so batch norm's running statistics and the noise generators are as before
    and the training that follows is not changed.
    """
    out = []
    with santurkar.unchanged_state(model), np.errstate(all="ignore"):
        model.train()
        for layer in model:
            y = layer(x)
            if isinstance(layer, ReLU):
                out.append((x, y))
            x = y
    return out


def moments(z: np.ndarray) -> np.ndarray:
    """Per unit (column) of ``z``, its mean and standard deviation over the batch: ``(2, C)``."""
    z = np.asarray(z, dtype=np.float64)
    return np.stack([z.mean(axis=0), z.std(axis=0)])


def step_changes(series: np.ndarray) -> np.ndarray:
    """The mean per-step change of each stat over a window.

    ``series`` is ``(steps + 1, 2, C)``: the :func:`moments` at consecutive
    steps.  Returns ``(2,)``: ``mean over t and j of |s_j(t + 1) - s_j(t)|``
    for the mean and for the std.
    """
    series = np.asarray(series, dtype=np.float64)
    if len(series) < 2:
        raise ValueError("step_changes needs the moments of at least two consecutive steps")
    return np.abs(np.diff(series, axis=0)).mean(axis=(0, 2))


# --- the experiment -----------------------------------------------------------------------


def run(config: Config, data: Dataset, *, progress: bool = True) -> list[dict]:
    """Rows of kind accuracy / drift / percentile per (model, seed, checkpoint), and of
    kind step_change per (model, seed, window)."""
    data = data.subset(config.max_train, config.max_val)
    x_train = data.x_train.reshape(len(data.y_train), -1)
    x_val = data.x_val.reshape(len(data.y_val), -1)
    y_train, y_val = data.y_train, data.y_val
    probe = data.subset(None, config.eval_batch, seed=1).x_val
    probe = probe.reshape(len(probe), -1)
    fit_idx = (stratified_subset(y_train, config.eval_train, 2)
               if config.eval_train < len(y_train) else np.arange(len(y_train)))
    steps_per_epoch = len(y_train) // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch size {config.batch_size} exceeds the {len(y_train)} "
                         f"training samples")
    if max(config.layers) > len(config.hidden) or min(config.layers) < 1:
        raise ValueError(f"layers {config.layers} must be in 1..{len(config.hidden)}")
    checkpoints = set(config.checkpoints)
    measured = config.measured_steps
    starts = set(config.window_starts)
    rows: list[dict] = []
    bar = report.progress(len(config.seeds) * len(MODELS), NAME, progress)
    crit = SoftmaxCrossEntropy()
    for seed in config.seeds:
        for model_name in MODELS:
            init_rng, order_rng, noise_rng = train.seed_rngs(seed, "init", "order", "noise")
            model = santurkar.network(data.num_features, data.num_classes, kind=model_name,
                                      hidden=config.hidden, rng=init_rng,
                                      noise_rng=noise_rng)
            opt = SGD(model, config.lr, momentum=config.momentum)
            base = {"dataset": data.name, "model": model_name, "seed": seed}
            start_moments = None
            window: dict[int, list[np.ndarray]] = {}
            losses: list[float] = []
            order = np.empty(0, dtype=np.int64)
            diverged = False
            model.train()
            with np.errstate(all="ignore"):
                for step in range(config.steps + 1):
                    if step in checkpoints or step in measured:
                        acts = layer_inputs(model, probe)
                        mom = np.stack([moments(acts[k - 1][1]) for k in config.layers])
                        if step in starts:
                            window[step] = []
                        for s, series in window.items():
                            series.append(mom)
                            if len(series) == config.window + 1:
                                rows += _change_rows(base, s, np.array(series), config)
                        window = {s: v for s, v in window.items()
                                  if len(v) < config.window + 1}
                    if step in checkpoints:
                        if start_moments is None:
                            start_moments = mom
                        rows += _checkpoint_rows(base, step, model, acts, mom, start_moments,
                                                 losses, x_val, y_val, x_train[fit_idx],
                                                 y_train[fit_idx], config)
                        losses = []
                    if step == config.steps:
                        break
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
            if diverged:
                rows.append({**base, "kind": "accuracy", "step": step + 1,
                             "val_accuracy": math.nan, "val_loss": math.nan,
                             "train_accuracy": math.nan, "train_loss": math.nan,
                             "diverged": True})
            bar.update()
    bar.close()
    return rows


def _checkpoint_rows(base, step, model, acts, mom, start_moments, losses, x_val, y_val,
                     x_fit, y_fit, config: Config) -> list[dict]:
    val_loss, val_acc = train.evaluate(model, x_val, y_val)
    _, fit_acc = train.evaluate(model, x_fit, y_fit)
    rows = [{**base, "kind": "accuracy", "step": step, "val_accuracy": _g(val_acc),
             "val_loss": _g(val_loss), "train_accuracy": _g(fit_acc),
             "train_loss": _g(np.mean(losses)) if losses else math.nan, "diverged": False}]
    drift = np.abs(mom - start_moments).mean(axis=2)                 # (layers, 2)
    for li, layer in enumerate(config.layers):
        for si, stat in enumerate(STATS):
            rows.append({**base, "kind": "drift", "step": step, "layer": layer, "stat": stat,
                         "value": _g(drift[li, si])})
        pre = np.asarray(acts[layer - 1][0][:, config.unit], dtype=np.float64)
        for q, v in zip(PERCENTILES, np.percentile(pre, PERCENTILES), strict=True):
            rows.append({**base, "kind": "percentile", "step": step, "layer": layer,
                         "unit": config.unit, "percentile": q, "value": _g(v)})
    return rows


def _change_rows(base, start, series: np.ndarray, config: Config) -> list[dict]:
    """The step_change rows of one window from its moments ``(window + 1, layers, 2, C)``."""
    rows = []
    for li, layer in enumerate(config.layers):
        change = step_changes(series[:, li])
        scale = max(float(series[0, li, 1].mean()), 1e-12)
        for si, stat in enumerate(STATS):
            rows.append({**base, "kind": "step_change", "step": start, "layer": layer,
                         "stat": stat, "value": _g(change[si]),
                         "relative": _g(change[si] / scale)})
    return rows


# --- the summary --------------------------------------------------------------------------


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def _of(rows, kind, model, **match):
    return [r for r in rows if r["kind"] == kind and r["model"] == model
            and all(_same(r.get(k), v) for k, v in match.items())]


def accuracy(rows, model, config: Config, which: str = "final",
             column: str = "val_accuracy") -> list[float]:
    """Per seed, ``column`` at the last step (``which="final"``) or its largest value over
    the checkpoints (``"best"``); NaN for a diverged run."""
    out = []
    for seed in config.seeds:
        mine = [r for r in _of(rows, "accuracy", model, seed=seed) if not r.get("diverged")]
        if any(r.get("diverged") for r in _of(rows, "accuracy", model, seed=seed)):
            out.append(math.nan)
        elif which == "best":
            out.append(max(r[column] for r in mine))
        else:
            out.append(next(r[column] for r in mine if _same(r["step"], config.steps)))
    return out


def mean_change(rows, model, layer, stat, config: Config, column: str = "value") -> list[float]:
    """Per seed, the per-step change of ``stat`` of ``layer``'s input, averaged over the
    windows."""
    out = []
    for seed in config.seeds:
        mine = _of(rows, "step_change", model, seed=seed, layer=layer, stat=stat)
        if mine:
            out.append(float(np.mean([r[column] for r in mine])))
    return out


def final_drift(rows, model, layer, stat, config: Config) -> list[float]:
    """Per seed, the drift of ``stat`` of ``layer``'s input from step 0 to the last step."""
    return [r["value"] for r in _of(rows, "drift", model, layer=layer, stat=stat,
                                    step=config.steps)]


def _m(values) -> float:
    return report.mean_std(values)[0]


def summarize(rows: list[dict], config: Config) -> tuple[list[dict], list[str]]:
    table = []
    for model in MODELS:
        row = {"model": model,
               "val acc % (final)": report.pm(*report.mean_std(
                   accuracy(rows, model, config))[:2], ".1f", 100),
               "val acc % (best)": report.pm(*report.mean_std(
                   accuracy(rows, model, config, "best"))[:2], ".1f", 100),
               "train acc %": report.pm(*report.mean_std(
                   accuracy(rows, model, config, column="train_accuracy"))[:2], ".1f", 100),
               "train loss": report.pm(*report.mean_std(
                   accuracy(rows, model, config, column="train_loss"))[:2], ".3f")}
        for stat in STATS:
            for layer in config.layers:
                row[f"d{stat}/step L{layer}"] = report.pm(*report.mean_std(
                    mean_change(rows, model, layer, stat, config))[:2], ".4f")
        row["mean drift L" + "/L".join(map(str, config.layers))] = " / ".join(
            f"{_m(final_drift(rows, model, layer, 'mean', config)):.3f}"
            for layer in config.layers)
        table.append(row)
    return table, [_accuracy_verdict(rows, config),
                   _stability_verdict(rows, config, "noisy BN", "standard"),
                   _stability_verdict(rows, config, "standard", "BN")]


def _accuracy_verdict(rows, config: Config) -> str:
    parts, ok = [], {}
    for which in ("final", "best"):
        stats = {m: report.mean_std(accuracy(rows, m, config, which)) for m in MODELS}
        (bn, bn_s, bn_n), (noisy, noisy_s, noisy_n) = stats["BN"], stats["noisy BN"]
        se = math.sqrt(bn_s ** 2 / max(bn_n, 1) + noisy_s ** 2 / max(noisy_n, 1))
        ok[which] = math.isfinite(noisy) and noisy >= bn - 2 * se
        std = stats["standard"][0]
        parts.append(f"{which}: noisy BN {report.pm(noisy, noisy_s, '.1f', 100)} % vs BN "
                     f"{report.pm(bn, bn_s, '.1f', 100)} % (difference "
                     f"{100 * (noisy - bn):+.1f} points, 2 SE = {200 * se:.1f}), standard "
                     f"{report.pm(std, stats['standard'][1], '.1f', 100)} %")
        ok[which + " above"] = noisy > std and bn > std
    word = ("REPRODUCED" if ok["final"] and ok["best"] else
            "PARTLY REPRODUCED (the final accuracy only)" if ok["final"] else
            "PARTLY REPRODUCED (the best accuracy only)" if ok["best"] else
            "NOT REPRODUCED")
    above = ("both BN kinds end above the standard network" if ok["final above"] else
             "the BN kinds do not both end above the standard network")
    return (f"Claim 'noisy BN trains as well as BN' (Figure 2, validation accuracy): {word} "
            f"-- {'; '.join(parts)}; {above} ('as well' needs noisy BN at least BN minus "
            f"2 SE, final and best).")


def _stability_verdict(rows, config: Config, moving: str, still: str) -> str:
    ratios = {}
    for layer in config.layers:
        for stat in STATS:
            a = _m(mean_change(rows, moving, layer, stat, config))
            b = _m(mean_change(rows, still, layer, stat, config))
            ratios[(layer, stat)] = a / b if b > 0 else math.inf if a > 0 else math.nan
    k = config.factor
    hold = [key for key, r in ratios.items() if r >= k]
    word = ("REPRODUCED" if len(hold) == len(ratios) else
            "NOT REPRODUCED" if not hold else
            "PARTLY REPRODUCED (" + ", ".join(f"the {s} of layer {la}" for la, s in hold)
            + f" only move {k:g}x more)")
    detail = "; ".join(f"layer {la} {s} {ratios[(la, s)]:.3g}x" for la, s in ratios)
    rel = "; ".join(
        f"layer {la} {s} {_ratio(rows, moving, still, la, s, config):.3g}x"
        for la, s in ratios)
    if moving == "noisy BN":
        claim, tag = ("noisy BN layer inputs are less stable than those of the standard "
                      "network", "Figure 2, activations")
    else:
        claim, tag = ("BN layer inputs move less per step than those of the standard network",
                      "control")
    return (f"Claim '{claim}' ({tag}): {word} -- per-step change of the per-unit mean and "
            f"std of the layer inputs, {moving} / {still}: {detail} (relative to the units' "
            f"std: {rel}; needs {k:g}x in all).")


def _ratio(rows, moving, still, layer, stat, config) -> float:
    a = _m(mean_change(rows, moving, layer, stat, config, "relative"))
    b = _m(mean_change(rows, still, layer, stat, config, "relative"))
    return a / b if b > 0 else math.nan


# --- the figure ---------------------------------------------------------------------------


def _series(rows, kind, model, value="value", **match):
    """Steps and per-step mean and std over seeds of ``value``."""
    by_step: dict[float, list[float]] = {}
    for r in _of(rows, kind, model, **match):
        by_step.setdefault(float(r["step"]), []).append(r[value])
    steps = sorted(by_step)
    stats = [report.mean_std(by_step[s]) for s in steps]
    return (np.array(steps), np.array([m for m, _, _ in stats]),
            np.array([s for _, s, _ in stats]))


COLORS = {"standard": "C3", "BN": "C0", "noisy BN": "C2"}


def plot(rows: list[dict], config: Config, path: str, caption: str) -> None:
    plt = report.pyplot()
    fig, axes = plt.subplots(3, 3, figsize=(14, 11))
    seed = config.seeds[0]
    first, last = config.layers[0], config.layers[-1]

    def steps_axis(ax):
        ax.set_xlim(0, config.steps)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)

    ax = axes[0, 0]
    for model in MODELS:
        x, m, s = _series(rows, "accuracy", model, "val_accuracy")
        report.band(ax, x, 100 * m, 100 * s, model, color=COLORS[model])
    ax.set(ylabel="validation accuracy (%)", title="(a) validation accuracy")
    ax.legend(fontsize=8, loc="lower right")
    steps_axis(ax)

    ax = axes[0, 1]
    for model in MODELS:
        x, m, s = _series(rows, "accuracy", model, "train_loss")
        keep = np.isfinite(m)
        report.band(ax, x[keep], m[keep], s[keep], model, color=COLORS[model])
    ax.set_yscale("log")
    ax.set(ylabel="training loss (mean since last checkpoint)",
           title="(b) training loss (noisy BN: with its noise)")
    ax.legend(fontsize=8, loc="upper right")
    steps_axis(ax)

    from matplotlib.lines import Line2D

    handles = ([Line2D([], [], color=COLORS[m], label=m) for m in MODELS]
               + [Line2D([], [], color="k", linestyle=st, label=f"layer {la}'s output")
                  for la, st in ((first, "-"), (last, "--"))])
    ax = axes[0, 2]
    for model in MODELS:
        for layer, style in ((first, "-"), (last, "--")):
            x, m, s = _series(rows, "drift", model, layer=layer, stat="mean")
            ax.plot(x, m, style, color=COLORS[model])
    ax.set(ylabel="|mean_j(t) - mean_j(0)|, avg over units",
           title="(c) layer inputs' means: drift from step 0")
    ax.legend(handles=handles, fontsize=7, loc="center right")
    steps_axis(ax)

    for ax, stat, column, letter, label in (
            (axes[1, 0], "mean", "value", "d", "|mean_j(t+1) - mean_j(t)|"),
            (axes[1, 1], "std", "value", "e", "|std_j(t+1) - std_j(t)|"),
            (axes[1, 2], "mean", "relative", "f", "|mean_j(t+1) - mean_j(t)| / avg std_j")):
        for model in MODELS:
            for layer, style in ((first, "-"), (last, "--")):
                x, m, s = _series(rows, "step_change", model, column, layer=layer, stat=stat)
                if layer == first:
                    report.band(ax, x, m, s, model, color=COLORS[model], linestyle=style,
                                marker="o", markersize=3)
                else:
                    ax.plot(x, m, style, color=COLORS[model], marker="o", markersize=3)
        ax.set_yscale("log")
        ax.set(ylabel=label + ", avg over units",
               title=(f"({letter}) change per step of the inputs' {stat}"
                      if column == "value" else f"({letter}) (d), divided by the units' std"))
        if letter == "d":
            ax.legend(handles=handles, fontsize=7, loc="center right")
        ax.set_xlabel(f"training step (windows of {config.window} steps)")
        ax.set_xlim(0, config.steps)
        ax.grid(alpha=0.3)

    for ax, model, letter in zip(axes[2], MODELS, "ghi", strict=True):
        for layer, color in ((first, COLORS[model]), (last, "0.5")):
            p = {q: sorted(_of(rows, "percentile", model, seed=seed, layer=layer,
                               percentile=q), key=lambda r: r["step"]) for q in PERCENTILES}
            xs = [r["step"] for r in p[50]]
            if not xs:
                continue
            p15, p50, p85 = ([r["value"] for r in p[q]] for q in PERCENTILES)
            ax.fill_between(xs, p15, p85, color=color, alpha=0.2, linewidth=0,
                            label=f"layer {layer}: 15th-85th percentile")
            ax.plot(xs, p50, color=color, label=f"layer {layer}: median")
        ax.set(ylabel=f"ReLU input of unit {config.unit} (own scale)",
               title=f"({letter}) {model}: unit {config.unit} over the eval batch")
        ax.legend(fontsize=7, loc="best")
        steps_axis(ax)

    fig.suptitle(f"Noisy batch norm (Santurkar et al. 2018, Fig. 2): "
                 f"{len(config.hidden)} x {config.hidden[0]} ReLU MLP on {config.dataset}, "
                 f"SGD lr {config.lr:g} momentum {config.momentum:g}, batch "
                 f"{config.batch_size}, {len(config.seeds)} seeds", fontsize=11)
    report.save_figure(fig, path, caption)
