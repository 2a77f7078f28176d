"""The layer protocol every ``fastbn.nn`` layer follows (see API.md "Layers").

A layer is a thin, stateful shell: it owns its parameters (``params``), their
gradients (``grads``), its buffers (running statistics) and what its backward
pass needs from the last forward.  Optimizers read ``params`` and ``grads`` by
name and nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import IO, Any, Union

import numpy as np
from numpy.typing import ArrayLike

PathLike = Union[str, "os.PathLike[str]", IO[bytes]]


def _npz_path(path: PathLike) -> PathLike:
    """``path`` with ``.npz`` appended to a file name without it, as ``np.savez`` does."""
    if isinstance(path, (str, os.PathLike)):
        name = os.fspath(path)
        return name if name.endswith(".npz") else name + ".npz"
    return path


class Module:
    """Base class: ``forward``/``backward``, train/eval mode, params, state dict.

    Subclasses fill ``self.params`` (trainable arrays, keyed by PyTorch's names),
    ``self.grads`` (same keys and shapes, overwritten by each ``backward``) and
    ``self.buffers`` (non-trainable state such as ``running_mean``), and
    implement :meth:`forward` and :meth:`backward`.
    """

    def __init__(self) -> None:
        self.training = True
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}

    # -- computation -------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Gradient with respect to the last forward's input; parameter
        gradients are written into ``self.grads``."""
        raise NotImplementedError

    def __call__(self, x: np.ndarray, **kwargs) -> np.ndarray:
        """``layer(x)`` is ``layer.forward(x)``; keywords go to ``forward`` (``mask=``)."""
        return self.forward(x, **kwargs)

    def _add_param(self, name: str, value: np.ndarray) -> np.ndarray:
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)
        return value

    # -- mode --------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode (``mode=False`` is :meth:`eval`); returns the layer."""
        for module in self.modules():
            module.training = bool(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def modules(self) -> Iterator[Module]:
        """This layer and every layer inside it (containers override)."""
        yield self

    def _unique_modules(self) -> list[Module]:
        """:meth:`modules` with a layer used twice (shared weights) listed once."""
        return list({id(m): m for m in self.modules()}.values())

    # -- bookkeeping -------------------------------------------------------
    def num_params(self) -> tuple[int, int]:
        """``(trainable, non_trainable)`` element counts, as Keras' summary counts
        them: parameters, then floating-point buffers (running statistics; the
        integer ``num_batches_tracked`` is not a parameter)."""
        modules = self._unique_modules()
        trainable = sum(p.size for m in modules for p in m.params.values())
        frozen = sum(b.size for m in modules for b in m.buffers.values()
                     if np.issubdtype(b.dtype, np.floating))
        return int(trainable), int(frozen)

    def named_state(self) -> dict[str, np.ndarray]:
        """The live arrays behind :meth:`state_dict` (not copies)."""
        return {**self.params, **self.buffers}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters and buffers under PyTorch's key names."""
        return {k: np.array(v, copy=True) for k, v in self.named_state().items()}

    def load_state_dict(self, state: Mapping[str, ArrayLike]) -> None:
        """Copy ``state`` into the layer's arrays (cast to their dtypes).

        Every key, shape and value is checked before anything is written, so a
        missing key, an extra key or a wrong shape raises (KeyError / ValueError)
        and leaves the layer unchanged.  Values may be NumPy arrays or anything
        ``np.asarray`` takes (``tensor.numpy()``, lists, 0-d scalars).
        """
        own = self.named_state()
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        if missing or extra:
            raise KeyError(f"{type(self).__name__}.load_state_dict: missing keys {missing}, "
                           f"unexpected keys {extra}")
        staged = {}
        for key, target in own.items():
            value = np.asarray(state[key])
            if value.shape != target.shape:
                raise ValueError(f"{type(self).__name__}.load_state_dict: {key!r} must have "
                                 f"shape {target.shape}; got shape {value.shape}")
            if (np.issubdtype(target.dtype, np.integer)
                    and not np.issubdtype(value.dtype, np.integer)):
                raise TypeError(f"{type(self).__name__}.load_state_dict: {key!r} must be an "
                                f"integer array; got dtype {value.dtype}")
            staged[key] = value
        for key, value in staged.items():
            own[key][...] = value

    # -- weights on disk ---------------------------------------------------
    def save_weights(self, path: PathLike) -> None:
        """Write :meth:`state_dict` to an ``.npz`` file (``np.savez``), one array per key.

        Parameters
        ----------
        path : str, path or binary file
            ``.npz`` is appended to a file name without it (as ``np.savez``
            does).  The keys are :meth:`state_dict`'s (``"0.weight"``,
            ``"1.running_mean"`` in a ``Sequential``), so ``np.load(path)``
            reads them back by name.

        Examples
        --------
        >>> import os, tempfile
        >>> from fastbn.nn import BatchNorm, Dense, Sequential
        >>> model = Sequential(Dense(4, 3, rng=0), BatchNorm(3))
        >>> path = os.path.join(tempfile.mkdtemp(), "weights.npz")
        >>> model.save_weights(path)
        >>> clone = Sequential(Dense(4, 3, rng=1), BatchNorm(3))
        >>> clone.load_weights(path)
        >>> bool((clone[0].params["weight"] == model[0].params["weight"]).all())
        True
        """
        state: dict[str, Any] = self.state_dict()
        np.savez(_npz_path(path), **state)

    def load_weights(self, path: PathLike) -> None:
        """Read an ``.npz`` file of :meth:`state_dict` arrays into the layer, all or nothing.

        Parameters
        ----------
        path : str, path or binary file
            As for :meth:`save_weights` (``.npz`` is appended to a name
            without it).  Any ``.npz`` with the right keys loads, e.g. one
            written by ``np.savez(path, **{k: v.numpy() for k, v in
            torch_model.state_dict().items()})`` for a torch model with the
            same layers.

        Raises
        ------
        ValueError
            For a missing or an extra key (the message lists them), or an
            array of the wrong shape (the message names the key and both
            shapes).  Nothing is written then: the layer is unchanged.
        TypeError
            For a non-integer array where the layer keeps integers
            (``num_batches_tracked``).

        Notes
        -----
        Values are cast to the dtypes of the layer's arrays, as
        :meth:`load_state_dict` does (a float64 file loads into a float32
        model), and copied into them in place, so an optimizer built on the
        model keeps updating the loaded arrays.
        """
        with np.load(_npz_path(path), allow_pickle=False) as data:
            state = {key: data[key] for key in data.files}
        own = self.named_state()
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        if missing or extra:
            raise ValueError(f"{type(self).__name__}.load_weights: the file's keys do not match "
                             f"the model's state_dict(): missing keys {missing}, unexpected "
                             f"keys {extra}")
        self.load_state_dict(state)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def output_shape(self, input_shape: tuple) -> tuple:
        """Shape of the output for an input of ``input_shape`` (used by summaries)."""
        return tuple(input_shape)
