"""The buffers a backend binds and the thread its CUDA graph lives on.

Host buffers are page-locked (``cudaHostRegister``) where CUDA's runtime library can be loaded, so
that the copies to and from the device are direct DMA; each device buffer is one OrtValue, bound
once, whose address a captured CUDA graph keeps. ONNX Runtime keeps a CUDA graph per thread, so a
backend with one runs every session call on a single :class:`Worker` (see backend.py).
"""

from __future__ import annotations

import ctypes
import queue
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort


@dataclass(frozen=True)
class IOSpec:
    """The one input and one output the backend binds (batch 1 shapes)."""

    input_name: str
    input_shape: tuple[int, ...]
    input_dtype: Any
    output_name: str
    output_shape: tuple[int, ...]
    output_dtype: Any



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
    """One set of buffers bound to a session: host input/output, and on a GPU their device twins."""

    def __init__(self, session: Any, spec: IOSpec, batch: int, gpu: bool, device_id: int) -> None:
        in_shape, out_shape = (batch,) + spec.input_shape[1:], (batch,) + spec.output_shape[1:]
        self.host_in, pin_in = host_array(in_shape, spec.input_dtype, gpu)
        self.host_out, pin_out = host_array(out_shape, spec.output_dtype, gpu)
        self.pinned = pin_in and pin_out
        self.gpu = gpu
        self.binding = session.io_binding()
        if gpu:
            self.dev_in = device_value(in_shape, spec.input_dtype, device_id)
            self.dev_out = device_value(out_shape, spec.output_dtype, device_id)
        else:
            self.dev_in = ort.OrtValue.ortvalue_from_numpy(self.host_in)
            self.dev_out = ort.OrtValue.ortvalue_from_numpy(self.host_out)
        self.binding.bind_ortvalue_input(spec.input_name, self.dev_in)
        self.binding.bind_ortvalue_output(spec.output_name, self.dev_out)

    def run(self, session: Any, copy_input: bool, readback: Callable[[Any, np.ndarray], None]) -> np.ndarray:
        if self.gpu and copy_input:
            self.dev_in.update_inplace(self.host_in)
        session.run_with_iobinding(self.binding)
        if self.gpu:
            readback(self.dev_out, self.host_out)
        return self.host_out


class Worker:
    """One daemon thread that runs the calls given to it, in order (see the module docstring)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="usseg-gpu", daemon=True)
        self._thread.start()

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, box, done = job
            try:
                box.append((True, fn(*args)))
            except BaseException as exc:  # noqa: BLE001 - handed back to the calling thread
                box.append((False, exc))
            done.set()

    def call(self, fn: Callable, *args: Any) -> Any:
        if threading.get_ident() == self._thread.ident:
            return fn(*args)
        box: list = []
        done = threading.Event()
        self._jobs.put((fn, args, box, done))
        done.wait()
        ok, value = box[0]
        if ok:
            return value
        raise value

    def stop(self) -> None:
        self._jobs.put(None)
