"""Device twins of host test arrays, for running one call on both backends.

Used by the tests that hold the two backends to one contract
(``test_bad_inputs.py``, ``test_contract.py``): each host buffer is copied to
the device once and every view of it re-created there with the same offset,
strides, dtype and read-only flag, so arguments that alias on the host alias
on the device.
"""

import numpy as np


class OtherDevice:
    """An argument on the device the call's x is not on: a device copy in the CPU run,
    the host array itself in the GPU run."""

    def __init__(self, value):
        self.value = value


def _root(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


class _ReadOnlyDevice:
    """A device array exported read-only (``__cuda_array_interface__`` data flag)."""

    def __init__(self, d):
        iface = dict(d.__cuda_array_interface__)
        iface["data"] = (iface["data"][0], True)
        self.__cuda_array_interface__ = iface


class Mirror:
    """Device twins of host arrays: each host buffer copied once, every view of it
    re-created on the device with the same offset, strides, dtype and read-only
    flag, so arguments that alias on the host alias on the device."""

    def __init__(self):
        from numba import cuda

        self.cuda = cuda
        self.roots: dict = {}
        self.made: list = []  # (host view, device view)

    def _device_root(self, root):
        key = id(root)
        if key not in self.roots:
            flat = np.ascontiguousarray(root).reshape(-1).view(np.uint8)
            self.roots[key] = (root, self.cuda.to_device(flat))
        return self.roots[key][1]

    def array(self, a: np.ndarray):
        root = _root(a)
        assert root.flags.c_contiguous, "the cases build views of contiguous buffers"
        d_root = self._device_root(root)
        offset = a.__array_interface__["data"][0] - root.__array_interface__["data"][0]
        if hasattr(d_root, "_ary"):  # the simulator: a device array wraps a NumPy one
            from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

            view = np.ndarray(a.shape, a.dtype, buffer=d_root._ary, offset=offset,
                              strides=a.strides)
            view.flags.writeable = bool(a.flags.writeable)
            d = FakeCUDAArray(view)
        else:
            from numba.cuda.cudadrv.devicearray import DeviceNDArray

            d = DeviceNDArray(a.shape, a.strides, a.dtype,
                              gpu_data=d_root.gpu_data.view(offset))
            d = d if a.flags.writeable else _ReadOnlyDevice(d)
        self.made.append((a, d))
        return d

    def __call__(self, v):
        if isinstance(v, OtherDevice):
            return v.value
        if isinstance(v, np.ndarray):
            return self.array(v)
        if isinstance(v, tuple):
            return tuple(self(u) for u in v)
        return v

    def host(self, a: np.ndarray) -> np.ndarray:
        """The device twin of ``a`` read back (``a`` itself if it was never mirrored)."""
        for src, d in self.made:
            if src is a:
                inner = getattr(d, "_ary", None)
                return np.array(inner) if inner is not None else d.copy_to_host()
        view = self.array(a)
        inner = getattr(view, "_ary", None)
        return np.array(inner) if inner is not None else view.copy_to_host()
