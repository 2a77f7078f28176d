"""The tutorial's batch-normalization experiments, on ``fastbn.nn`` and NumPy.

``fastbn experiment NAME [--quick] [--out DIR] [--seed N] [--data PATH]`` runs
one of them (on scikit-learn's digits; ``--data DIR``: MNIST's IDX files;
``--data mnist1d``: MNIST-1D, generated in memory, MLP experiments only; see
:mod:`fastbn.experiments.data`); :func:`run_experiment` is the same from
Python.

========================  ===================================================================
``convergence``           Does batch norm reach a target accuracy in fewer epochs / seconds?
``learning-rate``         Over which learning rates do the MLPs with and without BN train?
``init``                  How sensitive is training to the weight-initialization scale?
``small-batch``           How do BN, GN, LN, IN, batch renorm and ghost BN fare at batch 2-32,
                          in a CNN and in the MLP?
``placement``             Dense -> BN -> ReLU vs Dense -> ReLU -> BN, the bias before BN,
                          BN with dropout
``depth``                 Do activations explode or vanish with depth, and does BN let
                          deeper MLPs train?
``covariate-shift``       Ioffe & Szegedy's Figure 1: does the input of a last-layer
                          sigmoid drift without BN, and stay put with it?
``baselines``             MNIST-1D: do our models, trained as the MNIST-1D paper trains them,
                          match its baselines (logistic regression, MLP, CNN)?
``noisy-bn``              Santurkar et al.'s Figure 2: does BN with noise after it, whose
                          layers' inputs move at every step, train as well as BN?
``ics``                   Santurkar et al.'s gradient-based internal covariate shift:
                          ``||G - G'||`` and ``cos(G, G')`` per layer, with and without BN
``landscape``             Santurkar et al.'s Figure 4: loss variation, gradient
                          predictiveness and beta-smoothness along the gradient
``sync-bn``               Under ``mpiexec -n K``: does data-parallel training with
                          SyncBatchNorm follow the one-process loss curve?
========================  ===================================================================

Every experiment is a module with the same four functions:

* ``make_config(mode, seed, dataset)`` -- its configuration (``mode`` is
  ``"full"``, ``"quick"`` or ``"tiny"``, the last for tests only);
* ``run(config, data, progress=True)`` -- the experiment, returning a tidy
  table: a list of dicts, one per measured point (seed included);
* ``summarize(rows, config)`` -- the summary table (mean ± std over seeds)
  and the verdict on the tutorial's claim;
* ``plot(rows, config, path, caption)`` -- the figure.

The CSV, the figure and the printed summary are all made from the one table,
so they cannot disagree.  A module's ``DATA`` (default None, digits) is the
``--data`` value it runs on when none is given: ``baselines`` and the three
Santurkar experiments default to ``"mnist1d"``, where training does not
saturate.  ``profile`` (``python -m fastbn.experiments.profile``)
measures how much of a training step normalization takes.  Importing this
package imports neither matplotlib nor scikit-learn nor the layers.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TextIO

#: Experiment name -> module in this package.
EXPERIMENTS = {
    "convergence": "convergence",
    "learning-rate": "learning_rate",
    "init": "init_scale",
    "small-batch": "small_batch",
    "placement": "placement",
    "depth": "depth",
    "covariate-shift": "covariate_shift",
    "baselines": "baselines",
    "noisy-bn": "noisy_bn",
    "ics": "ics",
    "landscape": "landscape",
    "sync-bn": "sync_bn",
}

MODES = ("full", "quick", "tiny")

#: The third-party packages the experiments need ("fastbn[experiments]").
EXTRAS = {"matplotlib": "matplotlib", "tqdm": "tqdm", "sklearn": "scikit-learn"}

__all__ = ["EXPERIMENTS", "MODES", "get", "default_data", "missing_extras", "check_data",
           "command_line", "run_experiment"]


def get(name: str):
    """The module of experiment ``name`` (a key of :data:`EXPERIMENTS`)."""
    if name not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"{__name__}.{EXPERIMENTS[name]}")


def default_data(name: str) -> str | None:
    """The ``--data`` value experiment ``name`` runs on when none is given (None: digits)."""
    return getattr(get(name), "DATA", None)


def missing_extras(*, need_sklearn: bool = True) -> list[str]:
    """The pip names of the extras that cannot be imported (scikit-learn only for digits)."""
    import importlib.util

    return [pip for mod, pip in EXTRAS.items()
            if (need_sklearn or mod != "sklearn") and importlib.util.find_spec(mod) is None]


def check_data(name: str, data) -> None:
    """Raise ValueError if experiment ``name`` cannot run on ``data`` (a Dataset).

    ``small-batch`` trains a 2-D CNN and needs images, so it refuses
    MNIST-1D's 1-D signals; the MLP experiments take any samples (flattened).
    """
    check = getattr(get(name), "check_data", None)
    if check is not None:
        check(data)


def command_line(name: str, mode: str = "full", seed: int = 0,
                 data_path: str | None = None) -> str:
    """The command that reproduces a run (for figure captions)."""
    cmd = f"fastbn experiment {name}"
    if mode == "quick":
        cmd += " --quick"
    elif mode == "tiny":
        cmd += " --tiny"
    if seed:
        cmd += f" --seed {seed}"
    if data_path is not None:
        cmd += f" --data {data_path}"
    return cmd


def run_experiment(name: str, *, mode: str = "full", out: str | os.PathLike = ".",
                   seed: int = 0, data=None, data_path: str | None = None,
                   progress: bool = True, file: TextIO | None = None) -> dict:
    """Run experiment ``name``; write ``out/NAME.csv`` and ``out/NAME.png``; print the summary.

    Parameters
    ----------
    name : str
        A key of :data:`EXPERIMENTS`.
    mode : {"full", "quick", "tiny"}
        Sizes of the run; "tiny" is a seconds-long smoke test.
    out : path
        The output directory, created if missing.
    seed : int
        The first seed; the run uses ``seed, seed + 1, ...``.
    data : Dataset, optional
        Default: :func:`fastbn.experiments.data.load` of ``data_path`` (when
        that is None too, of the experiment's :func:`default_data`).
    data_path : str, optional
        The ``--data`` value: an MNIST directory or ``"mnist1d"`` (for loading,
        and for the command in the caption).
    progress : bool
        Show a tqdm bar on stderr.
    file : text stream
        Where the summary goes (default ``sys.stdout``).

    Returns
    -------
    dict
        ``rows`` (the tidy table), ``summary`` (its rows), ``verdicts``
        (lines), ``csv`` and ``png`` (the paths written), ``config``.
    """
    from . import data as data_mod
    from . import report

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    module = get(name)
    if data is None:
        if data_path is None:
            data_path = default_data(name)
        data = data_mod.load(data_path)
    from .train import single_threaded_blas

    config = module.make_config(mode, seed, data.name)
    with single_threaded_blas():
        rows = module.run(config, data, progress=progress)
    if not getattr(module, "writes_here", lambda: True)():
        return {"rows": rows, "summary": [], "verdicts": [], "csv": None, "png": None,
                "config": config}  # an MPI rank other than 0: rank 0 reports
    os.makedirs(out, exist_ok=True)
    csv_path = os.path.join(out, f"{name}.csv")
    png_path = os.path.join(out, f"{name}.png")
    report.write_csv(rows, csv_path)
    command = getattr(module, "launcher", lambda: "")() + command_line(name, mode, seed,
                                                                      data_path)
    module.plot(rows, config, png_path, caption=f"{command}  ({module.SPREAD})")
    summary, verdicts = module.summarize(rows, config)
    file = sys.stdout if file is None else file
    print(f"{command}: {data!r}, seeds {list(config.seeds)}", file=file)
    print(report.format_table(summary), file=file)
    for line in verdicts:
        print(line, file=file)
    print(f"wrote {csv_path} and {png_path}", file=file)
    return {"rows": rows, "summary": summary, "verdicts": verdicts, "csv": csv_path,
            "png": png_path, "config": config}
