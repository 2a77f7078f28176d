"""Snippets of the landscape page, from ``docs/experiments/landscape.csv``.

Same contract as the per-experiment functions of ``generate.py``:
:func:`snippets` returns the page's Markdown snippets by file name in
``docs/_generated`` and one row per claim for the experiments' summary table.
Every number is computed from the rows, with the experiment's own
``summarize`` and helpers.
"""

from __future__ import annotations

import math

import generate

NAME = "landscape"


def _rows(rows: list[dict]) -> list[dict]:
    """The CSV's rows with the integer columns as ``int`` and ``diverged`` as ``bool``."""
    out = []
    for row in rows:
        row = dict(row)
        for key in ("seed", "step"):
            v = row.get(key)
            if isinstance(v, float) and math.isfinite(v):
                row[key] = int(v)
        if row.get("kind") == "final":
            row["diverged"] = bool(row["diverged"])
        out.append(row)
    return out


def _config(rows: list[dict]):
    """The full-mode configuration of the CSV's dataset, checked against its seeds, learning
    rates and steps."""
    from fastbn.experiments import landscape as mod

    config = mod.make_config("full", 0, rows[0].get("dataset", mod.DATA))
    seeds = sorted({r["seed"] for r in rows})
    if tuple(seeds) != tuple(config.seeds):
        raise ValueError(f"{NAME}.csv has seeds {seeds}; the full run has {config.seeds}")
    lrs = sorted({r["lr"] for r in rows})
    if tuple(lrs) != tuple(sorted(config.lrs)):
        raise ValueError(f"{NAME}.csv has learning rates {lrs}; the full run has {config.lrs}")
    probed = sorted({r["step"] for r in rows if r["kind"] == "probe"})
    if probed and probed[-1] != config.checkpoints[-1]:
        raise ValueError(f"{NAME}.csv is probed up to step {probed[-1]}; the full run up to "
                         f"{config.checkpoints[-1]}")
    return config


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def snippets(rows: list[dict]) -> tuple[dict[str, str], list[dict]]:
    """``landscape-{table,verdict,output}.md`` and the page's rows of the claims' summary."""
    from fastbn.experiments import landscape as mod
    from fastbn.experiments import report

    rows = _rows(rows)
    cfg = _config(rows)
    table, verdicts = mod.summarize(rows, cfg)
    claims = [generate.parse_claim(v) for v in verdicts]
    early = cfg.early

    def measure(model, lr, column, until=None):
        values = mod.run_means(rows, model, lr, column, cfg, until)
        if any(math.isinf(v) for v in values):
            return "inf"
        m, s, _ = report.mean_std(values)
        return report.pm(m, s, ".3g")

    def final(model, lr, key, fmt=".1f", scale=100.0):
        values = [r[key] for r in mod.finals(rows, model, lr)]
        return report.pm(*report.mean_std(values)[:2], fmt, scale)

    def rise(model, lr, until=None):
        """Per seed, the mean over the checkpoints of how far the loss rises above L(theta)
        along the gradient, max(0, loss_max - loss); mean ± std over seeds."""
        per_seed = []
        for seed in cfg.seeds:
            mine = [max(r["loss_max"] - r["loss"], 0.0) for r in rows
                    if r["kind"] == "probe" and r["model"] == model and r["lr"] == lr
                    and r["seed"] == seed and (until is None or r["step"] < until)]
            if mine:
                per_seed.append(sum(mine) / len(mine))
        return report.mean_std(per_seed)

    windows = ((None, "all"), (early, f"first {early:,}"))
    md_rows, training = [], []
    for lr in cfg.lrs:
        for model in mod.MODELS:
            fin = mod.finals(rows, model, lr)
            bad = sum(r["diverged"] for r in fin)
            training.append({"lr": f"{lr:g}", "network": model,
                             "validation accuracy (%)": final(model, lr, "val_accuracy"),
                             "training loss, last epoch": final(model, lr, "train_loss",
                                                                ".2g", 1.0),
                             "diverged": f"{bad}/{len(fin)}"})
            for until, label in windows:
                row = {"lr": f"{lr:g}", "network": model, "steps": label}
                for column, _, name in mod.MEASURES:
                    row[name] = measure(model, lr, column, until)
                row["rise of the loss"] = report.pm(*rise(model, lr, until)[:2], ".3g")
                md_rows.append(row)

    claim_of = {column: claim for column, claim, _ in mod.MEASURES}

    def word(column, lr, until):
        """The verdict word of ``column``'s claim at ``lr`` over all steps / before ``until``."""
        tag = f"lr {lr:g}, " + ("all steps" if until is None else f"steps < {until}")
        for c in claims:
            if c is not None and c["tag"] == tag and c["claim"] == claim_of[column]:
                return c["word"]
        raise ValueError(f"no verdict line for {column} at lr {lr:g} ({tag})")

    def factor(column, lr, until=None):
        return mod.compare(rows, cfg, column, lr, until)["factor"]

    findings = []
    for column, claim, label in mod.MEASURES:
        parts = []
        for lr in cfg.lrs:
            c = mod.compare(rows, cfg, column, lr)
            e = mod.compare(rows, cfg, column, lr, early)
            parts.append(
                f"at lr {lr:g} the mean {label} is {c['BN']:.3g} with BN and "
                f"{c['standard']:.3g} without (standard / BN = {c['factor']:.2f}x, "
                f"{generate.verdict_word(word(column, lr, None))}); over the first "
                f"{early:,} steps {e['BN']:.3g} and {e['standard']:.3g} ({e['factor']:.2f}x, "
                f"{generate.verdict_word(word(column, lr, early))})")
        text = "; ".join(parts)
        findings.append(f"**{claim}.** {text[0].upper()}{text[1:]}.")

    def rises(lr, until=None):
        return {m: rise(m, lr, until)[0] for m in mod.MODELS}

    parts = []
    for lr in cfg.lrs:
        r_all, r_early = rises(lr), rises(lr, early)
        parts.append(f"at lr {lr:g} by {r_all['standard']:.3g} for the standard network and "
                     f"{r_all['BN']:.3g} with BN ({r_early['standard']:.3g} and "
                     f"{r_early['BN']:.3g} over the first {early:,} steps)")
    findings.append(
        "**Up or down.** The loss variation counts a drop of the loss along the gradient "
        "as much as a rise. Averaged over the checkpoints, the largest loss over the step "
        "sizes exceeds the loss at the starting point " + "; ".join(parts) + ".")

    def fitted(model, lr, level=0.01):
        """The first checkpoint at which the batch loss, mean over seeds, is below level."""
        by_step: dict[int, list[float]] = {}
        for r in mod._of(rows, "probe", model=model, lr=lr):
            by_step.setdefault(r["step"], []).append(r["loss"])
        hit = [t for t in sorted(by_step) if sum(by_step[t]) / len(by_step[t]) < level]
        return f"step {hit[0]:,}" if hit else "never"

    fits = [f"{m} at lr {lr:g}: {fitted(m, lr)}" for lr in cfg.lrs for m in mod.MODELS]
    findings.append(
        "**Fitting the training set.** The first checkpoint at which the batch loss, mean "
        "over the seeds, falls below 0.01: " + "; ".join(fits) + ". Near a loss of zero "
        "every gradient is small, and so are all three measures.")

    diverged = []
    for lr in cfg.lrs:
        for m in mod.MODELS:
            fin = mod.finals(rows, m, lr)
            bad = sum(r["diverged"] for r in fin)
            if bad:
                diverged.append(f"the {m} network at lr {lr:g} in {bad}/{len(fin)} seeds")
    acc = {(m, lr): report.mean_std(r["val_accuracy"] for r in mod.finals(rows, m, lr))[0]
           for lr in cfg.lrs for m in mod.MODELS}
    findings.append(
        "**Training.** After " + f"{cfg.steps:,} steps the validation accuracy is "
        + _and([f"{100 * acc['BN', lr]:.1f} % with BN and {100 * acc['standard', lr]:.1f} % "
                f"without at lr {lr:g}" for lr in cfg.lrs]) + ". "
        + ("No run diverged." if not diverged else "Diverged: " + _and(diverged) + "."))

    def overall(column):
        words = {lr: word(column, lr, None) for lr in cfg.lrs}
        yes = [lr for lr, w in words.items() if w == "REPRODUCED"]
        if len(yes) == len(cfg.lrs):
            return "REPRODUCED"
        if yes:
            return f"PARTLY REPRODUCED (at lr {_and([f'{lr:g}' for lr in yes])} only)"
        return "NOT REPRODUCED"

    summary = [{"claim": f"{claim} (Santurkar et al., Fig. 4)", "page": NAME,
                "verdict": generate.verdict_word(overall(column)),
                "measured": "standard / BN " + ", ".join(
                    f"{factor(column, lr):.2f}x at lr {lr:g}" for lr in cfg.lrs)
                + f" (mean over {cfg.steps:,} steps)"}
               for column, claim, _ in mod.MEASURES]
    output = generate.text_block(report.format_table(table) + "\n\n" + "\n".join(verdicts))
    out = {f"{NAME}-table.md": generate.md_table(md_rows, align="lll" + "r" * 4),
           f"{NAME}-training.md": generate.md_table(training, align="llrrr"),
           f"{NAME}-verdict.md": generate.bullets(findings),
           f"{NAME}-output.md": output}
    return out, summary
