"""Experiment ``depth``: do activations explode or vanish with depth, and does batch norm
make deep networks trainable?

The tutorial says that without normalization "activations can grow
unbounded" ("10 layers with ReLU": they explode or vanish), that batch norm
"prevents exploding/vanishing activations", and that it "enables deeper
networks" (before it, "training 20+ layer networks was challenging").

The model is a plain MLP (no skip connections) of ``depth`` hidden layers of
``width`` units, each ``Dense -> ReLU`` without batch norm and
``Dense(use_bias=False) -> BatchNorm -> ReLU`` with it (:func:`train.mlp`,
the BN and the ReLU fused), then a Dense output layer.  Every Dense layer
starts from He-normal weights (standard deviation ``sqrt(2 / fan_in)``)
multiplied by an init scale.

* **Part 1, at initialization** (no training): a ``probe_depth``-layer MLP
  (10) at init scales around He (0.5x to 2x), in training mode, on one
  training batch.  Per hidden layer: the standard deviation of its output
  (after the ReLU) over the batch and the units, and the Frobenius norm of
  the gradient of the mean cross-entropy loss with respect to its weight.
  Theory for ReLU and He init: a scale ``a`` multiplies each layer's output
  standard deviation by about ``a``, so over ``L`` layers by ``a ** (L - 1)``.
* **Part 2, trainability**: the MLP at depths 2 to 50, He init (scale 1),
  trained with the same optimizer for both models (SGD, momentum 0.9, one
  learning rate), batch 64.  Per epoch: validation accuracy and mean training
  loss.  Epoch 0 is the untrained model: its training loss is that of the
  first training batch, on which the two ratios of part 1 are also measured.

Summary: per (model, setting), mean ± std over the seeds of the activation
std ratio last/first hidden layer, the per-layer gain (that ratio to the
power ``1 / (L - 1)``), the gradient-norm ratio first/last hidden layer; in
part 2 also the final accuracy and training loss and the epochs to
``target_accuracy``.  The std "explodes" over the layers when the ratio is at
least :data:`EXPLODE` (10) and "vanishes" when it is at most ``1 / EXPLODE``;
it is O(1) within a factor :data:`O1` (2).  A model "trains" at a depth when
every seed reaches the target and none diverges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import report, train
from .data import Dataset

NAME = "depth"
MODELS = ("BN", "no BN")
SPREAD = "bands: ±1 std over seeds (panels a, b, d: of the logarithm)"
SCALES = (0.5, 0.8, 1.0, 1.25, 2.0)
DEPTHS = (2, 5, 10, 20, 50)

#: A ratio of at least EXPLODE (last / first hidden layer) is an explosion, at most
#: 1 / EXPLODE a vanishing.
EXPLODE = 10.0
#: A ratio within [1 / O1, O1] is O(1).
O1 = 2.0
#: The per-layer gain "follows the scale" when it is within this factor of it.
GAIN_TOLERANCE = 1.2


@dataclass(frozen=True)
class Config:
    mode: str = "full"
    dataset: str = "digits"
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    width: int = 128
    batch_size: int = 64
    probe_depth: int = 10
    scales: tuple[float, ...] = SCALES
    depths: tuple[int, ...] = DEPTHS
    optimizer: str = "SGD"
    lr: float = 0.01
    epochs: int = 20
    target_accuracy: float = 0.9
    max_train: int | None = None
    max_val: int | None = None


def make_config(mode: str = "full", seed: int = 0, dataset: str = "digits") -> Config:
    """Full: part 1 at 5 scales, part 2 at depths 2, 5, 10, 20, 50, width 128, 5 seeds,
    20 epochs on digits (MNIST-1D: 3 seeds, 15 epochs, target 50%; MNIST: 3 seeds, 3
    epochs on 20,000 images); quick: 3 scales, depths 2, 10, 20, 2 seeds, 2 epochs;
    tiny: a 4-layer probe, depths 2 and 4, width 32, 2 seeds, 1 epoch on 200 samples."""
    mnist1d = dataset == "mnist1d"
    mnist = dataset not in ("digits", "mnist1d")
    target = 0.5 if mnist1d else 0.9

    def seeds(n):
        return tuple(range(seed, seed + n))

    if mode == "full":
        return Config(mode, dataset, seeds(3 if mnist or mnist1d else 5),
                      epochs=3 if mnist else 15 if mnist1d else 20, target_accuracy=target,
                      max_train=20000 if mnist else None)
    if mode == "quick":
        return Config(mode, dataset, seeds(2), scales=(0.5, 1.0, 2.0), depths=(2, 10, 20),
                      epochs=2, target_accuracy=target, max_train=2000 if mnist else None,
                      max_val=2000 if mnist else None)
    return Config(mode, dataset, seeds(2), width=32, probe_depth=4, scales=(0.5, 1.0, 2.0),
                  depths=(2, 4), epochs=1, target_accuracy=target, max_train=200, max_val=100)


def _model(data: Dataset, config: Config, model_name: str, depth: int, scale: float,
           rng: np.random.Generator):
    return train.mlp(data.num_features, data.num_classes, bn=model_name == "BN",
                     hidden=(config.width,) * depth, init_scale=scale, rng=rng)


def probe(model, x: np.ndarray, y: np.ndarray) -> tuple[list[float], list[float], float]:
    """One forward and backward in training mode on the batch ``(x, y)``.

    Returns, per hidden layer, the standard deviation of its output (after the
    ReLU) and the norm of the loss's gradient with respect to its Dense
    weight, and the loss.  Nothing is updated but the layers' saved inputs,
    the gradients and the BN running statistics.
    """
    from ..nn import Dense, SoftmaxCrossEntropy

    model.train()
    h = x
    stds = []
    with np.errstate(all="ignore"):
        for layer in model.layers:
            h = layer(h)
            if not isinstance(layer, Dense):
                stds.append(float(np.std(h, dtype=np.float64)))
        crit = SoftmaxCrossEntropy()
        loss = float(crit(h, y))
        model.backward(crit.backward())
    dense = [layer for layer in model.layers if isinstance(layer, Dense)][:-1]
    grads = [float(np.linalg.norm(layer.grads["weight"].astype(np.float64))) for layer in dense]
    return stds, grads, loss


def _ratios(stds, grads) -> tuple[float, float]:
    """(act std last / first hidden layer, grad norm first / last hidden layer)."""
    with np.errstate(all="ignore"):
        return float(np.float64(stds[-1]) / stds[0]), float(np.float64(grads[0]) / grads[-1])


def run(config: Config, data: Dataset, *, progress: bool = True) -> list[dict]:
    """Part 1: one row per (model, scale, seed, layer); part 2: one row per (model, depth,
    seed, epoch), epoch 0 being the untrained model."""
    data = data.subset(config.max_train, config.max_val)
    x_train = data.x_train.reshape(len(data.y_train), -1)
    x_val = data.x_val.reshape(len(data.y_val), -1)
    rows = []
    n_runs = len(MODELS) * len(config.seeds) * (len(config.scales) + len(config.depths))
    bar = report.progress(n_runs, NAME, progress)
    base = {"dataset": data.name}
    # part 1: the probe depth at every scale, on one training batch per seed
    for scale in config.scales:
        for model_name in MODELS:
            for seed in config.seeds:
                init_rng, batch_rng = train.seed_rngs(seed, "init", "probe batch")
                model = _model(data, config, model_name, config.probe_depth, scale, init_rng)
                idx = batch_rng.choice(len(data.y_train), config.batch_size, replace=False)
                stds, grads, _ = probe(model, x_train[idx], data.y_train[idx])
                for layer, (s, g) in enumerate(zip(stds, grads, strict=True), start=1):
                    rows.append({**base, "part": "init", "model": model_name,
                                 "depth": config.probe_depth, "init_scale": scale,
                                 "seed": seed, "layer": layer, "act_std": s, "grad_norm": g})
                bar.update()
    # part 2: training at every depth, He init
    steps_per_epoch = len(data.y_train) // config.batch_size
    for depth in config.depths:
        for model_name in MODELS:
            for seed in config.seeds:
                init_rng, order_rng = train.seed_rngs(seed, "init", "order")
                model = _model(data, config, model_name, depth, 1.0, init_rng)
                # the ratios at init on the first training batch, without drawing from
                # the order stream (a copy of it gives fit's first permutation)
                first = np.random.Generator(type(order_rng.bit_generator)())
                first.bit_generator.state = order_rng.bit_generator.state
                idx = first.permutation(len(data.y_train))[:config.batch_size]
                init_model = _model(data, config, model_name, depth, 1.0,
                                    train.seed_rngs(seed, "init")[0])
                stds, grads, init_loss = probe(init_model, x_train[idx], data.y_train[idx])
                std_ratio, grad_ratio = _ratios(stds, grads)
                val_loss, val_acc = train.evaluate(model, x_val, data.y_val)
                result = train.fit(model, train.optimizer(config.optimizer, model, config.lr),
                                   data, epochs=config.epochs, batch_size=config.batch_size,
                                   rng=order_rng, flatten=True)
                run_base = {**base, "part": "train", "model": model_name, "depth": depth,
                            "init_scale": 1.0, "seed": seed}
                rows.append({**run_base, "epoch": 0, "step": 0, "train_loss": init_loss,
                             "val_loss": val_loss, "val_accuracy": val_acc,
                             "act_std_ratio": std_ratio, "grad_ratio": grad_ratio,
                             "diverged": result.diverged})
                for h in result.history:
                    rows.append({**run_base, "epoch": h["epoch"],
                                 "step": h["epoch"] * steps_per_epoch,
                                 "train_loss": h["train_loss"], "val_loss": h["val_loss"],
                                 "val_accuracy": h["val_accuracy"], "diverged": result.diverged})
                bar.update()
    bar.close()
    return rows


# --- the summary ----------------------------------------------------------------------------


def _part(rows, part):
    return [r for r in rows if r.get("part") == part]


def init_stats(rows: list[dict], model_name: str, scale: float) -> dict:
    """Part 1, one (model, scale): per-seed ratios and their mean ± std; per-layer
    geometric means and log-spreads of the activation std and the gradient norm."""
    mine = [r for r in _part(rows, "init")
            if r["model"] == model_name and float(r["init_scale"]) == float(scale)]
    seeds = sorted({int(r["seed"]) for r in mine})
    per_seed = []
    for seed in seeds:
        layers = sorted((r for r in mine if int(r["seed"]) == seed), key=lambda r: r["layer"])
        stds = [r["act_std"] for r in layers]
        grads = [r["grad_norm"] for r in layers]
        per_seed.append((stds, grads))
    n_layers = len(per_seed[0][0]) if per_seed else 0
    std_ratio = [_ratios(s, g)[0] for s, g in per_seed]
    grad_ratio = [_ratios(s, g)[1] for s, g in per_seed]
    return {"layers": n_layers, "seeds": len(seeds),
            "std_ratio": report.mean_std(std_ratio),
            "gain": report.mean_std(gain(v, n_layers) for v in std_ratio),
            "grad_ratio": report.mean_std(grad_ratio),
            "std_layers": [_log_stats(s[i] for s, _ in per_seed) for i in range(n_layers)],
            "grad_layers": [_log_stats(g[i] for _, g in per_seed) for i in range(n_layers)]}


def gain(ratio: float, layers: int) -> float:
    """The per-layer factor of a ratio over ``layers`` layers: ``ratio ** (1 / (layers - 1))``."""
    if layers < 2 or not ratio > 0:
        return math.nan
    return float(ratio ** (1.0 / (layers - 1)))


def _log_stats(values) -> tuple[float, float]:
    """(geometric mean, std of the natural log) over the positive finite values."""
    v = np.array([x for x in values if x > 0 and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    logs = np.log(v)
    return float(np.exp(logs.mean())), float(logs.std(ddof=1)) if v.size > 1 else 0.0


def train_stats(rows: list[dict], model_name: str, depth: int, config: Config) -> dict:
    """Part 2, one (model, depth): per seed the final accuracy and loss, the epochs to
    the target, the ratios at init; mean ± std over seeds."""
    mine = [r for r in _part(rows, "train")
            if r["model"] == model_name and int(r["depth"]) == int(depth)]
    seeds = sorted({int(r["seed"]) for r in mine})
    finals, losses, epochs, std_r, grad_r, reached, diverged = [], [], [], [], [], 0, 0
    for seed in seeds:
        hist = sorted((r for r in mine if int(r["seed"]) == seed), key=lambda r: r["epoch"])
        init = hist[0]
        std_r.append(init["act_std_ratio"])
        grad_r.append(init["grad_ratio"])
        if bool(init["diverged"]):
            diverged += 1
            continue
        hit = next((r for r in hist[1:] if r["val_accuracy"] >= config.target_accuracy), None)
        if hit is not None:
            reached += 1
            epochs.append(int(hit["epoch"]))
        finals.append(hist[-1]["val_accuracy"])
        losses.append(hist[-1]["train_loss"])
    return {"seeds": len(seeds), "final": report.mean_std(finals),
            "loss": report.mean_std(losses), "epochs": report.mean_std(epochs),
            "reached": reached, "diverged": diverged,
            "std_ratio": report.mean_std(std_r), "grad_ratio": report.mean_std(grad_r),
            "grad_ratio_log": _log_stats(grad_r),
            "gain": report.mean_std(gain(v, int(depth)) for v in std_r),
            "trains": bool(seeds) and reached == len(seeds) and diverged == 0}


def _level(layer_stats) -> float:
    """The geometric mean over the layers of per-layer geometric means."""
    v = [m for m, _ in layer_stats if m > 0 and math.isfinite(m)]
    return float(np.exp(np.mean(np.log(v)))) if v else math.nan


def _spread(layer_stats) -> float:
    """The largest over the smallest of the per-layer geometric means."""
    v = [m for m, _ in layer_stats if m > 0 and math.isfinite(m)]
    return max(v) / min(v) if v else math.nan


def num(v: float, digits: int = 2) -> str:
    """``v`` to ``digits`` significant digits without exponent for 0.001 <= |v| < 1e6."""
    if not math.isfinite(v):
        return "-"
    if v == 0:
        return "0"
    mag = math.floor(math.log10(abs(v)))
    if mag < -3 or mag >= 6:
        return f"{v:.{digits - 1}e}"
    return f"{v:.{max(digits - 1 - mag, 0)}f}"


def span(lo: float, hi: float, digits: int = 2) -> str:
    """``"lo to hi"`` with :func:`num`, or one value when both print the same."""
    a, b = num(lo, digits), num(hi, digits)
    return a if a == b else f"{a} to {b}"


def pm_num(stats: tuple[float, float, int], digits: int = 2) -> str:
    m, s, _ = stats
    if not math.isfinite(m):
        return "-"
    return f"{num(m, digits)} ± {num(s, digits)}"


def summarize(rows: list[dict], config: Config) -> tuple[list[dict], list[str]]:
    target = f"{config.target_accuracy:.0%}"
    table = []
    init = {(m, s): init_stats(rows, m, s) for s in config.scales for m in MODELS}
    trained = {(m, d): train_stats(rows, m, d, config) for d in config.depths for m in MODELS}
    blank = {"final acc %": "", "final train loss": "", f"epochs to {target}": ""}
    for scale in config.scales:
        for model_name in MODELS:
            st = init[(model_name, scale)]
            table.append({"part": f"init, {config.probe_depth} layers", "model": model_name,
                          "setting": f"{scale:g}x He",
                          "act std last/first": pm_num(st["std_ratio"]),
                          "gain per layer": pm_num(st["gain"]),
                          "grad first/last": pm_num(st["grad_ratio"]), **blank})
    for depth in config.depths:
        for model_name in MODELS:
            st = trained[(model_name, depth)]
            final = report.pm(st["final"][0], st["final"][1], ".1f", 100)
            if st["diverged"]:
                final += f" ({st['diverged']}/{st['seeds']} diverged)"
            ep = st["epochs"]
            table.append({"part": "train, He init", "model": model_name,
                          "setting": f"depth {depth}",
                          "act std last/first": pm_num(st["std_ratio"]),
                          "gain per layer": pm_num(st["gain"]),
                          "grad first/last": pm_num(st["grad_ratio"]),
                          "final acc %": final,
                          "final train loss": pm_num(st["loss"]),
                          f"epochs to {target}": (report.pm(ep[0], ep[1]) + " " if ep[2] else "- ")
                          + f"({st['reached']}/{st['seeds']})"})
    return table, [_explode_verdict(init, config), _bn_init_verdict(init, config),
                   _depth_verdict(trained, init, config)]


def _scale_list(scales) -> str:
    return ", ".join(f"{s:g}x" for s in scales) or "none"


def _explode_verdict(init: dict, config: Config) -> str:
    L = config.probe_depth
    no = {s: init[("no BN", s)] for s in config.scales}
    ratio = {s: no[s]["std_ratio"][0] for s in config.scales}
    gains = {s: no[s]["gain"][0] for s in config.scales}
    vanish = [s for s in config.scales if s < 1 and ratio[s] <= 1 / EXPLODE]
    explode = [s for s in config.scales if s > 1 and ratio[s] >= EXPLODE]
    follows = [s for s in config.scales if s != 1 and math.isfinite(gains[s])
               and 1 / GAIN_TOLERANCE <= gains[s] / s <= GAIN_TOLERANCE]
    off = [s for s in config.scales if s != 1]
    geometric = bool(off) and len(follows) == len(off)
    if vanish and explode and geometric:
        word = "REPRODUCED"
    elif vanish or explode:
        word = ("PARTLY REPRODUCED (only "
                + ("vanishing" if vanish and not explode else "exploding"
                   if explode and not vanish else "not geometric") + ")")
    else:
        word = "NOT REPRODUCED (the std stays within 10x over the layers)"
    he = f"; at He scale (1x) {num(ratio[1.0], 2)}" if 1.0 in ratio else ""
    parts = ", ".join(f"{num(ratio[s], 2)} at {s:g}x" for s in config.scales if s != 1)
    gain_text = ", ".join(f"{num(gains[s], 2)} at {s:g}x" for s in config.scales if s != 1)
    lo_grad, hi_grad = (_level(no[s]["grad_layers"])
                        for s in (min(config.scales), max(config.scales)))
    spread = max(_spread(no[s]["grad_layers"]) for s in config.scales)
    return (f"Claim '{L} layers with ReLU: activations explode or vanish' (no BN, at init): "
            f"{word} -- activation std last/first hidden layer {parts}{he}; per-layer "
            f"gain {gain_text} (theory: the scale); vanishes (<= 1/{EXPLODE:g}) at "
            f"{_scale_list(vanish)}, explodes (>= {EXPLODE:g}) at {_scale_list(explode)}. "
            f"The weight-gradient norm varies at most {num(spread, 2)}x across the layers "
            f"at any scale, but its level moves with the scale: {num(lo_grad, 2)} at "
            f"{min(config.scales):g}x, {num(hi_grad, 2)} at {max(config.scales):g}x "
            f"(geometric mean over the layers).")


def _bn_init_verdict(init: dict, config: Config) -> str:
    L = config.probe_depth
    bn = {s: init[("BN", s)] for s in config.scales}
    ratios = [bn[s]["std_ratio"][0] for s in config.scales]
    ok = all(math.isfinite(r) and 1 / O1 <= r <= O1 for r in ratios)
    word = "REPRODUCED" if ok else f"NOT REPRODUCED (outside [1/{O1:g}, {O1:g}])"
    grads = [bn[s]["grad_ratio"][0] for s in config.scales]
    return (f"Claim 'BN prevents exploding/vanishing activations' (BN, {L} layers at init): "
            f"{word} -- activation std last/first {span(min(ratios), max(ratios), 3)} over "
            f"the scales {_scale_list(config.scales)}. The weight gradient is not level: "
            f"first/last hidden layer {span(min(grads), max(grads))} (per layer "
            f"{span(gain(min(grads), L), gain(max(grads), L), 3)}), growing toward the input.")


def _depth_verdict(trained: dict, init: dict, config: Config) -> str:
    target = f"{config.target_accuracy:.0%}"
    depths = config.depths
    ok = {m: [d for d in depths if trained[(m, d)]["trains"]] for m in MODELS}
    bn_only = [d for d in depths if d in ok["BN"] and d not in ok["no BN"]]
    no_only = [d for d in depths if d in ok["no BN"] and d not in ok["BN"]]
    if bn_only and not no_only:
        word = "REPRODUCED"
    elif bn_only and no_only:
        word = "PARTLY REPRODUCED (each trains at a depth where the other does not)"
    elif no_only:
        word = "NOT REPRODUCED (no BN trains deeper)"
    elif not ok["BN"]:
        word = "NOT REPRODUCED (neither trains at any depth)"
    elif max(ok["BN"]) == max(depths):
        word = "NOT REPRODUCED (both train at every depth)"
    else:
        word = "NOT REPRODUCED (both train at the same depths)"

    def listed(m):
        return ", ".join(map(str, ok[m])) or "none"

    parts = [f"the depths at which every seed reaches {target}: {listed('BN')} with BN, "
             f"{listed('no BN')} without"]
    both = [d for d in depths if d in ok["BN"] and d in ok["no BN"]]
    if both:
        d = max(both)
        e_bn, e_no = trained[("BN", d)]["epochs"][0], trained[("no BN", d)]["epochs"][0]
        parts.append(f"at depth {d} BN reaches {target} in {e_bn:.1f} epochs, no BN in "
                     f"{e_no:.1f}")
    deep = max(depths)
    acc = {m: trained[(m, deep)]["final"][0] for m in MODELS}
    parts.append(f"at depth {deep} the final accuracy is {100 * acc['BN']:.1f} % with BN and "
                 f"{100 * acc['no BN']:.1f} % without")
    g = trained[("BN", deep)]["grad_ratio"][0]
    g_no = trained[("no BN", deep)]["grad_ratio"][0]
    parts.append(f"at init, BN's first-layer weight gradient is {num(g, 2)}x its last "
                 f"hidden layer's at depth {deep} ({num(g_no, 2)}x without BN)")
    epochs = f"{config.epochs} epoch{'s' if config.epochs != 1 else ''}"
    return (f"Claim 'BN enables deeper networks' (plain MLP, {config.optimizer} lr "
            f"{config.lr:g}, {epochs}): {word} -- " + "; ".join(parts) + ".")


# --- the figure -----------------------------------------------------------------------------


def _scale_colors(plt, scales):
    colors = plt.cm.coolwarm(np.linspace(0.0, 1.0, len(scales)))
    return {s: ("k" if s == 1.0 else colors[i]) for i, s in enumerate(scales)}


def _log_band(ax, x, stats, **kw):
    gm = np.array([m for m, _ in stats], dtype=float)
    sd = np.array([s for _, s in stats], dtype=float)
    (line,) = ax.plot(x, gm, **kw)
    ax.fill_between(x, gm * np.exp(-sd), gm * np.exp(sd), color=line.get_color(), alpha=0.15,
                    linewidth=0)
    return line


def plot(rows: list[dict], config: Config, path: str, caption: str) -> None:
    plt = report.pyplot()
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.2))
    (ax_std, ax_grad), (ax_acc, ax_ratio) = axes
    colors = _scale_colors(plt, config.scales)
    styles = {"no BN": {"ls": "-", "marker": "o"}, "BN": {"ls": "--", "marker": "s"}}
    layers = np.arange(1, config.probe_depth + 1)
    for model_name in ("no BN", "BN"):
        for scale in config.scales:
            st = init_stats(rows, model_name, scale)
            if not st["layers"]:
                continue
            for ax, key in ((ax_std, "std_layers"), (ax_grad, "grad_layers")):
                _log_band(ax, layers[:st["layers"]], st[key], color=colors[scale], ms=3,
                          lw=1.3, **styles[model_name])
    handles = [Line2D([], [], color=colors[s], lw=2, label=f"{s:g}x He") for s in config.scales]
    handles += [Line2D([], [], color="0.4", label=label, **styles[m])
                for m, label in (("no BN", "no BN"), ("BN", "BN (the scales overlap)"))]
    for ax, what in ((ax_std, "activation std (after ReLU)"),
                     (ax_grad, "||dL/dW|| of the layer's weight")):
        ax.set_yscale("log")
        ax.set(xlabel="hidden layer", ylabel=what, xticks=layers)
        ax.grid(alpha=0.3)
    ax_std.set_title(f"(a) Activation std per layer at init, {config.probe_depth} layers")
    ax_grad.set_title("(b) Weight-gradient norm per layer at init")
    ax_std.legend(handles=handles, fontsize=7, ncol=2, loc="best")

    depths = np.array(config.depths, dtype=float)
    for model_name, color in zip(MODELS, ("tab:green", "tab:purple"), strict=True):
        stats = [train_stats(rows, model_name, d, config) for d in config.depths]
        report.band(ax_acc, depths, [100 * s["final"][0] for s in stats],
                    [100 * s["final"][1] for s in stats], model_name, color=color, marker="o",
                    ms=4)
        _log_band(ax_ratio, depths, [s["grad_ratio_log"] for s in stats], color=color, marker="o",
                  ms=4, label=model_name)
    ax_acc.axhline(100 * config.target_accuracy, color="0.5", ls=":",
                   label=f"target {config.target_accuracy:.0%}")
    ax_acc.set(ylim=(0, 102), ylabel="final validation accuracy (%)",
               title=f"(c) Accuracy after {config.epochs} epochs, He init")
    ax_ratio.axhline(1.0, color="0.7", lw=0.8)
    ax_ratio.set(yscale="log", ylabel="||dL/dW|| first / last hidden layer",
                 title="(d) Gradient ratio at init, He init")
    for ax in (ax_acc, ax_ratio):
        ax.set_xscale("log")
        ax.set_xticks(depths, [f"{d:g}" for d in depths])
        ax.minorticks_off()
        ax.set_xlabel("depth (hidden layers)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    opt = f"{config.optimizer}{' momentum 0.9' if config.optimizer == 'SGD' else ''}"
    fig.suptitle(f"Depth: plain ReLU MLP of width {config.width} on {config.dataset}, batch "
                 f"{config.batch_size}; (c) {opt}, lr {config.lr:g}; {len(config.seeds)} seeds",
                 fontsize=10)
    report.save_figure(fig, path, caption)
