"""``Sequential``: a chain of layers, with PyTorch's state-dict keys and a Keras-style summary."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import numpy as np

from ._module import Module

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
