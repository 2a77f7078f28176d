"""Snippets of the ics page, from ``docs/experiments/ics.csv``.

Same contract as the per-experiment functions of ``generate.py``:
:func:`snippets` returns the page's Markdown snippets by file name in
``docs/_generated`` and one row per claim for the experiments' summary table.
Every number is computed from the rows, with the experiment's own
``summarize`` and helpers.
"""

from __future__ import annotations

import math

import generate
import numpy as np

NAME = "ics"


def _rows(rows: list[dict]) -> list[dict]:
    """The CSV's rows with the integer columns as ``int``."""
    out = []
    for row in rows:
        row = dict(row)
        for key in ("seed", "step", "layer", "diverged"):
            v = row.get(key)
            if isinstance(v, float) and math.isfinite(v):
                row[key] = int(v)
        out.append(row)
    return out


def _config(rows: list[dict]):
    """The full-mode configuration for the CSV's dataset, checked against its seeds, steps
    and learning rates."""
    from fastbn.experiments import ics as mod

    config = mod.make_config("full", 0, rows[0].get("dataset", mod.DATA))
    seeds = sorted({r["seed"] for r in rows})
    if tuple(seeds) != tuple(config.seeds):
        raise ValueError(f"{NAME}.csv has seeds {seeds}; the full run has {config.seeds}")
    last = max(r["step"] for r in rows if r["kind"] == "train")
    if last != config.steps:
        raise ValueError(f"{NAME}.csv ends at step {last}; the full run trains {config.steps}")
    lrs = sorted({float(r["lr"]) for r in rows})
    if tuple(lrs) != tuple(sorted(config.lrs)):
        raise ValueError(f"{NAME}.csv has learning rates {lrs}; the full run {config.lrs}")
    return config


def _word(verdicts: list[dict]) -> str:
    """One verdict for several learning rates: the word if they agree, else each lr's."""
    words = {v["word"] for v in verdicts}
    if len(words) == 1:
        return generate.verdict_word(verdicts[0]["word"])
    return "; ".join(f"{v['tag']}: {generate.verdict_word(v['word'])}" for v in verdicts)


def snippets(rows: list[dict]) -> tuple[dict[str, str], list[dict]]:
    """``ics-{table,accuracy,verdict,output}.md`` and the page's rows of the claims'
    summary."""
    from fastbn.experiments import ics as mod
    from fastbn.experiments import report

    rows = _rows(rows)
    cfg = _config(rows)
    table, verdicts = mod.summarize(rows, cfg)
    parsed = [generate.parse_claim(v) for v in verdicts]
    n_lr = len(cfg.lrs)
    shift, align = parsed[:n_lr], parsed[n_lr:]
    meds = mod.seed_medians(rows, cfg)
    layers = cfg.layers

    def comp(lr, layer, value, model="BN"):
        return mod.compare_models(meds, lr, layer, value, model)

    def pm(c, fmt):
        return report.pm(c["mean"], c["std"], fmt) if math.isfinite(c["mean"]) else "-"

    md_rows = []
    for lr in cfg.lrs:
        for layer in layers:
            row = {"lr": f"{lr:g}", "layer": mod._layer_name(layer, cfg)}
            std = comp(lr, layer, "diff", "standard")
            row["‖G − G′‖ standard"] = pm(std, ".3f")
            for model in ("BN", "noisy BN"):
                c = comp(lr, layer, "diff", model)
                row[f"‖G − G′‖ {model}"] = f"{pm(c, '.3f')} ({c['ratio']:.2f}x)"
            row["‖G − G′‖ / ‖G‖: standard / BN / noisy BN"] = " / ".join(
                f"{comp(lr, layer, 'rel_diff', m)['mean']:.3f}" for m in mod.MODELS)
            row["cos(G, G′): standard / BN / noisy BN"] = " / ".join(
                f"{comp(lr, layer, 'cos', m)['mean']:.3f}" for m in mod.MODELS)
            md_rows.append(row)

    acc_rows = []
    for lr in cfg.lrs:
        for model in mod.MODELS:
            m, s, _ = mod.final_accuracy(rows, lr, model, cfg)
            bad = mod.diverged(rows, lr, model, cfg)
            g = comp(lr, layers[0], "g_norm", model)
            acc_rows.append({
                "lr": f"{lr:g}", "model": model,
                f"validation accuracy (%) at step {cfg.steps:,}":
                    report.pm(m, s, ".1f", 100) + (f" ({len(bad)} diverged)" if bad else ""),
                "median ‖G‖, layer 2": pm(g, ".3f"),
                "median ‖G‖, output layer": pm(comp(lr, layers[-1], "g_norm", model), ".3f")})

    def count(lr, value, test):
        return sum(1 for layer in layers if test(comp(lr, layer, value)))

    k = cfg.factor

    def lower(c):
        return mod._lower(c, k)

    def higher(c):
        return mod._higher(c, k)

    def ratios(lr, value, model="BN"):
        r = [comp(lr, layer, value, model)["ratio"] for layer in layers]
        return f"{min(r):.2f}x to {max(r):.2f}x"

    whole = mod.seed_medians(rows, cfg, whole=True)

    def whole_ratios(lr, value):
        r = [mod.compare_models(whole, lr, layer, value)["ratio"] for layer in layers]
        return f"{min(r):.2f}x to {max(r):.2f}x"

    ends = mod.window_ends(rows, cfg)

    def enders(lr):
        """The networks whose batch loss ended the window, with the number of seeds."""
        count: dict[str, int] = {}
        for (rate, seed), end in ends.items():
            if rate != lr or end > cfg.steps:
                continue
            for r in rows:
                if (r["kind"] == "train" and float(r["lr"]) == lr and r["seed"] == seed
                        and r["step"] == end and r["train_loss"] < cfg.loss_floor):
                    count[r["model"]] = count.get(r["model"], 0) + 1
        return count

    def g_after(lr, model):
        """Median ||G|| of layer 2 before and after the window end, means over seeds."""
        before, after = [], []
        for seed in cfg.seeds:
            end = ends[(lr, seed)]
            v = [(r["step"], r["g_norm"]) for r in rows if r["kind"] == "ics"
                 and float(r["lr"]) == lr and r["model"] == model and r["seed"] == seed
                 and r["layer"] == layers[0] and r["step"] in set(cfg.linear)]
            before.append(float(np.median([g for t, g in v if t < end])))
            if end <= cfg.steps:
                after.append(float(np.median([g for t, g in v if t >= end])))
        return float(np.mean(before)), float(np.mean(after))

    findings = []
    for lr, s, a in zip(cfg.lrs, shift, align, strict=True):
        n = len(layers)
        is_whole = mod._is_whole(rows, lr, cfg)
        after = ""
        if not is_whole:
            who = enders(lr)
            first = max(who, key=who.get)
            g_in, g_out = g_after(lr, first)
            after = (f" The window ends when the {first} network's batch loss first falls "
                     f"below {cfg.loss_floor:g} (in {who[first]} of {len(cfg.seeds)} seeds); "
                     f"after that, its median ‖G‖ of layer 2 is {g_out:.3g}, against "
                     f"{g_in:.3g} before. Over the whole run, BN's ‖G − G′‖ is "
                     f"{whole_ratios(lr, 'diff')} the standard network's (relative: "
                     f"{whole_ratios(lr, 'rel_diff')}).")
        findings.append(
            f"**Learning rate {lr:g}.** The medians cover {mod.window_text(rows, lr, cfg)}. "
            f"BN's median ‖G − G′‖ is {ratios(lr, 'diff')} the standard network's, layer by "
            f"layer. It is lower by more than {k:g} standard errors in "
            f"{count(lr, 'diff', lower)} of the {n} measured layers and higher in "
            f"{count(lr, 'diff', higher)}. Relative to ‖G‖ it is {ratios(lr, 'rel_diff')} "
            f"the standard network's: lower in {count(lr, 'rel_diff', lower)} layers, higher "
            f"in {count(lr, 'rel_diff', higher)}. Noisy BN's ‖G − G′‖ is "
            f"{ratios(lr, 'diff', 'noisy BN')} the standard network's.{after} "
            f"The claim that BN does not reduce the shift: {generate.verdict_word(s['word'])}.")
        first, last = comp(lr, layers[0], "cos"), comp(lr, layers[-1], "cos")
        text = (f"**Cosine, learning rate {lr:g}.** The median cos(G, G′) of layer 2 is "
                f"{first['ref']:.3f} for the standard network and {first['mean']:.3f} with "
                f"BN; of the output layer, {last['ref']:.3f} and {last['mean']:.3f}. BN's is "
                f"higher by more than {k:g} SE in {count(lr, 'cos', higher)} of the {n} "
                f"layers and lower in {count(lr, 'cos', lower)}.")
        if not is_whole:
            w = [mod.compare_models(whole, lr, layer, "cos") for layer in (layers[0],
                                                                           layers[-1])]
            text += (f" Over the whole run: {w[0]['ref']:.3f} and {w[0]['mean']:.3f} "
                     f"(layer 2), {w[1]['ref']:.3f} and {w[1]['mean']:.3f} (output layer).")
        findings.append(text + " The claim that BN does not align G′ better with G: "
                        f"{generate.verdict_word(a['word'])}.")

    output = generate.text_block(report.format_table(table) + "\n\n" + "\n".join(verdicts))
    out = {f"{NAME}-table.md": generate.md_table(md_rows, align="llrrrrr"),
           f"{NAME}-accuracy.md": generate.md_table(acc_rows, align="llrrr"),
           f"{NAME}-verdict.md": generate.bullets(findings),
           f"{NAME}-output.md": output}

    def measured(value):
        return "; ".join(f"lr {lr:g}: BN / standard {ratios(lr, value)}" for lr in cfg.lrs)

    summary = [
        {"claim": "Batch norm does not reduce the gradient-based internal covariate shift "
                  "||G - G'|| (Santurkar et al., Fig. 5)",
         "page": NAME, "verdict": _word(shift),
         "measured": measured("diff") + " (relative to ||G||: "
                     + measured("rel_diff") + ")"},
        {"claim": "Batch norm does not make G' better aligned with G (Santurkar et al., "
                  "Fig. 5)",
         "page": NAME, "verdict": _word(align),
         "measured": "; ".join(
             f"lr {lr:g}: cos higher with BN in {count(lr, 'cos', higher)} of "
             f"{len(layers)} layers, lower in {count(lr, 'cos', lower)}" for lr in cfg.lrs)},
    ]
    return out, summary
