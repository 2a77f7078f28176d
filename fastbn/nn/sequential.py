"""``Sequential``: a chain of layers, with PyTorch's state-dict keys and a Keras-style summary."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from ._module import Module

if TYPE_CHECKING:  # pragma: no cover
    from .losses import SoftmaxCrossEntropy
    from .optim import Optimizer
    from .training import Compiled, History

__all__ = ["Sequential"]


def _snake(name: str) -> str:
    """Keras' default layer name for a class: ``BatchNorm`` -> ``batch_norm``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _fmt_shape(shape: tuple) -> str:
    return str(tuple(shape))


class Sequential(Module):
    """Layers applied in order: ``forward`` runs them first to last, ``backward`` last to first.

    The container has no parameters or buffers of its own; ``modules()`` yields
    it and then every child's modules, so ``train()``, ``eval()`` and
    ``num_params()`` reach every layer, and an optimizer built on the container
    updates them all.  ``state_dict()`` uses ``torch.nn.Sequential``'s keys
    (``"0.weight"``, ``"1.running_mean"``, ``"2.0.bias"`` for nesting), so a
    PyTorch model with the same layer order loads directly.

    Parameters
    ----------
    *layers : Module
        The children, in order.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn import BatchNorm, Dense, ReLU, Sequential
    >>> model = Sequential(Dense(784, 128, use_bias=False), BatchNorm(128), ReLU(),
    ...                    Dense(128, 10))
    >>> x = np.random.default_rng(0).normal(size=(32, 784)).astype(np.float32)
    >>> logits = model(x)
    >>> dx = model.backward(np.ones_like(logits))
    >>> logits.shape, dx.shape
    ((32, 10), (32, 784))
    """

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: layer {i} must be a fastbn.nn Module; got "
                                f"{type(layer).__name__}")
        self.layers: list[Module] = list(layers)
        #: What :meth:`compile` stored (None before it is called).
        self.compiled: Compiled | None = None

    # -- computation -------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

    # -- container ---------------------------------------------------------
    def modules(self) -> Iterator[Module]:
        yield self
        for layer in self.layers:
            yield from layer.modules()

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int | slice) -> Module:
        """A child by position, or a new ``Sequential`` of the same (shared) children."""
        if isinstance(index, slice):
            return Sequential(*self.layers[index])
        return self.layers[index]

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def named_state(self) -> dict[str, np.ndarray]:
        """The children's live arrays under ``"<index>.<name>"`` keys."""
        return {f"{i}.{key}": value
                for i, layer in enumerate(self.layers)
                for key, value in layer.named_state().items()}

    def output_shape(self, input_shape: tuple) -> tuple:
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = tuple(layer.output_shape(shape))
        return shape

    def __repr__(self) -> str:
        if not self.layers:
            return "Sequential()"
        lines = [f"  ({i}): " + repr(layer).replace("\n", "\n  ")
                 for i, layer in enumerate(self.layers)]
        return "Sequential(\n" + "\n".join(lines) + "\n)"

    # -- summary -----------------------------------------------------------
    def summary(self, input_shape: tuple,
                print_fn: Callable[[str], object] | None = print) -> str:
        """A Keras-style table of the layers, their output shapes and parameter counts.

        Parameters
        ----------
        input_shape : tuple
            Shape of one input batch, batch axis included (``None`` allowed),
            e.g. ``(None, 784)`` or ``(None, 1, 8, 8)``.  The batch axis is
            always shown as ``None``.
        print_fn : callable or None
            Called with each line of the table (``None``: print nothing).

        Returns
        -------
        str
            The table.  Layers are named as Keras names them: the class name
            in snake case, numbered from the second one of a kind
            (``dense``, ``batch_norm``, ``dense_1``).  "Param #" counts a
            layer's parameters and floating-point buffers; the totals split
            them into trainable (parameters) and non-trainable (buffers).
        """
        shape = tuple(input_shape)
        if len(shape) < 1:
            raise ValueError("Sequential.summary: input_shape must include the batch axis")
        shape = (None, *shape[1:])
        seen: dict[str, int] = {}
        rows = []
        for layer in self.layers:
            kind = type(layer).__name__
            base = _snake(kind)
            count = seen.get(base, 0)
            seen[base] = count + 1
            name = base if count == 0 else f"{base}_{count}"
            shape = (None, *tuple(layer.output_shape(shape))[1:])
            rows.append((f"{name} ({kind})", _fmt_shape(shape), str(sum(layer.num_params()))))
        trainable, frozen = self.num_params()
        header = ("Layer (type)", "Output Shape", "Param #")
        w1 = max([len(header[0])] + [len(r[0]) for r in rows]) + 4
        w2 = max([len(header[1])] + [len(r[1]) for r in rows]) + 4
        w3 = max([len(header[2])] + [len(r[2]) for r in rows])
        width = w1 + w2 + w3

        def row(cells: tuple[str, str, str]) -> str:
            return f"{cells[0]:<{w1}}{cells[1]:<{w2}}{cells[2]:>{w3}}"

        lines = ['Model: "sequential"', "_" * width, row(header), "=" * width]
        for i, cells in enumerate(rows):
            if i:
                lines.append("_" * width)
            lines.append(row(cells))
        lines += ["=" * width,
                  f"Total params: {trainable + frozen}",
                  f"Trainable params: {trainable}",
                  f"Non-trainable params: {frozen}",
                  "_" * width]
        if print_fn is not None:
            for line in lines:
                print_fn(line)
        return "\n".join(lines)

    # -- Keras-style training loop (fastbn.nn.training) ----------------------
    def compile(self, optimizer: str | Optimizer = "adam",
                loss: str | SoftmaxCrossEntropy = "sparse_categorical_crossentropy",
                metrics: Sequence[str] | None = ("accuracy",)) -> None:
        """Choose the optimizer, the loss and the metrics for :meth:`fit`, as Keras' ``compile``.

        Parameters
        ----------
        optimizer : {"adam", "sgd"} or Optimizer
            ``"adam"`` is ``Adam(model, lr=1e-3)`` and ``"sgd"`` is
            ``SGD(model, lr=0.01)``, Keras' defaults, built now on this model.
            An optimizer instance is used as it is, with its state: it must
            have been built on this model or on a part of it (then only that
            part trains, and ``fit`` still runs every layer's backward).
            An optimizer holds references to the layers, not copies, so
            :meth:`load_weights` after ``compile`` is seen by it.  Calling
            ``compile("adam")`` again starts a fresh optimizer.
        loss : "sparse_categorical_crossentropy" or SoftmaxCrossEntropy
            Softmax cross-entropy on the model's logits against integer
            labels (the last layer outputs logits, no softmax layer).
        metrics : sequence of str or None
            ``("accuracy",)`` or ``()``/``None``.

        Raises
        ------
        ValueError
            For an unknown optimizer, loss or metric name (the message names
            the argument), or an optimizer built on layers outside the model.

        Examples
        --------
        >>> from fastbn.nn import Dense, Sequential
        >>> model = Sequential(Dense(4, 3, rng=0))
        >>> model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy",
        ...               metrics=("accuracy",))
        >>> type(model.compiled.optimizer).__name__, model.compiled.optimizer.lr
        ('SGD', 0.01)
        """
        from .training import compile_model

        compile_model(self, optimizer, loss, metrics)

    def fit(self, x: ArrayLike, y: ArrayLike, *, epochs: int = 1, batch_size: int = 32,
            validation_split: float = 0.0,
            validation_data: tuple[ArrayLike, ArrayLike] | None = None,
            shuffle: bool = True, seed: int | np.random.Generator | None = None,
            verbose: int = 1) -> History:
        """Train for ``epochs`` passes over ``(x, y)`` in minibatches, as Keras' ``fit``.

        Each batch runs forward, the loss, ``zero_grad``, backward and one
        optimizer step.  Every layer is in training mode while it trains and
        in eval mode while it validates; afterwards each layer has the mode it
        had before (to keep a batch norm's statistics fixed while the rest
        trains, use ``FrozenBatchNorm``).

        Parameters
        ----------
        x : ndarray of shape (N, ...)
            Inputs, in the dtype the layers compute in (float32 usually).
        y : integer ndarray of shape (N,)
            Class labels.
        epochs : int
            Passes over the training data.
        batch_size : int
            Samples per batch.  The last, partial batch trains too, as in
            Keras; if it would hold one sample, it is merged into the batch
            before it (batch norm in training mode needs more than one value
            per channel).
        validation_split : float in [0, 1)
            Fraction of the data held out for validation: the *last* samples
            of ``x`` and ``y``, taken before any shuffling (as Keras).
        validation_data : (x_val, y_val) or None
            Validation data; it takes precedence over ``validation_split``.
        shuffle : bool
            Draw a fresh order of the training samples every epoch.
        seed : int, Generator or None
            Seed of the shuffling.  The same seed on the same model (same
            initial weights, same layers) gives the same run: the same
            history and weights bit for bit, on any thread count.  A model
            with ``Dropout`` also needs the dropout layers' own ``rng`` seeded.
        verbose : {0, 1, 2}
            0: silent.  1: a tqdm progress bar per epoch on stderr, with the
            running loss and accuracy; tqdm is an optional extra, and without
            it one line per epoch is printed instead.  2: one line per epoch
            (``Epoch 1/5 - loss: ... - accuracy: ...``) on stdout.

        Returns
        -------
        History
            ``history.history`` maps ``"loss"``, ``"accuracy"`` and with
            validation ``"val_loss"``, ``"val_accuracy"`` to one value per
            epoch.

        Raises
        ------
        RuntimeError
            If :meth:`compile` has not been called.
        ValueError
            If x and y differ in length, or for a bad argument (named).

        Notes
        -----
        While ``fit`` runs, BLAS is limited to one thread with
        `threadpoolctl <https://github.com/joblib/threadpoolctl>`_ where it
        is installed (it is not a dependency; without it nothing changes),
        once per ``fit``, and given back afterwards.  The reason: OpenBLAS's
        worker threads spin for a while after each matrix product and take
        the cores from the threads of fastbn's Numba kernels.  It is a
        trade-off that depends on how busy the cores are, measured on 2
        shared cores (AMD EPYC) with ``python
        scripts/blas_threads_step.py --model mlp|cnn --batch 32``
        (interleaved, medians).  While other processes ran: a step of the
        tutorial's MLP took 34.3 ms with NumPy's default BLAS threads and
        2.95 ms with one, the small CNN 147.4 vs 24.2 ms.  On the idle
        machine: the small CNN 15.0 vs 10.7 ms, but the MLP, whose time is
        mostly its matrix products, 1.96 vs 2.22 ms (batch 256: 3.90 vs
        5.63 ms), faster with BLAS's own threads.  Set
        ``fastbn.nn.training.FIT_BLAS_THREADS = None`` to leave BLAS alone
        (or to another count).

        Examples
        --------
        >>> import numpy as np
        >>> from fastbn.nn import BatchNorm, Dense, ReLU, Sequential
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(100, 4)).astype(np.float32)
        >>> y = (x[:, 0] > 0).astype(np.int64)
        >>> model = Sequential(Dense(4, 8, rng=0), BatchNorm(8), ReLU(), Dense(8, 2, rng=1))
        >>> model.compile(optimizer="adam")
        >>> history = model.fit(x, y, epochs=3, batch_size=16, validation_split=0.2,
        ...                     seed=0, verbose=0)
        >>> sorted(history.history)
        ['accuracy', 'loss', 'val_accuracy', 'val_loss']
        >>> len(history.history["loss"])
        3
        """
        from .training import fit

        return fit(self, x, y, epochs=epochs, batch_size=batch_size,
                   validation_split=validation_split, validation_data=validation_data,
                   shuffle=shuffle, seed=seed, verbose=verbose)

    def evaluate(self, x: ArrayLike, y: ArrayLike, *, batch_size: int = 32
                 ) -> dict[str, float]:
        """Loss and accuracy on ``(x, y)`` in eval mode, as Keras' ``evaluate`` (a dict).

        Each layer gets its mode back afterwards.  The values are means over
        all samples.

        Returns
        -------
        dict
            ``{"loss": float, "accuracy": float}`` (``"accuracy"`` when it was
            compiled as a metric).

        Examples
        --------
        >>> import numpy as np
        >>> from fastbn.nn import Dense, Sequential
        >>> model = Sequential(Dense(4, 3, rng=0))
        >>> model.compile()
        >>> x = np.ones((5, 4), np.float32)
        >>> sorted(model.evaluate(x, np.zeros(5, np.int64)))
        ['accuracy', 'loss']
        """
        from .training import evaluate

        return evaluate(self, x, y, batch_size=batch_size)

    def predict(self, x: ArrayLike, *, batch_size: int = 32) -> np.ndarray:
        """The model's outputs (logits) on ``x`` in eval mode, in batches, as Keras' ``predict``.

        Each layer gets its mode back afterwards.  Needs no :meth:`compile`.

        Examples
        --------
        >>> import numpy as np
        >>> from fastbn.nn import Dense, Sequential
        >>> model = Sequential(Dense(4, 3, rng=0))
        >>> model.predict(np.ones((70, 4), np.float32), batch_size=32).shape
        (70, 3)
        """
        from .training import predict

        return predict(self, x, batch_size=batch_size)
