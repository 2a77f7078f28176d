"""Experiment ``ics``: Santurkar et al. (2018)'s gradient-based internal covariate shift.

Santurkar, Tsipras, Ilyas and Madry, "How does batch normalization help
optimization?" (NeurIPS 2018), Definition 2.1: for layer *i* at step *t*,
with the batch ``(x_t, y_t)`` of that step,

* ``G = grad_{W_i} L(W_1, ..., W_k; x_t, y_t)``, the gradient that the
  usual simultaneous update of all layers applies to layer *i*;
* ``G' = grad_{W_i} L(W_1', ..., W_{i-1}', W_i, ..., W_k; x_t, y_t)``, the
  same gradient after every layer before *i* has been updated with this
  step's gradients (``W_j' = W_j - lr * G_j``).

The internal covariate shift of layer *i* at step *t* is ``||G - G'||_2``;
the paper also plots ``cos(G, G')``.  If the layers before *i* changing its
input forced layer *i* to re-adapt, ``G'`` would differ from ``G``.  Their
Figure 5 finds that networks with batch norm do not have a smaller shift by
this measure, and often a larger one.

The networks are :func:`fastbn.experiments.santurkar.network`'s 5 x 100 ReLU
MLP in its three variants (``"standard"``, ``"BN"``, ``"noisy BN"``), on
MNIST-1D by default (flattened).  All variants of one seed start from the
same weights and see the same batches.  Plain SGD, no momentum and no weight
decay, so that "updated with this step's gradients" is exactly ``W - lr *
G``; batch 64, a fresh shuffle every epoch (the last incomplete batch
dropped), at each learning rate of ``lrs``.

At each checkpoint (step 0, then steps spaced geometrically and linearly up
to ``steps``), before that step's update:

* all gradients on that step's batch, in training mode
  (:func:`~fastbn.experiments.santurkar.loss_and_grads`: batch norm uses the
  batch's statistics, its running statistics are left alone, and the noise
  of noisy BN is the draw the training step will use);
* for each Dense layer *i* but the first (which has no layers before it):
  every parameter of the layers before it -- the Dense weights and biases
  *and* the batch-norm scales and shifts, which are layers before *i* too --
  set to ``W - lr * G`` (the first loop updates the layers before Dense 2,
  the next adds those before Dense 3, and so on), and the gradient of Dense
  *i*'s weight computed again on the same batch, with the same noise;
* afterwards every parameter is restored, and the training step runs as
  usual: the measurement does not change the trajectory.

Rows ``kind="ics"``, one per (lr, model, seed, checkpoint, layer):
``g_norm`` ``= ||G||``, ``g_prime_norm`` ``= ||G'||``, ``diff`` ``= ||G -
G'||``, ``rel_diff`` ``= ||G - G'|| / ||G||`` (batch norm changes the scale
of the gradients, so the absolute distance alone can mislead) and ``cos``.
The layers are numbered 1 (the input layer) to 6 (the output layer); 2 to 6
are measured.  Rows ``kind="train"``, one per checkpoint: the batch's loss
and the validation accuracy (eval mode).

Summary: per lr, layer and model, the median over the linearly spaced
checkpoints (the median over training time) of ``diff``, ``rel_diff`` and
``cos``, as mean ± std over seeds, and the ratio to the standard network's.
The medians stop, per lr and seed, at the first linear checkpoint at which
the batch loss of any of the three networks is below ``loss_floor`` (0.05):
a network that fits its batches has almost no gradient, hence almost no
shift, and the comparison is made while all three learn
(:func:`window_ends`; the verdicts also give the whole-run medians).  At
the full run's lr 0.2 the standard network gets there about halfway.
Verdicts, per lr: "BN does not reduce the shift" holds in a layer unless
BN's median is below the standard network's by more than twice the standard
error of the difference; REPRODUCED if it holds in most layers for both the
absolute and the relative distance, PARTLY REPRODUCED if for one only.  The
same for the cosine: BN does not make ``G'`` better aligned with ``G``
unless its median cosine is higher by more than 2 SE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..nn import SGD, Sequential, SoftmaxCrossEntropy
from . import report, santurkar, train
from .data import Dataset

NAME = "ics"
MODELS = santurkar.KINDS
SPREAD = "bands: ±1 std over seeds"
DATA = "mnist1d"
#: The measured values of a kind="ics" row.
MEASURES = ("g_norm", "g_prime_norm", "diff", "rel_diff", "cos")


@dataclass(frozen=True)
class Config:
    mode: str = "full"
    dataset: str = "mnist1d"
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    lrs: tuple[float, ...] = (0.02, 0.2)
    steps: int = 4000
    batch_size: int = 64
    hidden: tuple[int, ...] = santurkar.HIDDEN
    n_geometric: int = 20
    n_linear: int = 41
    factor: float = 2.0           # "beyond 2 SE"
    loss_floor: float = 0.05      # the common window ends when a batch loss falls below
    max_train: int | None = None
    max_val: int | None = None

    @property
    def checkpoints(self) -> tuple[int, ...]:
        """Step 0, ``n_geometric`` steps spaced geometrically from 1 and ``n_linear``
        spaced linearly from 0 to ``steps`` (duplicates merged).  The measurement at
        step *t* is taken before the update of step *t*."""
        geo = np.geomspace(1, self.steps, self.n_geometric).round().astype(int)
        return tuple(sorted({0, *geo.tolist(), *self.linear}))

    @property
    def linear(self) -> tuple[int, ...]:
        """The linearly spaced checkpoints, over which the summary takes its medians."""
        return tuple(sorted(set(np.linspace(0, self.steps, self.n_linear).round()
                                .astype(int).tolist())))

    @property
    def layers(self) -> tuple[int, ...]:
        """The measured Dense layers, 1-based: all but the first (the output layer last)."""
        return tuple(range(2, len(self.hidden) + 2))


def make_config(mode: str = "full", seed: int = 0, dataset: str = "mnist1d") -> Config:
    """Full: 5 seeds x 4,000 steps at lr 0.02 and 0.2; quick: 2 seeds x 300 steps; tiny:
    2 seeds x 12 steps on 200 samples."""
    mnist = dataset not in ("digits", "mnist1d")
    if mode == "full":
        return Config(mode, dataset, _seeds(seed, 5),
                      max_train=10_000 if mnist else None, max_val=2000 if mnist else None)
    if mode == "quick":
        return Config(mode, dataset, _seeds(seed, 2), steps=300, n_geometric=8, n_linear=11,
                      max_train=6000 if mnist else None, max_val=2000 if mnist else None)
    return Config(mode, dataset, _seeds(seed, 2), steps=12, n_geometric=3, n_linear=4,
                  max_train=200, max_val=100)


def _seeds(first: int, n: int) -> tuple[int, ...]:
    return tuple(range(first, first + n))


def _g(v: float) -> float:
    """A measured value rounded to 6 significant digits (keeps the CSV small)."""
    return float(f"{float(v):.6g}")


# --- the measure ------------------------------------------------------------------------


def ics(model: Sequential, x: np.ndarray, y: np.ndarray, lr: float,
        grads: list[np.ndarray] | None = None) -> list[dict]:
    """Definition 2.1 of Santurkar et al. for every Dense layer of ``model`` but the first.

    ``G`` is the gradient of layer *i*'s weight on ``(x, y)`` (training mode,
    see :func:`~fastbn.experiments.santurkar.loss_and_grads`); ``G'`` is the
    same after every parameter of the layers before it (Dense weights and
    biases, batch-norm scales and shifts) took the SGD step ``W - lr * G_W``.
    ``grads`` (:func:`~fastbn.experiments.santurkar.parameters` order) are
    the gradients at the current parameters if already computed.  The model
    is left as it was: parameters, running statistics and noise generators.

    Returns one dict per measured layer: ``layer`` (1-based index among the
    Dense layers), ``g_norm``, ``g_prime_norm``, ``diff`` (``||G - G'||``),
    ``rel_diff`` (``diff / g_norm``) and ``cos`` (``cos(G, G')``).
    """
    params = santurkar.parameters(model)
    if grads is None:
        _, grads = santurkar.loss_and_grads(model, x, y)
    modules = model._unique_modules()
    order = {id(m): k for k, m in enumerate(modules)}
    where = [order[id(m)] for m, _ in params]          # each parameter's layer position
    index = {id(m): k for k, (m, name) in enumerate(params) if name == "weight"}
    saved = santurkar.snapshot(model)
    out = []
    done = 0                                 # the layers [0, done) are updated
    try:
        for number, dense in enumerate(santurkar.weight_layers(model), start=1):
            pos = order[id(dense)]
            if number > 1:
                for k, (m, name) in enumerate(params):
                    if done <= where[k] < pos:
                        m.params[name][...] = saved[k] - lr * grads[k]
                _, moved = santurkar.loss_and_grads(model, x, y)
                k = index[id(dense)]
                out.append({"layer": number, **compare(grads[k], moved[k])})
                done = pos
    finally:
        santurkar.restore(model, saved)
    return out


def compare(g: np.ndarray, g_prime: np.ndarray) -> dict:
    """``g_norm``, ``g_prime_norm``, ``diff``, ``rel_diff`` and ``cos`` of two gradients
    (in float64)."""
    a = np.asarray(g, dtype=np.float64).ravel()
    b = np.asarray(g_prime, dtype=np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    diff = float(np.linalg.norm(a - b))
    return {"g_norm": na, "g_prime_norm": nb, "diff": diff,
            "rel_diff": diff / na if na > 0 else math.nan,
            "cos": float(a @ b) / (na * nb) if na > 0 and nb > 0 else math.nan}


# --- the experiment ---------------------------------------------------------------------


def train_run(model: Sequential, x_train: np.ndarray, y_train: np.ndarray, *, lr: float,
              steps: int, batch_size: int, order_rng: np.random.Generator,
              measure_at: tuple[int, ...] = (), on_measure=None) -> tuple[int, bool]:
    """Train ``model`` with plain SGD for ``steps`` steps; before the step of each
    checkpoint in ``measure_at``, call ``on_measure(step, batch_loss, ics_rows)``.

    Returns ``(steps done, diverged)``; a non-finite batch loss stops the run.
    """
    steps_per_epoch = len(y_train) // batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch size {batch_size} exceeds the {len(y_train)} training "
                         f"samples")
    crit = SoftmaxCrossEntropy()
    opt = SGD(model, lr)
    wanted = set(measure_at)
    order = np.empty(0, dtype=np.int64)
    model.train()
    with np.errstate(all="ignore"):
        for step in range(steps + 1):
            i = step % steps_per_epoch
            if i == 0:
                order = order_rng.permutation(len(y_train))
            idx = order[i * batch_size:(i + 1) * batch_size]
            xb, yb = x_train[idx], y_train[idx]
            if step in wanted:
                loss, grads = santurkar.loss_and_grads(model, xb, yb)
                if not math.isfinite(loss):
                    return step, True
                on_measure(step, loss, ics(model, xb, yb, lr, grads))
            if step == steps:
                break
            loss = float(crit(model(xb), yb))
            if not math.isfinite(loss):
                return step, True
            opt.zero_grad()
            model.backward(crit.backward())
            opt.step()
    return steps, False


def run(config: Config, data: Dataset, *, progress: bool = True) -> list[dict]:
    """Rows of kind ics per (lr, model, seed, checkpoint, layer) and of kind train per
    (lr, model, seed, checkpoint)."""
    data = data.subset(config.max_train, config.max_val)
    x_train = data.x_train.reshape(len(data.y_train), -1)
    x_val = data.x_val.reshape(len(data.y_val), -1)
    y_train, y_val = data.y_train, data.y_val
    checkpoints = config.checkpoints
    rows: list[dict] = []
    bar = report.progress(len(config.lrs) * len(config.seeds) * len(MODELS), NAME, progress)
    for lr in config.lrs:
        for seed in config.seeds:
            for model_name in MODELS:
                init_rng, order_rng, noise_rng = train.seed_rngs(seed, "init", "order",
                                                                 "noise")
                model = santurkar.network(data.num_features, data.num_classes,
                                          kind=model_name, hidden=config.hidden,
                                          rng=init_rng, noise_rng=noise_rng)
                base = {"dataset": data.name, "lr": lr, "model": model_name, "seed": seed}

                def on_measure(step, loss, measured, base=base, model=model):
                    _, acc = train.evaluate(model, x_val, y_val)
                    rows.append({**base, "kind": "train", "step": step,
                                 "train_loss": _g(loss), "val_accuracy": acc,
                                 "diverged": False})
                    for m in measured:
                        rows.append({**base, "kind": "ics", "step": step,
                                     "layer": m["layer"],
                                     **{k: _g(m[k]) for k in MEASURES}})

                done, diverged = train_run(model, x_train, y_train, lr=lr,
                                           steps=config.steps,
                                           batch_size=config.batch_size,
                                           order_rng=order_rng, measure_at=checkpoints,
                                           on_measure=on_measure)
                if diverged:
                    rows.append({**base, "kind": "train", "step": done,
                                 "train_loss": math.nan, "val_accuracy": math.nan,
                                 "diverged": True})
                bar.update()
    bar.close()
    return rows


# --- the summary ------------------------------------------------------------------------


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def _of(rows, kind, **match):
    return [r for r in rows if r["kind"] == kind
            and all(_same(r.get(k), v) for k, v in match.items())]


def diverged(rows, lr, model, config: Config) -> list[int]:
    """The seeds whose run at ``lr`` diverged."""
    return sorted(int(r["seed"]) for r in _of(rows, "train", lr=lr, model=model)
                  if r["diverged"])


def window_ends(rows, config: Config) -> dict[tuple[float, int], int]:
    """``(lr, seed) -> end`` of the common window: the first linear checkpoint at which
    the batch loss of any of the three networks is below ``loss_floor`` (``steps + 1``
    if none is).  A network that fits its batches has (nearly) no gradient left, so no
    shift of it either; the summary compares the networks while all of them train."""
    grid = set(config.linear)
    ends = {(float(lr), seed): config.steps + 1 for lr in config.lrs for seed in config.seeds}
    for r in rows:
        if r["kind"] != "train" or int(r["step"]) not in grid:
            continue
        key = (float(r["lr"]), int(r["seed"]))
        if math.isfinite(r["train_loss"]) and r["train_loss"] < config.loss_floor:
            ends[key] = min(ends.get(key, config.steps + 1), int(r["step"]))
    return ends


def seed_medians(rows, config: Config, *, whole: bool = False) -> dict[tuple, list[float]]:
    """``(lr, model, layer, value) -> per-seed medians`` of each measured value over the
    linear checkpoints (the median over training time) in the common window
    (:func:`window_ends`; ``whole``: over the whole run), for the seeds that did not
    diverge, in seed order."""
    grid = set(config.linear)
    ends = {} if whole else window_ends(rows, config)
    bad = {(float(r["lr"]), r["model"], int(r["seed"])) for r in rows
           if r["kind"] == "train" and r["diverged"]}
    per: dict[tuple, dict[int, list[float]]] = {}
    for r in rows:
        if r["kind"] != "ics" or int(r["step"]) not in grid:
            continue
        key = (float(r["lr"]), r["model"], int(r["seed"]))
        if key in bad or int(r["step"]) >= ends.get((key[0], key[2]), math.inf):
            continue
        for value in MEASURES:
            v = r[value]
            if math.isfinite(v):
                per.setdefault((*key[:2], int(r["layer"]), value), {}).setdefault(
                    key[2], []).append(v)
    return {k: [float(np.median(v[s])) for s in sorted(v)] for k, v in per.items()}


def final_accuracy(rows, lr, model, config: Config) -> tuple[float, float, int]:
    """Mean, std and count over seeds of the validation accuracy at the last step."""
    return report.mean_std(r["val_accuracy"] for r in
                           _of(rows, "train", lr=lr, model=model, step=config.steps))


def compare_models(meds: dict, lr, layer, value, model: str = "BN") -> dict:
    """``model`` against the standard network for one lr, layer and value, from
    :func:`seed_medians`: the means, stds and counts over seeds of the per-seed medians,
    the ratio of the means, the difference and its standard error."""
    (a, sa, na), (b, sb, nb) = (report.mean_std(meds.get((float(lr), m, layer, value), []))
                                for m in (model, "standard"))
    se = math.sqrt(sa ** 2 / max(na, 1) + sb ** 2 / max(nb, 1))
    return {"mean": a, "std": sa, "n": na, "ref": b, "ref_std": sb, "ref_n": nb,
            "ratio": a / b if b else math.nan, "diff": a - b, "se": se}


def _lr_tag(lr: float) -> str:
    return f"lr {lr:g}"


def summarize(rows: list[dict], config: Config) -> tuple[list[dict], list[str]]:
    meds = seed_medians(rows, config)
    whole = seed_medians(rows, config, whole=True)
    table = []
    for lr in config.lrs:
        for layer in config.layers:
            for model in MODELS:
                row = {"lr": f"{lr:g}", "layer": _layer_name(layer, config), "model": model}
                for value, label, fmt in (("diff", "|G-G'|", ".3g"),
                                          ("rel_diff", "|G-G'|/|G|", ".3g"),
                                          ("cos", "cos(G,G')", ".4f")):
                    c = compare_models(meds, lr, layer, value, model)
                    row[label] = _pm(c["mean"], c["std"], fmt)
                    if value != "cos":
                        row[f"{label} / standard"] = (f"{c['ratio']:.2f}"
                                                      if math.isfinite(c["ratio"]) else "-")
                table.append(row)
    verdicts = []
    for lr in config.lrs:
        verdicts.append(_shift_verdict(rows, meds, whole, lr, config))
    for lr in config.lrs:
        verdicts.append(_cos_verdict(rows, meds, whole, lr, config))
    return table, verdicts


def _pm(mean: float, std: float, fmt: str) -> str:
    if not math.isfinite(mean):
        return "-"
    return f"{mean:{fmt}} ± {std:{fmt}}"


def _layer_name(layer: int, config: Config) -> str:
    return "output" if layer == len(config.hidden) + 1 else str(layer)


def _count(meds, lr, value, config: Config, test) -> tuple[int, list[dict]]:
    comps = [compare_models(meds, lr, layer, value) for layer in config.layers]
    return sum(1 for c in comps if test(c)), comps


def _lower(c, k) -> bool:
    """BN's median is below standard's by more than k SE (False if either is missing)."""
    return math.isfinite(c["diff"]) and c["diff"] < -k * c["se"]


def _higher(c, k) -> bool:
    return math.isfinite(c["diff"]) and c["diff"] > k * c["se"]


def _accuracy_text(rows, lr, config: Config) -> str:
    parts = []
    for model in MODELS:
        m, s, n = final_accuracy(rows, lr, model, config)
        bad = diverged(rows, lr, model, config)
        text = report.pm(m, s, ".1f", 100) + " %"
        if bad:
            text += f" ({len(bad)}/{len(config.seeds)} diverged)"
        parts.append(f"{model} {text}")
    return "final validation accuracy " + ", ".join(parts)


def _ratios(comps) -> str:
    return "/".join(f"{c['ratio']:.2f}" if math.isfinite(c["ratio"]) else "-" for c in comps)


def _is_whole(rows, lr, config: Config) -> bool:
    """The common window at ``lr`` is the whole run for every seed."""
    return all(e > config.steps for (rate, _), e in window_ends(rows, config).items()
               if rate == float(lr))


def window_text(rows, lr, config: Config) -> str:
    """Which checkpoints the summary's medians cover at ``lr`` (see :func:`window_ends`)."""
    ends = [e for (rate, _), e in window_ends(rows, config).items() if rate == float(lr)]
    if _is_whole(rows, lr, config):
        return f"the whole run (no batch loss below {config.loss_floor:g})"
    lo, hi = min(ends), max(e for e in ends if e <= config.steps)
    span = f"{lo}" if lo == hi else f"{lo} to {hi}"
    open_ = sum(e > config.steps for e in ends)
    return (f"the steps before a batch loss first fell below {config.loss_floor:g}: before "
            f"step {span} over the seeds" + (f" ({open_} never did)" if open_ else ""))


def _shift_verdict(rows, meds, whole, lr, config: Config) -> str:
    k = config.factor
    n = len(config.layers)
    most = n // 2 + 1
    lower_abs, abs_c = _count(meds, lr, "diff", config, lambda c: _lower(c, k))
    lower_rel, rel_c = _count(meds, lr, "rel_diff", config, lambda c: _lower(c, k))
    higher_abs = sum(_higher(c, k) for c in abs_c)
    higher_rel = sum(_higher(c, k) for c in rel_c)
    ok_abs, ok_rel = n - lower_abs >= most, n - lower_rel >= most
    missing = not all(math.isfinite(c["diff"]) for c in abs_c + rel_c)
    word = ("NOT REPRODUCED (a model diverged or was not measured)" if missing else
            "REPRODUCED" if ok_abs and ok_rel else
            "PARTLY REPRODUCED (not lower in absolute terms, lower relative to |G|)"
            if ok_abs else
            "PARTLY REPRODUCED (lower in absolute terms, not relative to |G|)" if ok_rel else
            "NOT REPRODUCED")
    noisy = [compare_models(meds, lr, layer, "diff", "noisy BN")
             for layer in config.layers]
    _, all_c = _count(whole, lr, "diff", config, lambda c: False)
    _, all_rel = _count(whole, lr, "rel_diff", config, lambda c: False)
    names = ", ".join(_layer_name(layer, config) for layer in config.layers)
    return (f"Claim 'BN does not reduce the gradient-based internal covariate shift' "
            f"({_lr_tag(lr)}): {word} -- median of ||G - G'|| over "
            f"{window_text(rows, lr, config)}, BN / standard per layer ({names}): "
            f"{_ratios(abs_c)}; BN lower beyond {k:g} SE in {lower_abs} of {n} layers, "
            f"higher in {higher_abs}. Relative ||G - G'|| / ||G||: {_ratios(rel_c)}; lower in "
            f"{lower_rel}, higher in {higher_rel}. Noisy BN / standard, absolute: "
            f"{_ratios(noisy)}."
            + ("" if _is_whole(rows, lr, config) else
               f" Over the whole run, BN / standard: {_ratios(all_c)} (relative: "
               f"{_ratios(all_rel)}).")
            + f" {_accuracy_text(rows, lr, config)}.")


def _cos_verdict(rows, meds, whole, lr, config: Config) -> str:
    k = config.factor
    n = len(config.layers)
    higher, comps = _count(meds, lr, "cos", config, lambda c: _higher(c, k))
    lower = sum(_lower(c, k) for c in comps)
    missing = not all(math.isfinite(c["diff"]) for c in comps)
    word = ("NOT REPRODUCED (a model diverged or was not measured)" if missing else
            "REPRODUCED" if n - higher >= n // 2 + 1 else "NOT REPRODUCED")

    def cos(key, comps):
        return "/".join(f"{c[key]:.3f}" if math.isfinite(c[key]) else "-" for c in comps)

    _, all_c = _count(whole, lr, "cos", config, lambda c: False)
    return (f"Claim 'BN does not make the gradient after the update of the preceding layers "
            f"better aligned with the gradient before it' ({_lr_tag(lr)}): {word} -- median "
            f"of cos(G, G') over {window_text(rows, lr, config)}, per layer, standard "
            f"{cos('ref', comps)} vs BN {cos('mean', comps)}; BN higher beyond {k:g} SE in "
            f"{higher} of {n} layers, lower in {lower}."
            + ("" if _is_whole(rows, lr, config) else
               f" Over the whole run: standard {cos('ref', all_c)} vs BN "
               f"{cos('mean', all_c)}."))


# --- the figure -------------------------------------------------------------------------


def _series(rows, value, **match):
    """Steps and per-step mean and std over seeds of ``value`` (the ics rows matching)."""
    by_step: dict[float, list[float]] = {}
    for r in _of(rows, "ics", **match):
        by_step.setdefault(float(r["step"]), []).append(r[value])
    steps = sorted(by_step)
    stats = [report.mean_std(by_step[s]) for s in steps]
    return (np.array(steps), np.array([m for m, _, _ in stats]),
            np.array([s for _, s, _ in stats]))


COLORS = {"standard": "C3", "BN": "C0", "noisy BN": "C2"}


def plot(rows: list[dict], config: Config, path: str, caption: str) -> None:
    plt = report.pyplot()
    from matplotlib.ticker import MaxNLocator, NullFormatter

    values = (("diff", "||G - G'||", True), ("cos", "cos(G, G')", False))
    ends = window_ends(rows, config)
    first_end = {lr: min(e for (rate, _), e in ends.items() if rate == float(lr))
                 for lr in config.lrs}
    nrow, ncol = len(values) * len(config.lrs), len(config.layers)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.0 * ncol, 2.4 * nrow + 0.8),
                             squeeze=False, sharex=True)
    for a, lr in enumerate(config.lrs):
        for b, (value, label, log) in enumerate(values):
            r = a * len(values) + b
            lo = math.inf
            for c, layer in enumerate(config.layers):
                ax = axes[r, c]
                for model in MODELS:
                    x, m, s = _series(rows, value, lr=lr, model=model, layer=layer)
                    if not len(x):
                        continue
                    if log:   # the band on a log axis: mean ± std, floored above 0
                        report.band(ax, x, m, np.minimum(s, 0.9 * m), model,
                                    color=COLORS[model])
                    else:
                        report.band(ax, x, m, s, model, color=COLORS[model])
                        lo = min(lo, float(np.nanmin(m - s)))
                if first_end[lr] <= config.steps:
                    ax.axvspan(first_end[lr], config.steps, color="0.85", alpha=0.5,
                               linewidth=0)
                if log:
                    ax.set_yscale("log")
                    ax.yaxis.set_minor_formatter(NullFormatter())
                ax.set_xlim(0, config.steps)
                ax.xaxis.set_major_locator(MaxNLocator(4, integer=True))
                ax.grid(alpha=0.3)
                ax.tick_params(labelsize=7)
                if r == 0:
                    name = _layer_name(layer, config)
                    ax.set_title("output layer" if name == "output" else f"Dense layer {name}",
                                 fontsize=9)
                if c == 0:
                    ax.set_ylabel(f"{label}\n(lr {lr:g})", fontsize=8)
                if r == nrow - 1:
                    ax.set_xlabel("training step", fontsize=8)
            if not log and math.isfinite(lo):
                for ax in axes[r]:
                    ax.set_ylim(max(min(lo, 0.9), -1.0) - 0.02, 1.01)
    handles, _ = axes[0, 0].get_legend_handles_labels()
    if any(e <= config.steps for e in first_end.values()):
        from matplotlib.patches import Patch

        handles.append(Patch(color="0.85", alpha=0.5, label="after a batch loss < "
                             f"{config.loss_floor:g}:\nnot in the summary"))
    axes[1, 0].legend(handles=handles, fontsize=7, loc="lower left")   # an empty corner
    fig.suptitle(f"Gradient-based internal covariate shift (Santurkar et al. 2018, Def. 2.1, "
                 f"Fig. 5): 5 x 100 ReLU MLP on {config.dataset}, plain SGD, batch "
                 f"{config.batch_size}, {config.steps:,} steps, {len(config.seeds)} seeds\n"
                 f"G: the gradient of a layer's weight; G': the same after the layers before "
                 f"it took this step's SGD update (same batch)", fontsize=9)
    report.save_figure(fig, path, caption)
