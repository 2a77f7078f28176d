"""Snippets of the covariate-shift page, from ``docs/experiments/covariate-shift.csv``.

Same contract as the per-experiment functions of ``generate.py``:
:func:`snippets` returns the page's Markdown snippets by file name in
``docs/_generated`` and one row per claim for the experiments' summary table.
Every number is computed from the rows, with the experiment's own
``summarize`` and helpers.
"""

from __future__ import annotations

import math

import generate

NAME = "covariate-shift"


def _rows(rows: list[dict]) -> list[dict]:
    """The CSV's rows with the integer columns as ``int`` (``unit`` may be ``"all"``)."""
    out = []
    for row in rows:
        row = dict(row)
        for key in ("seed", "step", "percentile", "since", "unit", "diverged"):
            v = row.get(key)
            if isinstance(v, float) and math.isfinite(v):
                row[key] = int(v)
        out.append(row)
    return out


def _config(rows: list[dict]):
    """The full-mode configuration for the CSV's dataset, checked against its seeds and
    steps."""
    from fastbn.experiments import covariate_shift as mod

    config = mod.make_config("full", 0, rows[0].get("dataset", "digits"))
    seeds = sorted({r["seed"] for r in rows})
    if tuple(seeds) != tuple(config.seeds):
        raise ValueError(f"{NAME}.csv has seeds {seeds}; the full run has {config.seeds}")
    last = max(r["step"] for r in rows if r["kind"] == "accuracy")
    if last != config.steps:
        raise ValueError(f"{NAME}.csv ends at step {last}; the full run trains {config.steps}")
    return config


def _steps(n: int) -> str:
    return f"{n:,}"


def snippets(rows: list[dict]) -> tuple[dict[str, str], list[dict]]:
    """``covariate-shift-{table,verdict,output}.md`` and the page's rows of the claims'
    summary."""
    from fastbn.experiments import covariate_shift as mod
    from fastbn.experiments import report

    rows = _rows(rows)
    cfg = _config(rows)
    table, verdicts = mod.summarize(rows, cfg)
    speed, drift0, drift_half = (generate.parse_claim(v) for v in verdicts)
    final, early, half = cfg.steps, mod._early(cfg), cfg.half
    target = f"{cfg.target_accuracy:.0%}"

    acc = {m: {s: mod.accuracy_at(rows, m, s, cfg) for s in (early, final)}
           for m in mod.MODELS}
    hits = {m: mod.steps_to_target(rows, m, cfg) for m in mod.MODELS}
    drift = {m: {w: mod.drift_stats(rows, m, w, cfg) for w in (0, half)}
             for m in mod.MODELS}

    def pct(m, s):
        mean, std, _ = acc[m][s]
        return report.pm(mean, std, ".1f", 100)

    def reach(m):
        done = [v for v in hits[m].values() if math.isfinite(v)]
        if not done:
            return f"not within {_steps(final)}"
        text = report.pm(*report.mean_std(done)[:2], ".0f")
        return text + (f" ({len(done)}/{len(hits[m])} seeds)" if len(done) < len(hits[m])
                       else "")

    def drifts(m, w, keys, fmt=".2f"):
        if len(keys) == 1:
            return report.pm(*report.mean_std(drift[m][w][keys[0]])[:2], fmt)
        return " / ".join(f"{report.mean_std(drift[m][w][k])[0]:{fmt}}" for k in keys)

    def spread(m, w):
        mean, std, _ = report.mean_std(drift[m][w]["spread"])
        return report.pm(mean, std, ".0f" if mean >= 10 else ".2f") + "x"

    lines = [
        (f"validation accuracy (%) at step {_steps(final)}", lambda m: pct(m, final)),
        (f"validation accuracy (%) at step {_steps(early)}", lambda m: pct(m, early)),
        (f"steps to {target} validation accuracy", reach),
        ("largest median drift from step 0 (x final spread)",
         lambda m: drifts(m, 0, ["p50"])),
        ("largest 15th / 85th percentile drift from step 0",
         lambda m: drifts(m, 0, ["p15", "p85"])),
        ("spread at the end / at step 0", lambda m: spread(m, 0)),
        (f"largest median drift from step {_steps(half)}",
         lambda m: drifts(m, half, ["p50"], ".3f")),
        (f"largest 15th / 85th percentile drift from step {_steps(half)}",
         lambda m: drifts(m, half, ["p15", "p85"], ".3f")),
        (f"spread at the end / at step {_steps(half)}", lambda m: spread(m, half)),
    ]
    md_rows = [{"measure": label, **{m: f(m) for m in mod.MODELS}} for label, f in lines]

    def mean(m, w, key):
        return report.mean_std(drift[m][w][key])[0]

    still = all(mean(m, half, "p50") < 0.05 and abs(math.log(mean(m, half, "spread")))
                < math.log(1.1) for m in mod.MODELS)
    bn_acc, no_acc = acc["BN"][final], acc["no BN"][final]
    diff = bn_acc[0] - no_acc[0]
    findings = [
        f"**Accuracy (panel a).** With batch norm the network reaches {target} validation "
        f"accuracy in {reach('BN')} steps, without it in {reach('no BN')} (mean ± std over "
        f"{len(cfg.seeds)} seeds). At step {_steps(early)} the accuracy is {pct('BN', early)} % "
        f"with BN and {pct('no BN', early)} % without; after {_steps(final)} steps "
        f"{pct('BN', final)} % and {pct('no BN', final)} % ({100 * diff:+.1f} points). "
        f"The claim that BN trains faster and reaches a higher accuracy: "
        f"{generate.verdict_word(speed['word'])}.",
        f"**Distribution of the sigmoid's input (panels b-f).** Over the {len(cfg.seeds)} "
        f"seeds and the {cfg.hidden[-1]} units of the last hidden layer, the median of a "
        f"unit's input moves up to {mean('no BN', 0, 'p50'):.2f} of the unit's final "
        f"spread away from its step-0 value without BN, and up to "
        f"{mean('BN', 0, 'p50'):.2f} with BN (means over units and seeds). The 15th-85th "
        f"spread ends {mean('no BN', 0, 'spread'):.3g}x its step-0 width without BN and "
        f"{mean('BN', 0, 'spread'):.3g}x with BN. From step 0: "
        f"{generate.verdict_word(drift0['word'])}.",
        "**Second half of training.** "
        + ("Both distributions are nearly still by then. " if still else "")
        + f"From step {_steps(half)} to {_steps(final)}, the median moves at most "
        f"{mean('no BN', half, 'p50'):.3f} final spreads without BN and "
        f"{mean('BN', half, 'p50'):.3f} with BN, and the spread changes by a factor "
        f"{mean('no BN', half, 'spread'):.3g} without and {mean('BN', half, 'spread'):.3g} "
        f"with: {generate.verdict_word(drift_half['word'])}.",
    ]
    output = generate.text_block(report.format_table(table) + "\n\n" + "\n".join(verdicts))
    out = {f"{NAME}-table.md": generate.md_table(md_rows, align="lrr"),
           f"{NAME}-verdict.md": generate.bullets(findings),
           f"{NAME}-output.md": output}
    summary = [
        {"claim": "Batch norm trains faster and reaches a higher accuracy (Ioffe & Szegedy, "
                  "Fig. 1a)",
         "page": NAME, "verdict": generate.verdict_word(speed["word"]),
         "measured": f"{target} in {reach('BN')} vs {reach('no BN')} steps; "
                     f"{100 * diff:+.1f} points at step {_steps(final)}"},
        {"claim": "Without batch norm a sigmoid's input distribution drifts; with it, it "
                  "stays put (Fig. 1b, c)",
         "page": NAME, "verdict": generate.verdict_word(drift0["word"]),
         "measured": f"median drift {mean('no BN', 0, 'p50'):.2f} vs "
                     f"{mean('BN', 0, 'p50'):.2f} final spreads; spread "
                     f"{mean('no BN', 0, 'spread'):.3g}x vs {mean('BN', 0, 'spread'):.3g}x "
                     f"(no BN vs BN)"},
    ]
    return out, summary
