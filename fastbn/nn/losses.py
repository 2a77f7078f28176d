r"""Classification loss: softmax cross-entropy on logits, and an accuracy helper."""

from __future__ import annotations

import numpy as np

__all__ = ["SoftmaxCrossEntropy", "accuracy"]


def _check(logits: np.ndarray, labels: np.ndarray, who: str) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2 or logits.shape[0] < 1 or logits.shape[1] < 1:
        raise ValueError(f"{who}: logits must have shape (N, classes) with N, classes >= 1; "
                         f"got shape {logits.shape}")
    n, classes = logits.shape
    if labels.shape != (n,):
        raise ValueError(f"{who}: labels must have shape ({n},) to match logits of shape "
                         f"{logits.shape}; got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{who}: labels must be integer class indices; got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"{who}: labels must be in [0, {classes}); got values in "
                         f"[{labels.min()}, {labels.max()}]")
    return logits, labels


class SoftmaxCrossEntropy:
    r"""Mean softmax cross-entropy of logits against integer class labels.

    For logits :math:`z \in \mathbb{R}^{N \times K}` and labels :math:`t_n \in
    \{0, \dots, K-1\}`:

    .. math::  L = \frac{1}{N} \sum_n \Big( \log \sum_k e^{z_{n,k}} - z_{n,t_n} \Big)

    computed stably as :math:`\log\sum_k e^{z_{n,k} - m_n} + m_n` with
    :math:`m_n = \max_k z_{n,k}` (``torch.nn.functional.cross_entropy`` with
    ``reduction="mean"``).  The gradient is

    .. math::  \frac{\partial L}{\partial z_{n,k}} = \frac{\operatorname{softmax}(z_n)_k
               - [k = t_n]}{N}.

    Use: ``loss = crit(logits, labels)`` (or ``crit.forward``), then
    ``dlogits = crit.backward()`` for the last call.
    """

    def __init__(self) -> None:
        self._probs: np.ndarray | None = None
        self._labels: np.ndarray | None = None

    def forward(self, logits: np.ndarray, labels: np.ndarray) -> float:
        """Mean loss over the batch (a Python float); saves the softmax for :meth:`backward`.

        Parameters
        ----------
        logits : ndarray of shape (N, K), float
        labels : integer ndarray of shape (N,), values in [0, K)

        Raises
        ------
        ValueError
            On a shape mismatch, non-integer labels or a label out of range.
        """
        logits, labels = _check(logits, labels, "SoftmaxCrossEntropy")
        if not np.issubdtype(logits.dtype, np.floating):
            logits = logits.astype(np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        rows = np.arange(logits.shape[0])
        # -log softmax at the label, from the shifted logits
        loss = np.log(total[:, 0]) - shifted[rows, labels]
        exp /= total
        self._probs = exp
        self._labels = labels
        return float(loss.mean())

    def __call__(self, logits: np.ndarray, labels: np.ndarray) -> float:
        return self.forward(logits, labels)

    def backward(self) -> np.ndarray:
        """``(softmax(logits) - onehot(labels)) / N``, in the logits' dtype."""
        probs = self._probs
        if probs is None:
            raise RuntimeError("SoftmaxCrossEntropy.backward called before forward")
        n = probs.shape[0]
        grad = probs.copy()
        grad[np.arange(n), self._labels] -= 1
        grad /= n
        return grad

    def __repr__(self) -> str:
        return "SoftmaxCrossEntropy()"


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose largest logit is at the label (ties: the first index)."""
    logits, labels = _check(logits, labels, "accuracy")
    return float(np.mean(logits.argmax(axis=1) == labels))
