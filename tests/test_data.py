"""The experiments' data: the IDX reader and MNIST loader on files the tests write, the digits,
MNIST-1D (skipped without the mnist1d package, apart from the errors that its absence gives)."""

import gzip
import random
import struct
import subprocess
import sys

import numpy as np
import pytest

from fastbn import cli
from fastbn.experiments import data, report

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


def test_dataset_layout_of_images():
    ds = data.load_digits()
    assert ds.is_image and ds.sample_shape == ds.image_shape == (1, 8, 8)
    assert "1437 train / 360 val images of shape (1, 8, 8)" in repr(ds)


# --- MNIST-1D -------------------------------------------------------------------------------


def no_network(mp: pytest.MonkeyPatch) -> None:
    """Make every way mnist1d could reach the network (or its downloader) raise."""
    import socket
    import urllib.request

    import mnist1d.data
    import requests

    def refuse(*args, **kwargs):
        raise AssertionError("MNIST-1D must be generated offline")

    mp.setattr(mnist1d.data, "get_dataset", refuse)
    mp.setattr(mnist1d.data.requests, "get", refuse)
    mp.setattr(requests, "get", refuse)
    mp.setattr(requests.Session, "request", refuse)
    mp.setattr(urllib.request, "urlopen", refuse)
    mp.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def mnist1d():
    pytest.importorskip("mnist1d")
    with pytest.MonkeyPatch.context() as mp:
        no_network(mp)
        return data.load_mnist1d()


def test_mnist1d_shapes_dtypes_labels(mnist1d):
    ds = mnist1d
    assert ds.name == "mnist1d" == data.MNIST1D and ds.num_classes == 10
    assert ds.x_train.shape == (4000, 1, 40) and ds.x_val.shape == (1000, 1, 40)
    assert ds.y_train.shape == (4000,) and ds.y_val.shape == (1000,)
    assert ds.x_train.dtype == ds.x_val.dtype == np.float32
    assert ds.y_train.dtype == ds.y_val.dtype == np.int64
    assert ds.x_train.flags.c_contiguous and ds.x_val.flags.c_contiguous
    assert ds.sample_shape == (1, 40) and ds.num_features == 40 and not ds.is_image
    assert "4000 train / 1000 val signals of shape (1, 40)" in repr(ds)
    for y in (ds.y_train, ds.y_val):
        assert y.min() == 0 and y.max() == 9
    # the package's standardization over all 5,000 signals, kept as is
    x = np.concatenate([ds.x_train, ds.x_val]).astype(np.float64)
    assert abs(x.mean()) < 1e-4 and abs(x.std() - 1.0) < 1e-4
    assert np.isfinite(x).all()


def test_mnist1d_class_balance(mnist1d):
    ds = mnist1d
    np.testing.assert_array_equal(np.bincount(ds.y_train) + np.bincount(ds.y_val), [500] * 10)
    for y in (ds.y_train, ds.y_val):
        counts = np.bincount(y, minlength=10)
        assert np.all(np.abs(counts - len(y) / 10) <= 0.15 * len(y) / 10), counts


def test_mnist1d_is_deterministic_offline_and_restores_global_rngs(mnist1d, monkeypatch,
                                                                    tmp_path):
    no_network(monkeypatch)
    monkeypatch.chdir(tmp_path)        # get_dataset would write ./mnist1d_data.pkl
    np.random.seed(123)
    random.seed(123)
    again = data.load("mnist1d")       # the --data value, a second generation
    after = np.random.random(), random.random()
    np.random.seed(123)
    random.seed(123)
    assert after == (np.random.random(), random.random())
    for name in ("x_train", "y_train", "x_val", "y_val"):
        np.testing.assert_array_equal(getattr(again, name), getattr(mnist1d, name))
    assert list(tmp_path.iterdir()) == []


def test_mnist1d_layout_from_the_generator(monkeypatch):
    """The package's (N, 40) float64 signals become (N, 1, 40) float32, in order."""
    mnist1d_data = pytest.importorskip("mnist1d.data")
    rng = np.random.default_rng(0)
    raw = {"x": rng.normal(size=(20, 40)), "y": np.arange(20) % 10,
           "x_test": rng.normal(size=(10, 40)), "y_test": np.arange(10)[::-1]}
    seen = []
    monkeypatch.setattr(mnist1d_data, "make_dataset", lambda args: seen.append(args) or raw)
    ds = data.load_mnist1d()
    assert seen[0].seed == 42 and seen[0].num_samples == 5000
    assert seen[0].final_seq_length == 40 and seen[0].train_split == 0.8
    np.testing.assert_array_equal(ds.x_train[:, 0], raw["x"].astype(np.float32))
    np.testing.assert_array_equal(ds.x_val[:, 0], raw["x_test"].astype(np.float32))
    np.testing.assert_array_equal(ds.y_train, raw["y"])
    np.testing.assert_array_equal(ds.y_val, raw["y_test"])


def test_mnist1d_is_not_imported_with_the_data_module():
    code = ("import sys, fastbn.experiments.data, fastbn.cli; "
            "bad = [m for m in ('mnist1d', 'requests', 'matplotlib') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_mnist1d_missing_package_says_which_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "mnist1d", None)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(ImportError, match=r'pip install "fastbn\[experiments\]"'):
        data.load_mnist1d()
    assert cli.main(["experiment", "convergence", "--quick", "--data", "mnist1d",
                     "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mnist1d" in err[0] and "fastbn[experiments]" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_mnist1d_refused_by_the_cnn(mnist1d, monkeypatch, capsys, tmp_path):
    from fastbn.experiments import small_batch

    with pytest.raises(ValueError, match="1-D signals of shape \\(1, 40\\)"):
        _ = mnist1d.image_shape
    with pytest.raises(ValueError, match="small-batch trains a 2-D CNN"):
        small_batch.run(small_batch.make_config("tiny", 0, "mnist1d"), mnist1d,
                        progress=False)
    monkeypatch.setattr(data, "load_mnist1d", lambda: mnist1d)
    assert cli.main(["experiment", "small-batch", "--tiny", "--data", "mnist1d",
                     "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--data mnist1d: small-batch" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_cli_convergence_tiny_on_mnist1d(mnist1d, monkeypatch, capsys, tmp_path):
    """``fastbn experiment convergence --tiny --data mnist1d``: the MLP on the flattened
    signals and MNIST-1D's CNN on the signals (the generation itself is the fixture's, so
    it is not timed twice; CI runs the experiments' ``--quick`` from the command line)."""
    calls = []
    monkeypatch.setattr(data, "load_mnist1d", lambda: calls.append(1) or mnist1d)
    assert cli.main(["experiment", "convergence", "--tiny", "--data", "mnist1d",
                     "--out", str(tmp_path)]) == 0
    assert calls == [1]
    stdout = capsys.readouterr().out
    assert "fastbn experiment convergence --tiny --data mnist1d" in stdout
    assert "signals of shape (1, 40)" in stdout
    rows = report.read_csv(tmp_path / "convergence.csv")
    assert {r["dataset"] for r in rows} == {"mnist1d"}
    assert {r["seed"] for r in rows} == {0, 1}
    assert {r["model"] for r in rows} == {"BN", "no BN", "CNN BN", "CNN no BN"}
    final = [r for r in rows if not r["diverged"] and r["epoch"] == max(x["epoch"] for x in rows)]
    assert len(final) == 8 and all(0.0 <= r["val_accuracy"] <= 1.0 for r in final)
    assert (tmp_path / "convergence.png").stat().st_size > 1000
