"""The experiments' data: scikit-learn's digits by default, MNIST from IDX files on disk,
MNIST-1D generated in memory.

Every loader returns a :class:`Dataset`: float32 samples with a channel axis
-- images ``(N, 1, H, W)`` in [0, 1], or 1-D signals ``(N, 1, L)`` -- and
int64 labels, split into a training and a validation set.  Nothing is ever
downloaded.

* :func:`load_digits` -- the 1,797 8x8 handwritten digits bundled with
  scikit-learn (pixel values 0..16, divided by 16), split 80/20 into training
  and validation, stratified by class with a fixed seed (the same split for
  every experiment seed).
* :func:`load_mnist` -- MNIST's four IDX files in a directory (each raw or
  gzipped); the 10,000 ``t10k`` images are the validation set.
* :func:`load_mnist1d` -- MNIST-1D (Greydanus & Kobak, ICML 2024), made by
  the ``mnist1d`` package's procedural generator with its default arguments
  (fixed seed 42): 4,000 training and 1,000 validation (the package's "test")
  signals of length 40, shape ``(N, 1, 40)``, in 10 classes.  The signals
  are the package's, standardized to mean 0 and standard deviation 1 over
  the 5,000, not scaled to [0, 1].  Needs ``pip install "fastbn[experiments]"``
  (``mnist1d``, which brings scipy, matplotlib and requests); it is imported
  only when called.  :data:`MNIST1D_BASELINES` holds the paper's test
  accuracies.
* :func:`load` -- the one entry point: digits, the name ``"mnist1d"``, or an
  MNIST directory (what ``fastbn experiment NAME --data PATH`` calls).
* :func:`read_idx` -- one IDX file as a NumPy array, with every header field
  checked.

The IDX format (LeCun's MNIST page): a 4-byte magic number -- two zero bytes,
a type code and the number of dimensions -- then one big-endian uint32 per
dimension, then the data, big-endian, in C order.
"""

from __future__ import annotations

import gzip
import math
import os
import random
from dataclasses import dataclass

import numpy as np

__all__ = ["Dataset", "load", "load_digits", "load_mnist", "load_mnist1d", "read_idx",
           "IDX_TYPES", "MNIST_FILES", "DIGITS", "MNIST1D", "MNIST1D_BASELINES",
           "stratified_subset"]

#: IDX type code -> NumPy dtype of the (big-endian) data.
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

#: The four MNIST files, by role.
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "val_images": "t10k-images-idx3-ubyte",
    "val_labels": "t10k-labels-idx1-ubyte",
}

#: The digits split: fraction held out for validation and the split's own seed.
DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0

#: The ``--data`` value (and :attr:`Dataset.name`) of scikit-learn's digits, the default of
#: most experiments; for those that default to MNIST-1D.  A directory of that name is
#: reached as ``./digits``.
DIGITS = "digits"

#: The ``--data`` value (and :attr:`Dataset.name`) of MNIST-1D.  A directory of
#: that name is reached as ``./mnist1d``.
MNIST1D = "mnist1d"

#: MNIST-1D's baselines, test accuracy by model, from S. Greydanus and D. Kobak,
#: "Scaling down deep learning with MNIST-1D", ICML 2024 (PMLR 235), as tabulated in
#: the mnist1d repository's README (which also gives a human expert's 0.96).  They
#: were measured on the published 4,000 / 1,000 split; :func:`load_mnist1d` makes
#: a split of the same size with the package's default arguments, not checked to
#: equal the published file.
MNIST1D_BASELINES = {"logistic regression": 0.32, "MLP": 0.68, "CNN": 0.94, "GRU": 0.91}


@dataclass(frozen=True)
class Dataset:
    """Float32 samples and int64 labels, train and validation.

    The samples have a channel axis: images ``(N, C, H, W)`` (digits and
    MNIST: ``C = 1``, values in [0, 1]) or 1-D signals ``(N, C, L)``
    (MNIST-1D: ``(N, 1, 40)``, standardized).  :attr:`sample_shape` is the
    shape of one sample either way; :attr:`image_shape` only exists for
    images, so that a model that needs them fails with a clear message.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample: (1, 8, 8) for digits, (1, 28, 28) for MNIST, (1, 40) for
        MNIST-1D."""
        return tuple(self.x_train.shape[1:])

    @property
    def is_image(self) -> bool:
        """Whether the samples are images ``(C, H, W)`` (not 1-D signals ``(C, L)``)."""
        return len(self.sample_shape) == 3

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one image: (1, 8, 8) for digits.

        Raises
        ------
        ValueError
            The samples are not images (MNIST-1D's are 1-D signals ``(1, 40)``).
        """
        shape = self.sample_shape
        if len(shape) != 3:
            raise ValueError(f"{self.name} holds 1-D signals of shape {shape}, not images "
                             f"(C, H, W); a 2-D model (Conv2d) cannot take them")
        return (shape[0], shape[1], shape[2])

    @property
    def num_features(self) -> int:
        """Values per sample: the input width of an MLP on the flattened samples (64 for
        digits, 784 for MNIST, 40 for MNIST-1D)."""
        return math.prod(self.sample_shape)

    def subset(self, max_train: int | None = None, max_val: int | None = None,
               seed: int = 0) -> Dataset:
        """A class-stratified subset of at most ``max_train`` / ``max_val`` samples."""
        xt, yt, xv, yv = self.x_train, self.y_train, self.x_val, self.y_val
        if max_train is not None and max_train < len(yt):
            idx = stratified_subset(yt, max_train, seed)
            xt, yt = xt[idx], yt[idx]
        if max_val is not None and max_val < len(yv):
            idx = stratified_subset(yv, max_val, seed + 1)
            xv, yv = xv[idx], yv[idx]
        if xt is self.x_train and xv is self.x_val:
            return self
        return Dataset(self.name, xt, yt, xv, yv, self.num_classes)

    def __repr__(self) -> str:
        kind = "images" if self.is_image else "signals"
        return (f"Dataset({self.name!r}: {len(self.y_train)} train / {len(self.y_val)} val "
                f"{kind} of shape {self.sample_shape}, {self.num_classes} classes)")


def stratified_subset(labels: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``size`` samples with each class in its original proportion.

    Classes get ``floor(size * share)`` each; the samples left over go to the
    classes with the largest remainders.  Within a class, samples are drawn
    at random with ``seed``.
    """
    labels = np.asarray(labels)
    size = int(size)
    if not 0 < size <= len(labels):
        raise ValueError(f"subset size must be in [1, {len(labels)}]; got {size}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / len(labels)
    take = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - take), kind="stable")[:size - take.sum()]:
        take[i] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k]
              for c, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(chosen))


# --- scikit-learn's digits ------------------------------------------------------------------


def load_digits() -> Dataset:
    """scikit-learn's 8x8 digits, float32 in [0, 1], a fixed stratified 80/20 split.

    1,797 images of 10 classes; 1,437 for training, 360 for validation.  The
    split uses its own seed (:data:`DIGITS_SPLIT_SEED`), so every experiment
    seed sees the same split.  Needs scikit-learn (the data ship in its wheel).
    """
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = _sk_load_digits()
    x = (bunch.images.astype(np.float32) / np.float32(16.0))[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=DIGITS_VAL_FRACTION, stratify=y, random_state=DIGITS_SPLIT_SEED)
    return Dataset("digits", np.ascontiguousarray(x_train), y_train,
                   np.ascontiguousarray(x_val), y_val, num_classes=10)


# --- IDX files and MNIST --------------------------------------------------------------------


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        head = f.read(2)
        f.seek(0)
        if head != b"\x1f\x8b" and not path.endswith(".gz"):
            return f.read()
        try:
            with gzip.GzipFile(fileobj=f) as g:
                return g.read()
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: not a readable gzip file ({exc})") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (raw, or gzip-compressed) into a native-endian NumPy array.

    Parameters
    ----------
    path : str or path-like
        The file; gzip is detected from its first two bytes (or a ``.gz`` name).

    Returns
    -------
    ndarray
        Shape from the header; dtype from the type code (uint8, int8, int16,
        int32, float32 or float64), in native byte order.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        A bad magic number (the first two bytes must be zero), an unknown type
        code, no dimensions, a header shorter than its dimensions say, or a
        data section whose size is not the product of the dimensions times the
        item size (truncated, or with trailing bytes).
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: truncated IDX file ({len(data)} bytes; the header "
                         f"alone needs at least 4)")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number "
                         f"0x{data[:4].hex()}: the first two bytes must be zero)")
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02X}; expected one of "
                         + ", ".join(f"0x{c:02X}" for c in IDX_TYPES))
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes; {ndim} "
                         f"dimensions need {header})")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        what = "truncated" if found < expected else "trailing bytes"
        raise ValueError(f"{path}: IDX data size mismatch ({what}): shape {shape} of "
                         f"{dtype.newbyteorder('=').name} needs {expected} bytes, "
                         f"found {found}")
    array = np.frombuffer(data, dtype, count=math.prod(shape), offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _find(directory: str, name: str) -> str:
    for candidate in (name, name + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{os.path.join(directory, name)} (or {name}.gz) not found")


def _images(path: str) -> np.ndarray:
    x = read_idx(path)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise ValueError(f"{path}: expected unsigned-byte images of shape (N, rows, cols); "
                         f"got {x.dtype} of shape {x.shape}")
    return (x.astype(np.float32) / np.float32(255.0))[:, None, :, :]


def _labels(path: str, count: int, images_path: str) -> np.ndarray:
    y = read_idx(path)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{path}: expected integer labels of shape (N,); got {y.dtype} "
                         f"of shape {y.shape}")
    if len(y) != count:
        raise ValueError(f"{path}: {len(y)} labels, but {images_path} holds {count} images")
    if len(y) and y.min() < 0:
        raise ValueError(f"{path}: negative label {int(y.min())}")
    return y.astype(np.int64)


def load_mnist(directory: str | os.PathLike) -> Dataset:
    """MNIST from the four IDX files in ``directory`` (each raw or ``.gz``); never downloads.

    Images are scaled to [0, 1] (divided by 255) as float32 of shape
    ``(N, 1, 28, 28)``; the 10,000 ``t10k`` images are the validation set.
    Any image size works, as long as both sets share it.

    Raises
    ------
    FileNotFoundError
        ``directory`` is not a directory, or one of :data:`MNIST_FILES` is
        missing (the message names it).
    ValueError
        A corrupt IDX file (see :func:`read_idx`), images that are not 3-D
        unsigned bytes, labels that are not 1-D integers, a label count that
        differs from the image count, or training and validation images of
        different sizes.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: no such directory (--data wants a directory "
                                f"holding the MNIST IDX files {', '.join(MNIST_FILES.values())})")
    paths = {role: _find(directory, name) for role, name in MNIST_FILES.items()}
    x_train = _images(paths["train_images"])
    y_train = _labels(paths["train_labels"], len(x_train), paths["train_images"])
    x_val = _images(paths["val_images"])
    y_val = _labels(paths["val_labels"], len(x_val), paths["val_images"])
    if x_train.shape[1:] != x_val.shape[1:]:
        raise ValueError(f"training images are {x_train.shape[2:]} but validation images are "
                         f"{x_val.shape[2:]} ({paths['train_images']}, {paths['val_images']})")
    if len(y_train) == 0 or len(y_val) == 0:
        raise ValueError(f"{directory}: empty training or validation set")
    num_classes = int(max(y_train.max(), y_val.max())) + 1
    return Dataset("mnist", x_train, y_train, x_val, y_val, num_classes=max(num_classes, 2))


# --- MNIST-1D -------------------------------------------------------------------------------


def load_mnist1d() -> Dataset:
    """MNIST-1D from the ``mnist1d`` package's generator, in memory; never downloads.

    Calls ``mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())``: the
    package's default arguments (5,000 signals, seed 42, an 80/20 split),
    never ``get_dataset``, which downloads a pickle and writes one to the
    working directory.  The result is the same on every call: 4,000
    training and 1,000 validation (the package's "test") signals as float32
    of shape ``(N, 1, 40)`` (a channel axis, as for a Conv1d), int64 labels
    0-9, 500 of each class over the two sets (not balanced exactly within
    each).  The values are the package's, standardized to mean 0 and
    standard deviation 1 over the 5,000 signals (about -5.5 to 4.5), not
    scaled to [0, 1].  :data:`MNIST1D_BASELINES` holds the paper's test
    accuracies (measured on the published split of the same size).

    The generator seeds and draws from NumPy's and Python's global random
    state; their states are restored afterwards.  Generating takes a second
    or two, and importing ``mnist1d`` (it imports scipy, matplotlib's pyplot
    and requests) about as long; nothing is cached.

    Raises
    ------
    ImportError
        ``mnist1d`` (or one of its dependencies) is not installed; the
        message says which extra to install.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise ImportError(f"MNIST-1D needs the mnist1d package ({exc}): pip install "
                          f"\"fastbn[experiments]\" (or pip install mnist1d)") from exc

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)

    def signals(x) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(x, dtype=np.float32)[:, None, :])

    return Dataset(MNIST1D, signals(raw["x"]), np.asarray(raw["y"], dtype=np.int64),
                   signals(raw["x_test"]), np.asarray(raw["y_test"], dtype=np.int64),
                   num_classes=10)


def load(path: str | os.PathLike | None = None) -> Dataset:
    """The experiments' data, by ``--data`` value.

    Parameters
    ----------
    path : None, "digits", "mnist1d", str or path-like
        ``None`` or ``"digits"`` (:data:`DIGITS`): scikit-learn's digits
        (:func:`load_digits`; a directory named ``digits`` is ``./digits``); the string
        ``"mnist1d"`` (:data:`MNIST1D`): MNIST-1D generated in memory
        (:func:`load_mnist1d`); anything else: a directory of MNIST IDX files
        (:func:`load_mnist`; a directory named ``mnist1d`` is ``./mnist1d``).
    """
    if path is None or (isinstance(path, str) and path == DIGITS):
        return load_digits()
    if isinstance(path, str) and path == MNIST1D:
        return load_mnist1d()
    return load_mnist(path)
