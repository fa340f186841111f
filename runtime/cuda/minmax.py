"""Min-max to float32 [0, 1] and the letterbox padding, written straight into the model input.

The host scales with ``float32(v - lo) * float32(1 / span)`` (``preprocess.minmax``); the kernel
multiplies by the same float32 reciprocal, read from a 256-entry table (``tables.reciprocals``,
0 for a flat image), so the model input is the host's to the bit. The range is reduced on the
device by one block (a 480x640 image is 300 KB, microseconds for one multiprocessor), so nothing
but the frame crosses the bus. Each of the two launches serves the N frames of a batch: one
reducing block per frame, and the grid's z the frame when writing.
"""

from __future__ import annotations

from functools import lru_cache
from types import SimpleNamespace

import numpy as np

from .device import grid_frames, target

# numba.cuda, bound when the first kernel is built; a module global because the simulator
# swaps the module global of that name for its own while a kernel runs
cuda = None

REDUCE_THREADS = 256
BLOCK = (32, 8)


@lru_cache(maxsize=1)
def kernels() -> SimpleNamespace:
    global cuda
    cuda = target().cuda

    @cuda.jit
    def reduce_range(flat, stats):
        """stats[f, 0], stats[f, 1] = min and max of the uint8 vector ``flat[f]``, f the block."""
        f = cuda.blockIdx.x
        low = cuda.shared.array(REDUCE_THREADS, np.int32)
        high = cuda.shared.array(REDUCE_THREADS, np.int32)
        tid = cuda.threadIdx.x
        lo, hi = np.int32(255), np.int32(0)
        for i in range(tid, flat.shape[1], REDUCE_THREADS):
            v = np.int32(flat[f, i])
            lo, hi = min(lo, v), max(hi, v)
        low[tid], high[tid] = lo, hi
        cuda.syncthreads()
        half = REDUCE_THREADS // 2
        while half > 0:
            if tid < half:
                low[tid] = min(low[tid], low[tid + half])
                high[tid] = max(high[tid], high[tid + half])
            cuda.syncthreads()
            half //= 2
        if tid == 0:
            stats[f, 0], stats[f, 1] = low[0], high[0]

    @cuda.jit
    def write_input(content, stats, reciprocal, out, top, left):
        """out[f, y, x] = (content[f] - its min) / its span inside the letterbox, 0 in the padding."""
        x, y, f = cuda.grid(3)
        if y < out.shape[1] and x < out.shape[2]:
            cy, cx = y - top, x - left
            value = np.float32(0)
            if 0 <= cy < content.shape[1] and 0 <= cx < content.shape[2]:
                lo = stats[f, 0]
                value = np.float32(np.int32(content[f, cy, cx]) - lo) * reciprocal[stats[f, 1] - lo]
            out[f, y, x] = value

    return SimpleNamespace(reduce_range=reduce_range, write_input=write_input)


def launch(content, flat, stats, reciprocal, out, top: int, left: int, stream) -> None:
    """Scale the frames ``content`` (uint8 [N, h, w]; ``flat`` the same memory as [N, h * w]) into
    ``out`` (float32 [N, H, W]) at (top, left); ``stats`` is an int32 [N, 2] device scratch buffer."""
    k = kernels()
    k.reduce_range[content.shape[0], REDUCE_THREADS, stream](flat, stats)
    k.write_input[grid_frames(*out.shape, BLOCK), BLOCK, stream](content, stats, reciprocal, out, top, left)
