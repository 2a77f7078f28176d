"""Snippets of the noisy-bn page, from ``docs/experiments/noisy-bn.csv``.

Same contract as the per-experiment functions of ``generate.py``:
:func:`snippets` returns the page's Markdown snippets by file name in
``docs/_generated`` and one row per claim for the experiments' summary table.
Every number is computed from the rows, with the experiment's own
``summarize`` and helpers.
"""

from __future__ import annotations

import math

import generate

NAME = "noisy-bn"
INT_COLUMNS = ("seed", "step", "layer", "unit", "percentile", "diverged")


def _rows(rows: list[dict]) -> list[dict]:
    """The CSV's rows with the integer columns as ``int``."""
    out = []
    for row in rows:
        row = dict(row)
        for key in INT_COLUMNS:
            v = row.get(key)
            if isinstance(v, float) and math.isfinite(v):
                row[key] = int(v)
        out.append(row)
    return out


def _config(rows: list[dict]):
    """The full-mode configuration for the CSV's dataset, checked against its seeds and
    steps."""
    from fastbn.experiments import noisy_bn as mod

    config = mod.make_config("full", 0, rows[0].get("dataset", mod.DATA))
    seeds = sorted({r["seed"] for r in rows})
    if tuple(seeds) != tuple(config.seeds):
        raise ValueError(f"{NAME}.csv has seeds {seeds}; the full run has {config.seeds}")
    last = max(r["step"] for r in rows if r["kind"] == "accuracy")
    if last != config.steps:
        raise ValueError(f"{NAME}.csv ends at step {last}; the full run trains {config.steps}")
    return config


def snippets(rows: list[dict]) -> tuple[dict[str, str], list[dict]]:
    """``noisy-bn-{table,verdict,output}.md`` and the page's rows of the claims' summary."""
    from fastbn.experiments import noisy_bn as mod
    from fastbn.experiments import report

    rows = _rows(rows)
    cfg = _config(rows)
    table, verdicts = mod.summarize(rows, cfg)
    trains, unstable, control = (generate.parse_claim(v) for v in verdicts)
    first, last = cfg.layers[0], cfg.layers[-1]

    def ms(values):
        return report.mean_std(values)

    def acc(model, which="final", column="val_accuracy"):
        return ms(mod.accuracy(rows, model, cfg, which, column))

    def pct(model, which="final", column="val_accuracy"):
        return report.pm(*acc(model, which, column)[:2], ".1f", 100)

    def change(model, layer, stat, column="value"):
        return ms(mod.mean_change(rows, model, layer, stat, cfg, column))

    def ratio(a, b, layer, stat, column="value"):
        return change(a, layer, stat, column)[0] / change(b, layer, stat, column)[0]

    def drift(model, layer):
        return ms(mod.final_drift(rows, model, layer, "mean", cfg))

    lines = [
        (f"validation accuracy (%) at step {cfg.steps:,}", lambda m: pct(m)),
        ("best validation accuracy (%) over the checkpoints", lambda m: pct(m, "best")),
        (f"training accuracy (%) at step {cfg.steps:,} ({cfg.eval_train:,} samples, "
         f"eval mode)", lambda m: pct(m, column="train_accuracy")),
        ("training loss over the last checkpoint interval (with the noise)",
         lambda m: report.pm(*acc(m, column="train_loss")[:2], ".3f")),
    ]
    for stat in mod.STATS:
        for layer in cfg.layers:
            lines.append((f"change per step of the {stat}, layer {layer}'s output",
                          lambda m, la=layer, st=stat: report.pm(*change(m, la, st)[:2],
                                                                  ".4f")))
    for layer in cfg.layers:
        lines.append((f"the same for the mean, divided by the std, layer {layer}",
                      lambda m, la=layer: report.pm(*change(m, la, "mean", "relative")[:2],
                                                    ".4f")))
    for layer in cfg.layers:
        lines.append((f"drift of the mean from step 0 to {cfg.steps:,}, layer {layer}",
                      lambda m, la=layer: report.pm(*drift(m, la)[:2], ".3f")))
    md_rows = [{"measure": label, **{m: f(m) for m in mod.MODELS}} for label, f in lines]

    n = len(cfg.seeds)
    bn, noisy = acc("BN"), acc("noisy BN")
    se = math.sqrt(bn[1] ** 2 / max(bn[2], 1) + noisy[1] ** 2 / max(noisy[2], 1))
    r_noisy = {(la, st): ratio("noisy BN", "standard", la, st)
               for la in cfg.layers for st in mod.STATS}
    r_bn = {(la, st): ratio("standard", "BN", la, st) for la in cfg.layers for st in mod.STATS}
    lo_n, hi_n = min(r_noisy.values()), max(r_noisy.values())
    lo_b, hi_b = min(r_bn.values()), max(r_bn.values())
    rel_n = [ratio("noisy BN", "standard", la, "mean", "relative") for la in cfg.layers]
    findings = [
        f"**Accuracy (panel a).** After {cfg.steps:,} steps the validation accuracy is "
        f"{pct('noisy BN')} % with noisy BN, {pct('BN')} % with BN and {pct('standard')} % "
        f"without (mean ± std over {n} seeds). Noisy BN minus BN is "
        f"{100 * (noisy[0] - bn[0]):+.1f} points, against twice its standard error, "
        f"{200 * se:.1f}. The best accuracy over the checkpoints is {pct('noisy BN', 'best')} "
        f"%, {pct('BN', 'best')} % and {pct('standard', 'best')} %. "
        + ("Noisy BN is even ahead of BN by more than twice the standard error. "
           if noisy[0] - bn[0] > 2 * se else "")
        + f"The claim that noisy BN trains as well as BN: "
        f"{generate.verdict_word(trains['word'])}.",
        f"**Training (panel b).** Measured with its noise, noisy BN's training loss ends at "
        f"{report.pm(*acc('noisy BN', column='train_loss')[:2], '.3f')}, against "
        f"{report.pm(*acc('BN', column='train_loss')[:2], '.3f')} with BN and "
        f"{report.pm(*acc('standard', column='train_loss')[:2], '.3f')} without. Without the "
        f"noise (eval mode, {cfg.eval_train:,} training samples) its training accuracy is "
        f"{pct('noisy BN', column='train_accuracy')} %, against "
        f"{pct('BN', column='train_accuracy')} % and "
        f"{pct('standard', column='train_accuracy')} %.",
        f"**Stability of the layers' inputs (panels d-i).** Per step, the per-unit mean and "
        f"std of the outputs of layers {first} and {last} change {lo_n:.1f} to {hi_n:.1f} "
        f"times as much with noisy BN as in the standard network. Divided by the units' "
        f"std, the mean changes {rel_n[0]:.1f} (layer {first}) and {rel_n[-1]:.1f} (layer "
        f"{last}) times as much. The claim that noisy BN's layer inputs are less stable than "
        f"the standard network's: {generate.verdict_word(unstable['word'])}.",
        (f"**Total drift (panel c).** From step 0 to step {cfg.steps:,}, the units' means "
        f"of layer {first}'s output move {drift('standard', first)[0]:.2f} on average "
        f"without BN, {drift('noisy BN', first)[0]:.2f} with noisy BN and "
        f"{drift('BN', first)[0]:.2f} with BN (layer {last}: "
        f"{drift('standard', last)[0]:.2f}, {drift('noisy BN', last)[0]:.2f} and "
        f"{drift('BN', last)[0]:.2f}). "
        + ("So the noise makes the inputs jump at every step, but around a centre that "
           "moves less over the whole run than the standard network's. "
           if all(drift("noisy BN", la)[0] < drift("standard", la)[0] for la in cfg.layers)
           else "")).rstrip(),
        f"**Control.** The standard network's layer inputs change {lo_b:.0f} to {hi_b:.0f} "
        f"times as much per step as those of the network with BN: "
        f"{generate.verdict_word(control['word'])}.",
    ]
    output = generate.text_block(report.format_table(table) + "\n\n" + "\n".join(verdicts))
    out = {f"{NAME}-table.md": generate.md_table(md_rows, align="lrrr"),
           f"{NAME}-verdict.md": generate.bullets(findings),
           f"{NAME}-output.md": output}
    summary = [
        {"claim": "Batch norm with noise that moves every layer's input at every step "
                  "trains as well as batch norm (Santurkar et al., Fig. 2)",
         "page": NAME, "verdict": generate.verdict_word(trains["word"]),
         "measured": f"{pct('noisy BN')} % vs {pct('BN')} % (standard {pct('standard')} %) "
                     f"after {cfg.steps:,} steps"},
        {"claim": "Noisy batch norm's layer inputs are less stable than those of the "
                  "network without batch norm (Fig. 2)",
         "page": NAME, "verdict": generate.verdict_word(unstable["word"]),
         "measured": f"per-step change of the units' mean and std {lo_n:.1f}x to "
                     f"{hi_n:.1f}x the standard network's"},
    ]
    return out, summary
