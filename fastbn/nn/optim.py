r"""Optimizers with PyTorch's update rules: SGD (momentum, weight decay) and Adam.

An optimizer walks ``model.modules()`` once, at construction, and keeps the
(module, name) pairs of every parameter.  Each :meth:`~Optimizer.step` reads
``module.params[name]`` and ``module.grads[name]`` (nothing else about the
layers) and updates the parameter in place, so the arrays a model holds stay
the same objects and keep their dtype (float32 stays float32).  Per-parameter
state (momentum buffers, Adam moments) is keyed by the same pairs.

``lr`` is a plain attribute: a learning-rate schedule sets ``opt.lr`` between
steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from ._module import Module

__all__ = ["Optimizer", "SGD", "Adam"]


class Optimizer:
    """Base class: the model's (module, parameter name) pairs and their state.

    Parameters
    ----------
    model : Module
        Any layer or container; every module that ``model.modules()`` yields
        contributes its ``params`` (a module yielded twice counts once).
    lr : float
        Learning rate, >= 0 (mutable: ``opt.lr = ...``).
    """

    def __init__(self, model: Module, lr: float) -> None:
        if not lr >= 0.0:
            raise ValueError(f"{type(self).__name__}: lr must be >= 0; got {lr!r}")
        self.lr = float(lr)
        self.model = model
        seen: set[int] = set()
        self.slots: list[tuple[Module, str]] = []
        for module in model.modules():
            if id(module) in seen:
                continue
            seen.add(id(module))
            self.slots.extend((module, name) for name in module.params)
        #: Per-parameter state, keyed by ``(module, name)``.
        self.state: dict[tuple[Module, str], dict] = {}

    def _pairs(self) -> Iterator[tuple[tuple[Module, str], np.ndarray, np.ndarray]]:
        for module, name in self.slots:
            yield (module, name), module.params[name], module.grads[name]

    def zero_grad(self) -> None:
        """Set every parameter gradient to zero (in place)."""
        for _, _, grad in self._pairs():
            grad[...] = 0

    def step(self) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    r"""Stochastic gradient descent with momentum and L2 weight decay (``torch.optim.SGD``
    with ``dampening=0``, ``nesterov=False``).

    For each parameter :math:`\theta` with gradient :math:`g`:

    .. math::
        g' &= g + \lambda \theta \\
        b_t &= \mu\, b_{t-1} + g' \quad (b_1 = g') \\
        \theta &\leftarrow \theta - \eta\, b_t

    and with :math:`\mu = 0` simply :math:`\theta \leftarrow \theta - \eta g'`.

    Parameters
    ----------
    model : Module
    lr : float
        :math:`\eta`.
    momentum : float
        :math:`\mu \ge 0`.
    weight_decay : float
        :math:`\lambda \ge 0` (added to the gradient, not to ``grads``).
    """

    def __init__(self, model: Module, lr: float, *, momentum: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        super().__init__(model, lr)
        if not momentum >= 0.0:
            raise ValueError(f"SGD: momentum must be >= 0; got {momentum!r}")
        if not weight_decay >= 0.0:
            raise ValueError(f"SGD: weight_decay must be >= 0; got {weight_decay!r}")
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)

    def step(self) -> None:
        """One update of every parameter, in place."""
        lr, mu, wd = self.lr, self.momentum, self.weight_decay
        for key, param, grad in self._pairs():
            if wd:
                grad = grad + wd * param
            if mu:
                state = self.state.setdefault(key, {})
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = np.array(grad, dtype=param.dtype)
                else:
                    buf *= mu
                    buf += grad
                grad = buf
            param -= lr * grad


class Adam(Optimizer):
    r"""Adam with bias correction and L2 weight decay (``torch.optim.Adam``,
    ``amsgrad=False``).

    For each parameter :math:`\theta` with gradient :math:`g`, at its step
    :math:`t = 1, 2, \dots`:

    .. math::
        g' &= g + \lambda \theta \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, g' \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2)\, g'^2 \\
        \theta &\leftarrow \theta - \frac{\eta}{1 - \beta_1^t}\,
            \frac{m_t}{\sqrt{v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    with :math:`m_0 = v_0 = 0`.

    Parameters
    ----------
    model : Module
    lr : float
        :math:`\eta`.
    betas : (float, float)
        :math:`(\beta_1, \beta_2)`, each in [0, 1).
    eps : float
        :math:`\epsilon \ge 0`.
    weight_decay : float
        :math:`\lambda \ge 0` (L2 penalty added to the gradient, not AdamW's
        decoupled decay).
    """

    def __init__(self, model: Module, lr: float = 1e-3, *,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(model, lr)
        beta1, beta2 = (float(b) for b in betas)
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError(f"Adam: betas must be in [0, 1); got {betas!r}")
        if not eps >= 0.0:
            raise ValueError(f"Adam: eps must be >= 0; got {eps!r}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Adam: weight_decay must be >= 0; got {weight_decay!r}")
        self.betas = (beta1, beta2)
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)

    def step(self) -> None:
        """One update of every parameter, in place."""
        lr, eps, wd = self.lr, self.eps, self.weight_decay
        beta1, beta2 = self.betas
        for key, param, grad in self._pairs():
            if wd:
                grad = grad + wd * param
            state = self.state.get(key)
            if state is None:
                state = self.state[key] = {"step": 0,
                                           "exp_avg": np.zeros_like(param),
                                           "exp_avg_sq": np.zeros_like(param)}
            state["step"] += 1
            t = state["step"]
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m *= beta1
            m += (1.0 - beta1) * grad
            v *= beta2
            v += (1.0 - beta2) * (grad * grad)
            step_size = lr / (1.0 - beta1 ** t)
            denom = np.sqrt(v)
            denom /= math.sqrt(1.0 - beta2 ** t)
            denom += eps
            param -= step_size * (m / denom)
