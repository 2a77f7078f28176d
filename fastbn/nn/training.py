"""A Keras-style training loop for :class:`~fastbn.nn.Sequential`: compile, fit, evaluate, predict.

The methods on ``Sequential`` are thin: they call the functions here.
``compile`` stores a :class:`Compiled` configuration on the model (the
optimizer, the loss and the metric names); ``fit`` runs minibatch epochs and
returns a :class:`History`.

What the loop does, per epoch of ``fit``:

1. the model is put in training mode, the training samples are shuffled (a
   fresh permutation every epoch, drawn from ``np.random.default_rng(seed)``);
2. for each batch: forward, loss, ``zero_grad``, backward, ``step``; the
   batch's mean loss and its correct predictions are accumulated, weighted
   by the batch's size, as Keras' running metrics are;
3. with validation data, :func:`evaluate` runs on it in eval mode.

Keras drops no batch: the last, partial batch trains too.  One exception:
when the last batch would hold a single sample it is merged into the batch
before it, because batch norm in training mode needs more than one value per
channel.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from .losses import SoftmaxCrossEntropy
from .optim import SGD, Adam, Optimizer

if TYPE_CHECKING:  # pragma: no cover
    from .sequential import Sequential

__all__ = ["History", "Compiled", "compile_model", "fit", "evaluate", "predict"]

_LOSSES = ("sparse_categorical_crossentropy",)
_METRICS = ("accuracy",)
_OPTIMIZERS = {"adam": lambda model: Adam(model, lr=1e-3),
               "sgd": lambda model: SGD(model, lr=0.01)}


class History:
    """What :meth:`Sequential.fit <fastbn.nn.Sequential.fit>` returns, as Keras' ``History``.

    Attributes
    ----------
    history : dict of str to list of float
        ``"loss"`` and each compiled metric (``"accuracy"``), then with
        validation ``"val_loss"`` and ``"val_accuracy"``; one value per epoch.
        The training values are the means over the epoch's batches, weighted
        by batch size, measured in training mode while the weights change (as
        Keras reports them); the validation values come from an evaluation in
        eval mode after the epoch.
    epoch : list of int
        The epochs run, from 0.
    params : dict
        ``epochs``, ``steps`` (batches per epoch) and ``batch_size``.

    Examples
    --------
    >>> from fastbn.nn.training import History
    >>> h = History()
    >>> h.history
    {}
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self.params: dict[str, Any] = {}

    def _append(self, epoch: int, logs: dict[str, float]) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))

    def __repr__(self) -> str:
        keys = ", ".join(self.history)
        return f"History(epochs={len(self.epoch)}, keys=[{keys}])"


@dataclass
class Compiled:
    """The configuration ``compile`` stores on a model (``model.compiled``)."""

    optimizer: Optimizer
    loss: SoftmaxCrossEntropy
    metrics: tuple[str, ...] = field(default_factory=tuple)


def _owned_by(optimizer: Optimizer, model: Sequential) -> bool:
    ids = {id(m) for m in model.modules()}
    return all(id(module) in ids for module, _ in optimizer.slots)


def compile_model(model: Sequential, optimizer: str | Optimizer = "adam",
                  loss: str | SoftmaxCrossEntropy = "sparse_categorical_crossentropy",
                  metrics: Sequence[str] | None = ("accuracy",)) -> Compiled:
    """Validate the arguments of ``compile`` and store them on ``model`` (see
    :meth:`Sequential.compile <fastbn.nn.Sequential.compile>`)."""
    if isinstance(optimizer, str):
        name = optimizer.lower()
        if name not in _OPTIMIZERS:
            raise ValueError(f"compile: optimizer must be one of {sorted(_OPTIMIZERS)} or a "
                             f"fastbn.nn optimizer; got {optimizer!r}")
        opt = _OPTIMIZERS[name](model)
    elif isinstance(optimizer, Optimizer):
        if not _owned_by(optimizer, model):
            raise ValueError("compile: optimizer was built on layers that are not in this "
                             "model; build it on the model (e.g. Adam(model)) or on a part of it")
        opt = optimizer
    else:
        raise ValueError(f"compile: optimizer must be a name ('adam', 'sgd') or a fastbn.nn "
                         f"optimizer; got {type(optimizer).__name__}")
    if isinstance(loss, str):
        if loss not in _LOSSES:
            raise ValueError(f"compile: loss must be one of {list(_LOSSES)}; got {loss!r}")
        crit = SoftmaxCrossEntropy()
    elif isinstance(loss, SoftmaxCrossEntropy):
        crit = loss
    else:
        raise ValueError(f"compile: loss must be 'sparse_categorical_crossentropy' or a "
                         f"SoftmaxCrossEntropy; got {type(loss).__name__}")
    if metrics is None:
        names: tuple[str, ...] = ()
    elif isinstance(metrics, str):
        names = (metrics,)
    else:
        names = tuple(metrics)
    for m in names:
        if m not in _METRICS:
            raise ValueError(f"compile: metrics may contain only {list(_METRICS)}; got {m!r}")
    names = tuple(dict.fromkeys(names))  # drop repeats, keep the order
    config = Compiled(opt, crit, names)
    model.compiled = config
    return config


def _compiled(model: Sequential, who: str) -> Compiled:
    config = getattr(model, "compiled", None)
    if config is None:
        raise RuntimeError(f"Sequential.{who}: the model is not compiled; call "
                           f"model.compile(optimizer=..., loss=..., metrics=...) first")
    return config


def _as_xy(x: ArrayLike, y: ArrayLike, who: str, xname: str = "x",
           yname: str = "y") -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim < 1 or y.ndim != 1:
        raise ValueError(f"Sequential.{who}: {xname} must have a batch axis and {yname} must be "
                         f"1-D integer labels; got shapes {x.shape} and {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"Sequential.{who}: {xname} and {yname} must have the same length; got "
                         f"{xname} of shape {x.shape} and {yname} of shape {y.shape}")
    if x.shape[0] < 1:
        raise ValueError(f"Sequential.{who}: {xname} must hold at least one sample; got shape "
                         f"{x.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"Sequential.{who}: {yname} must be integer class labels; got dtype "
                         f"{y.dtype}")
    return x, y


def _check_batch_size(batch_size: int, who: str) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"Sequential.{who}: batch_size must be an integer >= 1; got "
                         f"{batch_size!r}")
    return int(batch_size)


def _batches(n: int, batch_size: int) -> list[slice]:
    """Slices covering ``range(n)``; a last batch of one sample joins the one before."""
    edges = list(range(0, n, batch_size)) + [n]
    if len(edges) > 2 and edges[-1] - edges[-2] == 1:
        del edges[-2]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


@contextlib.contextmanager
def _modes_restored(model: Sequential, training: bool) -> Iterator[None]:
    """Set every layer's mode, and give each layer its own mode back afterwards."""
    saved = [(m, m.training) for m in model._unique_modules()]
    model.train(training)
    try:
        yield
    finally:
        for module, mode in saved:
            module.training = mode


#: BLAS threads while :func:`fit` runs (threadpoolctl, once per fit); None leaves
#: BLAS as it is.  See :meth:`Sequential.fit <fastbn.nn.Sequential.fit>`'s Notes.
FIT_BLAS_THREADS: int | None = 1


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """BLAS limited to :data:`FIT_BLAS_THREADS` threads, where threadpoolctl is installed
    (else nothing)."""
    limit = FIT_BLAS_THREADS
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        limit = None
    if limit is None:
        yield
        return
    with threadpool_limits(limits=limit, user_api="blas"):
        yield


def _run_eval(model: Sequential, x: np.ndarray, y: np.ndarray | None,
              batch_size: int, crit: SoftmaxCrossEntropy | None,
              want_accuracy: bool) -> tuple[np.ndarray | None, float, float]:
    """Forward in batches in the current mode; loss and accuracy weighted by batch size."""
    outputs = []
    loss_sum = 0.0
    correct = 0
    n = x.shape[0]
    for start in range(0, n, batch_size):
        sl = slice(start, min(start + batch_size, n))
        out = model.forward(x[sl])
        if y is None:
            outputs.append(out)
            continue
        yb = y[sl]
        assert crit is not None  # a criterion comes with the labels
        loss_sum += crit(out, yb) * yb.shape[0]
        if want_accuracy:
            correct += int(np.count_nonzero(np.asarray(out).argmax(axis=1) == yb))
    if y is None:
        return np.concatenate(outputs, axis=0), 0.0, 0.0
    return None, loss_sum / n, correct / n


def evaluate(model: Sequential, x: ArrayLike, y: ArrayLike, *, batch_size: int = 32
             ) -> dict[str, float]:
    """See :meth:`Sequential.evaluate <fastbn.nn.Sequential.evaluate>`."""
    config = _compiled(model, "evaluate")
    x, y = _as_xy(x, y, "evaluate")
    batch_size = _check_batch_size(batch_size, "evaluate")
    return _evaluate(model, config, x, y, batch_size)


def _evaluate(model: Sequential, config: Compiled, x: np.ndarray, y: np.ndarray,
              batch_size: int) -> dict[str, float]:
    want = "accuracy" in config.metrics
    # a separate criterion: the compiled one keeps the last training batch for backward
    with _modes_restored(model, False):
        _, loss, acc = _run_eval(model, x, y, batch_size, SoftmaxCrossEntropy(), want)
    logs = {"loss": float(loss)}
    if want:
        logs["accuracy"] = float(acc)
    return logs


def predict(model: Sequential, x: ArrayLike, *, batch_size: int = 32) -> np.ndarray:
    """See :meth:`Sequential.predict <fastbn.nn.Sequential.predict>`."""
    x = np.asarray(x)
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"Sequential.predict: x must have a batch axis with at least one "
                         f"sample; got shape {x.shape}")
    batch_size = _check_batch_size(batch_size, "predict")
    with _modes_restored(model, False):
        out, _, _ = _run_eval(model, x, None, batch_size, None, False)
    assert out is not None  # the outputs, without labels
    return out


def _progress(verbose: int, steps: int, epoch: int, epochs: int) -> Any:
    """A tqdm bar on stderr for ``verbose == 1`` when tqdm is installed, else None."""
    if verbose != 1:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=steps, desc=f"Epoch {epoch + 1}/{epochs}", file=sys.stderr,
                unit="batch", leave=True)


def _line(epoch: int, epochs: int, logs: dict[str, float]) -> str:
    parts = [f"Epoch {epoch + 1}/{epochs}"] + [f"{k}: {v:.4f}" for k, v in logs.items()]
    return " - ".join(parts)


def fit(model: Sequential, x: ArrayLike, y: ArrayLike, *, epochs: int = 1,
        batch_size: int = 32, validation_split: float = 0.0,
        validation_data: tuple[ArrayLike, ArrayLike] | None = None, shuffle: bool = True,
        seed: int | np.random.Generator | None = None, verbose: int = 1) -> History:
    """See :meth:`Sequential.fit <fastbn.nn.Sequential.fit>`."""
    config = _compiled(model, "fit")
    x, y = _as_xy(x, y, "fit")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"Sequential.fit: epochs must be an integer >= 0; got {epochs!r}")
    epochs = int(epochs)
    batch_size = _check_batch_size(batch_size, "fit")
    if verbose not in (0, 1, 2):
        raise ValueError(f"Sequential.fit: verbose must be 0, 1 or 2; got {verbose!r}")
    verbose = int(verbose)
    x_val: ArrayLike | None = None
    y_val: ArrayLike | None = None
    if validation_data is not None:
        try:
            x_val, y_val = validation_data
        except (TypeError, ValueError):
            raise ValueError("Sequential.fit: validation_data must be a pair (x_val, y_val)") \
                from None
        x_val, y_val = _as_xy(x_val, y_val, "fit", "validation_data[0]", "validation_data[1]")
    elif validation_split:
        if not 0.0 < validation_split < 1.0:
            raise ValueError(f"Sequential.fit: validation_split must be in [0, 1); got "
                             f"{validation_split!r}")
        split_at = int(np.floor(x.shape[0] * (1.0 - validation_split)))
        if split_at < 1 or split_at >= x.shape[0]:
            raise ValueError(f"Sequential.fit: validation_split={validation_split!r} of "
                             f"{x.shape[0]} samples leaves an empty training or validation "
                             f"set")
        x, x_val = x[:split_at], x[split_at:]
        y, y_val = y[:split_at], y[split_at:]
    x_val_: np.ndarray | None = None
    y_val_: np.ndarray | None = None
    if validation_data is not None or validation_split:
        x_val_, y_val_ = np.asarray(x_val), np.asarray(y_val)

    rng = np.random.default_rng(seed)
    opt, crit = config.optimizer, config.loss
    want_acc = "accuracy" in config.metrics
    n = x.shape[0]
    batches = _batches(n, batch_size)
    history = History()
    history.params = {"epochs": epochs, "steps": len(batches), "batch_size": batch_size}

    with _one_blas_thread():
        for epoch in range(epochs):
            order = rng.permutation(n) if shuffle else None
            bar = _progress(verbose, len(batches), epoch, epochs)
            loss_sum = 0.0
            correct = 0
            seen = 0
            try:
                with _modes_restored(model, True):
                    for sl in batches:
                        if order is None:
                            xb, yb = x[sl], y[sl]
                        else:
                            idx = order[sl]
                            xb, yb = x[idx], y[idx]
                        out = model.forward(xb)
                        loss = crit(out, yb)
                        opt.zero_grad()
                        model.backward(crit.backward())
                        opt.step()
                        m = yb.shape[0]
                        seen += m
                        loss_sum += loss * m
                        if want_acc:
                            correct += int(np.count_nonzero(np.asarray(out).argmax(axis=1) == yb))
                        if bar is not None:
                            bar.update(1)
                            post = {"loss": f"{loss_sum / seen:.4f}"}
                            if want_acc:
                                post["accuracy"] = f"{correct / seen:.4f}"
                            bar.set_postfix(post, refresh=False)
                logs = {"loss": loss_sum / seen}
                if want_acc:
                    logs["accuracy"] = correct / seen
                if x_val_ is not None and y_val_ is not None:
                    val = _evaluate(model, config, x_val_, y_val_, batch_size)
                    logs.update({f"val_{k}": v for k, v in val.items()})
                if bar is not None:
                    bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()}, refresh=True)
            finally:
                if bar is not None:
                    bar.close()
            history._append(epoch, logs)
            if verbose == 2 or (verbose == 1 and bar is None):
                print(_line(epoch, epochs, logs))
    return history
