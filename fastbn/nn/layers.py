r"""Plain NumPy layers: dense, 1-D and 2-D convolution, activations, pooling, reshaping.

Every layer follows the protocol of :class:`fastbn.nn._module.Module`:
``forward(x) -> y`` saves what ``backward(dy) -> dx`` needs, and ``backward``
overwrites the parameter gradients in ``self.grads`` (the same arrays every
time).  Parameters use PyTorch's layouts and names (``weight``, ``bias``), so
``state_dict()`` round-trips with ``torch.nn.Linear`` / ``torch.nn.Conv1d`` /
``torch.nn.Conv2d``.

Sequences are NCL, images NCHW.  Layers with parameters take ``dtype``
(float32 by default) and keep it: float32 input gives float32 output and
float32 gradients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.typing import DTypeLike

from ._module import Module

__all__ = [
    "Dense",
    "Conv1d",
    "Conv2d",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Dropout",
    "MaxPool2d",
    "GlobalAvgPool2d",
    "Flatten",
]

RngLike = np.random.Generator | int | None
IntPair = int | tuple[int, int]
_T = TypeVar("_T")


# -- helpers ---------------------------------------------------------------
def _as_rng(rng: RngLike) -> np.random.Generator:
    """``rng`` as a Generator: a Generator as is, an int seed, or None (fresh entropy)."""
    return np.random.default_rng(rng)


def _float_dtype(dtype: DTypeLike) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64; got {dt}")
    return dt


def _pair(value: IntPair, name: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints as a pair, each at least ``minimum``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif (isinstance(value, Sequence) and len(value) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name} must be an int or a pair of ints; got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value!r}")
    return pair


def _single(value: int | tuple[int], name: str, minimum: int) -> int:
    """An int or a 1-tuple of an int (torch's ``(3,)``) as an int, at least ``minimum``."""
    if (isinstance(value, tuple) and len(value) == 1
            and isinstance(value[0], (int, np.integer)) and not isinstance(value[0], bool)):
        value = value[0]
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int; got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value!r}")
    return int(value)


def _init_weight(shape: tuple[int, ...], fan_in: int, fan_out: int, init: str, scale: float,
                 rng: RngLike, dtype: np.dtype) -> np.ndarray:
    """He (Kaiming) normal or Glorot (Xavier) uniform initial weights."""
    gen = _as_rng(rng)
    if init == "he":
        std = scale * math.sqrt(2.0 / fan_in)
        w = gen.normal(0.0, std, shape)
    elif init == "glorot":
        limit = scale * math.sqrt(6.0 / (fan_in + fan_out))
        w = gen.uniform(-limit, limit, shape)
    else:
        raise ValueError(f"init must be 'he' or 'glorot'; got {init!r}")
    return w.astype(dtype)


def _check_features(x: np.ndarray, ndim: int, axis: int, size: int | None, layer: str,
                    layout: str) -> None:
    if x.ndim != ndim or (size is not None and x.shape[axis] != size):
        raise ValueError(f"{layer}: input must have shape {layout}; got shape {x.shape}")


def _need(saved: _T | None, layer: str) -> _T:
    if saved is None:
        raise RuntimeError(f"{layer}.backward called before forward")
    return saved


def _check_dy(dy: np.ndarray, shape: tuple[int, ...], layer: str) -> None:
    if dy.shape != shape:
        raise ValueError(f"{layer}.backward: dy must have the output's shape {shape}; "
                         f"got shape {dy.shape}")


def _pool_out(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    """``floor((size + 2 padding - kernel) / stride) + 1`` (PyTorch's, ``ceil_mode=False``)."""
    return (size + 2 * padding - kernel) // stride + 1


# -- Dense -----------------------------------------------------------------
class Dense(Module):
    r"""Fully connected layer, ``torch.nn.Linear``'s layout.

    .. math::  y = x W^\top + b, \qquad x \in \mathbb{R}^{N \times d_{in}},\;
               W \in \mathbb{R}^{d_{out} \times d_{in}},\; b \in \mathbb{R}^{d_{out}}

    Backward, for the upstream gradient :math:`\delta = \partial L / \partial y`:

    .. math::  \frac{\partial L}{\partial W} = \delta^\top x, \quad
               \frac{\partial L}{\partial b} = \textstyle\sum_n \delta_n, \quad
               \frac{\partial L}{\partial x} = \delta W

    Parameters
    ----------
    in_features, out_features : int
        :math:`d_{in}` and :math:`d_{out}`.
    use_bias : bool
        With ``False`` there is no ``bias`` parameter at all (the usual choice
        in front of a batch norm, whose shift makes it redundant).
    init : {"he", "glorot"}
        ``"he"``: :math:`W \sim \mathcal N(0, \sigma^2)`, :math:`\sigma =
        \text{scale}\sqrt{2 / d_{in}}` (Kaiming normal, for ReLU networks).
        ``"glorot"``: :math:`W \sim \mathcal U(-a, a)`, :math:`a = \text{scale}
        \sqrt{6 / (d_{in} + d_{out})}` (Xavier uniform).  The bias starts at 0.
    scale : float
        Multiplies the initial standard deviation / limit.
    rng : numpy.random.Generator, int or None
        Source of the initial weights (a seed, or None for fresh entropy).
    dtype : float32 or float64
        Dtype of the parameters and gradients.

    Attributes
    ----------
    params : dict
        ``"weight"`` of shape (out_features, in_features), ``"bias"`` of shape
        (out_features,) when ``use_bias``.
    """

    def __init__(self, in_features: int, out_features: int, *, use_bias: bool = True,
                 init: str = "he", scale: float = 1.0, rng: RngLike = None,
                 dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        if int(in_features) < 1 or int(out_features) < 1:
            raise ValueError(f"Dense: in_features and out_features must be >= 1; got "
                             f"{in_features}, {out_features}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.use_bias = bool(use_bias)
        self.init = init
        self.dtype = _float_dtype(dtype)
        self._add_param("weight", _init_weight((self.out_features, self.in_features),
                                               self.in_features, self.out_features, init,
                                               scale, rng, self.dtype))
        if self.use_bias:
            self._add_param("bias", np.zeros(self.out_features, dtype=self.dtype))
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``y = x @ weight.T + bias`` for ``x`` of shape (N, in_features)."""
        x = np.asarray(x)
        _check_features(x, 2, 1, self.in_features, "Dense", f"(N, {self.in_features})")
        y = x @ self.params["weight"].T
        if self.use_bias:
            y += self.params["bias"]
        self._x = x
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """``dx = dy @ weight``; writes ``grads["weight"] = dy.T @ x`` and
        ``grads["bias"] = dy.sum(0)``."""
        x = _need(self._x, "Dense")
        dy = np.asarray(dy)
        _check_dy(dy, (x.shape[0], self.out_features), "Dense")
        self.grads["weight"][...] = dy.T @ x
        if self.use_bias:
            self.grads["bias"][...] = dy.sum(axis=0)
        return dy @ self.params["weight"]

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) != 2 or input_shape[1] != self.in_features:
            raise ValueError(f"Dense: input must have shape (N, {self.in_features}); "
                             f"got shape {tuple(input_shape)}")
        return (input_shape[0], self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.use_bias}")


# -- Conv1d ----------------------------------------------------------------
class Conv1d(Module):
    r"""1-D convolution (cross-correlation) over (N, C, L) sequences, ``torch.nn.Conv1d``'s layout.

    .. math::  y_{n,o,i} = b_o + \sum_{c,q} W_{o,c,q}\, \tilde x_{n,\,c,\,s i + q}

    where :math:`\tilde x` is ``x`` zero-padded by ``padding`` on each side;
    the output length is :math:`L_{out} = \lfloor (L + 2 p - k) / s \rfloor + 1`.

    Computed by im2col, as :class:`Conv2d`: the windows of :math:`\tilde x` are
    gathered (a strided view, copied once) into ``cols`` of shape
    (C k, N L_out), and the whole batch's convolution is one matrix product
    :math:`Y = W_{mat}\,\text{cols}` with :math:`W_{mat}` the weight reshaped to
    (O, C k).  Backward, with :math:`\Delta` the upstream gradient in the same
    (O, N L_out) layout:

    .. math::  \frac{\partial L}{\partial W_{mat}} = \Delta\, \text{cols}^\top,
               \quad \frac{\partial L}{\partial b_o} = \sum_{n,i} \delta_{n,o,i},
               \quad \frac{\partial L}{\partial \text{cols}} = W_{mat}^\top \Delta

    and col2im scatter-adds the column gradient back onto the padded sequence,
    one strided slice addition per kernel offset :math:`q`.

    Parameters
    ----------
    in_channels, out_channels : int
        C and O.
    kernel_size : int
        Kernel length :math:`k` (a 1-tuple ``(k,)``, torch's form, is accepted too).
    stride : int
        Step :math:`s` between windows.
    padding : int
        Zeros :math:`p` added at each end of the sequence.
    use_bias : bool
        With ``False`` there is no ``bias`` parameter.
    init : {"he", "glorot"}
        As :class:`Dense`, with fan_in :math:`= C k` and fan_out :math:`= O k`.
    scale : float
        Multiplies the initial standard deviation / limit.
    rng : numpy.random.Generator, int or None
        Source of the initial weights.
    dtype : float32 or float64
        Dtype of the parameters and gradients.

    Attributes
    ----------
    params : dict
        ``"weight"`` of shape (O, C, k) and ``"bias"`` of shape (O,) when
        ``use_bias``; the state-dict keys of ``torch.nn.Conv1d``.

    Raises
    ------
    ValueError
        From ``forward``: an input that is not 3-D, whose channel axis is not
        ``in_channels`` long, or that is shorter (padded) than the kernel.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn import Conv1d
    >>> conv = Conv1d(3, 8, 5, stride=2, padding=2, rng=0)
    >>> conv.params["weight"].shape, conv.params["bias"].shape
    ((8, 3, 5), (8,))
    >>> x = np.random.default_rng(0).normal(size=(4, 3, 20)).astype(np.float32)
    >>> y = conv(x)
    >>> y.shape, y.dtype
    ((4, 8, 10), dtype('float32'))
    >>> dx = conv.backward(np.ones_like(y))
    >>> dx.shape, conv.grads["weight"].shape
    ((4, 3, 20), (8, 3, 5))
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int], *,
                 stride: int | tuple[int] = 1, padding: int | tuple[int] = 0,
                 use_bias: bool = True, init: str = "he", scale: float = 1.0,
                 rng: RngLike = None, dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        if int(in_channels) < 1 or int(out_channels) < 1:
            raise ValueError(f"Conv1d: in_channels and out_channels must be >= 1; got "
                             f"{in_channels}, {out_channels}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = _single(kernel_size, "kernel_size", 1)
        self.stride = _single(stride, "stride", 1)
        self.padding = _single(padding, "padding", 0)
        self.use_bias = bool(use_bias)
        self.init = init
        self.dtype = _float_dtype(dtype)
        k = self.kernel_size
        self._add_param("weight", _init_weight((self.out_channels, self.in_channels, k),
                                               self.in_channels * k, self.out_channels * k,
                                               init, scale, rng, self.dtype))
        if self.use_bias:
            self._add_param("bias", np.zeros(self.out_channels, dtype=self.dtype))
        self._cols: np.ndarray | None = None
        self._x_shape: tuple[int, ...] = ()
        self._out_len = 0

    def _out_size(self, length: int, shape: tuple) -> int:
        lo = _pool_out(length, self.kernel_size, self.stride, self.padding)
        if lo < 1:
            raise ValueError(f"Conv1d: input of shape {tuple(shape)} padded by {self.padding} "
                             f"is shorter than the kernel {self.kernel_size}")
        return lo

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Convolve ``x`` of shape (N, C, L).

        Parameters
        ----------
        x : numpy.ndarray
            Input of shape (N, in_channels, L).

        Returns
        -------
        numpy.ndarray
            Output of shape (N, out_channels, L_out), C-contiguous.
        """
        x = np.asarray(x)
        _check_features(x, 3, 1, self.in_channels, "Conv1d", f"(N, {self.in_channels}, L)")
        n, c, length = x.shape
        lo = self._out_size(length, x.shape)
        k, s, p = self.kernel_size, self.stride, self.padding
        if p:
            xp = np.zeros((n, c, length + 2 * p), dtype=x.dtype)
            xp[:, :, p:p + length] = x
        else:
            xp = x
        s0, s1, s2 = xp.strides
        windows = as_strided(xp, (c, k, n, lo), (s1, s2, s0, s2 * s), writeable=False)
        cols = windows.reshape(c * k, n * lo)  # the one im2col copy
        y = self.params["weight"].reshape(self.out_channels, c * k) @ cols  # (O, N L_out)
        if self.use_bias:
            y += self.params["bias"][:, None]
        self._cols = cols
        self._x_shape = x.shape
        self._out_len = lo
        return np.ascontiguousarray(y.reshape(self.out_channels, n, lo).transpose(1, 0, 2))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Input gradient; writes ``grads["weight"]`` and ``grads["bias"]``.

        Parameters
        ----------
        dy : numpy.ndarray
            Gradient of the loss with respect to the last forward's output,
            of shape (N, out_channels, L_out).

        Returns
        -------
        numpy.ndarray
            Gradient with respect to the last forward's input, (N, C, L).
        """
        cols = _need(self._cols, "Conv1d")
        n, c, length = self._x_shape
        lo, o = self._out_len, self.out_channels
        dy = np.asarray(dy)
        _check_dy(dy, (n, o, lo), "Conv1d")
        k, s, p = self.kernel_size, self.stride, self.padding
        weight = self.params["weight"]
        dt = np.result_type(dy.dtype, weight.dtype)
        dyc = dy.transpose(1, 0, 2).reshape(o, n * lo)  # the forward's (O, N L_out) layout
        self.grads["weight"][...] = (dyc @ cols.T).reshape(weight.shape)
        if self.use_bias:
            self.grads["bias"][...] = dy.sum(axis=(0, 2))
        dcols = (weight.reshape(o, c * k).T @ dyc).reshape(c, k, n, lo)
        # col2im: scatter-add each kernel offset's column gradient onto the padded sequence
        dxp = np.zeros((n, c, length + 2 * p), dtype=dt)
        for q in range(k):
            dxp[:, :, q:q + s * lo:s] += dcols[:, q].transpose(1, 0, 2)
        if p:
            return np.ascontiguousarray(dxp[:, :, p:p + length])
        return dxp

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) != 3 or input_shape[1] != self.in_channels:
            raise ValueError(f"Conv1d: input must have shape (N, {self.in_channels}, L); "
                             f"got shape {tuple(input_shape)}")
        return (input_shape[0], self.out_channels, self._out_size(input_shape[2], input_shape))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.use_bias}")


# -- Conv2d ----------------------------------------------------------------
class Conv2d(Module):
    r"""2-D convolution (cross-correlation) over NCHW images, ``torch.nn.Conv2d``'s layout.

    .. math::  y_{n,o,i,j} = b_o + \sum_{c,p,q} W_{o,c,p,q}\,
               \tilde x_{n,\,c,\,s_h i + p,\,s_w j + q}

    where :math:`\tilde x` is ``x`` zero-padded by ``padding`` on each side;
    the output is :math:`H_{out} = \lfloor (H + 2 p_h - k_h) / s_h \rfloor + 1`
    (likewise :math:`W_{out}`).

    Computed by im2col: the windows of :math:`\tilde x` are gathered (a strided
    view, copied once) into ``cols`` of shape (C k_h k_w, N H_out W_out) and the
    whole batch's convolution is one matrix product :math:`Y = W_{mat}\,\text{cols}`
    with :math:`W_{mat}` the weight reshaped to (O, C k_h k_w).  Backward, with
    :math:`\Delta` the upstream gradient in the same (O, N H_out W_out) layout:

    .. math::  \frac{\partial L}{\partial W_{mat}} = \Delta\, \text{cols}^\top,
               \quad \frac{\partial L}{\partial b_o} = \sum_{n,i,j} \delta_{n,o,i,j},
               \quad \frac{\partial L}{\partial \text{cols}} = W_{mat}^\top \Delta

    and col2im scatter-adds the column gradient back onto the padded image, one
    strided slice addition per kernel offset :math:`(p, q)`.  With stride 1 the
    columns run over the padded image's flattened rows (each kernel offset's
    column is one contiguous run, with :math:`k_w - 1` unused entries between
    output rows), which makes both copies fast on small images.

    Parameters
    ----------
    in_channels, out_channels : int
        C and O.
    kernel_size, stride, padding : int or (int, int)
        Kernel size :math:`(k_h, k_w)`, stride :math:`(s_h, s_w)` and zero
        padding :math:`(p_h, p_w)`; an int means the same for both.
    use_bias : bool
        With ``False`` there is no ``bias`` parameter.
    init : {"he", "glorot"}
        As :class:`Dense`, with fan_in :math:`= C k_h k_w` and fan_out
        :math:`= O k_h k_w`.
    scale : float
        Multiplies the initial standard deviation / limit.
    rng : numpy.random.Generator, int or None
        Source of the initial weights.
    dtype : float32 or float64
        Dtype of the parameters and gradients.

    Attributes
    ----------
    params : dict
        ``"weight"`` of shape (O, C, k_h, k_w) and ``"bias"`` of shape (O,).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, *,
                 stride: IntPair = 1, padding: IntPair = 0, use_bias: bool = True,
                 init: str = "he", scale: float = 1.0, rng: RngLike = None,
                 dtype: DTypeLike = np.float32) -> None:
        super().__init__()
        if int(in_channels) < 1 or int(out_channels) < 1:
            raise ValueError(f"Conv2d: in_channels and out_channels must be >= 1; got "
                             f"{in_channels}, {out_channels}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = _pair(stride, "stride", 1)
        self.padding = _pair(padding, "padding", 0)
        self.use_bias = bool(use_bias)
        self.init = init
        self.dtype = _float_dtype(dtype)
        kh, kw = self.kernel_size
        shape = (self.out_channels, self.in_channels, kh, kw)
        self._add_param("weight", _init_weight(shape, self.in_channels * kh * kw,
                                               self.out_channels * kh * kw, init, scale, rng,
                                               self.dtype))
        if self.use_bias:
            self._add_param("bias", np.zeros(self.out_channels, dtype=self.dtype))
        self._cols: np.ndarray | None = None
        self._x_shape: tuple[int, ...] = ()
        self._out_hw: tuple[int, int] = (0, 0)
        self._layout: tuple[int, int] = (0, 0)

    def _out_size(self, h: int, w: int, shape: tuple) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        ho, wo = _pool_out(h, kh, sh, ph), _pool_out(w, kw, sw, pw)
        if ho < 1 or wo < 1:
            raise ValueError(f"Conv2d: input of shape {tuple(shape)} padded by {self.padding} "
                             f"is smaller than the kernel {self.kernel_size}")
        return ho, wo

    @staticmethod
    def _grid(cols_per_image: int, ho: int, wo: int, pitch: int, a: np.ndarray) -> np.ndarray:
        """The (O, N, H_out, W_out) view of an (O, N cols_per_image) matrix in the column
        layout: output (i, j) of image n is column ``n cols_per_image + i pitch + j``."""
        it = a.itemsize
        o, n = a.shape[0], a.shape[1] // cols_per_image
        return as_strided(a, (o, n, ho, wo),
                          (a.strides[0], cols_per_image * it, pitch * it, it))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Convolve ``x`` of shape (N, C, H, W); returns (N, O, H_out, W_out), C-contiguous."""
        x = np.asarray(x)
        _check_features(x, 4, 1, self.in_channels, "Conv2d", f"(N, {self.in_channels}, H, W)")
        n, c, h, w = x.shape
        ho, wo = self._out_size(h, w, x.shape)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if ph or pw:
            xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
            xp[:, :, ph:ph + h, pw:pw + w] = x
        else:
            xp = np.ascontiguousarray(x)
        wp = xp.shape[3]
        s0, s1, s2, s3 = xp.strides
        if self.stride == (1, 1):
            # Stride 1: output (i, j) reads the padded image's flat index
            # (i + p) wp + j + q, so each kernel offset's column is one contiguous
            # run of length (ho - 1) wp + wo; the wp - wo "junk" entries per
            # row land between output rows and are dropped.
            cols_per_image, pitch = (ho - 1) * wp + wo, wp
            windows = as_strided(xp, (c, kh, kw, n, cols_per_image), (s1, s2, s3, s0, s3),
                                 writeable=False)
        else:
            cols_per_image, pitch = ho * wo, wo
            windows = as_strided(xp, (c, kh, kw, n, ho, wo),
                                 (s1, s2, s3, s0, s2 * sh, s3 * sw), writeable=False)
        cols = windows.reshape(c * kh * kw, n * cols_per_image)  # the one im2col copy
        weight = self.params["weight"]
        y = weight.reshape(self.out_channels, -1) @ cols  # (O, N cols_per_image)
        if self.use_bias:
            y += self.params["bias"][:, None]
        self._cols = cols
        self._x_shape = x.shape
        self._out_hw = (ho, wo)
        self._layout = (cols_per_image, pitch)
        return np.ascontiguousarray(
            self._grid(cols_per_image, ho, wo, pitch, y).transpose(1, 0, 2, 3))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Input gradient (N, C, H, W); writes ``grads["weight"]`` and ``grads["bias"]``."""
        cols = _need(self._cols, "Conv2d")
        n, c, h, w = self._x_shape
        ho, wo = self._out_hw
        o = self.out_channels
        dy = np.asarray(dy)
        _check_dy(dy, (n, o, ho, wo), "Conv2d")
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        hp, wp = h + 2 * ph, w + 2 * pw
        cols_per_image, pitch = self._layout
        weight = self.params["weight"]
        dt = np.result_type(dy.dtype, weight.dtype)
        # dy in the forward's column layout (O, N cols_per_image), junk entries 0
        flat = cols_per_image != ho * wo
        dyc = (np.zeros if flat else np.empty)((o, n * cols_per_image), dtype=dt)
        self._grid(cols_per_image, ho, wo, pitch, dyc)[...] = dy.transpose(1, 0, 2, 3)
        self.grads["weight"][...] = (dyc @ cols.T).reshape(weight.shape)
        if self.use_bias:
            self.grads["bias"][...] = dy.sum(axis=(0, 2, 3))
        dcols = (weight.reshape(o, -1).T @ dyc).reshape(c, kh, kw, n, cols_per_image)
        # col2im: scatter-add each kernel offset's column gradient onto the padded image
        dxp = np.zeros((n, c, hp, wp), dtype=dt)
        if self.stride == (1, 1):
            runs = dxp.reshape(n, c, hp * wp)
            for p in range(kh):
                for q in range(kw):
                    start = p * wp + q
                    runs[:, :, start:start + cols_per_image] += dcols[:, p, q].transpose(1, 0, 2)
        else:
            dcols = dcols.reshape(c, kh, kw, n, ho, wo)
            for p in range(kh):
                rows = slice(p, p + sh * ho, sh)
                for q in range(kw):
                    dxp[:, :, rows, q:q + sw * wo:sw] += dcols[:, p, q].transpose(1, 0, 2, 3)
        if ph or pw:
            return np.ascontiguousarray(dxp[:, :, ph:ph + h, pw:pw + w])
        return dxp

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) != 4 or input_shape[1] != self.in_channels:
            raise ValueError(f"Conv2d: input must have shape (N, {self.in_channels}, H, W); "
                             f"got shape {tuple(input_shape)}")
        ho, wo = self._out_size(input_shape[2], input_shape[3], input_shape)
        return (input_shape[0], self.out_channels, ho, wo)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.use_bias}")


# -- activations and regularization -----------------------------------------
class ReLU(Module):
    r"""Rectified linear unit, :math:`y = \max(x, 0)`; backward
    :math:`\partial L/\partial x = \delta\,[x > 0]` (0 at :math:`x = 0`, as PyTorch)."""

    def __init__(self) -> None:
        super().__init__()
        self._mask: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        self._mask = x > 0
        return np.maximum(x, 0)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        mask = _need(self._mask, "ReLU")
        dy = np.asarray(dy)
        _check_dy(dy, mask.shape, "ReLU")
        return np.where(mask, dy, 0)


def _as_float(x: np.ndarray) -> np.ndarray:
    """``x`` as is when it is floating point, else as float64 (as ``np.exp`` would cast it)."""
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)


class _Pointwise(Module):
    """An elementwise activation whose forward saves its local derivative ``dy/dx``;
    ``backward`` multiplies ``dy`` by it (Sigmoid, Tanh)."""

    def __init__(self) -> None:
        super().__init__()
        self._dydx: np.ndarray | None = None

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """``dx = dy * f'(x)`` for the last forward's x.

        Parameters
        ----------
        dy : numpy.ndarray
            Gradient with respect to the last forward's output (its shape).

        Returns
        -------
        numpy.ndarray
            Gradient with respect to the last forward's input.
        """
        name = type(self).__name__
        dydx = _need(self._dydx, name)
        dy = np.asarray(dy)
        _check_dy(dy, dydx.shape, name)
        return dy * dydx


class Sigmoid(_Pointwise):
    r"""Logistic sigmoid, :math:`y = \sigma(x) = 1 / (1 + e^{-x})`.

    Backward: :math:`\partial L/\partial x = \delta\, \sigma(x)\,(1 - \sigma(x))`.

    Computed without overflow for any :math:`x`: with :math:`e = e^{-|x|} \in
    (0, 1]`, :math:`\sigma(x) = 1 / (1 + e)` for :math:`x \ge 0` and :math:`e /
    (1 + e)` for :math:`x < 0`, so no ``exp`` of a large argument is ever
    taken and large :math:`|x|` give 0 and 1 without warnings.  The forward
    saves the local derivative :math:`\sigma(x)(1 - \sigma(x)) = e / (1 +
    e)^2`, computed from :math:`e` (accurate where :math:`\sigma(x)` rounds to
    1), and ``backward`` multiplies by it.  Floating-point input keeps its
    dtype (float32 stays float32); other input is computed in float64.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn import Sigmoid
    >>> act = Sigmoid()
    >>> y = act(np.array([-1000.0, 0.0, 2.0, 1000.0], dtype=np.float32))
    >>> y.dtype
    dtype('float32')
    >>> print(np.round(y, 4))
    [0.     0.5    0.8808 1.    ]
    >>> print(np.round(act.backward(np.ones(4, dtype=np.float32)), 4))
    [0.     0.25   0.105  0.    ]
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        r""":math:`\sigma(x)`, elementwise.

        Parameters
        ----------
        x : numpy.ndarray
            Input of any shape.

        Returns
        -------
        numpy.ndarray
            :math:`\sigma(x)`, of x's shape and (floating) dtype.
        """
        x = _as_float(np.asarray(x))
        with np.errstate(under="ignore"):  # e -> 0 for large |x| is the right answer
            e = np.exp(-np.abs(x))  # in [0, 1]: never overflows
            r = 1 / (1 + e)  # sigma(|x|)
            er = e * r  # sigma(-|x|) = 1 - sigma(|x|)
            self._dydx = r * er
        return np.where(x >= 0, r, er)


class Tanh(_Pointwise):
    r"""Hyperbolic tangent, :math:`y = \tanh(x)`.

    Backward: :math:`\partial L/\partial x = \delta\,(1 - \tanh^2 x)`.

    ``numpy.tanh`` does not overflow (it gives :math:`\pm 1` for large
    :math:`|x|`).  The forward saves the local derivative :math:`(1 - y)(1 +
    y)` and ``backward`` multiplies by it.  Floating-point input keeps its
    dtype (float32 stays float32); other input is computed in float64.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn import Tanh
    >>> act = Tanh()
    >>> y = act(np.array([-1000.0, 0.0, 0.5, 1000.0], dtype=np.float32))
    >>> y.dtype
    dtype('float32')
    >>> print(np.round(y, 4))
    [-1.      0.      0.4621  1.    ]
    >>> print(np.round(act.backward(np.ones(4, dtype=np.float32)), 4))
    [0.     1.     0.7864 0.    ]
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        r""":math:`\tanh(x)`, elementwise.

        Parameters
        ----------
        x : numpy.ndarray
            Input of any shape.

        Returns
        -------
        numpy.ndarray
            :math:`\tanh(x)`, of x's shape and (floating) dtype.
        """
        y = np.tanh(_as_float(np.asarray(x)))
        self._dydx = (1 - y) * (1 + y)
        return y


class Dropout(Module):
    r"""Inverted dropout.

    Training: :math:`y = x \odot m / (1 - p)` with :math:`m_i \sim
    \text{Bernoulli}(1 - p)` drawn afresh by every forward, so the expected
    output equals the input; backward :math:`\partial L/\partial x = \delta
    \odot m / (1 - p)`.  Evaluation: the identity.

    Parameters
    ----------
    p : float in [0, 1)
        Probability of zeroing an element.
    rng : numpy.random.Generator, int or None
        Source of the masks.
    """

    def __init__(self, p: float = 0.5, *, rng: RngLike = None) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1); got {p!r}")
        self.p = float(p)
        self.rng = _as_rng(rng)
        self._mask: np.ndarray | None = None
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        self._shape = x.shape
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        dt = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
        keep = self.rng.random(x.shape, dtype=dt) >= self.p
        self._mask = keep * np.asarray(1.0 / (1.0 - self.p), dtype=dt)
        return x * self._mask

    def backward(self, dy: np.ndarray) -> np.ndarray:
        shape = _need(self._shape, "Dropout")
        dy = np.asarray(dy)
        _check_dy(dy, shape, "Dropout")
        if self._mask is None:
            return dy
        return dy * self._mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


# -- pooling and reshaping --------------------------------------------------
class MaxPool2d(Module):
    r"""Max pooling over NCHW windows (no padding, floor output size).

    .. math::  y_{n,c,i,j} = \max_{0 \le p < k_h,\, 0 \le q < k_w}
               x_{n,\,c,\,s_h i + p,\,s_w j + q}

    The gradient of each window goes to one element, its (first, in row-major
    order) maximum, as PyTorch does; overlapping windows add up.

    Parameters
    ----------
    kernel_size : int or (int, int)
        Window size.
    stride : int, (int, int) or None
        Step between windows; ``None`` means ``kernel_size``.
    """

    def __init__(self, kernel_size: IntPair = 2, stride: IntPair | None = None) -> None:
        super().__init__()
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride", 1)
        self._argmax: np.ndarray | None = None
        self._x_shape: tuple[int, ...] = ()

    def _out_size(self, h: int, w: int, shape: tuple) -> tuple[int, int]:
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        ho, wo = _pool_out(h, kh, sh), _pool_out(w, kw, sw)
        if ho < 1 or wo < 1:
            raise ValueError(f"MaxPool2d: input of shape {tuple(shape)} is smaller than the "
                             f"kernel {self.kernel_size}")
        return ho, wo

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        _check_features(x, 4, 1, None, "MaxPool2d", "(N, C, H, W)")
        n, c, h, w = x.shape
        ho, wo = self._out_size(h, w, x.shape)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        s0, s1, s2, s3 = x.strides
        # window offsets first: the reductions then run elementwise over long rows
        windows = as_strided(x, (kh, kw, n, c, ho, wo), (s2, s3, s0, s1, s2 * sh, s3 * sw),
                             writeable=False).reshape(kh * kw, n, c, ho, wo)
        self._argmax = windows.argmax(axis=0)  # the first maximum on ties
        self._x_shape = x.shape
        return windows.max(axis=0)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        idx = _need(self._argmax, "MaxPool2d")
        dy = np.asarray(dy)
        _check_dy(dy, idx.shape, "MaxPool2d")
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        ho, wo = idx.shape[2:]
        dx = np.zeros(self._x_shape, dtype=dy.dtype)
        for k in range(kh * kw):
            p, q = divmod(k, kw)
            dx[:, :, p:p + sh * ho:sh, q:q + sw * wo:sw] += np.where(idx == k, dy, 0)
        return dx

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) != 4:
            raise ValueError(f"MaxPool2d: input must have shape (N, C, H, W); "
                             f"got shape {tuple(input_shape)}")
        return (*input_shape[:2], *self._out_size(input_shape[2], input_shape[3], input_shape))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class GlobalAvgPool2d(Module):
    r"""Mean over the spatial axes: (N, C, H, W) -> (N, C),
    :math:`y_{n,c} = \frac{1}{HW}\sum_{i,j} x_{n,c,i,j}`; backward spreads
    :math:`\delta_{n,c} / (HW)` evenly over the window."""

    def __init__(self) -> None:
        super().__init__()
        self._x_shape: tuple[int, ...] | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        _check_features(x, 4, 1, None, "GlobalAvgPool2d", "(N, C, H, W)")
        self._x_shape = x.shape
        return x.mean(axis=(2, 3))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        shape = _need(self._x_shape, "GlobalAvgPool2d")
        dy = np.asarray(dy)
        _check_dy(dy, shape[:2], "GlobalAvgPool2d")
        dx = np.empty(shape, dtype=dy.dtype)
        dx[...] = (dy / (shape[2] * shape[3]))[:, :, None, None]
        return dx

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) != 4:
            raise ValueError(f"GlobalAvgPool2d: input must have shape (N, C, H, W); "
                             f"got shape {tuple(input_shape)}")
        return tuple(input_shape[:2])


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1 d2 ...); backward reshapes back."""

    def __init__(self) -> None:
        super().__init__()
        self._x_shape: tuple[int, ...] | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim < 1:
            raise ValueError(f"Flatten: input must have a batch axis; got shape {x.shape}")
        self._x_shape = x.shape
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        shape = _need(self._x_shape, "Flatten")
        dy = np.asarray(dy)
        _check_dy(dy, (shape[0], math.prod(shape[1:])), "Flatten")
        return dy.reshape(shape)

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) < 1:
            raise ValueError("Flatten: input must have a batch axis")
        return (input_shape[0], math.prod(input_shape[1:]))
