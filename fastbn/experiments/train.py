"""The experiments' shared models and training loop, on ``fastbn.nn``.

Models
------
* :func:`mlp` -- the tutorial's MLP ``64-256-128-64-10`` (784 inputs for
  MNIST).  With batch norm, each hidden layer is placed as the tutorial's
  "Best practices" advise, ``Dense(use_bias=False) -> BatchNorm -> ReLU``,
  with the BN and the ReLU fused (``BatchNorm(C, activation="relu")``);
  without, ``Dense -> ReLU``.  The small-batch experiment also gives it the
  other normalizations of :data:`MLP_NORMS` (``Dense(use_bias=False) ->
  Norm -> ReLU``).
* :func:`cnn` -- a small CNN for 1xHxW images with a choice of normalization
  (:data:`NORMS`), for the small-batch experiment.
* :func:`cnn1d` -- the MNIST-1D paper's CNN for ``(N, 1, L)`` signals, with or
  without batch norm.

Training
--------
Run training inside :func:`single_threaded_blas`: the models' matrix
products are small, and OpenBLAS's worker threads, which spin for a while
after each product, otherwise compete with Numba's for the cores (on 2
cores, a 28x28 CNN step with batch norm measured 16 ms instead of 2.8 ms).

:func:`fit` runs mini-batch training (shuffled every epoch, the last
incomplete batch dropped so batch statistics always see ``batch_size``
samples) and evaluates in eval mode after every epoch.  NumPy's overflow and
invalid-value warnings are silenced during training; instead, a run whose
loss turns non-finite or explodes (see :func:`fit`) is stopped and marked
``diverged``.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from ..nn import (
    SGD,
    Adam,
    BatchNorm,
    Conv1d,
    Conv2d,
    Dense,
    Flatten,
    GlobalAvgPool2d,
    GroupNorm,
    InstanceNorm,
    LayerNorm,
    MaxPool2d,
    ReLU,
    Sequential,
    SoftmaxCrossEntropy,
)
from .data import Dataset

#: The tutorial's hidden widths.
HIDDEN = (256, 128, 64)

#: The normalizations of the small-CNN experiment (see :func:`norm_layer`).
NORMS = ("BN", "GN", "LN", "IN", "BRN", "GBN", "none")

#: The normalizations of the MLP (see :func:`mlp`): those of :data:`NORMS` but
#: instance norm, which has one value per group on (N, C) input.
MLP_NORMS = tuple(n for n in NORMS if n != "IN")

#: A loss this many times above the run's reference loss (the larger of the
#: first batch's loss and log(num_classes), the loss of a uniform guess)
#: counts as exploding.
EXPLODE_RATIO = 100.0


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Limit BLAS to one thread within the block (threadpoolctl; a no-op without it)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def seed_rngs(seed: int, *streams: str) -> list[np.random.Generator]:
    """Independent generators for ``streams`` (e.g. "init", "order") of one seed.

    Keyed by name, so the BN and no-BN models of one seed see the same batch
    order, and adding a stream never changes another's numbers.
    """
    return [np.random.default_rng([seed, zlib.crc32(s.encode())]) for s in streams]


# --- models -------------------------------------------------------------------------------


def mlp(num_features: int, num_classes: int, *, bn: bool | None = None,
        norm: str | None = None, hidden: tuple[int, ...] = HIDDEN, init_scale: float = 1.0,
        rng: np.random.Generator | None = None) -> Sequential:
    """The tutorial's MLP, with (``bn=True``) or without batch norm, or with ``norm``.

    Give exactly one of ``bn`` and ``norm``; ``bn=True`` is ``norm="BN"``
    and ``bn=False`` is ``norm="none"``.  ``norm`` is one of
    :data:`MLP_NORMS`, each hidden layer being

    * ``BN`` -- ``Dense(use_bias=False) -> BatchNorm(C, activation="relu")``
      (batch norm and ReLU fused);
    * ``GN``, ``BRN``, ``GBN`` -- ``Dense(use_bias=False) -> Norm -> ReLU``
      with the CNN's layers (:func:`norm_layer`): ``GroupNorm(C // 4, C)``
      (on ``(N, C)`` input: per sample, over groups of 4 features), batch
      renorm, ghost batch norm;
    * ``LN`` -- ``Dense(use_bias=False) -> LayerNorm(C) -> ReLU``, layer norm
      over the features;
    * ``none`` -- ``Dense -> ReLU`` (with bias).

    There is no ``IN``: instance norm of a dense layer normalizes each
    feature of each sample alone (one value per group), so it would output
    its bias only.

    Every Dense layer, the output layer included, is He-initialized with its
    standard deviation multiplied by ``init_scale``.
    """
    if (bn is None) == (norm is None):
        raise ValueError("mlp: give exactly one of bn and norm")
    if norm is None:
        norm = "BN" if bn else "none"
    if norm not in MLP_NORMS:
        raise ValueError(f"unknown MLP norm {norm!r}; choose from {MLP_NORMS} (instance norm "
                         f"has one value per group on dense layers)")
    layers = []
    width = num_features
    for h in hidden:
        if norm == "none":
            layers += [Dense(width, h, scale=init_scale, rng=rng), ReLU()]
        else:
            layers.append(Dense(width, h, use_bias=False, scale=init_scale, rng=rng))
            if norm == "BN":
                layers.append(BatchNorm(h, activation="relu"))
            elif norm == "LN":
                layers += [LayerNorm(h), ReLU()]
            else:
                layers += [norm_layer(norm, h), ReLU()]
        width = h
    layers.append(Dense(width, num_classes, scale=init_scale, rng=rng))
    return Sequential(*layers)


def norm_layer(norm: str, channels: int):
    """One normalization layer of the small CNN (``norm`` in :data:`NORMS`, not "none");
    the MLP's too, but for LN.

    BN: ``BatchNorm(C)``; GN: ``GroupNorm(C // 4, C)`` (4 channels per
    group); LN: ``GroupNorm(1, C)``, layer norm over (C, H, W) with
    per-channel affine, as in the GN paper; IN: ``InstanceNorm(C)``; BRN:
    ``BatchNorm(C, renorm=True)`` (its ``rmax``/``dmax`` are set by a
    warm-up schedule, :func:`renorm_warmup`); GBN: ``BatchNorm(C,
    virtual_batch_size=4)``, ghost batch norm over sub-batches of 4.
    """
    if norm == "BN":
        return BatchNorm(channels)
    if norm == "GN":
        return GroupNorm(max(channels // 4, 1), channels)
    if norm == "LN":
        return GroupNorm(1, channels)
    if norm == "IN":
        return InstanceNorm(channels)
    if norm == "BRN":
        return BatchNorm(channels, renorm=True, rmax=1.0, dmax=0.0)
    if norm == "GBN":
        return BatchNorm(channels, virtual_batch_size=4)
    raise ValueError(f"unknown norm {norm!r}; choose from {NORMS}")


def cnn(image_shape: tuple[int, int, int], num_classes: int, *, norm: str,
        rng: np.random.Generator | None = None) -> Sequential:
    """The small CNN: two 3x3 conv blocks, global average pooling, a linear classifier.

    ``Conv2d(1, 16, 3, padding=1) -> Norm(16) -> ReLU -> MaxPool2d(2) ->
    Conv2d(16, 32, 3, padding=1) -> Norm(32) -> ReLU -> GlobalAvgPool2d ->
    Dense(32, classes)``; the convolutions have no bias when a norm follows
    (``norm="none"``: with bias, no norm).  Images of 16 pixels or more a
    side (MNIST's 28x28) get a stride-2 first convolution, so the second
    block sees 7x7 instead of 14x14 maps.
    """
    c_in, h, _ = image_shape
    biased = norm == "none"
    stride = 2 if h >= 16 else 1

    def block(cin, cout, s):
        conv = Conv2d(cin, cout, 3, stride=s, padding=1, use_bias=biased, rng=rng)
        return [conv] if biased else [conv, norm_layer(norm, cout)]

    return Sequential(
        *block(c_in, 16, stride), ReLU(), MaxPool2d(2),
        *block(16, 32, 1), ReLU(), GlobalAvgPool2d(),
        Dense(32, num_classes, rng=rng))


#: The MNIST-1D paper's CNN: three convolutions of 25 channels, stride 2, padding 1.
CNN1D_KERNELS = (5, 3, 3)
CNN1D_CHANNELS = 25


def cnn1d(length: int, num_classes: int, *, bn: bool,
          rng: np.random.Generator | None = None) -> Sequential:
    """The CNN of the MNIST-1D paper (Greydanus & Kobak 2024) for ``(N, 1, length)`` signals.

    ``Conv1d(1, 25, 5, stride=2, padding=1) -> ReLU -> Conv1d(25, 25, 3,
    stride=2, padding=1) -> ReLU -> Conv1d(25, 25, 3, stride=2, padding=1) ->
    ReLU -> Flatten -> Dense(25 * L3, classes)`` (``L3 = 5`` for length 40),
    He-initialized.  With ``bn``, each convolution has no bias and is followed
    by ``BatchNorm(25)`` (per channel, over the batch and the positions)
    before its ReLU.
    """
    layers: list = []
    channels = 1
    for k in CNN1D_KERNELS:
        layers.append(Conv1d(channels, CNN1D_CHANNELS, k, stride=2, padding=1,
                             use_bias=not bn, rng=rng))
        if bn:
            layers.append(BatchNorm(CNN1D_CHANNELS))
        layers.append(ReLU())
        channels = CNN1D_CHANNELS
        length = (length + 2 - k) // 2 + 1
    layers += [Flatten(), Dense(channels * length, num_classes, rng=rng)]
    return Sequential(*layers)


def norm_positions(model: Sequential, input_shape: tuple[int, ...]) -> list[int]:
    """Per batch-norm layer of ``model``, the values one channel of it sees per sample.

    That is, the spatial positions of the layer's input (``H * W``; 1 for a
    dense ``(N, C)`` input), found by following ``input_shape`` (one
    sample's shape, without the batch axis) through the layers.  In
    training, a BN channel's batch statistics pool ``batch_size`` times as
    many values.
    """
    shape = (1, *input_shape)
    counts = []
    for layer in model:
        if isinstance(layer, BatchNorm):
            counts.append(math.prod(shape[2:]))
        shape = tuple(layer.output_shape(shape))
    return counts


def renorm_layers(model) -> list:
    """The batch-renorm layers of ``model``."""
    return [m for m in model.modules() if isinstance(m, BatchNorm) and m.renorm]


@dataclass(frozen=True)
class RenormWarmup:
    """Batch renorm's warm-up (Ioffe 2017, section 4), in fractions of the run's steps.

    The paper trains with ``rmax = 1, dmax = 0`` (plain batch norm) for the
    first 5k steps, then relaxes them linearly to reach ``rmax = 3`` at 40k
    steps and ``dmax = 5`` at 25k, of about 130k.  The same proportions here:
    hold for the first ``hold`` of the steps, then linear ramps that end at
    ``rmax_end`` and ``dmax_end``.
    """

    rmax: float = 3.0
    dmax: float = 5.0
    hold: float = 0.04
    rmax_end: float = 0.3
    dmax_end: float = 0.2

    def values(self, step: int, total: int) -> tuple[float, float]:
        t = step / max(total, 1)

        def ramp(end):
            return min(max((t - self.hold) / max(end - self.hold, 1e-12), 0.0), 1.0)

        return 1.0 + (self.rmax - 1.0) * ramp(self.rmax_end), self.dmax * ramp(self.dmax_end)

    def __call__(self, model, step: int, total: int) -> None:
        rmax, dmax = self.values(step, total)
        for layer in renorm_layers(model):
            layer.rmax, layer.dmax = rmax, dmax


def optimizer(name: str, model, lr: float):
    """``"SGD"``: SGD with momentum 0.9; ``"Adam"``: Adam with PyTorch's defaults."""
    if name == "SGD":
        return SGD(model, lr, momentum=0.9)
    if name == "Adam":
        return Adam(model, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; choose SGD or Adam")


# --- training -----------------------------------------------------------------------------


@dataclass
class Run:
    """What :func:`fit` measured: one dict per completed epoch, and how it ended."""

    history: list[dict] = field(default_factory=list)
    diverged: bool = False
    diverged_epoch: int | None = None     # 1-based epoch in which the loss blew up
    steps: int = 0

    @property
    def final(self) -> dict:
        """The last epoch's row (NaN metrics if the run diverged in its first epoch)."""
        if self.history:
            return self.history[-1]
        nan = float("nan")
        return {"epoch": 0, "train_loss": nan, "val_loss": nan, "val_accuracy": nan,
                "epoch_s": nan, "elapsed_s": nan}


def evaluate(model, x: np.ndarray, y: np.ndarray, *, batch_size: int = 1000
             ) -> tuple[float, float]:
    """``(mean loss, accuracy)`` of ``model`` on ``(x, y)`` in eval mode.

    Non-finite logits (a blown-up model) count as wrong predictions.
    """
    model.eval()
    crit = SoftmaxCrossEntropy()
    loss, correct = 0.0, 0
    with np.errstate(all="ignore"):
        for a in range(0, len(y), batch_size):
            logits = model(x[a:a + batch_size])
            yb = y[a:a + batch_size]
            loss += float(crit(logits, yb)) * len(yb)
            ok = np.isfinite(logits).all(axis=1)
            correct += int(np.sum((logits.argmax(axis=1) == yb) & ok))
    model.train()
    return loss / len(y), correct / len(y)


def warm_up(model, data: Dataset, *, flatten: bool = False, batch_size: int = 32) -> None:
    """One untimed forward, backward and evaluation of a throwaway ``model`` on a few
    training samples, so that Numba loading (or compiling) kernels is not timed later."""
    x, y = data.x_train[:batch_size], data.y_train[:batch_size]
    if flatten:
        x = x.reshape(len(y), -1)
    crit = SoftmaxCrossEntropy()
    model.train()
    crit(model(x), y)
    model.backward(crit.backward())
    evaluate(model, x, y)


def fit(model, opt, data: Dataset, *, epochs: int, batch_size: int,
        rng: np.random.Generator, flatten: bool = False,
        on_step: Callable[[object, int, int], None] | None = None,
        eval_epochs: bool = True, explode_ratio: float = EXPLODE_RATIO) -> Run:
    """Train ``model`` with ``opt`` on ``data`` for ``epochs`` epochs.

    Parameters
    ----------
    model : Sequential
    opt : SGD or Adam
        Built on ``model``.
    data : Dataset
        Images ``(N, 1, H, W)``; ``flatten=True`` feeds ``(N, H*W)`` (MLPs).
    epochs, batch_size : int
        ``len(train) // batch_size`` steps per epoch, on a fresh shuffle each
        epoch (drawn from ``rng``); the remainder is dropped.
    on_step : callable, optional
        ``on_step(model, step, total_steps)`` before every step (schedules,
        e.g. :class:`RenormWarmup`).
    eval_epochs : bool
        Evaluate on the validation set after every epoch (else after the last).
    explode_ratio : float
        The run diverges when a batch's loss is not finite or exceeds
        ``explode_ratio`` times the reference ``max(first batch loss,
        log(num_classes))``; training stops there.

    Returns
    -------
    Run
        ``history`` holds one row per completed epoch: ``epoch``,
        ``train_loss`` (mean over the epoch's batches), ``val_loss``,
        ``val_accuracy``, ``epoch_s`` (training seconds, without
        evaluation) and ``elapsed_s`` (cumulative).
    """
    x_train = data.x_train.reshape(len(data.y_train), -1) if flatten else data.x_train
    x_val = data.x_val.reshape(len(data.y_val), -1) if flatten else data.x_val
    y_train, y_val = data.y_train, data.y_val
    steps_per_epoch = len(y_train) // batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch size {batch_size} exceeds the {len(y_train)} training samples")
    total = epochs * steps_per_epoch
    crit = SoftmaxCrossEntropy()
    run = Run()
    reference = None
    elapsed = 0.0
    model.train()
    with np.errstate(all="ignore"):
        for epoch in range(1, epochs + 1):
            order = rng.permutation(len(y_train))
            losses = np.empty(steps_per_epoch)
            start = time.perf_counter()
            for i in range(steps_per_epoch):
                idx = order[i * batch_size:(i + 1) * batch_size]
                if on_step is not None:
                    on_step(model, run.steps, total)
                loss = float(crit(model(x_train[idx]), y_train[idx]))
                if reference is None:
                    reference = max(loss, math.log(data.num_classes))
                if not math.isfinite(loss) or loss > explode_ratio * reference:
                    run.diverged, run.diverged_epoch = True, epoch
                    return run
                losses[i] = loss
                opt.zero_grad()
                model.backward(crit.backward())
                opt.step()
                run.steps += 1
            seconds = time.perf_counter() - start
            elapsed += seconds
            row = {"epoch": epoch, "train_loss": float(losses.mean())}
            if eval_epochs or epoch == epochs:
                row["val_loss"], row["val_accuracy"] = evaluate(model, x_val, y_val)
            else:
                row["val_loss"] = row["val_accuracy"] = float("nan")
            row["epoch_s"], row["elapsed_s"] = seconds, elapsed
            run.history.append(row)
    return run
