"""The networks of the three experiments after Santurkar et al. (2018).

Santurkar, Tsipras, Ilyas and Madry, "How does batch normalization help
optimization?" (NeurIPS 2018), argue that batch norm does not work by
reducing internal covariate shift but by smoothing the loss landscape.
``noisy-bn`` (their Figure 2), ``ics`` (their gradient-based measure of
internal covariate shift) and ``landscape`` (their Figure 4) test this on
one family of networks, built here so that the three compare like with like.

:func:`network` builds a ReLU MLP in one of three variants (:data:`KINDS`):

* ``"standard"`` -- ``Dense -> ReLU`` per hidden layer (with bias);
* ``"BN"`` -- ``Dense(use_bias=False) -> BatchNorm -> ReLU`` (batch norm not
  fused with the ReLU, so the variants differ by one layer only);
* ``"noisy BN"`` -- ``Dense(use_bias=False) -> BatchNorm -> BatchNoise ->
  ReLU``: batch norm followed by :class:`BatchNoise`, the paper's "noisy"
  batch norm.

The paper perturbs "each activation for each sample in the batch using
i.i.d. noise sampled from a non-zero mean and non-unit variance
distribution", and "this noise distribution changes at each time step".  It
does not give the distributions in the text; :class:`BatchNoise` documents
ours.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from ..nn import BatchNorm, Dense, Module, ReLU, Sequential, SoftmaxCrossEntropy

__all__ = ["KINDS", "HIDDEN", "BatchNoise", "network", "weight_layers", "parameters",
           "snapshot", "restore", "unchanged_state", "loss_and_grads"]

#: The three variants of :func:`network`.
KINDS = ("standard", "BN", "noisy BN")

#: The hidden widths: five ReLU layers of 100 units.
HIDDEN = (100, 100, 100, 100, 100)


class BatchNoise(Module):
    r"""Noise with a non-zero mean and a non-unit variance, re-drawn at every step.

    In training, every forward first draws this step's distribution for each
    of the ``num_features`` units *j*:

    .. math::

        \mu_j \sim U(-n_\mu, n_\mu), \qquad \sigma_j \sim U(1, n_\sigma),

    then perturbs every activation of every sample *i* independently:

    .. math::

        y_{ij} = s_{ij}\, x_{ij} + m_{ij}, \qquad
        s_{ij} \sim N(\sigma_j, \delta^2), \quad m_{ij} \sim N(\mu_j, \delta^2).

    After a batch-norm layer (per unit mean 0 and variance 1 over the batch,
    before its affine), unit *j* thus leaves with a mean near
    :math:`\mu_j` and a standard deviation near :math:`\sigma_j` -- both
    different at every step.  The backward is :math:`\partial L/\partial x =
    \delta_y \odot s`.

    In evaluation mode the layer applies its expectation, :math:`y =
    E[s]\,x + E[m] = \tfrac{1 + n_\sigma}{2}\, x`, as dropout's evaluation
    is its training map in expectation.  The identity would not be: the
    layers after it were trained on inputs scaled by 1.25 on average (the
    defaults), and with the identity the default network's validation
    accuracy on MNIST-1D fell to about a third of batch norm's (measured
    while choosing the defaults).

    The defaults, :math:`n_\mu = 0.5`, :math:`n_\sigma = 1.5`,
    :math:`\delta = 0.1`, were picked for the ``noisy-bn`` experiment (the
    paper does not give its values in the text): on the 5 x 100 ReLU MLP of
    :func:`network` on MNIST-1D (SGD, momentum 0.9, ``lr`` 0.05, batch 64) the
    noisy network still reaches batch norm's validation accuracy, while the
    per-unit mean and standard deviation of the inputs of its third and last
    hidden layers change 5 to 10 times more per step than without batch norm.
    Smaller (0.25, 1.25) and larger (1, 2, jitter 0.2) magnitudes trained as
    well in the same pilot.

    Parameters
    ----------
    num_features : int
        The units (the last axis of the ``(N, C)`` input).
    mean_range : float
        :math:`n_\mu`, the range of the per-step means.
    std_range : float
        :math:`n_\sigma \ge 1`, the largest per-step scale.
    jitter : float
        :math:`\delta`, the per-activation spread around the step's values.
    rng : numpy.random.Generator, int or None
        Source of the noise.
    """

    def __init__(self, num_features: int, *, mean_range: float = 0.5,
                 std_range: float = 1.5, jitter: float = 0.1,
                 rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        if num_features < 1:
            raise ValueError(f"BatchNoise: num_features must be >= 1; got {num_features}")
        if mean_range < 0 or std_range < 1 or jitter < 0:
            raise ValueError(f"BatchNoise: need mean_range >= 0, std_range >= 1 and "
                             f"jitter >= 0; got {mean_range}, {std_range}, {jitter}")
        self.num_features = int(num_features)
        self.mean_range = float(mean_range)
        self.std_range = float(std_range)
        self.jitter = float(jitter)
        self.rng = np.random.default_rng(rng)
        self._scale: np.ndarray | None = None
        #: This step's per-unit means and scales (the last training forward's).
        self.step_mean: np.ndarray | None = None
        self.step_std: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNoise: expected input (N, {self.num_features}); "
                             f"got {x.shape}")
        if not self.training:
            self._scale = None
            return x * x.dtype.type(self.expected_scale)
        dt = x.dtype
        c = self.num_features
        mu = self.rng.uniform(-self.mean_range, self.mean_range, c)
        sigma = self.rng.uniform(1.0, self.std_range, c)
        self.step_mean, self.step_std = mu, sigma
        scale = (sigma + self.jitter * self.rng.standard_normal(x.shape)).astype(dt)
        shift = (mu + self.jitter * self.rng.standard_normal(x.shape)).astype(dt)
        self._scale = scale
        return x * scale + shift

    @property
    def expected_scale(self) -> float:
        """:math:`E[s] = (1 + n_\\sigma) / 2`, the evaluation-mode factor."""
        return (1.0 + self.std_range) / 2.0

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dy = np.asarray(dy)
        if self._scale is None:
            return dy * dy.dtype.type(self.expected_scale)
        if dy.shape != self._scale.shape:
            raise ValueError(f"BatchNoise: dy must have the last forward's shape "
                             f"{self._scale.shape}; got {dy.shape}")
        return dy * self._scale

    def extra_repr(self) -> str:
        return (f"{self.num_features}, mean_range={self.mean_range}, "
                f"std_range={self.std_range}, jitter={self.jitter}")


def network(num_features: int, num_classes: int, *, kind: str,
            hidden: tuple[int, ...] = HIDDEN, rng: np.random.Generator | None = None,
            noise_rng: np.random.Generator | None = None, **noise) -> Sequential:
    """The MLP of the Santurkar experiments in variant ``kind`` (:data:`KINDS`).

    Every Dense layer is He-initialized from ``rng``, in the same order for
    every variant, so the three variants of one seed start from the same
    weights (the standard network's biases start at 0).  ``noise_rng`` and
    the keywords ``noise`` (``mean_range``, ``std_range``, ``jitter``) go to
    the :class:`BatchNoise` layers of ``"noisy BN"``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose from {KINDS}")
    if noise and kind != "noisy BN":
        raise ValueError(f"noise parameters {sorted(noise)} apply to 'noisy BN' only")
    layers: list[Module] = []
    width = num_features
    for h in hidden:
        if kind == "standard":
            layers += [Dense(width, h, rng=rng), ReLU()]
        else:
            layers += [Dense(width, h, use_bias=False, rng=rng), BatchNorm(h)]
            if kind == "noisy BN":
                layers.append(BatchNoise(h, rng=noise_rng, **noise))
            layers.append(ReLU())
        width = h
    layers.append(Dense(width, num_classes, rng=rng))
    return Sequential(*layers)


def weight_layers(model: Sequential) -> list[Dense]:
    """The model's Dense layers, input first (the output layer last)."""
    return [m for m in model if isinstance(m, Dense)]


def parameters(model: Sequential) -> list[tuple[Module, str]]:
    """Every trainable array of ``model`` as ``(layer, name)``, input first."""
    return [(m, name) for m in model._unique_modules() for name in m.params]


def snapshot(model: Sequential) -> list[np.ndarray]:
    """Copies of every parameter, in :func:`parameters` order."""
    return [m.params[name].copy() for m, name in parameters(model)]


def restore(model: Sequential, saved: list[np.ndarray]) -> None:
    """Write a :func:`snapshot` back into the model's parameters (in place)."""
    for (m, name), value in zip(parameters(model), saved, strict=True):
        m.params[name][...] = value


@contextmanager
def unchanged_state(model: Sequential) -> Iterator[None]:
    """Within the block, forwards may update batch norm's running statistics and draw
    noise; on exit both are as they were (the buffers restored, every
    :class:`BatchNoise` generator rewound), so a measurement does not change
    training."""
    buffers = [(m, {k: v.copy() for k, v in m.buffers.items()}) for m in model.modules()
               if isinstance(m, BatchNorm)]
    noise = [(m, m.rng.bit_generator.state) for m in model.modules()
             if isinstance(m, BatchNoise)]
    was_training = model.training
    try:
        yield
    finally:
        for m, saved in buffers:
            for k, v in saved.items():
                m.buffers[k][...] = v
        for m, state in noise:
            m.rng.bit_generator.state = state
        model.train(was_training)


def loss_and_grads(model: Sequential, x: np.ndarray, y: np.ndarray
                   ) -> tuple[float, list[np.ndarray]]:
    """The training-mode loss of ``(x, y)`` and copies of its gradients, in
    :func:`parameters` order, without changing the model.

    Batch norm normalizes with the batch's own statistics, as in a training
    step; its running statistics and the noise generators are left as they
    were (:func:`unchanged_state`), so two calls on the same parameters give
    the same noise and the same numbers, and so does the training step that
    follows.  The layers' ``grads`` are overwritten.
    """
    crit = SoftmaxCrossEntropy()
    with unchanged_state(model), np.errstate(all="ignore"):
        model.train()
        loss = float(crit(model(x), y))
        for m, name in parameters(model):
            m.grads[name][...] = 0
        model.backward(crit.backward())
        grads = [m.grads[name].copy() for m, name in parameters(model)]
    return loss, grads
