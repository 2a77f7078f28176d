"""Tables, figures and verdicts generated from the committed data.

The experiment and performance pages never hold a measured number typed by
hand.  Every table on them, every figure of the performance page and every
sentence that states a measured number is written here, into
``docs/_generated/``, from

* ``docs/experiments/NAME.csv`` -- the tidy tables that
  ``fastbn experiment NAME --out docs/experiments`` wrote;
* ``docs/bench-cpu.json`` -- the report of
  ``python -m fastbn bench --json docs/bench-cpu.json``;
* ``docs/measurements.json`` -- the few measurements that neither of those
  holds (the machine's description, the cold compile and the Quick start's
  first command, the experiments' run dates and wall times).

The pages pull the Markdown snippets in with MyST's ``{include}`` directive
and show the PNGs as images.  The summaries of the experiments are computed
by the experiments' own ``summarize`` functions and the helpers of
:mod:`fastbn.experiments.report`, so a page shows what the command printed.

Usage::

    python docs/_ext/generate.py            # write docs/_generated/
    python docs/_ext/generate.py --readme   # rewrite README.md's headline block

Sphinx calls :func:`write_all` at ``builder-inited`` (``docs/_ext/fastbn_docs.py``).
The output depends on the data alone: the same data give the same bytes, and
a file whose content would not change is not rewritten.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parents[1]
REPO = DOCS.parent

#: The lines of README.md between which ``--readme`` writes the headline table.
HEADLINE_START = "<!-- headline:start -->"
HEADLINE_END = "<!-- headline:end -->"

#: The experiments with a committed CSV, in the order of the guide.
EXPERIMENTS = ("convergence", "learning-rate", "init", "small-batch", "placement", "depth",
               "covariate-shift", "baselines", "noisy-bn", "ics", "landscape", "sync-bn")

#: The experiments re-run on MNIST-1D, their CSVs in ``docs/experiments/mnist1d/``
#: (``docs/_ext/gen_mnist1d.py``).
MNIST1D_RERUNS = ("convergence", "learning-rate", "init")
#: The timing runs whose CSVs sit beside the experiments' (profile, Dask, SyncBatchNorm cost).
TIMINGS = ("profile", "dask-moments", "sync-bn-cost")

#: Columns of the CSVs that hold integers (``report.read_csv`` reads every number as float).
INT_COLUMNS = {"seed", "epoch", "ranks", "step", "batch_size", "epochs_run", "steps",
               "bn_pool_min", "bn_pool_max", "diverged"}

#: A tensor of at least this many bytes is a "large" case of the bench (as in fastbn.bench).
LARGE_BYTES = 8 * (1 << 20)

#: The suffix of the pass of the bench rows that write into a preallocated ``out=``.
OUT = " out="

#: The speed targets that the bench's report is checked against.
TARGET_TORCH_GEOMEAN = 1.3
TARGET_TORCH_FLOOR = 0.9
TARGET_FORMULA_GEOMEAN = 6.0
TARGET_PROBE_FRACTION = 0.65
TARGET_SMALL_CALL_US = 8.0

#: The cases of the README's headline: (op, pass, layout, dtype, shape) of the bench.
HEADLINE_CASES = (
    ("batch_norm", "forward-train", "NCHW", "float32", (32, 64, 56, 56)),
    ("batch_norm", "backward", "NHWC", "float32", (32, 56, 56, 64)),
    ("layer_norm", "forward", "rows", "float32", (4096, 1024)),
    ("group_norm G=32", "forward", "NCHW", "float32", (32, 64, 56, 56)),
    ("batch_norm", "forward-train", "NC", "float32", (32, 256)),
)

_OP_NAMES = {"batch_norm": "batch norm", "bn+add+relu": "batch norm + add + ReLU",
             "layer_norm": "layer norm", "rms_norm": "RMS norm",
             "group_norm G=32": "group norm (G=32)"}
_OP_SHORT = {"batch_norm": "bn", "bn+add+relu": "bn+add+relu", "layer_norm": "ln",
             "rms_norm": "rms", "group_norm G=32": "gn"}
_PASS_SHORT = {"forward-train": "fwd-train", "inference": "inference", "backward": "bwd",
               "forward": "fwd"}


# --- reading the data ---------------------------------------------------------------------


def read_experiment(srcdir: Path, name: str) -> list[dict]:
    """The tidy table of experiment ``name``, its integer columns as ``int``."""
    from fastbn.experiments import report

    rows = report.read_csv(Path(srcdir) / "experiments" / f"{name}.csv")
    for row in rows:
        for key in INT_COLUMNS & row.keys():
            if isinstance(row[key], float) and math.isfinite(row[key]):
                row[key] = int(row[key])
    return rows


def read_bench(srcdir: Path) -> dict:
    """``docs/bench-cpu.json``: ``{"machine": {...}, "rows": [...]}``."""
    return json.loads((Path(srcdir) / "bench-cpu.json").read_text())


def read_measurements(srcdir: Path) -> dict:
    """``docs/measurements.json``: the machine and the measurements outside the bench."""
    return json.loads((Path(srcdir) / "measurements.json").read_text())


# --- Markdown -----------------------------------------------------------------------------


def md_table(rows: Sequence[dict], columns: Sequence[str] | None = None,
             align: str | None = None) -> str:
    """A Markdown pipe table of ``rows`` (the keys of the first row, or ``columns``).

    ``align`` has one letter per column, ``l`` or ``r`` (default: the first
    column left, the others right).
    """
    columns = list(columns or rows[0])
    align = align or "l" + "r" * (len(columns) - 1)
    rule = {"l": "---", "r": "---:", "c": ":---:"}

    def cell(v) -> str:
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |",
             "| " + " | ".join(rule[a] for a in align) + " |"]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def text_block(text: str) -> str:
    """``text`` in a ```` ```text ```` fence."""
    return f"```text\n{text.rstrip()}\n```\n"


def bullets(items: Iterable[str]) -> str:
    return "".join(f"- {item}\n" for item in items)


def verdict_word(word: str) -> str:
    """``"NOT REPRODUCED (less than 2x)"`` -> ``"**not reproduced** (less than 2x)"``."""
    head, sep, rest = word.partition(" (")
    return f"**{head.lower()}**" + (f" ({rest}" if sep else "")


_CLAIM = re.compile(r"^\s*Claim '(?P<claim>[^']+)'(?: \((?P<tag>[^)]+)\))?: "
                    r"(?P<word>.+?) -- (?P<detail>.*)$")


def parse_claim(line: str) -> dict | None:
    """A verdict line of an experiment's ``summarize``: claim, tag, word and detail."""
    m = _CLAIM.match(line)
    return m.groupdict() if m else None


def _pct(v: float, fmt: str = ".1f") -> str:
    return f"{100 * v:{fmt}}"


def _x(v: float, fmt: str = ".2f") -> str:
    """A ratio as ``"1.42x"``."""
    return f"{v:{fmt}}x"


def _lr(v: float | None) -> str:
    return "none" if v is None else f"{v:g}"


# --- the experiments ----------------------------------------------------------------------


def _module(name: str):
    from fastbn import experiments

    return experiments.get(name)


def _config(name: str, rows: list[dict]):
    """The full-mode configuration of ``name`` for the CSV's dataset, checked against it."""
    mod = _module(name)
    dataset = rows[0].get("dataset", "digits")
    config = mod.make_config("full", 0, dataset)
    seeds = sorted({r["seed"] for r in rows})
    if tuple(seeds) != tuple(config.seeds):
        raise ValueError(f"{name}.csv has seeds {seeds}; the full run has {config.seeds}")
    return config


def command_output(name: str, rows: list[dict], config) -> str:
    """The summary table and the verdicts as ``fastbn experiment NAME`` prints them."""
    from fastbn.experiments import report

    table, verdicts = _module(name).summarize(rows, config)
    return text_block(report.format_table(table) + "\n\n" + "\n".join(verdicts))


def convergence(rows: list[dict]) -> tuple[dict[str, str], list[dict]]:
    """Snippets of the convergence page and its rows of the claims' summary."""
    from fastbn.experiments import convergence as mod
    from fastbn.experiments import report

    cfg = _config("convergence", rows)
    table, verdicts = mod.summarize(rows, cfg)
    target = f"{cfg.target_accuracy:.0%}"
    per = mod.per_seed(rows, cfg)
    stats = {}
    for model in mod.MODELS:
        mine = [s for s in per if s["model"] == model]
        ok = [r for r in rows if r["model"] == model and not r["diverged"]]
        last = [r["train_loss"] for r in ok if r["epoch"] == cfg.epochs]
        stats[model] = {
            "ep": report.mean_std(s["epochs_to_target"] for s in mine),
            "sec": report.mean_std(s["seconds_to_target"] for s in mine),
            "acc": report.mean_std(s["final_accuracy"] for s in mine),
            "epoch_ms": 1e3 * float(np.median([r["epoch_s"] for r in ok])),
            "last_loss": float(np.mean(last)),
        }
    bn, no = stats["BN"], stats["no BN"]
    out = {"convergence-table.md": md_table(table),
           "convergence-output.md": command_output("convergence", rows, cfg)}

    speed, accuracy = (parse_claim(v) for v in verdicts)
    r_ep = no["ep"][0] / bn["ep"][0]
    r_s = no["sec"][0] / bn["sec"][0]
    r_epoch = bn["epoch_ms"] / no["epoch_ms"]
    time_part = (f"but only {_x(r_s)} less wall time" if r_s >= 1
                 else f"but {_x(1 / r_s)} more wall time")
    cost = ("more" if r_epoch >= 1 else "less")
    findings = [
        f"**Speed.** BN reaches {target} in {_x(r_ep)} fewer epochs "
        f"({bn['ep'][0]:.1f} against {no['ep'][0]:.1f}, means over {len(cfg.seeds)} seeds), "
        f"{time_part}, because its epoch costs "
        f"{_x(max(r_epoch, 1 / r_epoch), '.1f')} {cost} ({bn['epoch_ms']:.1f} ms against "
        f"{no['epoch_ms']:.1f} ms, medians). The tutorial's \"2-10x faster\": "
        f"{verdict_word(speed['word'])}.",
    ]
    diff = bn["acc"][0] - no["acc"][0]
    se = math.sqrt(bn["acc"][1] ** 2 / max(bn["acc"][2], 1)
                   + no["acc"][1] ** 2 / max(no["acc"][2], 1))
    findings.append(
        f"**Accuracy.** BN ends {abs(100 * diff):.2f} points "
        f"{'higher' if diff >= 0 else 'lower'} ({report.pm(*bn['acc'][:2], '.2f', 100)} % "
        f"against {report.pm(*no['acc'][:2], '.2f', 100)} %), with a standard error of "
        f"{100 * se:.2f}. The claim of a higher accuracy: {verdict_word(accuracy['word'])}.")
    ratio = bn["last_loss"] / no["last_loss"]
    if ratio > 1 and diff > 0:
        findings.append(
            f"**Regularization.** The model without BN drives its training loss "
            f"{_x(ratio, '.1f')} lower ({no['last_loss']:.1e} against {bn['last_loss']:.1e} "
            f"at epoch {cfg.epochs}, means over seeds) and still validates worse. This fits "
            f"the tutorial's \"mild regularizer\" point.")
    else:
        findings.append(
            f"**Regularization.** The training loss at epoch {cfg.epochs} is "
            f"{bn['last_loss']:.1e} with BN and {no['last_loss']:.1e} without (means over "
            f"seeds): no sign of the tutorial's \"mild regularizer\" here.")
    out["convergence-verdict.md"] = bullets(findings)
    summary = [
        {"claim": "Batch norm trains 2-10x faster", "page": "convergence",
         "verdict": verdict_word(speed["word"]),
         "measured": f"{_x(r_ep)} fewer epochs, {_x(r_s)} less time to {target}"},
        {"claim": "Batch norm reaches a higher accuracy", "page": "convergence",
         "verdict": verdict_word(accuracy["word"]),
         "measured": f"{100 * diff:+.2f} points (standard error {100 * se:.2f})"},
    ]
    return out, summary


def learning_rate(rows: list[dict]) -> tuple[dict[str, str], list[dict]]:
    """Snippets of the learning-rate page and its rows of the claims' summary."""
    from fastbn.experiments import learning_rate as mod
    from fastbn.experiments import report

    cfg = _config("learning-rate", rows)
    _, verdicts = mod.summarize(rows, cfg)
    claims = {c["tag"]: c for c in map(parse_claim, verdicts) if c}

    def cell(opt, lr, model):
        mine = [r for r in rows if (r["optimizer"], r["lr"], r["model"]) == (opt, lr, model)]
        acc = report.mean_std(r["val_accuracy"] for r in mine)
        return acc, sum(bool(r["diverged"]) for r in mine), len(mine)

    def trains(opt, lr, model):
        (m, _, _), div, _ = cell(opt, lr, model)
        return div == 0 and m >= cfg.ok_accuracy

    def failures(opt, model, above):
        parts = []
        lrs = [v for v in cfg.lrs if above is not None and v > above]
        all_diverged = [lr for lr in lrs if cell(opt, lr, model)[1] == cell(opt, lr, model)[2]]
        for lr in lrs:
            (m, s, _), div, n = cell(opt, lr, model)
            if div == n:
                if lr == all_diverged[0]:
                    parts.append(f"at lr {' and '.join(map(_lr, all_diverged))}, every "
                                 f"seed diverged")
            elif div:
                rest = "seed" if n - div == 1 else f"{n - div}"
                parts.append(f"at lr {_lr(lr)}, {div} of the {n} seeds diverged and the "
                             f"other {rest} reached {_pct(m)} %")
            else:
                parts.append(f"at lr {_lr(lr)}, no seed diverged, but the accuracy was "
                             f"{report.pm(m, s, '.1f', 100)} %")
        return "; ".join(parts)

    table, findings, summary = [], [], []
    for opt in cfg.optimizers:
        best = {}
        for model in mod.MODELS:
            ok = [lr for lr in cfg.lrs if trains(opt, lr, model)]
            best[model] = max(ok) if ok else None
        row = {"optimizer": opt}
        for model in mod.MODELS:
            lr = best[model]
            if lr is None:
                row[f"{model}: largest lr that trains"] = "none"
            else:
                (m, s, _), _, _ = cell(opt, lr, model)
                row[f"{model}: largest lr that trains"] = (
                    f"{_lr(lr)} ({report.pm(m, s, '.1f', 100)} %)")
        ratio = (best["BN"] / best["no BN"]) if None not in best.values() else math.nan
        row["ratio"] = _x(ratio, ".2g") if math.isfinite(ratio) else "-"
        table.append(row)

        claim = claims[opt]
        text = (f"**{opt}.** The largest rate at which BN trains is {_lr(best['BN'])}, "
                f"against {_lr(best['no BN'])} without BN: {_x(ratio, '.2g')}. The claim of "
                f"a \"10-100x higher learning rate\": {verdict_word(claim['word'])}."
                if math.isfinite(ratio) else
                f"**{opt}.** {verdict_word(claim['word'])}: {claim['detail']}")
        fail_no, fail_bn = failures(opt, "no BN", best["no BN"]), failures(opt, "BN", best["BN"])
        if fail_no:
            text += f" Without BN, {fail_no}."
        if fail_bn:
            text += f" With BN, {fail_bn}."
        findings.append(text)
        summary.append({"claim": f"Batch norm allows a 10-100x higher learning rate ({opt})",
                        "page": "learning-rate", "verdict": verdict_word(claim["word"]),
                        "measured": (f"largest rate that trains: {_lr(best['BN'])} with BN, "
                                     f"{_lr(best['no BN'])} without")})
    ok = f"{cfg.ok_accuracy:.0%}"
    out = {"learning-rate-table.md": md_table(table),
           "learning-rate-verdict.md": bullets(findings),
           "learning-rate-output.md": command_output("learning-rate", rows, cfg),
           "learning-rate-rule.md": (
               f"A model *trains* at a rate when no seed diverged and its mean validation "
               f"accuracy is at least {ok}.\n")}
    return out, summary


def init_scale(rows: list[dict]) -> tuple[dict[str, str], list[dict]]:
    """Snippets of the initialization page and its row of the claims' summary."""
    from fastbn.experiments import init_scale as mod
    from fastbn.experiments import report

    cfg = _config("init", rows)
    _, verdicts = mod.summarize(rows, cfg)
    claim = parse_claim(verdicts[0])

    def cell(scale, model, value):
        mine = [r for r in rows if r["init_scale"] == scale and r["model"] == model]
        return (report.mean_std(r[value] for r in mine), sum(bool(r["diverged"]) for r in mine),
                len(mine))

    def text(scale, model, value):
        (m, s, _), div, n = cell(scale, model, value)
        if div == n:
            return f"diverged {div}/{n}"
        return report.pm(m, s, ".1f", 100) + (f" ({div}/{n} diverged)" if div else "")

    table = []
    for value, when in (("val_accuracy", f"after {cfg.epochs} epochs"),
                        ("epoch1_accuracy", "after epoch 1")):
        for model in mod.MODELS:
            row = {"model": model, "validation accuracy (%)": when}
            row.update({f"{s:g}x": text(s, model, value) for s in cfg.scales})
            table.append(row)

    trains = {m: [s for s in cfg.scales
                  if cell(s, m, "val_accuracy")[1] == 0
                  and cell(s, m, "val_accuracy")[0][0] >= cfg.ok_accuracy]
              for m in mod.MODELS}
    k = len(cfg.scales)

    def scales(values):
        values = list(values)
        if not values:
            return "none"
        names = [f"{v:g}x" for v in values]
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]

    bn_low = min(cell(s, "BN", "val_accuracy")[0][0] for s in trains["BN"]) if trains["BN"] \
        else math.nan
    findings = [f"The claim: {verdict_word(claim['word'])}."]
    findings.append(f"With BN, {len(trains['BN'])} of the {k} scales train"
                    + (f", every one to at least {_pct(bn_low)} %." if trains["BN"] else "."))
    findings.append(f"Without BN, {len(trains['no BN'])} of the {k} train: "
                    f"{scales(trains['no BN'])}.")
    chance, spread, diverged = [], [], []
    for s in cfg.scales:
        if s in trains["no BN"]:
            continue
        (m, sd, _), div, n = cell(s, "no BN", "val_accuracy")
        if div == n:
            diverged.append(s)
        elif div == 0 and m < 0.2:
            chance.append((s, m))
        else:
            spread.append((s, m, sd, div, n))
    if chance:
        accs = sorted({_pct(m) for _, m in chance})
        findings.append(f"At {scales(s for s, _ in chance)}, the signal vanishes and the "
                        f"model stays at chance ({' to '.join(accs[::len(accs) - 1 or 1])} %; "
                        f"a guess among 10 classes is right 10 % of the time).")
    for s, m, sd, div, n in spread:
        findings.append(f"At {s:g}x, the accuracy varies from seed to seed "
                        f"({report.pm(m, sd, '.1f', 100)} %"
                        + (f", {div}/{n} diverged" if div else "") + ").")
    if diverged:
        findings.append(f"At {scales(diverged)}, every seed diverges.")
    out = {"init-table.md": md_table(table, align="ll" + "r" * k),
           "init-verdict.md": " ".join(findings) + "\n",
           "init-output.md": command_output("init", rows, cfg)}
    summary = [{"claim": "Batch norm reduces the dependence on careful initialization",
                "page": "init", "verdict": verdict_word(claim["word"]),
                "measured": (f"{len(trains['BN'])}/{k} scales train with BN, "
                             f"{len(trains['no BN'])}/{k} without")}]
    return out, summary


def small_batch(rows: list[dict]) -> tuple[dict[str, str], list[dict]]:
    """Snippets of the small-batch page and its rows of the claims' summary."""
    from fastbn.experiments import report
    from fastbn.experiments import small_batch as mod

    cfg = _config("small-batch", rows)
    table, verdicts = mod.summarize(rows, cfg)
    small, large = min(cfg.batch_sizes), max(cfg.batch_sizes)

    def err(model, norm, b):
        mine = [r for r in rows if (r["model"], r["norm"], r["batch_size"]) == (model, norm, b)]
        return report.mean_std(r["val_error_pct"] for r in mine)

    # the verdict lines, by model label: "CNN -- ...:" heads each block
    claims, label = {}, None
    for line in verdicts:
        if not line.startswith(" ") and line.rstrip().endswith(":"):
            label = line.split(" --")[0].rstrip(":")
        elif (c := parse_claim(line)) and label:
            claims[(label, c["claim"])] = c

    paper = [{"images per GPU": norm, **{str(b): f"{v[b]:.1f}" for b in sorted(v, reverse=True)}}
             for norm, v in mod.GN_PAPER_ERROR.items()]
    paper_table = md_table(paper, ["images per GPU"] + [str(b) for b in
                                                        sorted(mod.GN_PAPER_ERROR["BN"],
                                                               reverse=True)])
    findings, summary = [], []
    for model in cfg.models:
        label = mod.MODEL_LABELS[model]
        norms = cfg.model_norms(model)
        bn_l, bn_s = err(model, "BN", large), err(model, "BN", small)
        pool = next(r for r in rows if r["model"] == model and r["batch_size"] == small)
        pools = sorted({pool["bn_pool_max"], pool["bn_pool_min"]}, reverse=True)
        pool_text = (f"{pools[0]} values" if len(pools) == 1 else
                     f"{pools[0]} values in block 1 and {pools[1]} in block 2")
        need = claims[(label, "BN needs moderate to large batches")]
        alts = [a for a in ("GN", "LN") if a in norms]
        alt_claims = [claims[(label, f"{a} beats BN at small batches")] for a in alts]
        alt_errs = {a: err(model, a, small) for a in alts}
        mids = [b for b in sorted(cfg.batch_sizes, reverse=True) if small < b < large]
        if need["word"] == "REPRODUCED":
            head = (f"**In the {label}, the claim reproduces.** At batch {small} a BN channel "
                    f"pools {pool_text}. BN's error climbs from {bn_l[0]:.1f} % at batch "
                    f"{large}")
            if mids:
                head += f" to {err(model, 'BN', mids[-1])[0]:.1f} % at batch {mids[-1]}"
            head += f", then to {bn_s[0]:.1f} % at batch {small}."
            if alts:
                drift = max(abs(alt_errs[a][0] - err(model, a, large)[0]) for a in alts)
                head += (" " + " and ".join(f"{a} ({alt_errs[a][0]:.1f} %)" for a in alts)
                         + f" stay within {drift:.1f} points of their error at batch {large}.")
            extra = []
            if "BRN" in norms:
                extra.append(f"batch renorm reaches {err(model, 'BRN', small)[0]:.1f} %")
            if "GBN" in norms:
                extra.append(f"ghost BN {err(model, 'GBN', small)[0]:.1f} %")
            if extra:
                head += f" At batch {small}, " + "; ".join(extra) + "."
        else:
            head = (f"**In the {label}, the claim does not reproduce.** BN's error is "
                    f"{bn_l[0]:.1f} % at batch {large} and {bn_s[0]:.1f} % at batch {small}, "
                    f"where a BN channel still pools {pool_text}.")
            within = all(c["word"].startswith("NOT REPRODUCED (within") for c in alt_claims)
            if alts and within:
                gaps = [f"{a} {alt_errs[a][0]:.1f} % (standard error of the difference "
                        f"{_se_of_difference(bn_s, alt_errs[a]):.1f})" for a in alts]
                head += (f" At batch {small}, " + " and ".join(gaps)
                         + " are within the spread over seeds of BN's error.")
            elif alts:
                head += (f" At batch {small}: " + "; ".join(
                    f"{a} {alt_errs[a][0]:.1f} %, {verdict_word(c['word'])}"
                    for a, c in zip(alts, alt_claims, strict=True)) + ".")
        findings.append(head)
        summary.append({"claim": f"Batch norm needs moderate to large batches ({label})",
                        "page": "small-batch", "verdict": verdict_word(need["word"]),
                        "measured": (f"BN's error {bn_l[0]:.1f} % at batch {large}, "
                                     f"{bn_s[0]:.1f} % at batch {small}")})
        for a, c in zip(alts, alt_claims, strict=True):
            summary.append({"claim": f"{a} beats batch norm at small batches ({label})",
                            "page": "small-batch", "verdict": verdict_word(c["word"]),
                            "measured": (f"at batch {small}: {a} {alt_errs[a][0]:.1f} %, "
                                         f"BN {bn_s[0]:.1f} %")})
    n_val = _validation_images(rows)
    if n_val:
        findings.append(f"With {n_val} validation images, one image is "
                        f"{100 / n_val:.2f} points of error.")
    out = {"small-batch-table.md": md_table(table, align="ll" + "r" * len(cfg.batch_sizes)),
           "small-batch-paper.md": paper_table,
           "small-batch-verdict.md": bullets(findings),
           "small-batch-output.md": command_output("small-batch", rows, cfg)}
    return out, summary


def _se_of_difference(a: tuple[float, float, int], b: tuple[float, float, int]) -> float:
    """The standard error of the difference of two means, from ``report.mean_std`` tuples."""
    return math.sqrt(a[1] ** 2 / max(a[2], 1) + b[1] ** 2 / max(b[2], 1))


def _validation_images(rows: list[dict]) -> int | None:
    """The size of the validation set, from the accuracies (all multiples of 1/N)."""
    accs = [r["val_accuracy"] for r in rows if math.isfinite(r["val_accuracy"])]
    for n in range(2, 100001):
        if all(abs(a * n - round(a * n)) < 1e-6 for a in accs):
            return n
    return None


def sync_bn(rows: list[dict]) -> tuple[dict[str, str], list[dict]]:
    """Snippets of the sync-bn page and its rows of the claims' summary."""
    from fastbn.experiments import sync_bn as mod

    cfg = _config("sync-bn", rows)
    table, verdicts = mod.summarize(rows, cfg)
    ranks = rows[0]["ranks"]
    findings, summary = [], []
    stats = {}
    for dtype, line in zip(mod.DTYPES, verdicts, strict=True):
        mine = [r for r in rows if r["dtype"] == dtype]
        worst = max(mine, key=lambda r: r["rel_diff"])
        word = line.split(": ")[-1].split(" --")[0]
        stats[dtype] = {"worst": worst["rel_diff"], "step": worst["step"], "word": word,
                        "sync_ms": 1e3 * float(np.median([r["step_s_sync"] for r in mine])),
                        "one_ms": 1e3 * float(np.median([r["step_s_single"] for r in mine]))}
    f64, f32 = stats["float64"], stats["float32"]
    findings.append(f"**float64** agrees to rounding: the largest relative difference between "
                    f"the two loss curves is {f64['worst']:.1e} over {cfg.steps} steps and "
                    f"{len(cfg.seeds)} seeds.")
    findings.append(f"**float32**: {f32['worst']:.1e}, reached at step {f32['step']}. The "
                    f"ranks sum in a different order than one process, float32 rounds the "
                    f"two sums differently, and training amplifies the difference over the "
                    f"steps.")
    slower = f64["sync_ms"] > f64["one_ms"]
    findings.append(f"**Time.** A step takes {f64['sync_ms']:.2f} ms on {ranks} ranks against "
                    f"{f64['one_ms']:.2f} ms in one process (float64, medians). The model is "
                    f"small, so a step is mostly per-call overhead"
                    + (f", and {ranks} ranks are slower than one process." if slower else "."))
    for dtype in mod.DTYPES:
        summary.append({"claim": f"SyncBatchNorm on {ranks} ranks trains as one process does "
                                 f"({dtype})",
                        "page": "sync-bn", "verdict": verdict_word(stats[dtype]["word"]),
                        "measured": ("largest relative loss difference "
                                     f"{stats[dtype]['worst']:.1e}")})
    out = {"sync-bn-table.md": md_table(table),
           "sync-bn-verdict.md": bullets(findings),
           "sync-bn-output.md": command_output("sync-bn", rows, cfg)}
    return out, summary


def _beside(module: str) -> Callable[[list[dict]], tuple[dict[str, str], list[dict]]]:
    """The ``snippets`` function of ``docs/_ext/<module>.py``, imported when first called
    (those modules import this one, so they cannot be imported while it loads)."""
    def snippets(rows: list[dict]) -> tuple[dict[str, str], list[dict]]:
        import importlib

        return importlib.import_module(module).snippets(rows)

    return snippets


_EXPERIMENT_SNIPPETS: dict[str, Callable[[list[dict]], tuple[dict[str, str], list[dict]]]] = {
    "convergence": convergence, "learning-rate": learning_rate, "init": init_scale,
    "small-batch": small_batch, "placement": _beside("gen_placement"),
    "depth": _beside("gen_depth"),
    "covariate-shift": _beside("gen_covariate_shift"), "baselines": _beside("gen_mnist1d"),
    "noisy-bn": _beside("gen_noisy_bn"), "ics": _beside("gen_ics"),
    "landscape": _beside("gen_landscape"), "sync-bn": sync_bn}


def experiment_run(name: str, measurements: dict) -> str:
    """The sentence that says how, where and when experiment ``name``'s CSV was made."""
    run = measurements["experiments"][name]
    machine = run.get("machine", measurements["machine"]["description"])
    text = (f"The figure, the tables and the verdict come from one run of "
            f"`{run['command']}` on {run['date']}, on {machine}.")
    if "wall_s" in run:
        text += f" The run took {_duration(run['wall_s'])}."
    return text + "\n"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def experiments_snippets(srcdir: Path) -> dict[str, str]:
    """Every snippet of the experiment pages, by file name in ``_generated``."""
    import gen_mnist1d

    measurements = read_measurements(srcdir)
    out, summary = {}, []
    reruns, rerun_claims = gen_mnist1d.rerun_snippets(srcdir)
    out.update(reruns)
    for name in MNIST1D_RERUNS:
        out[f"mnist1d-{name}-run.md"] = experiment_run(f"mnist1d/{name}", measurements)
    for name in EXPERIMENTS:
        if name == "sync-bn":       # the tutorial's claims first, fastbn's own (sync-bn) last
            summary += rerun_claims
        snippets, claims = _EXPERIMENT_SNIPPETS[name](read_experiment(srcdir, name))
        out.update(snippets)
        out[f"{name}-run.md"] = experiment_run(name, measurements)
        summary += claims
    rows = [{"claim": s["claim"], "experiment": f"[{s['page']}]({s['page']}.md)",
             "verdict": s["verdict"], "measured": s["measured"]} for s in summary]
    out["experiments-summary.md"] = md_table(rows, align="llll")
    walls = [measurements["experiments"][n]["wall_s"] for n in EXPERIMENTS
             if "wall_s" in measurements["experiments"][n]
             and "machine" not in measurements["experiments"][n]]
    quick = measurements["experiments_quick"]
    text = (f"On the machine of the [performance page](../performance.md), `--quick` takes "
            f"{quick['min_s']:.0f} to {quick['max_s']:.0f} s per experiment and the full runs "
            f"{_duration(min(walls))} to {_duration(max(walls))}.")
    later = [n for n in EXPERIMENTS if "machine" in measurements["experiments"][n]]
    for n in later:
        run = measurements["experiments"][n]
        text += (f" `{n}` ran on {run['date']} on {run['machine']}"
                 + (f", and took {_duration(run['wall_s'])}" if "wall_s" in run else "") + ".")
    out["experiments-times.md"] = text + "\n"
    return out


# --- the bench ----------------------------------------------------------------------------


def _is_out(row: dict) -> bool:
    return row["pass"].endswith(OUT)


def _tensor_bytes(row: dict) -> int:
    return math.prod(row["shape"]) * np.dtype(row["dtype"]).itemsize


def _is_large(row: dict) -> bool:
    return _tensor_bytes(row) >= LARGE_BYTES


def _shape(row: dict) -> str:
    return "x".join(map(str, row["shape"]))


def case_name(row: dict, short: bool = False) -> str:
    """``"batch norm forward-train NCHW float32 32x64x56x56"`` (``short``: ``"bn fwd-train
    NCHW 32x64x56x56"``, no dtype)."""
    if short:
        p = row["pass"].removesuffix(OUT)
        return (f"{_OP_SHORT.get(row['op'], row['op'])} {_PASS_SHORT.get(p, p)}"
                f"{' out=' if _is_out(row) else ''} {row['layout']} {_shape(row)}")
    return (f"{_OP_NAMES.get(row['op'], row['op'])} {row['pass']} {row['layout']} "
            f"{row['dtype']} {_shape(row)}")


def geomean(values: Iterable[float]) -> float:
    v = [x for x in values if x]
    return math.exp(float(np.mean(np.log(v)))) if v else math.nan


def _ms(seconds: float) -> str:
    """Milliseconds to 3 significant digits (``"1.46"``, ``"0.00725"``)."""
    ms = 1e3 * seconds
    return f"{ms:#.3g}" if ms < 100 else f"{ms:.0f}"


def _ratio(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}x" if v < 10 else f"{v:.1f}x"


def bench_table(report: dict, dtype: str) -> str:
    """The cases of ``dtype``: op, pass, layout, shape, ms, of probe, vs formula, vs torch."""
    rows = []
    for r in report["rows"]:
        if r["dtype"] != dtype:
            continue
        rows.append({"op": _OP_NAMES.get(r["op"], r["op"]), "pass": r["pass"],
                     "layout": r["layout"], "shape": _shape(r), "ms": _ms(r["median_s"]),
                     "of probe": f"{r['bandwidth_fraction']:.2f}",
                     "vs formula": _ratio(r.get("speedup_vs_numpy_formula")),
                     "vs torch": _ratio(r.get("speedup_vs_torch"))})
    return md_table(rows, align="llllrrrr")


def bench_summary(report: dict) -> dict:
    """Geometric means over the grid (``out=`` rows excluded) and the target checks."""
    rows = report["rows"]
    grid = [r for r in rows if not _is_out(r)]
    torch = [r for r in grid if r.get("speedup_vs_torch")]
    return {
        "cases": len(grid), "rows": len(rows), "torch_cases": len(torch),
        "vs_torch": geomean(r["speedup_vs_torch"] for r in torch),
        "vs_torch_f32": geomean(r["speedup_vs_torch"] for r in torch if r["dtype"] == "float32"),
        "vs_formula": geomean(r["speedup_vs_numpy_formula"] for r in grid),
        "vs_formula_f32": geomean(r["speedup_vs_numpy_formula"] for r in grid
                                  if r["dtype"] == "float32"),
        "vs_numpy": geomean(r["speedup_vs_numpy"] for r in grid),
        "lowest_formula": min(grid, key=lambda r: r["speedup_vs_numpy_formula"]),
        "lowest_torch": min(torch, key=lambda r: r["speedup_vs_torch"]),
        "below_torch": sorted([r for r in torch if r["speedup_vs_torch"] < TARGET_TORCH_FLOOR],
                              key=lambda r: r["speedup_vs_torch"]),
        "large": [r for r in rows if _is_large(r)],
        "below_probe": sorted([r for r in rows if _is_large(r)
                               and r["bandwidth_fraction"] < TARGET_PROBE_FRACTION],
                              key=lambda r: r["bandwidth_fraction"]),
        "small_call": {r["pass"]: r for r in rows if r["op"] == "batch_norm"
                       and r["dtype"] == "float32" and tuple(r["shape"]) == (32, 256)},
    }


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _case_list(rows: Sequence[dict], key: str, fmt: str) -> str:
    return "; ".join(f"{case_name(r)} {r[key]:{fmt}}" for r in rows)


def targets_table(report: dict, measurements: dict) -> str:
    """The speed targets: the target, the measured value and whether it is met."""
    s = bench_summary(report)
    small = s["small_call"]["forward-train"]
    small_us = 1e6 * small["median_s"]
    rows = [
        {"target": f"geometric mean >= {TARGET_TORCH_GEOMEAN}x torch over the grid",
         "measured": (f"{_x(s['vs_torch'])} over {s['torch_cases']} cases (float32 alone "
                      f"{_x(s['vs_torch_f32'])})"),
         "status": _met(s["vs_torch"] >= TARGET_TORCH_GEOMEAN)},
        {"target": f"no case below {TARGET_TORCH_FLOOR}x torch",
         "measured": (f"{len(s['below_torch'])} cases below: "
                      + _case_list(s["below_torch"], "speedup_vs_torch", ".2f")
                      if s["below_torch"]
                      else f"lowest {_x(s['lowest_torch']['speedup_vs_torch'])}"),
         "status": _met(not s["below_torch"])},
        {"target": f"geometric mean >= {TARGET_FORMULA_GEOMEAN:g}x the NumPy formula",
         "measured": f"{_x(s['vs_formula'], '.1f')} over {s['cases']} cases",
         "status": _met(s["vs_formula"] >= TARGET_FORMULA_GEOMEAN)},
        {"target": (f"every large case (>= {LARGE_BYTES >> 20} MB per tensor) >= "
                    f"{TARGET_PROBE_FRACTION} of the bandwidth probe"),
         "measured": (f"{len(s['below_probe'])} of {len(s['large'])} below: "
                      + _case_list(s["below_probe"], "bandwidth_fraction", ".2f")
                      if s["below_probe"] else
                      f"all {len(s['large'])} at or above"),
         "status": _met(not s["below_probe"])},
        {"target": f"(32, 256) float32 batch-norm forward-train under {TARGET_SMALL_CALL_US:g} us",
         "measured": (f"{small_us:.1f} us (inference "
                      f"{1e6 * s['small_call']['inference']['median_s']:.1f} us, backward "
                      f"{1e6 * s['small_call']['backward']['median_s']:.1f} us)"),
         "status": _met(small_us < TARGET_SMALL_CALL_US)},
    ]
    for m in measurements["targets"]:
        value = (f"{m['value']:.1f} {m['unit']}" if "value" in m
                 else f"{m['min']:.1f}-{m['max']:.1f} {m['unit']}")
        ok = (m.get("value", m.get("max")) < m["limit"])
        rows.append({"target": f"{m['what']} under {m['limit']:g} {m['unit']}",
                     "measured": (f"{value} in {m['runs']} runs of `{m['command']}` "
                                  f"({m['conditions']}; {m['date']})"),
                     "status": _met(ok)})
    return md_table(rows, align="lll")


def bench_machine(report: dict, measurements: dict) -> str:
    """The machine, the versions, the date and the probe, as a definition list."""
    m = report["machine"]
    return (f"Machine\n: {measurements['machine']['description']}; `{m['platform']}`.\n\n"
            f"Software\n: Python {m['python']}, NumPy {m['numpy']}, Numba {m['numba']} "
            f"({m['threading_layer']} threading layer), torch {m['torch'] or 'not installed'}; "
            f"fastbn and torch on {m['threads']} threads.\n\n"
            f"Date\n: {m['date']}\n\n"
            f"Bandwidth probe\n: {m['bandwidth_gbps']:.1f} GB/s (parallel copy, read + "
            f"write, median over the run)\n\n"
            f"Caches\n: {_cache_state(m)}\n")


def _cache_state(machine: dict) -> str:
    """How warm the timed calls found the caches (reports before ``--cold`` were warm)."""
    if machine.get("cache") == "cold":
        return ("cold (`--cold`): each timed call follows a 64 MB copy that evicts the "
                "L3; the tables show the cold medians")
    return "warm: each timed call follows a call on the same inputs"


def bench_overview(report: dict) -> str:
    """The paragraph with the grid's geometric means."""
    s = bench_summary(report)
    lf, lt = s["lowest_formula"], s["lowest_torch"]
    return (f"Over the {s['cases']} cases of the grid (float32 and float64, `out=` rows "
            f"excluded), fastbn's geometric mean is **{_x(s['vs_formula'], '.1f')} the NumPy "
            f"formula** (float32 alone {_x(s['vs_formula_f32'], '.1f')}; lowest "
            f"{_x(lf['speedup_vs_numpy_formula'])}, {case_name(lf)}), "
            f"{_x(s['vs_numpy'], '.1f')} the float64 reference, and "
            f"**{_x(s['vs_torch'])} torch** over the {s['torch_cases']} cases torch has a "
            f"kernel for (float32 alone {_x(s['vs_torch_f32'])}; lowest "
            f"{_x(lt['speedup_vs_torch'])}, {case_name(lt)}).\n")


def bench_out_example(report: dict) -> str:
    """The allocating calls against their ``out=`` rows, batch-norm forward-train NCHW."""
    parts, slower = [], []
    for dtype in ("float64", "float32"):
        key = ("batch_norm", "NCHW", dtype, [32, 64, 56, 56])
        pair = {r["pass"]: r for r in report["rows"]
                if (r["op"], r["layout"], r["dtype"], r["shape"]) == key}
        a, o = pair["forward-train"], pair["forward-train" + OUT]
        parts.append(f"{dtype} ({_tensor_bytes(a) / 1e6:.0f} MB per tensor) moved "
                     f"{a['gbps']:.1f} GB/s allocating and {o['gbps']:.1f} GB/s with `out=`")
        slower.append(a["gbps"] < o["gbps"])
    text = (f"In this run, batch-norm forward-train on 32x64x56x56: {parts[0]}; "
            f"{parts[1]}.")
    if not slower[0]:
        text += " Here the float64 allocating call was not the slower one."
    return text + "\n"


def _figure_rows(report: dict) -> list[tuple[str, dict[str, dict], dict[str, dict]]]:
    """One entry per case of the grid: its short label, its allocating rows by dtype and its
    ``out=`` rows by dtype; grouped by op in the order of ``_OP_NAMES``."""
    cases: dict[tuple, tuple[str, dict, dict]] = {}
    for r in report["rows"]:
        key = (r["op"], r["pass"].removesuffix(OUT), r["layout"], tuple(r["shape"]))
        if key not in cases:
            base = dict(r, **{"pass": key[1]})
            cases[key] = (case_name(base, short=True), {}, {})
        cases[key][2 if _is_out(r) else 1][r["dtype"]] = r
    order = list(_OP_NAMES)
    keys = sorted(cases, key=lambda k: order.index(k[0]) if k[0] in order else len(order))
    return [(cases[k][0], cases[k][1], cases[k][2]) for k in keys]


_DTYPE_STYLE = {"float32": {"color": "#1f77b4", "marker": "o"},
                "float64": {"color": "#d62728", "marker": "s"}}


def bench_figure(report: dict, path: Path, metric: str, xlabel: str, title: str,
                 log: bool = True, lines: Sequence[tuple[float, str, str]] = (),
                 with_out: bool = False) -> None:
    """A dot chart of ``metric`` per case (rows grouped by op), float32 and float64 dots.

    ``lines``: vertical reference lines ``(x, style, label)``; ``with_out``:
    the ``out=`` rows as hollow markers on their case's row.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    entries = [(label, alloc, outs) for label, alloc, outs in _figure_rows(report)
               if any(r.get(metric) for r in alloc.values())]
    n = len(entries)
    plt.rcParams.update({"font.size": 10, "svg.hashsalt": "fastbn"})
    fig, ax = plt.subplots(figsize=(7.6, 0.24 * n + 1.6))
    y = np.arange(n)
    # shade every other op group
    groups = [label.split(" ")[0] for label, _, _ in entries]
    start = 0
    for g_index, g in enumerate(dict.fromkeys(groups)):
        end = start + groups.count(g)
        if g_index % 2 == 0:
            ax.axhspan(start - 0.5, end - 0.5, color="0.93", lw=0, zorder=0)
        start = end
    handles = {}
    for dtype, style in _DTYPE_STYLE.items():
        for i, (_, alloc, outs) in enumerate(entries):
            r = alloc.get(dtype)
            if r is not None and r.get(metric):
                handles[dtype] = ax.scatter(r[metric], i, s=30, zorder=3, label=dtype, **style)
            o = outs.get(dtype)
            if with_out and o is not None and o.get(metric):
                handles[f"{dtype} out="] = ax.scatter(
                    o[metric], i, s=36, zorder=3, facecolors="none", linewidths=1.2,
                    edgecolors=style["color"], marker=style["marker"], label=f"{dtype}, out=")
    for x, ls, label in lines:
        handles[label] = ax.axvline(x, color="0.35", ls=ls, lw=1, zorder=2, label=label)
    ax.set_yticks(y, [label for label, _, _ in entries], fontsize=9)
    ax.set_ylim(n - 0.5, -0.5)
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.grid(axis="x", alpha=0.4, zorder=1)
    ax.tick_params(axis="x", labelsize=10)
    ax.set_xlabel(xlabel, fontsize=10)
    ax.set_title(title, fontsize=11)
    if not log:
        ax.set_xlim(left=0)
    height = fig.get_figheight()
    fig.tight_layout(rect=(0, 0.5 / height, 1, 1))   # 0.5 in below for the legend
    fig.legend(handles=list(handles.values()), fontsize=9, loc="lower center",
               bbox_to_anchor=(0.5, 0), ncol=3, frameon=False)
    _save_png(fig, path)
    plt.close(fig)


def _save_png(fig, path: Path) -> None:
    """Save ``fig`` as PNG without metadata (the same data give the same bytes); rewrite
    the file only if its bytes change."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None}, bbox_inches="tight",
                pad_inches=0.1)
    _write_bytes(path, buf.getvalue())


def bench_figures(report: dict, outdir: Path) -> list[str]:
    """The three figures of the performance page; returns their file names."""
    m = report["machine"]
    bench_figure(report, outdir / "bench-vs-torch.png", "speedup_vs_torch",
                 "torch time / fastbn time (log scale)",
                 f"Speedup over torch {m['torch']} ({m['threads']} threads)",
                 lines=[(1.0, "-", "as fast as torch"),
                        (TARGET_TORCH_FLOOR, ":", f"{TARGET_TORCH_FLOOR}x, the target floor")])
    bench_figure(report, outdir / "bench-vs-formula.png", "speedup_vs_numpy_formula",
                 "formula time / fastbn time (log scale)",
                 f"Speedup over the NumPy formula in x's dtype (NumPy {m['numpy']})",
                 lines=[(1.0, "-", "as fast as the formula")])
    bench_figure(report, outdir / "bench-probe.png", "bandwidth_fraction",
                 f"minimal bytes moved per second / probe ({m['bandwidth_gbps']:.1f} GB/s)",
                 "fastbn's throughput as a fraction of the bandwidth probe", log=False,
                 lines=[(1.0, "-", "the probe"),
                        (TARGET_PROBE_FRACTION, ":",
                         f"{TARGET_PROBE_FRACTION}, the target for large cases")],
                 with_out=True)
    return ["bench-vs-torch.png", "bench-vs-formula.png", "bench-probe.png"]


def bench_snippets(srcdir: Path) -> dict[str, str]:
    """Every Markdown snippet of the performance page, by file name in ``_generated``."""
    report, measurements = read_bench(srcdir), read_measurements(srcdir)
    s = bench_summary(report)
    return {
        "bench-machine.md": bench_machine(report, measurements),
        "bench-overview.md": bench_overview(report),
        "bench-float32.md": bench_table(report, "float32"),
        "bench-float64.md": bench_table(report, "float64"),
        "bench-targets.md": targets_table(report, measurements),
        "bench-out.md": bench_out_example(report),
        "bench-counts.md": (f"The grid has {s['cases']} cases: every op, pass, layout and size "
                            f"in float32 and float64. The {s['rows'] - s['cases']} `out=` rows "
                            f"repeat the large forward cases.\n"),
    }


# --- timing runs outside the bench: the profile, the Dask reduction, SyncBatchNorm's cost ----


def read_timing(srcdir: Path, name: str) -> list[dict]:
    """``docs/experiments/NAME.csv`` of a timing script, integer columns as ``int``."""
    from fastbn.experiments import report

    rows = report.read_csv(Path(srcdir) / "experiments" / f"{name}.csv")
    for row in rows:
        for key, value in row.items():
            if isinstance(value, float) and value.is_integer() and key not in (
                    "step_ms", "norm_ms", "norm_share_pct", "median_ms", "gbps",
                    "vs_in_memory"):
                row[key] = int(value)
    return rows


def _run_line(rows: list[dict], command: str) -> str:
    """Where and when the rows were measured, and by which command."""
    dates = sorted({str(r["date"]) for r in rows})
    cpus = sorted({f"{r['cores']} cores of an {r['cpu']}" for r in rows})
    return (f"Measured with `{command}` on {', '.join(dates)}, on {'; '.join(cpus)} "
            f"(shared and noisy).\n")


def _blas(threads: int) -> str:
    return "default" if int(threads) <= 0 else str(int(threads))


PROFILE_COMMAND = ("python -m fastbn.experiments.profile [--image-size 28] [--blas-threads 0] "
                   "--csv docs/experiments/profile.csv")


def profile_snippets(srcdir: Path) -> dict[str, str]:
    """The profile page's table and verdicts, and the BLAS sentence of the threads page."""
    rows = read_timing(srcdir, "profile")
    table = [{"images": f"{r['image_size']}x{r['image_size']}",
              "BLAS threads": _blas(r["blas_threads"]), "norm": r["norm"],
              "backend": r["backend"], "step ms": f"{r['step_ms']:.3f}",
              "norm layers ms": f"{r['norm_ms']:.3f}",
              "norm share of the step": f"{r['norm_share_pct']:.1f} %"} for r in rows]
    verdicts = []
    configs = dict.fromkeys((r["image_size"], r["blas_threads"], r["norm"]) for r in rows)
    for size, blas, norm in configs:
        by = {r["backend"]: r for r in rows
              if (r["image_size"], r["blas_threads"], r["norm"]) == (size, blas, norm)}
        if {"fastbn", "numpy formula"} <= set(by):
            f, n = by["fastbn"], by["numpy formula"]
            verdicts.append(
                f"{norm}, {size}x{size} images, BLAS threads {_blas(blas)}: fastbn's "
                f"normalization layers take {f['norm_ms']:.3f} ms against "
                f"{n['norm_ms']:.3f} ms with the formula ({n['norm_ms'] / f['norm_ms']:.2f}x); "
                f"the whole step {f['step_ms']:.3f} ms against {n['step_ms']:.3f} ms "
                f"({n['step_ms'] / f['step_ms']:.2f}x).")
    out = {"profile-table.md": md_table(table, align="lllrrrr"),
           "profile-verdicts.md": bullets(verdicts),
           "profile-run.md": _run_line(rows, PROFILE_COMMAND)}
    bn = {int(r["blas_threads"]): r for r in rows
          if r["backend"] == "fastbn" and r["norm"] == "BN" and r["image_size"] == 28}
    if 0 in bn and 1 in bn:
        d, one = bn[0], bn[1]
        out["threads-blas.md"] = (
            f"In the small CNN of the experiments on 28x28 images, BN's layers took "
            f"{d['norm_ms']:.2f} ms of a training step with OpenBLAS's default threads and "
            f"{one['norm_ms']:.2f} ms with one BLAS thread ({d['norm_ms'] / one['norm_ms']:.1f}x); "
            f"the whole step {d['step_ms']:.2f} ms against {one['step_ms']:.2f} ms. "
            + _run_line([d, one], "python -m fastbn.experiments.profile --image-size 28 "
                                  "--blas-threads 0 (and 1)"))
    return out


def dask_snippets(srcdir: Path) -> dict[str, str]:
    """The Dask throughput table of the distributed page."""
    rows = read_timing(srcdir, "dask-moments")
    table = []
    for samples in dict.fromkeys(r["samples"] for r in rows):
        by = {r["case"]: r for r in rows if r["samples"] == samples}
        cells = {"N (size)": f"{samples} ({by[next(iter(by))]['megabytes']} MB)"}
        for case, label in [("fastbn.moments (in memory)", "`fastbn.moments` in memory"),
                            ("fastbn.dask.moments (NumPy-backed)", "Dask over NumPy"),
                            ("fastbn.dask.moments (memmap file)", "Dask over a memmap")]:
            r = by[case]
            ratio = "" if "in memory" in case else f" ({r['vs_in_memory']:.2f}x)"
            cells[label] = f"{r['gbps']:.1f} GB/s{ratio}"
        table.append(cells)
    return {"dask-table.md": md_table(table),
            "dask-run.md": _run_line(rows, "python scripts/dask_moments.py [--samples N] "
                                           "--csv docs/experiments/dask-moments.csv")}


def sync_cost_snippets(srcdir: Path) -> dict[str, str]:
    """The cost table of SyncBatchNorm against BatchNorm, per run."""
    rows = read_timing(srcdir, "sync-bn-cost")
    table = []
    for run in dict.fromkeys(r["run"] for r in rows):
        by = {r["layer"]: r for r in rows if r["run"] == run}
        s, b = by["SyncBatchNorm"]["median_ms"], by["BatchNorm"]["median_ms"]
        table.append({"run": run, "ranks": by["BatchNorm"]["ranks"],
                      "`SyncBatchNorm` ms": f"{s:.2f}", "`BatchNorm` (local) ms": f"{b:.2f}",
                      "difference": f"{100 * (s - b) / b:+.0f} %"})
    ratios = [float(t["`SyncBatchNorm` ms"]) / float(t["`BatchNorm` (local) ms"]) for t in table]
    verdict = (f"Over {len(table)} runs, the synchronized layer's forward and backward took "
               f"{min(ratios):.2f}x to {max(ratios):.2f}x the local layer's time; each rank "
               f"sends {rows[0]['bytes_sent_per_call']} bytes per call.\n")
    return {"sync-cost-table.md": md_table(table), "sync-cost-verdict.md": verdict,
            "sync-cost-run.md": _run_line(
                rows, "NUMBA_NUM_THREADS=1 mpiexec -n 2 python -m fastbn.experiments.sync_bn "
                      "--csv docs/experiments/sync-bn-cost.csv")}


# --- the README's headline ----------------------------------------------------------------


def headline(srcdir: Path = DOCS) -> str:
    """The README's headline: a table of at most six rows and one line naming the machine."""
    report, measurements = read_bench(srcdir), read_measurements(srcdir)
    index = {(r["op"], r["pass"], r["layout"], r["dtype"], tuple(r["shape"])): r
             for r in report["rows"]}
    rows = []
    for key in HEADLINE_CASES:
        r = index[key]
        rows.append({"case (float32)": f"{_OP_NAMES[r['op']]} {r['pass']}, {r['layout']} "
                                       f"{_shape(r)}",
                     "fastbn ms": _ms(r["median_s"]),
                     "vs NumPy formula": _ratio(r["speedup_vs_numpy_formula"]),
                     "vs torch": _ratio(r["speedup_vs_torch"])})
    s = bench_summary(report)
    rows.append({"case (float32)": (f"geometric mean over the grid, float32 and float64 "
                                    f"({s['cases']} cases; {s['torch_cases']} with torch)"),
                 "fastbn ms": "",
                 "vs NumPy formula": _x(s["vs_formula"], ".1f"),
                 "vs torch": _x(s["vs_torch"])})
    m = report["machine"]
    return (md_table(rows) + "\n"
            f"Medians of `python -m fastbn bench` (warm caches) on {m['date']}, on "
            f"{measurements['machine']['description']}; {m['threads']} threads, NumPy "
            f"{m['numpy']}, Numba {m['numba']}, torch {m['torch']}.\n")


def rewrite_readme(text: str, block: str) -> str:
    """``text`` with the lines between the headline markers replaced by ``block``.

    Raises ValueError when the markers are missing or out of order.
    """
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == HEADLINE_START]
    ends = [i for i, line in enumerate(lines) if line.strip() == HEADLINE_END]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ValueError(f"README.md needs one line {HEADLINE_START!r} followed by one line "
                         f"{HEADLINE_END!r}")
    return "".join(lines[:starts[0] + 1]) + block + "".join(lines[ends[0]:])


def readme_block(text: str) -> str | None:
    """The text between the headline markers of ``text`` (None without markers)."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == HEADLINE_START]
    ends = [i for i, line in enumerate(lines) if line.strip() == HEADLINE_END]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        return None
    return "".join(lines[starts[0] + 1:ends[0]])


# --- writing ------------------------------------------------------------------------------


def _write_bytes(path: Path, data: bytes) -> None:
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)


def _write_text(path: Path, text: str) -> None:
    _write_bytes(path, text.encode())


def snippets(srcdir: Path) -> dict[str, str]:
    """Every Markdown snippet the pages include, by file name in ``_generated``."""
    return {**experiments_snippets(srcdir), **bench_snippets(srcdir),
            **profile_snippets(srcdir), **dask_snippets(srcdir), **sync_cost_snippets(srcdir)}


def write_all(srcdir: Path) -> list[Path]:
    """Write every table, verdict and figure into ``srcdir/_generated``; return the paths."""
    srcdir = Path(srcdir)
    outdir = srcdir / "_generated"
    outdir.mkdir(exist_ok=True)
    written = []
    texts = dict(snippets(srcdir), **{"headline.md": headline(srcdir)})  # the home page's too
    for name, text in texts.items():
        _write_text(outdir / name, text)
        written.append(outdir / name)
    written += [outdir / name for name in bench_figures(read_bench(srcdir), outdir)]
    return written


def update_readme(readme: Path, srcdir: Path = DOCS) -> int:
    """Rewrite the headline block of ``readme``; 0 on success, 1 (and a message on
    stderr) when the markers are missing."""
    try:
        new = rewrite_readme(readme.read_text(), headline(srcdir))
    except ValueError as e:
        print(f"generate.py --readme: {e}", file=sys.stderr)
        return 1
    _write_text(readme, new)
    print(f"rewrote the headline block of {readme}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line: write ``docs/_generated``, or with ``--readme`` README's headline."""
    parser = argparse.ArgumentParser(
        prog="python docs/_ext/generate.py",
        description="Write docs/_generated/ from the committed data, or (--readme) rewrite "
                    "the headline block of README.md.")
    parser.add_argument("--readme", action="store_true",
                        help=f"rewrite the lines between {HEADLINE_START} and {HEADLINE_END} "
                             f"in README.md")
    args = parser.parse_args(argv)
    if args.readme:
        return update_readme(REPO / "README.md")
    for path in write_all(DOCS):
        print(path.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
