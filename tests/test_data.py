"""The experiments' data: the IDX reader and MNIST loader on files the tests write, the digits."""

import gzip
import struct

import numpy as np
import pytest

from fastbn.experiments import data

# The tests' own IDX writer, independent of the reader under test.
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
          np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array)
    header = bytes([0, 0, _CODES[array.dtype], array.ndim])
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array, *, compress=False) -> str:
    raw = idx_bytes(array)
    path = str(path) + (".gz" if compress else "")
    with open(path, "wb") as f:
        f.write(gzip.compress(raw) if compress else raw)
    return path


def write_mnist(directory, *, n_train=40, n_val=20, side=28, classes=10, seed=0,
                compress=False):
    """A tiny synthetic MNIST: class-dependent blobs, so it is learnable."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_val)):
        y = np.arange(n) % classes
        x = rng.integers(0, 60, (n, side, side))
        for i, label in enumerate(y):
            r = label * side // classes
            x[i, r:r + max(side // classes, 1), :] += 180
        arrays[split] = (x.clip(0, 255).astype(np.uint8), y.astype(np.uint8))
        write_idx(directory / f"{split}-images-idx3-ubyte", arrays[split][0], compress=compress)
        write_idx(directory / f"{split}-labels-idx1-ubyte", arrays[split][1], compress=compress)
    return arrays


@pytest.mark.parametrize("dtype", sorted(_CODES, key=str))
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, dtype, compress):
    rng = np.random.default_rng(0)
    a = (rng.normal(0, 50, (3, 4, 5))).astype(dtype)
    path = write_idx(tmp_path / "a.idx", a, compress=compress)
    b = data.read_idx(path)
    assert b.dtype == dtype and b.dtype.isnative and b.shape == (3, 4, 5)
    np.testing.assert_array_equal(a, b)


def test_idx_gzip_detected_without_gz_suffix(tmp_path):
    a = np.arange(6, dtype=np.uint8)
    path = tmp_path / "labels"
    path.write_bytes(gzip.compress(idx_bytes(a)))
    np.testing.assert_array_equal(data.read_idx(path), a)


def test_idx_one_dimension_and_empty(tmp_path):
    a = data.read_idx(write_idx(tmp_path / "a", np.arange(5, dtype=np.int32)))
    np.testing.assert_array_equal(a, np.arange(5))
    empty = data.read_idx(write_idx(tmp_path / "b", np.zeros((0, 28, 28), np.uint8)))
    assert empty.shape == (0, 28, 28)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("corrupt, message", [
    (lambda b: b"\x01\x00" + b[2:], "bad magic"),
    (lambda b: b[:2] + b"\x07" + b[3:], "unknown IDX type code 0x07"),
    (lambda b: b[:3] + b"\x00" + b[4:], "0 dimensions"),
    (lambda b: b[:3], "truncated IDX file"),
    (lambda b: b[:9], "truncated IDX header"),
    (lambda b: b[:-1], "truncated"),
    (lambda b: b + b"\x00", "trailing bytes"),
    (lambda b: b[:4] + struct.pack(">I", 4) + b[8:], "size mismatch"),
])
def test_idx_corruptions_raise_value_error(tmp_path, compress, corrupt, message):
    raw = corrupt(idx_bytes(np.zeros((3, 4, 5), np.uint8)))
    path = tmp_path / ("bad.gz" if compress else "bad")
    path.write_bytes(gzip.compress(raw) if compress else raw)
    with pytest.raises(ValueError, match=message):
        data.read_idx(path)


def test_idx_bad_gzip_and_missing_file(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(b"\x1f\x8b" + b"not really gzip")
    with pytest.raises(ValueError, match="gzip"):
        data.read_idx(path)
    with pytest.raises(FileNotFoundError):
        data.read_idx(tmp_path / "missing")


@pytest.mark.parametrize("compress", [False, True])
def test_load_mnist_round_trip(tmp_path, compress):
    arrays = write_mnist(tmp_path, compress=compress)
    ds = data.load_mnist(tmp_path)
    assert ds.name == "mnist" and ds.num_classes == 10 and ds.image_shape == (1, 28, 28)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.x_train.shape == (40, 1, 28, 28) and ds.x_val.shape == (20, 1, 28, 28)
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    np.testing.assert_allclose(ds.x_train[:, 0] * 255, arrays["train"][0], atol=1e-4)
    np.testing.assert_array_equal(ds.y_val, arrays["t10k"][1])
    assert ds.num_features == 784


def test_load_mnist_mixed_raw_and_gz(tmp_path):
    write_mnist(tmp_path)
    p = tmp_path / "t10k-images-idx3-ubyte"
    p.with_name(p.name + ".gz").write_bytes(gzip.compress(p.read_bytes()))
    p.unlink()
    assert len(data.load_mnist(tmp_path).y_val) == 20


def test_load_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        data.load_mnist(tmp_path / "nowhere")
    write_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        data.load_mnist(tmp_path)
    # labels-images count mismatch
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(39, np.uint8))
    with pytest.raises(ValueError, match="39 labels, but .* holds 40 images"):
        data.load_mnist(tmp_path)
    # images that are not 3-D unsigned bytes
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(40, np.uint8))
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((40, 784), np.uint8))
    with pytest.raises(ValueError, match="expected unsigned-byte images"):
        data.load_mnist(tmp_path)
    # different image sizes
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((40, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="training images are"):
        data.load_mnist(tmp_path)
    # a truncated file
    raw = idx_bytes(np.zeros((40, 28, 28), np.uint8))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw[:-100])
    with pytest.raises(ValueError, match="truncated"):
        data.load_mnist(tmp_path)


def test_digits_split_is_fixed_stratified_and_scaled():
    a, b = data.load_digits(), data.load_digits()
    assert a.image_shape == (1, 8, 8) and a.num_classes == 10 and a.num_features == 64
    assert (len(a.y_train), len(a.y_val)) == (1437, 360)
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int64
    assert a.x_train.min() == 0.0 and a.x_train.max() == 1.0
    np.testing.assert_array_equal(a.x_val, b.x_val)
    share_train = np.bincount(a.y_train) / len(a.y_train)
    share_val = np.bincount(a.y_val) / len(a.y_val)
    np.testing.assert_allclose(share_train, share_val, atol=0.01)


def test_stratified_subset():
    y = np.repeat(np.arange(4), [10, 20, 30, 40])
    idx = data.stratified_subset(y, 10, seed=3)
    assert len(idx) == 10 and len(set(idx)) == 10
    np.testing.assert_array_equal(np.bincount(y[idx]), [1, 2, 3, 4])
    np.testing.assert_array_equal(idx, data.stratified_subset(y, 10, seed=3))
    with pytest.raises(ValueError):
        data.stratified_subset(y, 0)
