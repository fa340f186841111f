"""The CUDA target and the few device functions every kernel shares, built on first use.

``target()`` imports ``numba.cuda`` (the ``numba-cuda`` package); nothing in this package does so
at import time, so every module here imports on machines without numba-cuda or a GPU. Under
Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) the kernels run as Python on the CPU and the
rounding helpers use numpy float32, which rounds as the device does.

OpenCV's results depend on the order and rounding of its float32 operations, and NVVM contracts a
multiply followed by an add into one fused multiply-add unless told otherwise, so the kernels spell
each float operation that matters with an explicitly rounded intrinsic. Casts are numpy scalar
types (``np.int32(x)``): Numba compiles them to plain conversions, and the simulator runs them fast.
"""

from __future__ import annotations

from functools import lru_cache
from types import SimpleNamespace

import numpy as np


def restore_numpy_aliases() -> None:
    """numba-cuda (0.30.4 and earlier) registers an overload of ``np.row_stack`` when it compiles
    its first kernel, and NumPy 2.5 removed that alias of ``np.vstack``: every compile then fails
    with AttributeError. Putting the alias back (the very function it named) is all it needs."""
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack


@lru_cache(maxsize=1)
def target() -> SimpleNamespace:
    """``numba.cuda`` as ``.cuda``, ``.simulated``, the decorator ``.device`` for device functions,
    and the shared device functions."""
    restore_numpy_aliases()
    from numba import cuda

    try:  # numba-cuda keeps its own configuration; Numba's built-in target reads Numba's
        from numba.cuda.core import config
    except ImportError:  # pragma: no cover - depends on the installed CUDA target
        from numba.core import config
    simulated = bool(config.ENABLE_CUDASIM)

    if simulated:
        def mul_rn(a, b):
            return np.float32(np.float32(a) * np.float32(b))

        def add_rn(a, b):
            return np.float32(np.float32(a) + np.float32(b))

        def fma_rn(a, b, c):
            # float64 holds a * b exactly for an 8-bit a; then one rounding to float32
            return np.float32(np.float64(a) * np.float64(b) + np.float64(c))

        def rint(x):
            return np.float32(np.rint(np.float32(x)))
    else:
        from numba.cuda import libdevice

        def mul_rn(a, b):
            return libdevice.fmul_rn(a, b)

        def add_rn(a, b):
            return libdevice.fadd_rn(a, b)

        def fma_rn(a, b, c):
            return libdevice.fmaf(a, b, c)

        def rint(x):  # round half to even, as OpenCV's cvRound
            return libdevice.rintf(x)

    # Device functions: compiled for the device; plain Python under the simulator, which would
    # otherwise swap module globals on every call
    device = (lambda f: f) if simulated else cuda.jit(device=True)
    mul_rn, add_rn, fma_rn, rint = (device(f) for f in (mul_rn, add_rn, fma_rn, rint))

    @device
    def reflect101(i, n):
        """OpenCV's BORDER_REFLECT_101 index (for a border narrower than the image), kept in range
        for the halo of partial tiles, whose values are never used."""
        if i < 0:
            i = -i
        if i >= n:
            i = 2 * n - 2 - i
        return min(max(i, 0), n - 1)

    @device
    def to_u8(x):
        """A float32 result as OpenCV's saturate_cast<uchar>: rounded half to even, clipped."""
        return np.uint8(min(max(np.int32(rint(x)), 0), 255))

    return SimpleNamespace(cuda=cuda, simulated=simulated, device=device, mul_rn=mul_rn, add_rn=add_rn, fma_rn=fma_rn,
                           rint=rint, reflect101=reflect101, to_u8=to_u8)


def grid_frames(frames: int, height: int, width: int, block: tuple[int, int]) -> tuple[int, int, int]:
    """Blocks along x (columns) and y (rows) that cover a height x width image, and along z one
    per frame: a kernel reads its frame from ``cuda.blockIdx.z`` (``cuda.grid(3)``'s third value,
    the blocks being flat along z)."""
    return (width + block[0] - 1) // block[0], (height + block[1] - 1) // block[1], frames


def device_array_from_pointer(pointer: int, shape: tuple[int, ...], dtype=np.float32):
    """A Numba device array over device memory that another library owns, e.g. an ONNX Runtime
    ``OrtValue`` on CUDA (``ortvalue.data_ptr()``): C-contiguous, no copy, no ownership taken, so
    the caller keeps the owner alive while the array is in use."""
    if isinstance(pointer, bool) or not isinstance(pointer, int) or pointer <= 0:
        raise ValueError(f"device pointer {pointer!r}: must be a positive integer address")
    if not shape or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(f"shape {shape!r}: must be a tuple of positive integers")
    dtype = np.dtype(dtype)
    dev = target()
    if dev.simulated:
        raise RuntimeError("a raw device pointer needs a CUDA device; Numba's simulator has none")
    desc = {"shape": tuple(shape), "typestr": dtype.str, "data": (pointer, False), "version": 3, "strides": None}
    return dev.cuda.from_cuda_array_interface(desc, owner=None, sync=False)
