"""Snippets of the MNIST-1D pages: ``baselines`` and the re-runs on MNIST-1D.

:func:`snippets` is the ``baselines`` experiment's (from
``docs/experiments/baselines.csv``), with the contract of the per-experiment
functions of ``generate.py``.  :func:`rerun_snippets` makes the snippets of
``docs/experiments/mnist1d.md`` from the full runs of ``convergence``,
``learning-rate`` and ``init`` with ``--data mnist1d``, committed under
``docs/experiments/mnist1d/``.  Every number comes from the rows, through the
experiments' own ``summarize``.
"""

from __future__ import annotations

from pathlib import Path

import generate

#: The experiments re-run on MNIST-1D, in the page's order.
RERUNS = generate.MNIST1D_RERUNS


def _findings(verdicts: list[str]) -> str:
    """One bullet per verdict line: the claim (and its tag) in bold, the verdict word, the
    numbers."""
    items = []
    for line in verdicts:
        claim = generate.parse_claim(line)
        if claim is None:
            raise ValueError(f"not a verdict line: {line!r}")
        tag = f" ({claim['tag']})" if claim["tag"] else ""
        word, _, detail = line.partition(": ")[2].partition(" -- ")
        items.append(f"**{claim['claim']}**{tag}: {generate.verdict_word(word)} -- "
                     f"{detail}")
    return generate.bullets(items)


def snippets(rows: list[dict]) -> tuple[dict[str, str], list[dict]]:
    """``baselines-{table,verdict,output}.md`` and the claims' summary rows."""
    from fastbn.experiments import baselines as mod
    from fastbn.experiments import report

    cfg = generate._config("baselines", rows)
    table, verdicts = mod.summarize(rows, cfg)
    gains = []
    for plain in ("MLP", "CNN"):
        if f"{plain} BN" not in cfg.models:
            continue
        (bn, bn_s, bn_n), (no, no_s, no_n) = (
            report.mean_std(mod.accuracies(rows, m, cfg)[0]) for m in (f"{plain} BN", plain))
        se = (bn_s ** 2 / max(bn_n, 1) + no_s ** 2 / max(no_n, 1)) ** 0.5
        gains.append(f"the {plain} {100 * (bn - no):+.1f} points "
                     f"({report.pm(bn, bn_s, '.1f', 100)} % against "
                     f"{report.pm(no, no_s, '.1f', 100)} %, twice the standard error "
                     f"{200 * se:.1f})")
    bn_line = ("- **With batch norm**, under the same protocol: " + "; ".join(gains) + ".\n"
               if gains else "")
    out = {"baselines-table.md": generate.md_table(table),
           "baselines-verdict.md": _findings(verdicts) + bn_line,
           "baselines-output.md": generate.text_block(
               report.format_table(table) + "\n\n" + "\n".join(verdicts)),
           "baselines-setup.md": (f"{len(cfg.seeds)} seeds per model, each {cfg.epochs} "
                                  f"epochs of {4000 // cfg.batch_size} batches of "
                                  f"{cfg.batch_size} ({cfg.steps:,} steps), Adam at lr "
                                  f"{cfg.lr:g}.\n")}
    words, measured, models = [], [], []
    for line in verdicts:
        claim = generate.parse_claim(line)
        words.append(line.partition(": ")[2].partition(" -- ")[0])
        model = claim["claim"].rsplit(" its ", 1)[-1]
        models.append(model)
        m, s, _ = report.mean_std(mod.accuracies(rows, model, cfg)[0])
        measured.append(f"{model} {report.pm(m, s, '.1f', 100)} % vs "
                        f"{100 * mod.MNIST1D_BASELINES[model]:.0f} %")
    missed = [m for m, w in zip(models, words, strict=True) if w != "REPRODUCED"]
    word = "REPRODUCED" if not missed else f"NOT REPRODUCED ({', '.join(missed)})"
    summary = [{"claim": "Our models, trained as the MNIST-1D paper trains them, match its "
                         "baselines", "page": "baselines", "verdict": generate.verdict_word(word),
                "measured": "; ".join(measured)}]
    return out, summary


def _rows(srcdir: Path, name: str) -> list[dict]:
    from fastbn.experiments import report

    rows = report.read_csv(Path(srcdir) / "experiments" / "mnist1d" / f"{name}.csv")
    for row in rows:
        for key in generate.INT_COLUMNS & row.keys():
            if isinstance(row[key], float) and row[key] == row[key]:
                row[key] = int(row[key])
    if {r["dataset"] for r in rows} != {"mnist1d"}:
        raise ValueError(f"experiments/mnist1d/{name}.csv is not an MNIST-1D run")
    return rows


def rerun_snippets(srcdir: Path) -> tuple[dict[str, str], list[dict]]:
    """``mnist1d-<name>-{table,verdict}.md`` per re-run and the claims' summary rows."""
    import importlib

    from fastbn import experiments

    out, summary = {}, []
    for name in RERUNS:
        rows = _rows(srcdir, name)
        mod = importlib.import_module(f"fastbn.experiments.{experiments.EXPERIMENTS[name]}")
        cfg = mod.make_config("full", 0, "mnist1d")
        seeds = sorted({r["seed"] for r in rows})
        if tuple(seeds) != tuple(cfg.seeds):
            raise ValueError(f"mnist1d/{name}.csv has seeds {seeds}; the full run has "
                             f"{cfg.seeds}")
        table, verdicts = mod.summarize(rows, cfg)
        out[f"mnist1d-{name}-table.md"] = generate.md_table(table)
        out[f"mnist1d-{name}-verdict.md"] = _findings(verdicts)
        for line in verdicts:
            claim = generate.parse_claim(line)
            word, _, detail = line.partition(": ")[2].partition(" -- ")
            tag = f", {claim['tag']}" if claim["tag"] else ""
            summary.append({"claim": f"{claim['claim']} (MNIST-1D{tag})", "page": "mnist1d",
                            "verdict": generate.verdict_word(word),
                            "measured": detail.rstrip(".")})
    return out, summary
