"""The snippets of the depth page, from ``docs/experiments/depth.csv``.

:func:`snippets` has the contract of the per-experiment functions of
``generate.py``: the rows of the CSV in, the Markdown snippets of the page and
the page's rows of the claims' summary out.  Every number is computed from
the rows, through the experiment's own ``summarize`` and helpers.
"""

from __future__ import annotations

import math

import generate

#: The standard deviation of ReLU(z) for z ~ N(0, 1): sqrt(1/2 - 1/(2 pi)).
RELU_STD = math.sqrt(0.5 - 1.0 / (2.0 * math.pi))


def _config(rows: list[dict]):
    """The full-mode configuration of the CSV's dataset, checked against its seeds."""
    from fastbn.experiments import depth as mod

    config = mod.make_config("full", 0, rows[0].get("dataset", "digits"))
    seeds = sorted({int(r["seed"]) for r in rows})
    if tuple(seeds) != tuple(config.seeds):
        raise ValueError(f"depth.csv has seeds {seeds}; the full run has {config.seeds}")
    return config


def _output(rows: list[dict], config) -> str:
    """The summary table and the verdicts as the command prints them."""
    from fastbn.experiments import depth as mod
    from fastbn.experiments import report

    table, verdicts = mod.summarize(rows, config)
    return generate.text_block(report.format_table(table) + "\n\n" + "\n".join(verdicts))


def _scales(values) -> str:
    names = [f"{v:g}x" for v in values]
    if not names:
        return "none"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _depths(values) -> str:
    values = [str(v) for v in values]
    if not values:
        return "no depth"
    if len(values) == 1:
        return f"depth {values[0]}"
    return "depths " + ", ".join(values[:-1]) + " and " + values[-1]


def snippets(rows: list[dict]) -> tuple[dict[str, str], list[dict]]:
    """Snippets of the depth page and its rows of the claims' summary."""
    from fastbn.experiments import depth as mod

    rows = [dict(r, seed=int(r["seed"])) for r in rows]
    cfg = _config(rows)
    table, verdicts = mod.summarize(rows, cfg)
    claims = [generate.parse_claim(v) for v in verdicts]
    if len(claims) != 3 or not all(claims):
        raise ValueError(f"depth: expected 3 verdict lines, got {verdicts}")
    explode, bn_init, deeper = claims
    word = generate.verdict_word
    num, span = mod.num, mod.span
    target = f"{cfg.target_accuracy:.0%}"
    L = cfg.probe_depth

    # the two tables, from the summary's rows
    init_rows = [{"init scale": r["setting"], "model": r["model"],
                  "act std last/first": r["act std last/first"],
                  "gain per layer": r["gain per layer"],
                  "grad first/last": r["grad first/last"]}
                 for r in table if r["part"].startswith("init")]
    train_rows = [{"depth": r["setting"].removeprefix("depth "), "model": r["model"],
                   "act std last/first (init)": r["act std last/first"],
                   "grad first/last (init)": r["grad first/last"],
                   "final val acc %": r["final acc %"],
                   "final train loss": r["final train loss"],
                   f"epochs to {target} (reached)": r[f"epochs to {target}"]}
                  for r in table if r["part"].startswith("train")]

    # part 1
    init = {(m, s): mod.init_stats(rows, m, s) for s in cfg.scales for m in mod.MODELS}
    lo, hi = min(cfg.scales), max(cfg.scales)
    no = {s: init[("no BN", s)] for s in cfg.scales}
    bn = {s: init[("BN", s)] for s in cfg.scales}
    ratio = {s: no[s]["std_ratio"][0] for s in cfg.scales}
    gains = ", ".join(f"{num(no[s]['gain'][0])} at {s:g}x" for s in cfg.scales)
    spread = max(mod._spread(no[s]["grad_layers"]) for s in cfg.scales)
    findings = []
    text = (f"**Exploding and vanishing activations, without BN.** Verdict: "
            f"{word(explode['word'])}. In the {L}-layer MLP at initialization, the "
            f"standard deviation of the last hidden layer's output over the first's is "
            f"{num(ratio[lo])} at {lo:g}x He and {num(ratio[hi])} at {hi:g}x. Each layer "
            f"multiplies it by about the init scale (the gain per layer: {gains}), so it "
            f"changes geometrically with depth.")
    if 1.0 in ratio:
        text += (f" At He scale the ratio is {num(ratio[1.0])}: He initialization is what "
                 f"keeps the activations of a plain ReLU network O(1).")
    text += (f" The weight-gradient norms stay within {num(spread)}x of each other across "
             f"the layers at every scale, but their common level moves with the scale: "
             f"{num(mod._level(no[lo]['grad_layers']))} at {lo:g}x and "
             f"{num(mod._level(no[hi]['grad_layers']))} at {hi:g}x (geometric means over "
             f"the layers and seeds).")
    findings.append(text)

    bn_ratios = [bn[s]["std_ratio"][0] for s in cfg.scales]
    bn_levels = [m for s in cfg.scales for m, _ in bn[s]["std_layers"]]
    bn_grads = [bn[s]["grad_ratio"][0] for s in cfg.scales]
    findings.append(
        f"**The same, with BN.** Verdict: {word(bn_init['word'])}. The ratio is "
        f"{span(min(bn_ratios), max(bn_ratios), 3)} at every scale from {lo:g}x to {hi:g}x "
        f"He, and every hidden layer's output has a standard deviation of "
        f"{span(min(bn_levels), max(bn_levels), 3)}, that of ReLU(z) for a standard normal z "
        f"({RELU_STD:.3f}). The weight gradients are not level, though: the first hidden "
        f"layer's is {span(min(bn_grads), max(bn_grads))} times "
        f"the last one's, about {num(mod.gain(sum(bn_grads) / len(bn_grads), L), 3)}x per "
        f"layer toward the input, whatever the scale.")

    # part 2
    trained = {(m, d): mod.train_stats(rows, m, d, cfg) for d in cfg.depths for m in mod.MODELS}
    ok = {m: [d for d in cfg.depths if trained[(m, d)]["trains"]] for m in mod.MODELS}
    steps = _steps_per_epoch(rows)
    deep = max(cfg.depths)
    opt = f"{cfg.optimizer}{' with momentum 0.9' if cfg.optimizer == 'SGD' else ''}"
    text = (f"**Trainability against depth.** Verdict: {word(deeper['word'])}. Under "
            f"{opt} at lr {cfg.lr:g}, batch {cfg.batch_size}, for {cfg.epochs} epochs"
            + (f" ({cfg.epochs * steps} steps)" if steps else "")
            + f", every seed reaches {target} at {_depths(ok['BN'])} with BN and at "
              f"{_depths(ok['no BN'])} without.")
    both = [d for d in cfg.depths if d in ok["BN"] and d in ok["no BN"]]
    if both:
        d = max(both)
        s_bn, s_no = trained[("BN", d)], trained[("no BN", d)]
        text += (f" At depth {d}, BN gets there in {s_bn['epochs'][0]:.1f} epochs against "
                 f"{s_no['epochs'][0]:.1f}, and ends at {100 * s_bn['final'][0]:.1f} % "
                 f"against {100 * s_no['final'][0]:.1f} % (± {100 * s_no['final'][1]:.1f} "
                 f"over the seeds).")
    a_bn, a_no = (trained[(m, deep)]["final"] for m in mod.MODELS)
    stuck = [m for m in mod.MODELS if deep not in ok[m]]
    if stuck:
        text += (f" At depth {deep}, "
                 + ("neither trains" if len(stuck) == 2 else f"{stuck[0]} does not train")
                 + f": the final accuracy is {100 * a_bn[0]:.1f} ± {100 * a_bn[1]:.1f} % with "
                   f"BN and {100 * a_no[0]:.1f} ± {100 * a_no[1]:.1f} % without.")
    findings.append(text)
    g_bn, g_no = (trained[(m, deep)]["grad_ratio"][0] for m in mod.MODELS)
    findings.append(
        f"**Why BN does not rescue the deepest net.** At initialization, BN's first-layer "
        f"weight gradient is {num(g_bn)} times its last hidden layer's at depth {deep} "
        f"(about {num(mod.gain(g_bn, deep), 3)}x per layer), against {num(g_no)} without BN. "
        f"Batch norm keeps the forward signal at unit scale but makes the backward signal "
        f"grow geometrically toward the input. This is the gradient explosion that the "
        f"mean-field theory of batch norm predicts for networks without skip connections "
        f"(Yang et al., ICLR 2019).")

    out = {"depth-init-table.md": generate.md_table(init_rows, align="llrrr"),
           "depth-table.md": generate.md_table(train_rows, align="rlrrrrr"),
           "depth-verdict.md": generate.bullets(findings),
           "depth-output.md": _output(rows, cfg)}
    summary = [
        {"claim": f"Without normalization, activations explode or vanish ({L} ReLU layers)",
         "page": "depth", "verdict": word(explode["word"]),
         "measured": (f"std last/first layer {num(ratio[lo])} at {lo:g}x He, "
                      f"{num(ratio[hi])} at {hi:g}x"
                      + (f", {num(ratio[1.0])} at He" if 1.0 in ratio else ""))},
        {"claim": "Batch norm prevents exploding/vanishing activations", "page": "depth",
         "verdict": word(bn_init["word"]),
         "measured": (f"std last/first layer {span(min(bn_ratios), max(bn_ratios), 3)} "
                      f"at every scale from {lo:g}x to {hi:g}x He")},
        {"claim": "Batch norm enables deeper networks", "page": "depth",
         "verdict": word(deeper["word"]),
         "measured": _trained_text(ok, target, deep, a_bn[0], a_no[0])},
    ]
    return out, summary


def _trained_text(ok: dict, target: str, deep: int, acc_bn: float, acc_no: float) -> str:
    """The measured column of the depth claim."""
    if ok["BN"] == ok["no BN"]:
        text = f"every seed reaches {target} at {_depths(ok['BN'])}, with BN and without"
    else:
        text = (f"every seed reaches {target} at {_depths(ok['BN'])} with BN, "
                f"{_depths(ok['no BN'])} without")
    return text + f"; at depth {deep}: {100 * acc_bn:.1f} % with BN, {100 * acc_no:.1f} % without"


def _steps_per_epoch(rows: list[dict]) -> int | None:
    """The optimizer steps per epoch of part 2 (the ``step`` of epoch 1)."""
    for r in rows:
        if r.get("part") == "train" and int(r["epoch"]) == 1:
            return int(r["step"])
    return None
