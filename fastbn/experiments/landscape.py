"""Experiment ``landscape``: Santurkar et al. (2018), Figure 4, on a ReLU MLP.

Santurkar, Tsipras, Ilyas and Madry argue that batch norm helps because it
makes the loss landscape smoother: at a point of training, the loss and its
gradient change less as one moves along the gradient.  Their Figure 4
measures this at checkpoints of training (VGG on CIFAR-10): they step along
the gradient with a range of step sizes and plot (a) the range of the loss
values reached, (b) the range of the l2 change of the gradient, and (c) the
"effective" beta-smoothness, the largest change of the gradient per unit of
distance moved.

Here the network is :func:`fastbn.experiments.santurkar.network`, five
hidden ReLU layers of 100 units, ``"standard"`` (``Dense -> ReLU``) or
``"BN"`` (``Dense -> BatchNorm -> ReLU``), on MNIST-1D flattened to 40
features.  Both kinds of one seed start from the same weights and see the
same batches (:func:`fastbn.experiments.train.seed_rngs`, streams "init" and
"order").  Plain SGD (no momentum, no weight decay), batch 64, a fresh
shuffle every epoch (the last incomplete batch dropped), at two learning
rates (``lrs``: 0.1 and 0.4; both kinds train at both; in a trial run, seed 0,
3,000 steps, the standard network diverged at 1.0 and trained at 0.6).  A
run whose batch loss turns non-finite or exceeds ``explode_ratio`` times
``max(first loss, log(classes))`` stops there and is recorded as diverged.

At every ``every``-th step *t* (before the step is taken), on that step's
batch, with training-mode batch norm (the batch's own statistics; running
statistics untouched, :func:`~fastbn.experiments.santurkar.loss_and_grads`):

* the gradient :math:`g = \\nabla L(\\theta)` over every parameter (weights,
  biases, batch norm's gamma and beta);
* for every step size :math:`\\eta` in ``etas`` (0.05, 0.10, ..., 0.40, the
  range of the paper's figure, the same at both learning rates), the loss
  :math:`L(\\theta - \\eta g)` and the gradient :math:`\\nabla L(\\theta -
  \\eta g)` on the *same* batch;
* ``loss_range``: the *loss variation*, max minus min of the loss over the
  starting point and the ``etas`` (``loss``, ``loss_min``, ``loss_max``: the
  loss at :math:`\\theta` and the extremes over the ``etas``);
* ``grad_change_min`` / ``grad_change_max``: the range over the ``etas`` of
  the *gradient predictiveness* :math:`\\|\\nabla L(\\theta) - \\nabla
  L(\\theta - \\eta g)\\|_2`;
* ``beta``: the *effective beta-smoothness*, :math:`\\max_\\eta \\|\\nabla
  L(\\theta) - \\nabla L(\\theta - \\eta g)\\|_2 / \\|\\eta g\\|_2`;
* ``grad_norm``: :math:`\\|g\\|_2` (so ``eta * grad_norm`` is the distance
  moved).

The parameters are then restored and the ordinary training step is taken:
the measurement does not change the training trajectory.  After the last
step, the validation accuracy (eval mode, running statistics) is recorded.

Summary: per (learning rate, kind), the mean over the checkpoints of one run
of each measure (loss variation, the largest gradient change, beta), as mean
± std over seeds, and the final validation accuracy.  Verdicts, per learning
rate: BN's mean is lower than the standard network's by more than twice the
standard error of the difference (over seeds, unpaired): REPRODUCED, with
the factor standard / BN; otherwise NOT REPRODUCED, saying whether BN's is
higher by more than 2 SE, with the numbers.  Both over all checkpoints and
over the checkpoints before step ``early`` (at lr 0.1 the standard network
fits its training batches to a loss near zero around step 1,800 in a trial
run, after which every gradient, and so every measure, shrinks towards
zero; BN, whose batch statistics keep changing, does not).  A step that makes
the loss non-finite makes its run's mean infinite (worse).

The full run (5 seeds, 4,000 steps, 20 runs) takes about 2 minutes on 2
cores, ``--quick`` (2 seeds, 400 steps) about 15 s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..nn import SGD, SoftmaxCrossEntropy
from . import report, santurkar, train
from .data import Dataset

NAME = "landscape"
MODELS = ("standard", "BN")
DATA = "mnist1d"
SPREAD = ("(a, b) bands: min to max over the step sizes eta, each the mean over seeds; "
          "lines: the loss at theta (a), the largest change (b); (c) mean ± 1 std over seeds")
#: The paper's range of step sizes along the gradient.
PAPER_ETAS = (0.05, 0.4)
#: The three measures of the verdicts: column, claim, short label.
MEASURES = (("loss_range", "BN makes the loss change less along the gradient", "loss variation"),
            ("grad_change_max", "BN makes the gradient more predictive", "gradient change"),
            ("beta", "BN lowers the effective beta-smoothness", "beta-smoothness"))


@dataclass(frozen=True)
class Config:
    mode: str = "full"
    dataset: str = "mnist1d"
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    lrs: tuple[float, ...] = (0.1, 0.4)
    steps: int = 4000
    every: int = 40
    early: int = 1000
    etas: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 9))
    batch_size: int = 64
    hidden: tuple[int, ...] = santurkar.HIDDEN
    explode_ratio: float = train.EXPLODE_RATIO
    max_train: int | None = None
    max_val: int | None = None

    @property
    def checkpoints(self) -> tuple[int, ...]:
        """The steps measured: 0, ``every``, ... below ``steps`` (each before its step)."""
        return tuple(range(0, self.steps, self.every))


def make_config(mode: str = "full", seed: int = 0, dataset: str = "mnist1d") -> Config:
    """Full: 5 seeds x 4,000 steps, every 40th measured; quick: 2 seeds x 400 steps,
    every 20th; tiny: 2 seeds x 30 steps on 200 samples, 4 step sizes."""
    mnist = dataset not in ("digits", "mnist1d")
    if mode == "full":
        return Config(mode, dataset, _seeds(seed, 5))
    if mode == "quick":
        return Config(mode, dataset, _seeds(seed, 2), steps=400, every=20, early=100,
                      max_train=6000 if mnist else None, max_val=2000 if mnist else None)
    return Config(mode, dataset, _seeds(seed, 2), steps=30, every=10, early=10,
                  etas=(0.1, 0.2, 0.3, 0.4), max_train=200, max_val=100)


def _seeds(first: int, n: int) -> tuple[int, ...]:
    return tuple(range(first, first + n))


def _g(v: float) -> float:
    """A measured value rounded to 6 significant digits (keeps the CSV small)."""
    return float(f"{float(v):.6g}")


# --- the measurement ----------------------------------------------------------------------


LossAndGrads = Callable[[Sequence[np.ndarray]], tuple[float, list[np.ndarray]]]


def _norm(arrays: Sequence[np.ndarray]) -> float:
    return math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays))


def along_gradient(fn: LossAndGrads, theta: Sequence[np.ndarray],
                   etas: Sequence[float]) -> dict:
    """Step from ``theta`` along minus the gradient and measure the loss and the gradient.

    ``fn(params) -> (loss, grads)`` is the loss and its gradient at a point
    (a list of arrays).  With :math:`g = \\nabla L(\\theta)`, for each
    :math:`\\eta` of ``etas`` this evaluates :math:`L(\\theta - \\eta g)` and
    :math:`\\nabla L(\\theta - \\eta g)`.

    Returns
    -------
    dict
        ``loss`` (:math:`L(\\theta)`), ``grad_norm`` (:math:`\\|g\\|`),
        ``losses`` and ``grad_changes`` (one per eta: :math:`L(\\theta - \\eta
        g)` and :math:`\\|g - \\nabla L(\\theta - \\eta g)\\|`), ``loss_range``
        (max minus min of ``loss`` and ``losses``) and ``beta`` (the largest
        ``grad_changes / (eta * grad_norm)``; NaN where :math:`g = 0`).
    """
    if not etas or any(not eta > 0 for eta in etas):
        raise ValueError(f"etas must be positive; got {tuple(etas)}")
    loss0, g = fn(theta)
    norm = _norm(g)
    losses, changes = [], []
    with np.errstate(all="ignore"):
        for eta in etas:
            point = [p - np.asarray(eta, dtype=p.dtype) * d for p, d in zip(theta, g,
                                                                              strict=True)]
            loss, grads = fn(point)
            losses.append(float(loss))
            changes.append(_norm([a.astype(np.float64) - b for a, b in zip(grads, g,
                                                                             strict=True)]))
        losses_a, changes_a = np.array(losses), np.array(changes)
        everything = np.append(losses_a, loss0)
        loss_range = (float(everything.max() - everything.min())
                      if np.all(np.isfinite(everything)) else math.inf)
        if norm > 0:
            ratio = changes_a / (np.asarray(etas, dtype=np.float64) * norm)
            beta = float(ratio.max()) if np.all(np.isfinite(ratio)) else math.inf
        else:
            beta = math.nan
    return {"loss": float(loss0), "grad_norm": norm, "losses": losses_a,
            "grad_changes": changes_a, "loss_range": loss_range, "beta": beta}


def probe(model, x: np.ndarray, y: np.ndarray, etas: Sequence[float]) -> dict:
    """:func:`along_gradient` of ``model``'s training-mode loss on the batch ``(x, y)``.

    The loss and gradients are :func:`~fastbn.experiments.santurkar.loss_and_grads`'s
    (batch norm with the batch's statistics, its running statistics left as
    they were); the parameters are restored afterwards, so the model is as it
    was (only the layers' ``grads`` are overwritten).
    """
    theta = santurkar.snapshot(model)

    def fn(params):
        santurkar.restore(model, params)
        return santurkar.loss_and_grads(model, x, y)

    try:
        return along_gradient(fn, theta, etas)
    finally:
        santurkar.restore(model, theta)


# --- the experiment -----------------------------------------------------------------------


def run(config: Config, data: Dataset, *, progress: bool = True) -> list[dict]:
    """Rows of kind ``probe`` per (lr, model, seed, checkpoint) and ``final`` per run."""
    data = data.subset(config.max_train, config.max_val)
    x_val = data.x_val.reshape(len(data.y_val), -1)
    rows: list[dict] = []
    bar = report.progress(len(config.lrs) * len(config.seeds) * len(MODELS), NAME, progress)
    for lr in config.lrs:
        for seed in config.seeds:
            for kind in MODELS:
                base = {"dataset": data.name, "model": kind, "lr": lr, "seed": seed}
                result = train_run(config, data, kind, lr, seed)
                rows += [{**base, "kind": "probe", **r} for r in result.probes]
                with np.errstate(all="ignore"):
                    val_loss, val_acc = (train.evaluate(result.model, x_val, data.y_val)
                                         if not result.diverged else (math.nan, math.nan))
                tail = result.losses[-result.steps_per_epoch:]
                rows.append({**base, "kind": "final", "step": result.steps,
                             "val_accuracy": _g(val_acc), "val_loss": _g(val_loss),
                             "train_loss": _g(np.mean(tail)) if tail else math.nan,
                             "diverged": result.diverged})
                bar.update()
    bar.close()
    return rows


@dataclass
class Result:
    """One training run: the model after it, its probe rows and batch losses."""

    model: object
    probes: list[dict]
    losses: list[float]
    steps: int
    diverged: bool
    steps_per_epoch: int


def train_run(config: Config, data: Dataset, kind: str, lr: float, seed: int, *,
              measure: bool = True) -> Result:
    """Train one network of ``kind`` at ``lr`` for ``config.steps`` steps (``data`` already
    subset), probing at ``config.checkpoints`` (not with ``measure=False``).

    ``steps`` of the result counts the steps taken: a run that diverges stops at
    the step whose loss is non-finite or above ``explode_ratio`` times the
    reference ``max(first loss, log(classes))``, without taking it.
    """
    x_train = data.x_train.reshape(len(data.y_train), -1)
    y_train = data.y_train
    steps_per_epoch = len(y_train) // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch size {config.batch_size} exceeds the {len(y_train)} "
                         f"training samples")
    measured = set(config.checkpoints) if measure else set()
    init_rng, order_rng = train.seed_rngs(seed, "init", "order")
    model = santurkar.network(data.num_features, data.num_classes, kind=kind,
                              hidden=config.hidden, rng=init_rng)
    opt = SGD(model, lr)
    crit = SoftmaxCrossEntropy()
    order = np.empty(0, dtype=np.int64)
    reference, diverged, step = None, False, 0
    probes: list[dict] = []
    losses: list[float] = []
    model.train()
    with np.errstate(all="ignore"):
        while step < config.steps:
            i = step % steps_per_epoch
            if i == 0:
                order = order_rng.permutation(len(y_train))
            idx = order[i * config.batch_size:(i + 1) * config.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            if step in measured:
                probes.append({"step": step, **_probe_row(probe(model, xb, yb, config.etas))})
            loss = float(crit(model(xb), yb))
            if reference is None:
                reference = max(loss, math.log(data.num_classes))
            if not math.isfinite(loss) or loss > config.explode_ratio * reference:
                diverged = True
                break
            losses.append(loss)
            opt.zero_grad()
            model.backward(crit.backward())
            opt.step()
            step += 1
    return Result(model, probes, losses, step, diverged, steps_per_epoch)


def _probe_row(m: dict) -> dict:
    finite = m["losses"][np.isfinite(m["losses"])]
    return {"loss": _g(m["loss"]),
            "loss_min": _g(finite.min()) if finite.size else math.nan,
            "loss_max": _g(m["losses"].max()),
            "loss_range": _g(m["loss_range"]),
            "grad_norm": _g(m["grad_norm"]),
            "grad_change_min": _g(m["grad_changes"].min()),
            "grad_change_max": _g(m["grad_changes"].max()),
            "beta": _g(m["beta"])}


# --- the summary --------------------------------------------------------------------------


def _of(rows, kind, **match):
    return [r for r in rows if r["kind"] == kind
            and all(_same(r.get(k), v) for k, v in match.items())]


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def run_means(rows, model, lr, column, config: Config, until: int | None = None
              ) -> list[float]:
    """Per seed, the mean over the run's checkpoints (those before ``until``) of ``column``.

    A non-finite value (a step that blew the loss up) makes the seed's mean
    infinite; a seed with no checkpoint is left out.
    """
    out = []
    for seed in config.seeds:
        values = [r[column] for r in _of(rows, "probe", model=model, lr=lr, seed=seed)
                  if until is None or r["step"] < until]
        if values:
            v = np.asarray(values, dtype=float)
            out.append(float(v.mean()) if np.all(np.isfinite(v)) else math.inf)
    return out


def finals(rows, model, lr) -> list[dict]:
    return _of(rows, "final", model=model, lr=lr)


def diverged_text(rows, model, lr) -> str:
    """``""`` or ``"; the standard network diverged in 2/5 seeds (at steps 12, 30)"``."""
    fin = finals(rows, model, lr)
    bad = [r for r in fin if r["diverged"]]
    if not bad:
        return ""
    steps = ", ".join(str(int(r["step"])) for r in bad)
    return f"; the {model} network diverged in {len(bad)}/{len(fin)} seeds (at step {steps})"


def summarize(rows: list[dict], config: Config) -> tuple[list[dict], list[str]]:
    """Per (lr, model) and window (all steps, the first ``early``): the run means of the
    three measures (mean ± std over seeds); the final validation accuracy; the verdicts."""
    table = []
    for lr in config.lrs:
        for model in MODELS:
            fin = finals(rows, model, lr)
            acc = report.mean_std(r["val_accuracy"] for r in fin)
            bad = sum(bool(r["diverged"]) for r in fin)
            for until in (None, config.early):
                row = {"lr": f"{lr:g}", "model": model,
                       "steps": "all" if until is None else f"< {until}",
                       "val acc %": "" if until is not None else
                       report.pm(acc[0], acc[1], ".1f", 100)
                       + (f" ({bad} diverged)" if bad else "")}
                for column, _, label in MEASURES:
                    row[label] = _pm_text(run_means(rows, model, lr, column, config, until))
                table.append(row)
    verdicts = []
    for column, claim, label in MEASURES:
        for lr in config.lrs:
            verdicts.append(_verdict(rows, config, column, claim, label, lr, None))
    for column, claim, label in MEASURES:
        for lr in config.lrs:
            verdicts.append(_verdict(rows, config, column, claim, label, lr, config.early))
    return table, verdicts


def _pm_text(values: list[float]) -> str:
    if any(math.isinf(v) for v in values):
        return "inf"
    m, s, _ = report.mean_std(values)
    return report.pm(m, s, ".3g") if math.isfinite(m) else "-"


def compare(rows, config: Config, column: str, lr: float, until: int | None = None) -> dict:
    """Standard vs BN on ``column`` at ``lr``: means, stds, counts over seeds, the
    difference standard - BN, its standard error and the factor standard / BN."""
    means = {m: run_means(rows, m, lr, column, config, until) for m in MODELS}
    (s, s_sd, s_n), (b, b_sd, b_n) = (report.mean_std(means[m]) for m in MODELS)
    inf = {m: any(math.isinf(v) for v in means[m]) for m in MODELS}
    se = math.sqrt(s_sd ** 2 / max(s_n, 1) + b_sd ** 2 / max(b_n, 1))
    return {"standard": s, "standard_std": s_sd, "BN": b, "BN_std": b_sd, "diff": s - b,
            "se": se, "factor": s / b if b > 0 else math.nan, "n": min(s_n, b_n), "inf": inf}


def _verdict(rows, config: Config, column: str, claim: str, label: str, lr: float,
             until: int | None) -> str:
    c = compare(rows, config, column, lr, until)
    if c["inf"]["BN"] or c["inf"]["standard"]:
        worse = [m for m in MODELS if c["inf"][m]]
        word = ("REPRODUCED" if worse == ["standard"] else
                "NOT REPRODUCED (BN steps blow the loss up)")
        numbers = f"{' and '.join(worse)}: a step along the gradient made the loss non-finite"
    else:
        enough = c["n"] >= 2
        word = ("REPRODUCED" if enough and c["diff"] > 2 * c["se"] else
                "NOT REPRODUCED (BN higher by more than 2 SE)"
                if enough and c["diff"] < -2 * c["se"] else
                "NOT REPRODUCED (no difference beyond 2 SE)")
        numbers = (f"mean {label} {c['BN']:.4g} ± {c['BN_std']:.2g} with BN vs "
                   f"{c['standard']:.4g} ± {c['standard_std']:.2g} standard "
                   f"(standard / BN = {c['factor']:.2f}x; difference {c['diff']:+.3g}, "
                   f"2 SE = {2 * c['se']:.2g})")
    window = "all steps" if until is None else f"steps < {until}"
    tag = f"lr {lr:g}, {window}"
    return (f"Claim '{claim}' ({tag}): {word} -- {numbers}, mean over the checkpoints and "
            f"{c['n']} seeds{diverged_text(rows, 'standard', lr)}"
            f"{diverged_text(rows, 'BN', lr)}.")


# --- the figure ---------------------------------------------------------------------------


def _series(rows, model, lr, column):
    """Steps and per-step mean and std over seeds of ``column``."""
    by_step: dict[float, list[float]] = {}
    for r in _of(rows, "probe", model=model, lr=lr):
        by_step.setdefault(float(r["step"]), []).append(r[column])
    steps = sorted(by_step)
    stats = [report.mean_std(by_step[s]) for s in steps]
    return (np.array(steps), np.array([m for m, _, _ in stats]),
            np.array([s for _, s, _ in stats]))


def plot(rows: list[dict], config: Config, path: str, caption: str) -> None:
    plt = report.pyplot()
    n = len(config.lrs)
    fig, axes = plt.subplots(n, 3, figsize=(14, 3.9 * n + 0.6), squeeze=False)
    colors = {"standard": "C3", "BN": "C0"}
    for i, lr in enumerate(config.lrs):
        ax_l, ax_g, ax_b = axes[i]
        for model in MODELS:
            c = colors[model]
            x, lo, _ = _series(rows, model, lr, "loss_min")
            _, hi, _ = _series(rows, model, lr, "loss_max")
            _, at, _ = _series(rows, model, lr, "loss")
            if x.size:
                ax_l.fill_between(x, np.minimum(lo, at), np.maximum(hi, at), color=c,
                                  alpha=0.3, linewidth=0)
                ax_l.plot(x, at, color=c, lw=0.8, label=model)
            x, lo, _ = _series(rows, model, lr, "grad_change_min")
            _, hi, _ = _series(rows, model, lr, "grad_change_max")
            if x.size:
                ax_g.fill_between(x, lo, hi, color=c, alpha=0.3, linewidth=0)
                ax_g.plot(x, hi, color=c, lw=0.8, label=model)
            x, m, s = _series(rows, model, lr, "beta")
            if x.size:
                report.band(ax_b, x, m, s, model, color=c)
        eta = f"eta in [{min(config.etas):g}, {max(config.etas):g}]"
        ax_l.set(ylabel="loss", title=f"(a) loss landscape, lr {lr:g}: L(theta - eta g), {eta}")
        ax_g.set(ylabel="||grad L(theta) - grad L(theta - eta g)||",
                 title=f"(b) gradient predictiveness, lr {lr:g}")
        ax_b.set(ylabel="max over eta of ||grad change|| / ||eta g||",
                 title=f"(c) effective beta-smoothness, lr {lr:g}")
        for ax in (ax_l, ax_g, ax_b):
            if 0 < config.early < config.steps:   # the end of the verdicts' early window
                ax.axvline(config.early, color="0.5", ls=":", lw=0.8)
            ax.set_yscale("log")
            ax.set_xlim(0, config.steps)
            ax.set_xlabel("training step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="best")
    width = (f"{len(config.hidden)} x {config.hidden[0]}" if len(set(config.hidden)) == 1
             else "-".join(str(h) for h in config.hidden))
    fig.suptitle(f"Loss landscape along the gradient (Santurkar et al. 2018, Fig. 4): ReLU "
                 f"MLP {width} on {config.dataset}, SGD batch {config.batch_size}, "
                 f"{config.steps:,} steps, every {config.every}th measured, "
                 f"{len(config.seeds)} seeds", fontsize=10)
    report.save_figure(fig, path, caption)
