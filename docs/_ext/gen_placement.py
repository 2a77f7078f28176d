"""The snippets of the placement page, from ``docs/experiments/placement.csv``.

:func:`snippets` has the contract of the per-experiment functions of
``generate.py``: the rows of the CSV in, the Markdown snippets of the page and
the page's rows of the claims' summary out.  Every number is computed from
the rows, through the experiment's own ``summarize`` and helpers.
"""

from __future__ import annotations

import math

import generate
import numpy as np

#: float32's machine epsilon, the unit of rounding.
_EPS32 = float(np.finfo(np.float32).eps)

#: The variant pairs the bias paragraph compares.
_PAIR = ("BN -> ReLU", "BN -> ReLU, bias")


def _config(rows: list[dict]):
    """The full-mode configuration of the CSV's dataset, checked against its seeds."""
    from fastbn.experiments import placement as mod

    config = mod.make_config("full", 0, rows[0].get("dataset", "digits"))
    seeds = sorted({int(r["seed"]) for r in rows})
    if tuple(seeds) != tuple(config.seeds):
        raise ValueError(f"placement.csv has seeds {seeds}; the full run has {config.seeds}")
    return config


def _validation_images(rows: list[dict]) -> int | None:
    """The size of the validation set: the smallest N of which every accuracy is a multiple
    of 1/N."""
    accs = [r["val_accuracy"] for r in rows if math.isfinite(r["val_accuracy"])]
    for n in range(2, 100001):
        if all(abs(a * n - round(a * n)) < 1e-6 for a in accs):
            return n
    return None


def _pct(v: float) -> str:
    return f"{100 * v:.2f} %"


def _points(d: tuple[float, float, int]) -> str:
    return f"{100 * d[0]:+.2f} points (standard error {100 * d[1]:.2f})"


def _output(rows: list[dict], config) -> str:
    """The summary table and the verdicts as the command prints them (the format of
    ``generate.command_output``)."""
    from fastbn.experiments import placement as mod
    from fastbn.experiments import report

    table, verdicts = mod.summarize(rows, config)
    return generate.text_block(report.format_table(table) + "\n\n" + "\n".join(verdicts))


def snippets(rows: list[dict]) -> tuple[dict[str, str], list[dict]]:
    """Snippets of the placement page and its rows of the claims' summary."""
    from fastbn.experiments import placement as mod

    rows = [dict(r, seed=int(r["seed"]), epoch=int(r["epoch"])) for r in rows]
    cfg = _config(rows)
    table, verdicts = mod.summarize(rows, cfg)
    claims = [generate.parse_claim(v) for v in verdicts]
    if len(claims) != 5 or not all(claims):
        raise ValueError(f"placement: expected 5 verdict lines, got {verdicts}")
    place, grad, same, drop_tut, drop_rec = claims
    word = generate.verdict_word

    def acc(name, epoch=None):
        return mod.stats(rows, name, "val_accuracy", epoch)[0]

    findings, summary = [], []

    # placement
    d = mod.paired(rows, "BN -> ReLU", "ReLU -> BN")
    e1 = acc("BN -> ReLU", 1) - acc("ReLU -> BN", 1)
    n_val = _validation_images(rows)
    image = (f" With {n_val} validation images, one image is {100 / n_val:.2f} points."
             if n_val else "")
    findings.append(
        f"**Placement.** Verdict: {word(place['word'])}. `Dense -> BN -> ReLU` ends at "
        f"{_pct(acc('BN -> ReLU'))}, `Dense -> ReLU -> BN` at {_pct(acc('ReLU -> BN'))} "
        f"(means over {len(cfg.seeds)} seeds), a paired difference of {_points(d)}. After "
        f"the first epoch the difference is {100 * e1:+.2f} points. Without normalization "
        f"the MLP ends at {_pct(acc('no norm'))}.{image}")
    summary.append({"claim": "Batch norm goes before the activation (Dense -> BN -> ReLU)",
                    "page": "placement", "verdict": word(place["word"]),
                    "measured": f"{_points(d)} over Dense -> ReLU -> BN"})

    # the bias: gradient
    under_bn = mod.ratio_max(rows, "BN -> ReLU, bias")
    refs = {n: mod.ratio_min(rows, n) for n in ("ReLU -> BN", "no norm")}
    level = (f"rounding, {under_bn / _EPS32:.0f} float32 epsilons ({_EPS32:.1e})"
             if grad["word"] == "REPRODUCED" else
             f"{under_bn / _EPS32:.0f} float32 epsilons, above rounding")
    findings.append(
        f"**The bias's gradient under BN.** Verdict: {word(grad['word'])}. Over every "
        f"step of every seed, the largest `|grad bias|` of a hidden dense layer followed "
        f"by batch norm is {under_bn:.1e} times its largest `|grad weight|`: {level}. "
        f"Where the bias does change the output, the same ratio never falls below "
        f"{refs['ReLU -> BN']:.1e} (`Dense -> ReLU -> BN`) and {refs['no norm']:.1e} "
        f"(no normalization).")
    summary.append({"claim": "The dense bias before batch norm gets zero gradient",
                    "page": "placement", "verdict": word(grad["word"]),
                    "measured": (f"max |grad b| / max |grad W| = {under_bn:.1e} "
                                 f"(bias before a ReLU: at least {refs['ReLU -> BN']:.1e})")})

    # the bias: accuracy
    d = mod.paired(rows, _PAIR[1], _PAIR[0])
    a = {(r["seed"], r["epoch"]): r for r in rows if r["variant"] == _PAIR[0]}
    b = {(r["seed"], r["epoch"]): r for r in rows if r["variant"] == _PAIR[1]}
    keys = [k for k in a if k in b and not a[k]["diverged"] and not b[k]["diverged"]]
    loss_rel = max(abs(a[k]["train_loss"] - b[k]["train_loss"]) / a[k]["train_loss"]
                   for k in keys)
    differ = [k for k in keys if a[k]["val_accuracy"] != b[k]["val_accuracy"]]
    finals = mod.final_rows(rows, _PAIR[0]), mod.final_rows(rows, _PAIR[1])
    final_differ = sum(finals[0][s]["val_accuracy"] != finals[1][s]["val_accuracy"]
                       for s in finals[0] if s in finals[1])
    drift = max(r["bias_abs_max"] for r in rows if r["variant"] == _PAIR[1]
                and math.isfinite(r["bias_abs_max"]))
    text = (f"**The bias and the accuracy.** Verdict: {word(same['word'])}. From the "
            f"same initial weights, the model with the bias ends at {_pct(acc(_PAIR[1]))} "
            f"and the one without at {_pct(acc(_PAIR[0]))}, a paired difference of {_points(d)}. ")
    if final_differ == 0:
        text += "In every seed the final accuracies are equal. "
    else:
        text += f"The final accuracies differ in {final_differ} of {len(finals[0])} seeds. "
    text += (f"Adam divides each step by the running size of the parameter's own gradient, "
             f"so even a rounding-level gradient moves the bias: it reaches |b| = "
             f"{drift:.2g}. Adding it changes the rounding, so the two runs are not "
             f"bit-identical: their epoch-mean training losses differ by up to "
             f"{100 * loss_rel:.2g} %, and their validation accuracies differ at "
             f"{len(differ)} of the {len(keys)} (seed, epoch) points.")
    findings.append(text)
    summary.append({"claim": "Dropping the dense bias before batch norm costs no accuracy",
                    "page": "placement", "verdict": word(same["word"]),
                    "measured": f"{_points(d)} with the bias"})

    # dropout
    for base, claim, label in (("ReLU -> BN", drop_tut, "the tutorial's example"),
                               ("BN -> ReLU", drop_rec, "the recommended order")):
        with_ = f"{base} -> Dropout"
        da = mod.paired(rows, with_, base)
        dl = mod.paired(rows, with_, base, "loss_gap")
        gap0 = mod.stats(rows, base, "loss_gap")[0]
        gap1 = mod.stats(rows, with_, "loss_gap")[0]
        findings.append(
            f"**Dropout after `Dense -> {base}`, {label}.** Verdict: {word(claim['word'])}. "
            f"With "
            f"`Dropout({mod.DROPOUT:g})` the final validation accuracy is "
            f"{_pct(acc(with_))} against {_pct(acc(base))} without, a paired difference of "
            f"{_points(d=da)}. The gap between the validation and the training loss goes "
            f"from {gap0:.3f} to {gap1:.3f} nats, a paired change of {dl[0]:+.3f} (standard "
            f"error {dl[1]:.3f}). After the first epoch: {_pct(acc(with_, 1))} with dropout, "
            f"{_pct(acc(base, 1))} without.")
        summary.append({"claim": f"Batch norm and dropout combine (Dense -> {with_})",
                        "page": "placement", "verdict": word(claim["word"]),
                        "measured": (f"accuracy {100 * da[0]:+.2f} points, loss gap "
                                     f"{dl[0]:+.3f} nats")})

    out = {"placement-table.md": generate.md_table(table),
           "placement-verdict.md": generate.bullets(findings),
           "placement-output.md": _output(rows, cfg)}
    return out, summary
