r"""Batch norm for inference and fine-tuning: folding, freezing.

- :func:`fold_batch_norm` folds every ``BatchNorm`` that directly follows a
  ``Dense``, ``Conv1d`` or ``Conv2d`` into that layer's weight and bias, the
  first optimization of an inference model.
- :class:`FrozenBatchNorm` is torchvision's ``FrozenBatchNorm2d``: the eval
  batch norm in every mode, with nothing to train, for fine-tuning a
  pretrained network on small batches.
- :func:`freeze_batch_norm` replaces every ``BatchNorm`` of a model by one.

Folding, per output channel ``o`` of the layer before the batch norm
(``rstd = 1 / sqrt(running_var + eps)``):

.. code-block:: text

    s[o]     = weight[o] * rstd[o]
    W'[o, :] = W[o, :] * s[o]                 # the OUTPUT axis: rows of W
    b'[o]    = (b[o] - running_mean[o]) * s[o] + bias[o]

The scale multiplies the rows of ``W`` (its output axis, axis 0 of the
``(out, in)``, ``(out, in, k)`` and ``(out, in, kh, kw)`` layouts), never
its columns: folding along the input axis is the bug that gave errors of up
to 2.7 in ultralytics (PR #25364) and onnx's optimizer (PR #106).  The tests
check that the folded model's output equals the original's in float64 to
1e-10 on models whose channels all have different statistics, where a fold
along the wrong axis cannot pass.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from .. import _checks
from .. import functional as F
from ._module import Module
from .layers import Conv1d, Conv2d, Dense, ReLU
from .norm import BatchNorm, _channels_of, _count, _integer
from .sequential import Sequential

__all__ = ["fold_batch_norm", "FrozenBatchNorm", "freeze_batch_norm"]

_FOLDABLE = (Dense, Conv1d, Conv2d)


def _clone(module: Module) -> Module:
    """A deep copy of ``module`` that shares what cannot be copied (MPI communicators)
    and leaves behind what the last forward saved."""
    memo: dict[int, Any] = {}
    for m in module.modules():
        if hasattr(m, "comm"):
            memo[id(m.comm)] = m.comm
        for name in ("_saved", "_x", "_cols", "_mask"):
            value = getattr(m, name, None)
            if value is not None:
                memo[id(value)] = None
    return copy.deepcopy(module, memo)


def _folds(layer: Module, bn: Module) -> bool:
    """Whether ``bn`` can fold into ``layer``: a BatchNorm on the layer's output channels."""
    if not isinstance(layer, _FOLDABLE) or not isinstance(bn, (BatchNorm, FrozenBatchNorm)):
        return False
    channels = layer.out_features if isinstance(layer, Dense) else layer.out_channels
    if bn.num_features != channels:
        return False
    # Dense outputs (N, F): axis 1 or -1; Conv1d (N, C, L) and Conv2d (N, C, H, W): axis 1
    return bn.axis in ((1, -1) if isinstance(layer, Dense) else (1,))


def _fold_pair(layer: Any, bn: Any) -> Module:
    """A copy of ``layer`` with ``bn`` folded in (float64 arithmetic, the layer's dtype)."""
    if isinstance(bn, FrozenBatchNorm):
        mean, var = bn.buffers["running_mean"], bn.buffers["running_var"]
        gamma, beta = bn.buffers["weight"], bn.buffers["bias"]
    else:
        if not bn.track_running_stats:
            raise ValueError(f"fold_batch_norm: {bn!r} has no running statistics "
                             "(track_running_stats=False): it normalizes with each batch's "
                             "own statistics and cannot be folded")
        mean, var = bn.buffers["running_mean"], bn.buffers["running_var"]
        gamma, beta = bn.params.get("weight"), bn.params.get("bias")
    c = mean.shape[0]
    scale = (np.ones(c) if gamma is None else gamma.astype(np.float64)) / np.sqrt(
        var.astype(np.float64) + bn.eps)
    shift = np.zeros(c) if beta is None else beta.astype(np.float64)
    folded: Any = _clone(layer)
    w = folded.params["weight"]
    b = (folded.params["bias"].astype(np.float64) if "bias" in folded.params
         else np.zeros(c))
    new_w = w.astype(np.float64) * scale.reshape((c,) + (1,) * (w.ndim - 1))
    new_b = (b - mean.astype(np.float64)) * scale + shift
    w[...] = new_w
    if "bias" not in folded.params:
        folded._add_param("bias", np.zeros(c, w.dtype))
        folded.use_bias = True
    folded.params["bias"][...] = new_b
    return folded


def _fold(model: Sequential) -> Sequential:
    layers: list[Module] = []
    children = list(model.layers)
    i = 0
    while i < len(children):
        layer = children[i]
        nxt = children[i + 1] if i + 1 < len(children) else None
        if isinstance(layer, Sequential):
            layers.append(_fold(layer))
        elif nxt is not None and _folds(layer, nxt):
            layers.append(_fold_pair(layer, nxt))
            if getattr(nxt, "activation", None) == "relu":
                layers.append(ReLU())
            i += 1
        else:
            layers.append(_clone(layer))
        i += 1
    out = Sequential(*layers)
    out.training = model.training
    return out


def fold_batch_norm(model: Module) -> Sequential:
    r"""A new model with every BatchNorm that directly follows a Dense, Conv1d or
    Conv2d folded into that layer's weight and bias.

    Parameters
    ----------
    model : Sequential or Module
        A model in eval mode (``model.eval()``).  Nested ``Sequential`` blocks
        are folded inside; a batch norm is folded only into the layer just
        before it in the same ``Sequential``, and only when it normalizes that
        layer's output channels (``axis=1``, or ``-1`` after a Dense).  Other
        batch norms stay as they are.

    Returns
    -------
    Sequential
        New layers (deep copies): the original model is untouched.  A folded
        layer gains a bias if it had none (``use_bias=False`` before a batch
        norm); a fused ``activation="relu"`` stays as a ``ReLU`` layer.  The
        output equals the original's eval output to rounding: within 1e-10
        in float64 (the tests' bound), and to float32 rounding in float32.

    Raises
    ------
    ValueError
        If any layer of the model is in training mode (training batch norm
        uses the batch's statistics, which no fixed weight can reproduce), or
        a batch norm to fold has no running statistics.

    Notes
    -----
    With ``rstd = 1 / sqrt(running_var + eps)`` and ``s = weight * rstd``
    per output channel, ``W' = W * s`` along W's output axis (its rows) and
    ``b' = (b - running_mean) * s + bias``, computed in float64 and stored in
    the layer's dtype.  See :mod:`fastbn.nn.inference` for the wrong-axis bug
    that other folders have had.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn import BatchNorm, Dense, Sequential, fold_batch_norm
    >>> rng = np.random.default_rng(0)
    >>> model = Sequential(Dense(4, 8, use_bias=False, rng=0, dtype=np.float64),
    ...                    BatchNorm(8, activation="relu", dtype=np.float64),
    ...                    Dense(8, 3, rng=1, dtype=np.float64))
    >>> for _ in range(5):               # a few steps give the BN running statistics
    ...     _ = model(rng.normal(2.0, 3.0, (16, 4)))
    >>> _ = model.eval()
    >>> folded = fold_batch_norm(model)
    >>> [type(layer).__name__ for layer in folded]
    ['Dense', 'ReLU', 'Dense']
    >>> x = rng.normal(2.0, 3.0, (5, 4))
    >>> bool(np.abs(folded(x) - model(x)).max() < 1e-10)
    True
    """
    if not isinstance(model, Module):
        raise TypeError(f"fold_batch_norm: model must be a fastbn.nn Module; got "
                        f"{type(model).__name__}")
    training = [m for m in model.modules() if m.training]
    if training:
        raise ValueError(f"fold_batch_norm: the model must be in eval mode (call "
                         f"model.eval() first); {len(training)} of its layers are in "
                         f"training mode, e.g. {training[0]!r}")
    seq = model if isinstance(model, Sequential) else Sequential(model)
    return _fold(seq)


class FrozenBatchNorm(Module):
    r"""Batch norm with fixed statistics and affine: torchvision's ``FrozenBatchNorm2d``.

    For fine-tuning a pretrained network on batches too small for batch
    statistics.  ``weight``, ``bias``, ``running_mean`` and ``running_var`` are
    all buffers (nothing trains: ``num_params() == (0, 4 * C)``), the output
    is the eval batch norm in every mode,

    .. code-block:: text

        y = (x - running_mean) * (weight * rstd) + bias,  rstd = 1 / sqrt(running_var + eps)

    and ``backward`` gives ``dx = dy * weight * rstd`` with no parameter
    gradients (``grads`` is empty).

    Parameters
    ----------
    num_features : int
        ``C``.
    eps : float > 0
        torchvision's default, ``1e-5``.  torchvision's layer once used
        ``eps=0`` and so differed from ``BatchNorm2d.eval()``
        (pytorch/vision#2169); pass the ``eps`` the statistics were trained
        with (:meth:`from_batch_norm` copies it).
    axis : int
        The channel axis, as for :class:`BatchNorm`.
    dtype : float32 or float64
        The buffers' dtype.

    Notes
    -----
    The state dict has torchvision's four keys, so
    ``{k: v.numpy() for k, v in frozen.state_dict().items()}`` of a
    ``FrozenBatchNorm2d`` loads as is.  A ``BatchNorm2d`` state dict loads too:
    its ``num_batches_tracked`` is dropped, as torchvision drops it.
    Weight 1, bias 0, mean 0 and variance 1 at construction, as torchvision.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn import BatchNorm, FrozenBatchNorm
    >>> bn = BatchNorm(3)
    >>> _ = bn(np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32))
    >>> frozen = FrozenBatchNorm.from_batch_norm(bn)
    >>> sorted(frozen.state_dict()), frozen.num_params()
    (['bias', 'running_mean', 'running_var', 'weight'], (0, 12))
    >>> x = np.ones((2, 3), np.float32)
    >>> bool(np.array_equal(frozen.train()(x), bn.eval()(x)))
    True
    """

    def __init__(self, num_features: int, *, eps: float = 1e-5, axis: int = 1,
                 dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        self.num_features = _count(num_features, "num_features")
        self.eps = _checks.positive_eps(eps)
        self.axis = _integer(axis, "axis")
        self.dtype = np.dtype(dtype)
        c = self.num_features
        self.buffers["weight"] = np.ones(c, self.dtype)
        self.buffers["bias"] = np.zeros(c, self.dtype)
        self.buffers["running_mean"] = np.zeros(c, self.dtype)
        self.buffers["running_var"] = np.ones(c, self.dtype)
        self._saved: tuple[Any, ...] | None = None

    @classmethod
    def from_batch_norm(cls, bn: BatchNorm) -> FrozenBatchNorm:
        """A frozen copy of ``bn``'s running statistics, affine (1 and 0 when not
        affine), ``eps``, ``axis`` and dtype.

        Raises
        ------
        ValueError
            If ``bn`` has no running statistics (``track_running_stats=False``).
        TypeError
            If ``bn`` is not a :class:`BatchNorm`.
        """
        if isinstance(bn, FrozenBatchNorm):
            frozen = cls(bn.num_features, eps=bn.eps, axis=bn.axis, dtype=bn.dtype)
            frozen.load_state_dict(bn.state_dict())
            return frozen
        if not isinstance(bn, BatchNorm):
            raise TypeError(f"FrozenBatchNorm.from_batch_norm: bn must be a BatchNorm; got "
                            f"{type(bn).__name__}")
        if not bn.track_running_stats:
            raise ValueError(f"FrozenBatchNorm.from_batch_norm: {bn!r} has no running "
                             "statistics (track_running_stats=False)")
        if bn.activation is not None:
            raise ValueError(f"FrozenBatchNorm.from_batch_norm: {bn!r} fuses "
                             f"activation={bn.activation!r}; freeze_batch_norm keeps it as "
                             "a separate layer")
        frozen = cls(bn.num_features, eps=bn.eps, axis=bn.axis, dtype=bn.dtype)
        for name in ("running_mean", "running_var"):
            frozen.buffers[name][...] = bn.buffers[name]
        for name in ("weight", "bias"):
            if name in bn.params:
                frozen.buffers[name][...] = bn.params[name]
        return frozen

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, axis={self.axis}"

    def reset_running_stats(self) -> None:
        """Running mean 0 and variance 1, in place."""
        self.buffers["running_mean"][...] = 0
        self.buffers["running_var"][...] = 1

    def reset_parameters(self) -> None:
        """:meth:`reset_running_stats`, then weight 1 and bias 0, in place."""
        self.reset_running_stats()
        self.buffers["weight"][...] = 1
        self.buffers["bias"][...] = 0

    def load_state_dict(self, state) -> None:
        """As :meth:`Module.load_state_dict`; a ``num_batches_tracked`` entry (from a
        ``BatchNorm`` state dict) is ignored, as torchvision ignores it."""
        state = {k: v for k, v in state.items() if k != "num_batches_tracked"}
        super().load_state_dict(state)

    def forward(self, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """The eval batch norm, in training mode too; ``mask`` is checked and ignored
        (the statistics do not come from the batch)."""
        x = _channels_of(self, x, self.num_features, self.axis)
        b = self.buffers
        y, mean, rstd = F.batch_norm(x, b["weight"], b["bias"], b["running_mean"],
                                     b["running_var"], training=False, eps=self.eps,
                                     axis=self.axis, mask=mask)
        self._saved = (x, mean, rstd)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """``dx = dy * weight * rstd``; no parameter gradients."""
        if self._saved is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        x, mean, rstd = self._saved
        dx, _, _ = F.batch_norm_backward(dy, x, mean, rstd, self.buffers["weight"],
                                         training=False, axis=self.axis)
        return dx


def _freeze(module: Module) -> Module:
    if isinstance(module, Sequential):
        out = Sequential(*(layer for child in module.layers for layer in _freeze_one(child)))
        out.training = module.training
        return out
    return module


def _freeze_one(module: Module) -> list[Module]:
    if isinstance(module, Sequential):
        return [_freeze(module)]
    if isinstance(module, BatchNorm) and not isinstance(module, FrozenBatchNorm):
        if not module.track_running_stats:
            raise ValueError(f"freeze_batch_norm: {module!r} has no running statistics "
                             "(track_running_stats=False) to freeze")
        activation = module.activation
        frozen = FrozenBatchNorm(module.num_features, eps=module.eps, axis=module.axis,
                                 dtype=module.dtype)
        frozen.buffers["running_mean"][...] = module.buffers["running_mean"]
        frozen.buffers["running_var"][...] = module.buffers["running_var"]
        for name in ("weight", "bias"):
            if name in module.params:
                frozen.buffers[name][...] = module.params[name]
        frozen.training = module.training
        return [frozen, ReLU()] if activation == "relu" else [frozen]
    return [_clone(module)]


def freeze_batch_norm(model: Module) -> Module:
    r"""A new model with every :class:`BatchNorm` replaced by a :class:`FrozenBatchNorm`.

    The statistics, affine, ``eps`` and axis are copied; a fused
    ``activation="relu"`` becomes a ``ReLU`` layer after the frozen one.  The
    other layers are deep copies, so the original model is untouched.  An
    optimizer built on the new model trains everything but the frozen batch
    norms, in either mode.

    Parameters
    ----------
    model : Sequential or Module
        A ``BatchNorm`` alone gives a ``FrozenBatchNorm`` (a ``Sequential``
        of it and a ``ReLU`` when it fuses one).

    Raises
    ------
    ValueError
        If a batch norm has no running statistics.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn import BatchNorm, Dense, Sequential, freeze_batch_norm
    >>> model = Sequential(Dense(4, 8, rng=0), BatchNorm(8, activation="relu"),
    ...                    Dense(8, 2, rng=1))
    >>> frozen = freeze_batch_norm(model)
    >>> [type(layer).__name__ for layer in frozen]
    ['Dense', 'FrozenBatchNorm', 'ReLU', 'Dense']
    >>> frozen.num_params()
    (58, 32)
    """
    if not isinstance(model, Module):
        raise TypeError(f"freeze_batch_norm: model must be a fastbn.nn Module; got "
                        f"{type(model).__name__}")
    if isinstance(model, Sequential):
        return _freeze(model)
    layers = _freeze_one(model)
    return layers[0] if len(layers) == 1 else Sequential(*layers)
