"""Normalization layers: thin, stateful shells over :mod:`fastbn.functional`.

Each layer owns its parameters (``weight``, ``bias``), its buffers
(``running_mean``, ``running_var``, ``num_batches_tracked``) and what its
backward pass needs from the last forward (the input and the saved ``mean``,
``rstd``).  The math lives in the functional API; the layers never reach into
the kernels.  Semantics and state-dict keys follow ``torch.nn.BatchNorm*d``,
``LayerNorm``, ``GroupNorm``, ``RMSNorm`` and ``InstanceNorm*d``, so a torch
module's ``state_dict()`` converted with ``.numpy()`` loads as is.

Beyond the big frameworks, :class:`BatchNorm` has ghost batch norm
(``virtual_batch_size``), batch renormalization (``renorm``), the fused
Dense -> BN -> ReLU epilogue (``activation="relu"``) and Keras interop
(:meth:`BatchNorm.from_keras`, :meth:`BatchNorm.to_keras`);
:func:`recompute_statistics` replaces the running estimates by exact
population statistics ("precise BN").
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .. import _checks
from .. import functional as F  # looked up at call time: experiments may swap it
from ._module import Module

if TYPE_CHECKING:
    from mpi4py import MPI

__all__ = [
    "BatchNorm",
    "LayerNorm",
    "RMSNorm",
    "GroupNorm",
    "InstanceNorm",
    "SyncBatchNorm",
    "from_keras",
    "to_keras",
    "recompute_statistics",
]


def _count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive; got {value}")
    return int(value)


def _integer(value, name: str) -> int:
    """``value`` as an int: any integer type but bool (else TypeError)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    return int(value)


def _shape(normalized_shape) -> tuple[int, ...]:
    if not isinstance(normalized_shape, bool) and isinstance(normalized_shape, numbers.Integral):
        normalized_shape = (normalized_shape,)
    try:
        shape = tuple(_count(d, "normalized_shape") for d in normalized_shape)
    except TypeError:
        raise TypeError("normalized_shape must be an int or a tuple of ints; "
                        f"got {normalized_shape!r}") from None
    if not shape:
        raise ValueError("normalized_shape must name at least one dimension; got ()")
    return shape


def _channels_of(layer: Module, x, channels: int, axis: int) -> np.ndarray:
    """``x`` as a float array whose channel axis holds ``channels`` (else ValueError)."""
    x = _checks.float_array(x, "x")
    ax = _checks.channel_axis(axis, x.ndim, x.shape)
    if x.shape[ax] != channels:
        raise ValueError(f"{layer!r} expects {channels} channels along axis {axis}; "
                         f"got x of shape {x.shape}")
    return x


def _store(grads: dict, name: str, value) -> None:
    if name in grads:
        grads[name][...] = value


class BatchNorm(Module):
    r"""Batch normalization layer (``torch.nn.BatchNorm1d/2d/3d`` in one class).

    Parameters
    ----------
    num_features : int
        ``C``, the size of the channel axis.
    momentum : float in [0, 1] or None
        ``running = (1 - momentum) * running + momentum * batch`` (PyTorch's
        rule, unbiased batch variance).  ``None``: the cumulative average,
        ``momentum = 1 / num_batches_tracked``.  Keras' ``momentum=k`` is
        ``1 - k`` here.
    eps : float > 0
        Added to the variance before the square root.
    axis : int
        The channel axis: 1 for ``(N, C, *spatial)``, -1 for channels-last.
    affine : bool
        Learn ``weight`` (gamma) and ``bias`` (beta).
    track_running_stats : bool
        Keep ``running_mean``/``running_var``/``num_batches_tracked`` and
        normalize with them in eval mode.  False: batch statistics in both
        modes, and no running buffers.
    activation : {None, "relu"}
        Fused epilogue: ``y = relu(bn(x))`` in batch norm's output pass (the
        tutorial's Dense -> BN -> ReLU), and a backward that masks by the saved
        output.
    virtual_batch_size : int, optional
        Ghost batch norm: in training, the batch (axis 0) is split into
        ``N // virtual_batch_size`` sub-batches of nearly equal size (exactly
        ``virtual_batch_size`` when it divides N) and each is normalized with
        its own statistics; the running statistics are updated once per
        sub-batch, in order (``num_batches_tracked`` counts sub-batches).
        Inference is unchanged.  Keras instead averages the sub-batches'
        statistics into one update; with ``momentum`` small the two agree to
        first order.
    renorm : bool
        Batch renormalization (Ioffe, 2017): in training,
        ``y = weight * (xhat_B * r + d) + bias`` with
        ``r = clip(sigma_B / sigma, 1/rmax, rmax)`` and
        ``d = clip((mu_B - mu) / sigma, -dmax, dmax)``, where ``mu``,
        ``sigma = sqrt(running_var + eps)`` are the running statistics before
        this step.  ``r`` and ``d`` are constants in the backward pass, as the
        paper specifies.  Needs ``track_running_stats``.
    rmax, dmax : float
        The clipping bounds (``rmax >= 1``, ``dmax >= 0``).  ``rmax=1,
        dmax=0`` is plain batch norm.  They are plain attributes: the paper's
        warm-up (start at 1 and 0, open up over the first steps) is a schedule
        that sets ``layer.rmax``/``layer.dmax`` before each step.
    dtype : float32 or float64
        The dtype of the parameters and buffers (torch's default is float32).

    Notes
    -----
    Training, per channel over the ``m`` values of the batch:

    .. code-block:: text

        mean = sum(x) / m,  var = sum((x - mean)**2) / m     # biased, normalizes
        y = (x - mean) / sqrt(var + eps) * weight + bias
        running_var <- (1 - momentum) * running_var + momentum * var * m / (m - 1)

    Eval (with running statistics): ``y = (x - running_mean) /
    sqrt(running_var + eps) * weight + bias``, and ``backward`` gives the
    frozen-statistics gradient.  ``num_params()`` counts weight and bias as
    trainable and the running mean and variance as non-trainable, as Keras'
    summary does: ``BatchNorm(128).num_params() == (256, 256)``.

    Bad input (wrong channel count or ndim, one value per channel in training)
    raises before anything changes: running statistics and
    ``num_batches_tracked`` stay bit-for-bit as they were.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn import BatchNorm
    >>> x = np.random.default_rng(0).normal(3, 2, (32, 64, 8, 8)).astype(np.float32)
    >>> bn = BatchNorm(64)
    >>> y = bn(x)                  # training: batch statistics, running stats updated
    >>> dx = bn.backward(np.ones_like(y))   # bn.grads["weight"], bn.grads["bias"] filled
    >>> y_eval = bn.eval()(x)      # inference with the running statistics
    >>> int(bn.state_dict()["num_batches_tracked"]), bn.num_params()
    (1, (128, 128))
    """

    def __init__(self, num_features: int, *, momentum: float | None = 0.1, eps: float = 1e-5,
                 axis: int = 1, affine: bool = True, track_running_stats: bool = True,
                 activation: str | None = None, virtual_batch_size: int | None = None,
                 renorm: bool = False, rmax: float = 3.0, dmax: float = 5.0,
                 dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        self.num_features = _count(num_features, "num_features")
        self.momentum = None if momentum is None else _checks.unit_momentum(momentum)
        self.eps = _checks.positive_eps(eps)
        self.axis = _integer(axis, "axis")
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        _checks.activation(activation)
        self.activation = activation
        self.virtual_batch_size = (None if virtual_batch_size is None
                                   else _count(virtual_batch_size, "virtual_batch_size"))
        self.renorm = bool(renorm)
        if self.renorm and not self.track_running_stats:
            raise ValueError("renorm=True needs track_running_stats=True (r and d are "
                             "measured against the running statistics)")
        self.rmax = float(rmax)
        self.dmax = float(dmax)
        if not self.rmax >= 1.0 or not self.dmax >= 0.0:
            raise ValueError(f"renorm needs rmax >= 1 and dmax >= 0; got rmax={rmax!r}, "
                             f"dmax={dmax!r}")
        self.dtype = np.dtype(dtype)
        c = self.num_features
        if self.affine:
            self._add_param("weight", np.ones(c, self.dtype))
            self._add_param("bias", np.zeros(c, self.dtype))
        if self.track_running_stats:
            self.buffers["running_mean"] = np.zeros(c, self.dtype)
            self.buffers["running_var"] = np.ones(c, self.dtype)
            self.buffers["num_batches_tracked"] = np.zeros((), np.int64)
        self._saved: tuple[Any, ...] | None = None

    def extra_repr(self) -> str:
        s = f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, axis={self.axis}"
        if not self.affine:
            s += ", affine=False"
        if not self.track_running_stats:
            s += ", track_running_stats=False"
        if self.activation:
            s += f", activation={self.activation!r}"
        if self.virtual_batch_size:
            s += f", virtual_batch_size={self.virtual_batch_size}"
        if self.renorm:
            s += f", renorm=True, rmax={self.rmax}, dmax={self.dmax}"
        return s

    # -- running statistics and parameters ----------------------------------
    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1 and ``num_batches_tracked`` 0, in place
        (``torch.nn.BatchNorm*d.reset_running_stats``); nothing without running
        statistics.

        Examples
        --------
        >>> import numpy as np
        >>> from fastbn.nn import BatchNorm
        >>> bn = BatchNorm(3)
        >>> _ = bn(np.arange(12, dtype=np.float32).reshape(4, 3))
        >>> bn.reset_running_stats()
        >>> bn.buffers["running_mean"].tolist(), int(bn.buffers["num_batches_tracked"])
        ([0.0, 0.0, 0.0], 0)
        """
        if self.track_running_stats:
            self.buffers["running_mean"][...] = 0
            self.buffers["running_var"][...] = 1
            self.buffers["num_batches_tracked"][...] = 0

    def reset_parameters(self) -> None:
        """:meth:`reset_running_stats`, then weight 1 and bias 0, in place (torch's
        ``reset_parameters``)."""
        self.reset_running_stats()
        _reset_affine(self)

    # -- forward -----------------------------------------------------------
    def forward(self, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Normalize ``x``; in training with batch statistics, in eval with the running ones.

        Parameters
        ----------
        x : ndarray
            ``(N, C, *spatial)`` for ``axis=1``, channels-last for ``axis=-1``.
        mask : bool ndarray, optional
            Masked batch norm for padded sequences (Keras 3's ``mask=``): x's
            shape without the channel axis, True where a position counts.  In
            training the statistics and the running update use the True
            positions only, ``y`` is computed everywhere, and :meth:`backward`
            is the exact gradient of that.  Eval ignores it (after checking
            it).  See :func:`fastbn.batch_norm`.

        Examples
        --------
        >>> import numpy as np
        >>> from fastbn.nn import BatchNorm
        >>> x = np.random.default_rng(0).normal(size=(4, 3, 10)).astype(np.float32)
        >>> mask = np.ones((4, 10), bool)
        >>> mask[:, 7:] = False                 # the last 3 steps are padding
        >>> bn = BatchNorm(3)
        >>> y = bn(x, mask=mask)
        >>> dx = bn.backward(np.ones_like(y))
        >>> y.shape, dx.shape
        ((4, 3, 10), (4, 3, 10))
        """
        x = _channels_of(self, x, self.num_features, self.axis)
        weight = self.params.get("weight")
        bias = self.params.get("bias")
        if mask is not None:
            _checks.mask(mask, x.shape, self.axis % x.ndim)  # before anything changes
            mask = np.asarray(mask) if not _checks.is_cuda_array(mask) else mask
            if self.renorm and self.training:
                raise ValueError("mask= is not supported with renorm=True (batch "
                                 "renormalization's r and d come from unmasked moments)")
            if self.axis % x.ndim == 0 and self.virtual_batch_size and self.training:
                raise ValueError("mask= with virtual_batch_size needs the batch axis 0 apart "
                                 "from the channel axis")
        if not self.training and self.track_running_stats:
            y, mean, rstd = F.batch_norm(
                x, weight, bias, self.buffers["running_mean"], self.buffers["running_var"],
                training=False, eps=self.eps, axis=self.axis, activation=self.activation,
                **_masked(mask))
            self._saved = (x, y, False, [(slice(None), mean, rstd, weight, None, None)])
            return y

        bounds = self._sub_batches(x)
        update = self.training and self.track_running_stats
        ax = self.axis % x.ndim
        per_channel = math.prod(x.shape) // max(x.shape[ax], 1)
        smallest = min(b - a for a, b in bounds) * per_channel // max(x.shape[0], 1)
        if smallest <= 1 and mask is None:
            raise ValueError(
                "expected more than 1 value per channel when training; "
                f"got x of shape {x.shape} with {x.shape[ax]} channels along axis {self.axis}"
                + (f" split into sub-batches of {self.virtual_batch_size}"
                   if len(bounds) > 1 else ""))
        # fastbn.batch_norm leaves the running statistics as they were when it
        # raises; only a later sub-batch's error needs the earlier ones undone.
        before = ({k: v.copy() for k, v in self.buffers.items()}
                  if update and len(bounds) > 1 else {})
        # One batch: the kernel allocates y (no out=, so no overlap checks).
        y = np.empty_like(x) if len(bounds) > 1 else None
        chunks = []
        try:
            for a, b in bounds:
                rows = slice(a, b)
                sub = None if mask is None else mask[rows]
                y_c, *saved = self._train_chunk(x[rows], None if y is None else y[rows],
                                                update, sub)
                if y is None:
                    y = y_c
                chunks.append((rows, *saved, sub))
        except BaseException:
            for k, v in before.items():
                self.buffers[k][...] = v
            raise
        self._saved = (x, y, True, chunks)
        return y

    def _sub_batches(self, x) -> list[tuple[int, int]]:
        n = x.shape[0]
        k = self.virtual_batch_size
        if not self.training or k is None or n <= k:
            return [(0, n)]
        edges = np.linspace(0, n, n // k + 1).round().astype(int)
        return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))

    def _momentum(self) -> float:
        if self.momentum is not None:
            return self.momentum
        return 1.0 / float(self.buffers["num_batches_tracked"] + 1)

    def _train_chunk(self, x, y, update: bool, mask=None):
        """Normalize one (sub-)batch with its own statistics into ``y`` (None: a new
        array); returns the output and what the backward pass needs: ``(y, mean,
        rstd, weight_used, (r, d))``."""
        weight = self.params.get("weight")
        bias = self.params.get("bias")
        rm = self.buffers.get("running_mean") if update else None
        rv = self.buffers.get("running_var") if update else None
        if not (self.renorm and update):
            y, mean, rstd = F.batch_norm(x, weight, bias, rm, rv, training=True,
                                         momentum=self._momentum(), eps=self.eps,
                                         axis=self.axis, out=y, activation=self.activation,
                                         **_masked(mask))
            if update:
                self.buffers["num_batches_tracked"] += 1
            return y, mean, rstd, weight, None

        # Batch renormalization: r and d from the batch and running statistics
        # (float64), then one elementwise pass with the batch statistics and the
        # effective affine (weight * r, weight * d + bias).
        assert rm is not None and rv is not None  # renorm needs track_running_stats
        count, mu_b, m2 = F.moments(x, axis=self.axis)
        var_b = m2 / count
        sigma_b = np.sqrt(var_b + self.eps)
        sigma = np.sqrt(rv.astype(np.float64) + self.eps)
        r = np.clip(sigma_b / sigma, 1.0 / self.rmax, self.rmax)
        d = np.clip((mu_b - rm) / sigma, -self.dmax, self.dmax)
        w = np.ones(self.num_features) if weight is None else weight.astype(np.float64)
        b = np.zeros(self.num_features) if bias is None else bias.astype(np.float64)
        w_eff = w * r
        y, _, rstd = F.batch_norm(x, w_eff, w * d + b, mu_b, var_b, training=False,
                                  eps=self.eps, axis=self.axis, out=y,
                                  activation=self.activation)
        F._update_running(rm, rv, mu_b, m2, count, self._momentum())
        self.buffers["num_batches_tracked"] += 1
        sdtype = rstd.dtype
        return y, mu_b.astype(sdtype), rstd, w_eff, (r, d)

    # -- backward ----------------------------------------------------------
    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self._saved is None:
            raise RuntimeError(f"{self!r}: backward() called before forward()")
        x, y, batch_stats, chunks = self._saved
        dy = _checks.same_as_x(dy, x, "dy")
        if len(chunks) == 1 and chunks[0][4] is None:  # one batch, no renorm: dx as returned
            _, mean, rstd, weight, _, mask = chunks[0]
            dx, dw, db = F.batch_norm_backward(
                dy, x, mean, rstd, weight, training=batch_stats, axis=self.axis,
                activation=self.activation, y=y if self.activation else None,
                **_masked(mask if batch_stats else None))
            _store(self.grads, "weight", dw)
            _store(self.grads, "bias", db)
            return dx
        dx = np.empty_like(x)
        dweight = np.zeros(self.num_features)
        dbias = np.zeros(self.num_features)
        for rows, mean, rstd, weight, renorm, mask in chunks:
            dx[rows], dw, db = F.batch_norm_backward(
                dy[rows], x[rows], mean, rstd, weight, training=batch_stats, axis=self.axis,
                activation=self.activation, y=y[rows] if self.activation else None,
                **_masked(mask if batch_stats else None))
            if renorm is not None:  # y = weight * (r * xhat + d) + bias, r and d constant
                r, d = renorm
                dw = r * dw + d * db
            dweight += dw
            dbias += db
        _store(self.grads, "weight", dweight)
        _store(self.grads, "bias", dbias)
        return dx

    # -- Keras interop -----------------------------------------------------
    @classmethod
    def from_keras(cls, gamma: ArrayLike | None = None, beta: ArrayLike | None = None,
                   moving_mean: ArrayLike | None = None,
                   moving_variance: ArrayLike | None = None, *, momentum: float = 0.99,
                   epsilon: float = 1e-3, axis: int = -1,
                   dtype: DTypeLike = np.float32) -> BatchNorm:
        """A layer from Keras ``BatchNormalization`` weights and settings.

        ``layer.get_weights()`` of a Keras layer is ``[gamma, beta,
        moving_mean, moving_variance]`` (gamma absent with ``scale=False``,
        beta with ``center=False``: pass None).  Keras' ``momentum`` k is the
        weight of the old value, ours the weight of the new one: ours is
        ``1 - k`` (0.99 -> 0.01).  Keras' defaults are ``epsilon=1e-3`` and
        ``axis=-1`` (channels-last).

        Inference is exact: both compute ``gamma * (x - moving_mean) /
        sqrt(moving_variance + epsilon) + beta``.  Training differs in one
        convention: Keras updates ``moving_variance`` with the *biased* batch
        variance, fastbn (like PyTorch) with the unbiased one (a factor
        ``m / (m - 1)`` on the batch term: 1.03 at m = 32, 1.0003 at m = 3136).
        """
        if moving_mean is None or moving_variance is None:
            raise ValueError("from_keras needs moving_mean and moving_variance")
        moving_mean = np.asarray(moving_mean)
        c = moving_mean.shape[0] if moving_mean.ndim == 1 else -1
        if c <= 0:
            raise ValueError(f"moving_mean must be a non-empty vector; got shape "
                             f"{moving_mean.shape}")
        affine = gamma is not None or beta is not None
        layer = cls(c, momentum=1.0 - float(momentum), eps=epsilon, axis=axis, affine=affine,
                    dtype=dtype)
        state = {"running_mean": moving_mean, "running_var": moving_variance,
                 "num_batches_tracked": np.zeros((), np.int64)}
        if affine:
            state["weight"] = np.ones(c) if gamma is None else gamma
            state["bias"] = np.zeros(c) if beta is None else beta
        layer.load_state_dict(state)
        return layer

    def to_keras(self) -> dict:
        """Keras ``BatchNormalization`` weights and settings: a dict with
        ``gamma``, ``beta``, ``moving_mean``, ``moving_variance`` (the order of
        ``get_weights()``), ``momentum`` (``1 - ours``), ``epsilon`` and ``axis``.
        """
        if not self.track_running_stats:
            raise ValueError("to_keras needs running statistics (track_running_stats=True)")
        if self.momentum is None:
            raise ValueError("momentum=None (cumulative average) has no Keras equivalent")
        c = self.num_features
        return {
            "gamma": self.params.get("weight", np.ones(c, self.dtype)).copy(),
            "beta": self.params.get("bias", np.zeros(c, self.dtype)).copy(),
            "moving_mean": self.buffers["running_mean"].copy(),
            "moving_variance": self.buffers["running_var"].copy(),
            "momentum": 1.0 - self.momentum,
            "epsilon": self.eps,
            "axis": self.axis,
        }


def from_keras(gamma: ArrayLike | None = None, beta: ArrayLike | None = None,
               moving_mean: ArrayLike | None = None, moving_variance: ArrayLike | None = None,
               *, momentum: float = 0.99, epsilon: float = 1e-3, axis: int = -1,
               dtype: DTypeLike = np.float32) -> BatchNorm:
    """:meth:`BatchNorm.from_keras` as a function."""
    return BatchNorm.from_keras(gamma, beta, moving_mean, moving_variance, momentum=momentum,
                                epsilon=epsilon, axis=axis, dtype=dtype)


def to_keras(layer: BatchNorm) -> dict:
    """:meth:`BatchNorm.to_keras` as a function."""
    return layer.to_keras()


def recompute_statistics(model: Module, batches: Iterable) -> int:
    """Precise BN: replace every BatchNorm's running statistics by the exact
    population statistics of its input over ``batches``.

    The running averages are an estimate, weighted towards the last batches
    and taken while the weights moved.  This pass runs the frozen model over
    ``batches`` (arrays, or tuples whose first item is the input), with every
    BatchNorm normalizing by batch statistics as in training and every other
    layer in eval mode (dropout off), and streams each BatchNorm's input
    moments through :func:`fastbn.merge_moments` (Chan's exact merge, weighted
    by count; never holding more than one batch).  Then ``running_mean`` is
    the population mean and ``running_var`` the unbiased population variance
    ``m2 / (count - 1)``.  Weights, gradients, ``num_batches_tracked`` and the
    model's mode are left as they were.  Ghost batch norm layers normalize per
    sub-batch during the pass, as in training; their statistics are still
    those of the whole population.

    Returns the number of batches seen.  If anything raises, every layer is
    left exactly as it was.
    """
    layers = [m for m in model.modules()
              if isinstance(m, BatchNorm) and m.track_running_stats]
    modes = [(m, m.training) for m in model.modules()]
    saved = [(m, m.state_dict()) for m in layers]
    sums = {id(m): (0, np.zeros(m.num_features), np.zeros(m.num_features)) for m in layers}
    hooks = []

    def _recording(layer):
        forward = layer.forward

        def record(x):
            y = forward(x)  # validates x
            sums[id(layer)] = F.merge_moments(sums[id(layer)], F.moments(x, axis=layer.axis))
            return y
        return record

    try:
        model.eval()
        for layer in layers:
            layer.training = True
            # an instance attribute shadowing the method; ``del layer.forward`` restores it
            layer.forward = _recording(layer)  # type: ignore[method-assign]
            hooks.append(layer)
        seen = 0
        for batch in batches:
            x = batch[0] if isinstance(batch, tuple) else batch
            model.forward(x)
            seen += 1
        for layer, state in saved:  # the pass's running updates are discarded
            layer.load_state_dict(state)
        for layer in layers:
            count, mean, m2 = sums[id(layer)]
            if count < 2:
                raise ValueError(f"recompute_statistics needs at least 2 values per channel "
                                 f"for {layer!r}; got {count}")
        for layer in layers:
            count, mean, m2 = sums[id(layer)]
            layer.buffers["running_mean"][...] = mean
            layer.buffers["running_var"][...] = np.asarray(m2) / (count - 1)
    except BaseException:
        for layer, state in saved:
            layer.load_state_dict(state)
        raise
    finally:
        for layer in hooks:
            del layer.forward
        for m, mode in modes:
            m.training = mode
    return seen


class _TrailingNorm(Module):
    """Shared state of the layers that normalize over the trailing dims."""

    def __init__(self, normalized_shape, eps, elementwise_affine, dtype, names) -> None:
        super().__init__()
        self.normalized_shape = _shape(normalized_shape)
        self.dtype = np.dtype(dtype)
        self.eps = _checks.positive_eps(eps)
        self.elementwise_affine = bool(elementwise_affine)
        if self.elementwise_affine:  # weight starts at 1, bias at 0
            for name, fill in zip(names, (1.0, 0.0), strict=False):
                self._add_param(name, np.full(self.normalized_shape, fill, self.dtype))
        self._saved: tuple[Any, ...] | None = None

    def reset_parameters(self) -> None:
        """Weight 1 and bias 0, in place (torch's ``reset_parameters``)."""
        _reset_affine(self)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}"
                + ("" if self.elementwise_affine else ", elementwise_affine=False"))


class LayerNorm(_TrailingNorm):
    r"""Layer normalization over the trailing ``normalized_shape`` dims
    (``torch.nn.LayerNorm``).

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` with ``mean``, ``var``
    (biased) over the trailing dims of each sample; ``weight``, ``bias`` have
    ``normalized_shape`` (elementwise affine).  The same in training and eval:
    no running statistics.  ``LayerNorm(768).num_params() == (1536, 0)``.

    ``bias=False`` (PyTorch 2.1's option) drops the bias: ``y = (x - mean) /
    sqrt(var + eps) * weight``, ``params`` and the state dict hold ``weight``
    only, and ``LayerNorm(768, bias=False).num_params() == (768, 0)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn import LayerNorm
    >>> ln = LayerNorm(8, bias=False)
    >>> sorted(ln.state_dict()), ln.num_params()
    (['weight'], (8, 0))
    """

    def __init__(self, normalized_shape: int | Sequence[int], *, eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True,
                 dtype: DTypeLike = np.float32) -> None:
        self.bias = bool(bias)
        names = ("weight", "bias") if self.bias else ("weight",)
        super().__init__(normalized_shape, eps, elementwise_affine, dtype, names)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.bias else ", bias=False")

    def forward(self, x: np.ndarray) -> np.ndarray:
        y, mean, rstd = F.layer_norm(x, self.normalized_shape, self.params.get("weight"),
                                     self.params.get("bias"), eps=self.eps)
        self._saved = (x, mean, rstd)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x, mean, rstd = _saved(self)
        dx, dw, db = F.layer_norm_backward(dy, x, self.normalized_shape, mean, rstd,
                                           self.params.get("weight"))
        _store(self.grads, "weight", dw)
        _store(self.grads, "bias", db)
        return dx


class RMSNorm(_TrailingNorm):
    r"""RMS normalization over the trailing ``normalized_shape`` dims
    (``torch.nn.RMSNorm``): ``y = x / sqrt(mean(x**2) + eps) * weight``.

    ``eps=None`` is torch's default: the machine epsilon of the layer's dtype
    (``np.finfo(dtype).eps``: 1.19e-07 in float32, 2.2e-16 in float64).
    The default here stays ``eps=1e-6``; pass ``eps=None`` to match
    ``torch.nn.RMSNorm(d)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn import RMSNorm
    >>> RMSNorm(8, eps=None).eps == float(np.finfo(np.float32).eps)
    True
    """

    def __init__(self, normalized_shape: int | Sequence[int], *, eps: float | None = 1e-6,
                 elementwise_affine: bool = True, dtype: DTypeLike = np.float32) -> None:
        if eps is None:
            eps = float(np.finfo(np.dtype(dtype)).eps)
        super().__init__(normalized_shape, eps, elementwise_affine, dtype, ("weight",))

    def forward(self, x: np.ndarray) -> np.ndarray:
        y, rstd = F.rms_norm(x, self.normalized_shape, self.params.get("weight"), eps=self.eps)
        self._saved = (x, rstd)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x, rstd = _saved(self)
        dx, dw = F.rms_norm_backward(dy, x, self.normalized_shape, rstd,
                                     self.params.get("weight"))
        _store(self.grads, "weight", dw)
        return dx


class GroupNorm(Module):
    r"""Group normalization (``torch.nn.GroupNorm``): per sample, over groups of
    ``num_channels / num_groups`` consecutive channels and the spatial dims.

    Independent of the batch size: the tutorial's answer to small batches.
    ``GroupNorm(1, C)`` is layer norm over ``(C, *spatial)`` with a per-channel
    affine; ``GroupNorm(C, C)`` is instance norm.  ``axis=-1`` takes
    channels-last input.
    """

    def __init__(self, num_groups: int, num_channels: int, *, eps: float = 1e-5,
                 affine: bool = True, axis: int = 1, dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        self.num_channels = _count(num_channels, "num_channels")
        self.num_groups = _checks.groups(num_groups, self.num_channels, (None, num_channels))
        self.eps = _checks.positive_eps(eps)
        self.affine = bool(affine)
        self.axis = axis
        self.dtype = np.dtype(dtype)
        if self.affine:
            self._add_param("weight", np.ones(self.num_channels, self.dtype))
            self._add_param("bias", np.zeros(self.num_channels, self.dtype))
        self._saved: tuple[Any, ...] | None = None

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, axis={self.axis}"
                + ("" if self.affine else ", affine=False"))

    def reset_parameters(self) -> None:
        """Weight 1 and bias 0, in place (torch's ``reset_parameters``)."""
        _reset_affine(self)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = _channels_of(self, x, self.num_channels, self.axis)
        y, mean, rstd = F.group_norm(x, self.num_groups, self.params.get("weight"),
                                     self.params.get("bias"), eps=self.eps, axis=self.axis)
        self._saved = (x, mean, rstd)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x, mean, rstd = _saved(self)
        dx, dw, db = F.group_norm_backward(dy, x, self.num_groups, mean, rstd,
                                           self.params.get("weight"), axis=self.axis)
        _store(self.grads, "weight", dw)
        _store(self.grads, "bias", db)
        return dx


class InstanceNorm(GroupNorm):
    r"""Instance normalization: each channel of each sample over its spatial dims
    (group norm with one channel per group).

    Matches ``torch.nn.InstanceNorm1d/2d/3d(num_features, affine=True)``
    (torch's default ``track_running_stats=False``: batch statistics in
    training and eval alike).  Note that the default here is
    ``affine=True``.
    """

    def __init__(self, num_features: int, *, eps: float = 1e-5, affine: bool = True,
                 axis: int = 1, dtype: DTypeLike = np.float32) -> None:
        super().__init__(num_features, num_features, eps=eps, affine=affine, axis=axis,
                         dtype=dtype)

    def extra_repr(self) -> str:
        return (f"{self.num_channels}, eps={self.eps}, axis={self.axis}"
                + ("" if self.affine else ", affine=False"))


class SyncBatchNorm(BatchNorm):
    r"""Batch normalization over the global batch of data-parallel ranks (MPI).

    Each rank calls the layer on its slice of the batch; in training the
    statistics are those of all ranks' samples together
    (:func:`fastbn.distributed.sync_batch_norm`), the running statistics are
    updated identically on every rank, and ``backward`` gives this rank's
    slice of the global dx and its contributions to ``grads`` (all-reduce them
    with the other gradients).  In eval mode it is :class:`BatchNorm` (the
    running statistics are the same everywhere; nothing is communicated).
    Matches ``torch.nn.SyncBatchNorm``.

    Parameters
    ----------
    num_features : int
    comm : mpi4py communicator
        The ranks that share the batch (``MPI.COMM_WORLD`` for all of them).
    momentum, eps, axis, affine, dtype
        As for :class:`BatchNorm`.
    """

    def __init__(self, num_features: int, *, comm: MPI.Comm, momentum: float | None = 0.1,
                 eps: float = 1e-5, axis: int = 1, affine: bool = True,
                 dtype: DTypeLike = np.float32) -> None:
        super().__init__(num_features, momentum=momentum, eps=eps, axis=axis, affine=affine,
                         dtype=dtype)
        if not all(hasattr(comm, name) for name in ("Allgather", "Allreduce", "Get_size")):
            raise TypeError(f"comm must be an mpi4py communicator; got {type(comm).__name__}")
        self.comm = comm

    def extra_repr(self) -> str:
        return super().extra_repr() + f", ranks={self.comm.Get_size()}"

    def forward(self, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """As :meth:`BatchNorm.forward`; in training with a ``mask``, the statistics are
        those of the valid positions of every rank's slice (the global valid count)."""
        if not self.training:
            return super().forward(x, mask)
        from .. import distributed

        # validated inside, on every rank alike: a local error raised here would leave
        # the other ranks waiting in the statistics' collective
        weight = self.params.get("weight")
        extra: dict[str, Any] = {} if mask is None else {"mask": mask}
        y, mean, rstd = distributed.sync_batch_norm(
            x, weight, self.params.get("bias"), self.buffers["running_mean"],
            self.buffers["running_var"], comm=self.comm, momentum=self._momentum(),
            eps=self.eps, axis=self.axis, **extra)
        self.buffers["num_batches_tracked"] += 1
        self._saved = (x, mean, rstd, weight, mask)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if not self.training:
            return super().backward(dy)
        from .. import distributed

        if self._saved is None or len(self._saved) != 5:
            raise RuntimeError(f"{self!r}: backward() called before a training forward()")
        x, mean, rstd, weight, mask = self._saved
        extra: dict[str, Any] = {} if mask is None else {"mask": mask}
        dx, dweight, dbias = distributed.sync_batch_norm_backward(
            dy, x, mean, rstd, weight, comm=self.comm, axis=self.axis, **extra)
        _store(self.grads, "weight", dweight)
        _store(self.grads, "bias", dbias)
        return dx


def _masked(mask) -> dict[str, Any]:
    """``{"mask": mask}``, or nothing without one: a backend swapped in for ``F`` (the
    profile experiment's NumPy formulas) needs no ``mask`` argument."""
    return {} if mask is None else {"mask": mask}


def _reset_affine(layer: Module) -> None:
    """Weight 1 and bias 0 in place, where the layer has them."""
    for name, fill in (("weight", 1.0), ("bias", 0.0)):
        if name in layer.params:
            layer.params[name][...] = fill


def _saved(layer):
    if layer._saved is None:
        raise RuntimeError(f"{layer!r}: backward() called before forward()")
    return layer._saved
