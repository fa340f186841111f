"""The buffers an engine binds: allocated once, up front, and bound to a session by IO binding.

Host buffers are page-locked (``cudaHostRegister``) where CUDA's runtime library can be loaded, so
that the copies to and from the device are direct DMA; each device buffer is one OrtValue, bound
once, whose address a captured CUDA graph keeps. The device-to-host copies (``READBACKS``) are
tried in order at warm-up (usseg.runtime.engine).
"""

from __future__ import annotations

import ctypes
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime as ort

from .model_io import ModelIO


class CudaRuntime:
    """cudaHostRegister / cudaHostUnregister through CUDA's runtime library, if it can be loaded
    (``onnxruntime.preload_dlls`` loads it from the nvidia pip packages)."""

    NAMES = ("libcudart.so.13", "libcudart.so.12", "libcudart.so", "cudart64_13.dll", "cudart64_12.dll")

    def __init__(self) -> None:
        self.lib = None
        for name in self.NAMES:
            try:
                self.lib = ctypes.CDLL(name)
                break
            except OSError:
                continue

    def register(self, array: np.ndarray) -> bool:
        if self.lib is None:
            return False
        err = self.lib.cudaHostRegister(ctypes.c_void_p(array.ctypes.data), ctypes.c_size_t(array.nbytes),
                                        ctypes.c_uint(1))  # cudaHostRegisterPortable
        return err == 0

    def unregister(self, address: int) -> None:
        if self.lib is not None:
            self.lib.cudaHostUnregister(ctypes.c_void_p(address))


_cudart: CudaRuntime | None = None


def cuda_runtime() -> CudaRuntime:
    global _cudart
    if _cudart is None:
        _cudart = CudaRuntime()
    return _cudart


def host_array(shape: tuple[int, ...], dtype: Any, pin: bool) -> tuple[np.ndarray, bool]:
    """A zeroed C-contiguous host array, page-locked when ``pin`` and CUDA's runtime allows."""
    if not pin:
        return np.zeros(shape, dtype), False
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.zeros(nbytes + 4096, np.uint8)
    start = (-raw.ctypes.data) % 4096
    array = raw[start:start + nbytes].view(dtype).reshape(shape)
    runtime = cuda_runtime()
    if not runtime.register(array):
        return np.zeros(shape, dtype), False
    weakref.finalize(raw, runtime.unregister, array.ctypes.data)
    return array, True


def device_value(shape: tuple[int, ...], dtype: Any, device_id: int) -> Any:
    return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, "cuda", device_id)


def copy_tensors(dev: Any, host: np.ndarray) -> None:
    ort.copy_tensors([dev], [ort.OrtValue.ortvalue_from_numpy(host)])


def update_inplace(dev: Any, host: np.ndarray) -> None:
    ort.OrtValue.ortvalue_from_numpy(host).update_inplace(dev)


def copy_numpy(dev: Any, host: np.ndarray) -> None:
    np.copyto(host, dev.numpy().reshape(host.shape), casting="unsafe")


# Tried in this order at warm-up; the last one always works but allocates a host array per call.
READBACKS: dict[str, Callable[[Any, np.ndarray], None]] = {
    "copy_tensors": copy_tensors, "update_inplace": update_inplace, "numpy": copy_numpy}


class Bound:
    """The buffers of ``batch`` frames bound to a session: host input and output, and on a GPU their
    device twins. The preparer writes the host input (or, fused, the device input at
    :meth:`device_input`); the engine runs the binding and reads the host output."""

    def __init__(self, session: Any, io: ModelIO, batch: int, gpu: bool, device_id: int) -> None:
        in_shape, out_shape = io.shapes(batch)
        self.host_in, pin_in = host_array(in_shape, io.input.dtype, gpu)
        self.host_out, pin_out = host_array(out_shape, io.output.dtype, gpu)
        self.pinned = pin_in and pin_out
        self.gpu = gpu
        self.binding = session.io_binding()
        if gpu:
            self.dev_in = device_value(in_shape, io.input.dtype, device_id)
            self.dev_out = device_value(out_shape, io.output.dtype, device_id)
        else:
            self.dev_in = ort.OrtValue.ortvalue_from_numpy(self.host_in)
            self.dev_out = ort.OrtValue.ortvalue_from_numpy(self.host_out)
        self.binding.bind_ortvalue_input(io.input.name, self.dev_in)
        self.binding.bind_ortvalue_output(io.output.name, self.dev_out)

    def device_input(self, index: int) -> int | None:
        """Device address of frame ``index``'s input (None without a device)."""
        if not self.gpu:
            return None
        return self.dev_in.data_ptr() + index * self.host_in[0].nbytes
