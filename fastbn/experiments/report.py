"""Tables, CSV, figures and progress bars, all made from an experiment's tidy table.

A tidy table is a list of dicts, one per measured point, with one key per
variable.  :func:`write_csv` writes it as is; :func:`aggregate` reduces it
over seeds to mean, standard deviation (``ddof=1``; 0 for a single seed) and
count; :func:`format_table` prints a list of dicts as an aligned text table.
matplotlib (Agg backend) and tqdm are imported on first use only.
"""

from __future__ import annotations

import csv
import math
import os
import sys
from collections.abc import Iterable, Sequence

import numpy as np


def cpu_name() -> str:
    """The processor's model name (Linux: /proc/cpuinfo), for the rows of a timing run."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def write_csv(rows: Sequence[dict], path: str | os.PathLike) -> None:
    """Write the tidy table: the columns are the keys in order of first appearance."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(v) for k, v in row.items()})


def _csv_value(v):
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return v


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Read a CSV written by :func:`write_csv` back (numbers as float, the rest str)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        parsed = {}
        for k, v in row.items():
            try:
                parsed[k] = float(v)
            except (TypeError, ValueError):
                parsed[k] = v
        out.append(parsed)
    return out


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """``(mean, std, n)`` over the finite values (std with ddof=1, 0 for one value)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def aggregate(rows: Sequence[dict], by: Sequence[str], value: str) -> list[dict]:
    """Mean and spread of ``value`` over the rows sharing the ``by`` columns.

    Returns one dict per group, in order of first appearance: the ``by``
    columns, ``mean``, ``std``, ``n`` (finite values) and ``total`` (rows).
    """
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(row[value])
    out = []
    for key, values in groups.items():
        m, s, n = mean_std(values)
        out.append({**dict(zip(by, key, strict=True)), "mean": m, "std": s, "n": n,
                    "total": len(values)})
    return out


def pm(mean: float, std: float, fmt: str = ".1f", scale: float = 1.0) -> str:
    """``"mean ± std"`` (``"-"`` when the mean is not finite)."""
    if not math.isfinite(mean):
        return "-"
    return f"{mean * scale:{fmt}} ± {std * scale:{fmt}}"


def format_table(rows: Sequence[dict]) -> str:
    """An aligned plain-text table of ``rows`` (the keys of the first row are the header)."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    cells = [[str(c) for c in columns]] + [[_cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(s.rjust(w) if i else s.ljust(w) for i, (s, w) in
                       enumerate(zip(line, widths, strict=True))) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(v) -> str:
    if isinstance(v, float):
        return "-" if not math.isfinite(v) else f"{v:.4g}"
    return str(v)


def progress(total: int, desc: str, enabled: bool = True):
    """A tqdm progress bar on stderr over ``total`` runs (a no-op object if disabled)."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="run", file=sys.stderr, leave=False,
                dynamic_ncols=True)


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix_str(self, s):
        pass

    def close(self):
        pass


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, caption: str) -> None:
    """Add ``caption`` (the command that made the figure, the spread) under the axes; save."""
    fig.text(0.5, 0.005, caption, ha="center", va="bottom", fontsize=7, color="0.3",
             wrap=True)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=120)
    pyplot().close(fig)


def band(ax, x, mean, std, label: str, **kw) -> None:
    """A mean line with a ±1 std band (the spread over seeds)."""
    x, mean, std = (np.asarray(a, dtype=float) for a in (x, mean, std))
    (line,) = ax.plot(x, mean, label=label, **kw)
    ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
