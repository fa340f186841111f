"""cv2.fastNlMeansDenoising on 8-bit grey, tiled through shared memory, in int32 arithmetic.

OpenCV's arithmetic (FastNlMeansDenoisingInvoker): the image is extended by reflect-101 by
``search // 2 + template // 2``; for each pixel p and each offset q of the search window, the sum
of squared differences D(p, q) of the two ``template`` x ``template`` patches at p and p + q,
shifted right so that it indexes a table of fixed-point weights (``tables.nlm_weights``); the
estimate is sum(weight x pixel) and sum(weight), both int32 by the choice of OpenCV's fixed-point
scale, and the result their rounded quotient in unsigned arithmetic.

Two things make it cheap. A weight serves both pixels of a pair: D(p, q) = D(p + q, -q), so the
block walks half of the search window (the offsets after 0 in row-major order), and for each
offset q computes D_q(x) = D(x, q) once over the tile and the tile shifted by -q; a tile pixel p
takes w(D_q(p)) with the pixel at p + q and w(D_q(p - q)) with the pixel at p - q. And D_q is a
box sum of the squared differences (I(x) - I(x + q))^2, computed separably with running sums: one
new squared difference per cell for the rows, one new row sum per cell for the columns, instead
of ``template``^2. Per offset pair the block makes three passes over shared memory, two barriers
apart: the row sums, the column sums turned into weights, and each tile pixel's two terms in
registers. Integer sums are exact in any order, so the result is OpenCV's to the grey level.
One launch serves the N frames of a batch ([N, H, W] arrays): the grid's z is the frame.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .device import target
from .tables import NLM_THREADS as THREADS
from .tables import NLM_TILE_H as TILE_H
from .tables import NLM_TILE_W as TILE_W
from .tables import nlm_layout

# numba.cuda, bound when the first kernel is built; a module global because the simulator
# swaps the module global of that name for its own while a kernel runs
cuda = None

PIXELS = TILE_W * TILE_H // THREADS  # tile pixels per thread in the accumulating pass


@lru_cache(maxsize=8)
def nlm_kernel(template: int, search: int, table_len: int, shift: int):
    """The NLM kernel for one window geometry (its sizes are compile-time constants)."""
    dev = target()
    global cuda
    cuda, reflect101 = dev.cuda, dev.reflect101
    t, s = template // 2, search // 2
    layout = nlm_layout(template, search, TILE_H, TILE_W)
    border, win_w, win_size = layout.border, layout.win_w, layout.win_size
    row_w, rows_size, weight_w, weights_size = layout.row_w, layout.rows_size, layout.weight_w, layout.weights_size
    pairs = (search * search - 1) // 2

    @dev.device
    def squared(win, a, b):
        d = np.int32(win[a] - win[b])
        return np.int32(d * d)

    @cuda.jit
    def nlm(src, dst, table):
        height, width = src.shape[1], src.shape[2]
        f = cuda.blockIdx.z
        win = cuda.shared.array(win_size, np.int32)        # the tile's window, flat, row pitch win_w
        row_sums = cuda.shared.array(rows_size, np.int32)  # per offset: patch-row sums, pitch row_w
        weight = cuda.shared.array(weights_size, np.int32)  # per offset: w(D_q), pitch weight_w
        weights = cuda.shared.array(table_len, np.int32)
        lane = cuda.threadIdx.x
        x0, y0 = cuda.blockIdx.x * TILE_W, cuda.blockIdx.y * TILE_H
        tile_w, tile_h = min(TILE_W, width - x0), min(TILE_H, height - y0)  # the tile's pixels in the image
        for i in range(lane, win_size, THREADS):
            wy = i // win_w
            wx = i - wy * win_w
            win[i] = np.int32(src[f, reflect101(y0 + wy - border, height), reflect101(x0 + wx - border, width)])
        for i in range(lane, table_len, THREADS):
            weights[i] = table[i]
        cuda.syncthreads()

        # offset 0: distance 0, weight table[0], this pixel's own value
        est = cuda.local.array(PIXELS, np.int32)
        total = cuda.local.array(PIXELS, np.int32)
        for k in range(PIXELS):
            p = lane + k * THREADS
            py, px = p // TILE_W, p % TILE_W
            est[k] = weights[0] * win[(py + border) * win_w + px + border]
            total[k] = weights[0]
        ring = cuda.local.array(template, np.int32)

        for pair in range(pairs):
            if pair < s:
                dy, dx = 0, pair + 1
            else:
                dy, dx = 1 + (pair - s) // search, (pair - s) % search - s
            # D_q is needed on the tile and on the tile moved by -q: rows [-dy, tile_h), columns
            # [c0, c0 + cols) in tile coordinates
            c0 = min(0, -dx)
            rows, cols = tile_h + dy, tile_w + abs(dx)
            shift_q = dy * win_w + dx  # the offset q in the window, flat

            # pass 1: row sums of the squared differences, rows [-dy - t, tile_h + t), running along
            # each row segment with the last template - 1 squared differences in ``ring``
            lines = rows + 2 * t
            segments = max(1, min(THREADS // lines, cols))
            seg_w = (cols + segments - 1) // segments
            for item in range(lane, lines * segments, THREADS):
                r = item % lines
                first = (item // lines) * seg_w
                count = min(seg_w, cols - first)
                if count <= 0:
                    continue
                at = (r - dy - t + border) * win_w + c0 + first - t + border  # window index of the first term
                acc = np.int32(0)
                for b in range(template - 1):
                    e = squared(win, np.uint32(at + b), np.uint32(at + b + shift_q))
                    ring[b] = e
                    acc += e
                out = r * row_w + first
                for base in range(0, count, template):
                    for k in range(template):
                        j = base + k
                        if j < count:
                            e = squared(win, np.uint32(at + j + template - 1), np.uint32(at + j + template - 1 + shift_q))
                            ring[(k + template - 1) % template] = e
                            acc += e
                            row_sums[out + j] = acc
                            acc -= ring[k]
            cuda.syncthreads()

            # pass 2: column sums of the row sums (= D_q), running down each column segment,
            # turned into weights
            segments = max(1, min(THREADS // cols, rows))
            seg_h = (rows + segments - 1) // segments
            for item in range(lane, cols * segments, THREADS):
                c = item % cols
                first = (item // cols) * seg_h
                count = min(seg_h, rows - first)
                if count <= 0:
                    continue
                at = first * row_w + c
                acc = np.int32(0)
                for a in range(template - 1):
                    v = row_sums[at + a * row_w]
                    ring[a] = v
                    acc += v
                out = first * weight_w + c
                for base in range(0, count, template):
                    for k in range(template):
                        j = base + k
                        if j < count:
                            v = row_sums[at + (j + template - 1) * row_w]
                            ring[(k + template - 1) % template] = v
                            acc += v
                            index = acc >> shift
                            weight[out + j * weight_w] = weights[index] if index < table_len else 0
                            acc -= ring[k]
            cuda.syncthreads()

            # pass 3: each tile pixel p takes w(D_q(p)) with I(p + q) and w(D_q(p - q)) with I(p - q)
            for k in range(PIXELS):
                p = lane + k * THREADS
                py, px = p // TILE_W, p % TILE_W
                if py < tile_h and px < tile_w:
                    centre = (py + border) * win_w + px + border
                    w_ahead = weight[(py + dy) * weight_w + px - c0]
                    w_behind = weight[py * weight_w + px - dx - c0]
                    est[k] += w_ahead * win[centre + shift_q] + w_behind * win[centre - shift_q]
                    total[k] += w_ahead + w_behind

        for k in range(PIXELS):
            p = lane + k * THREADS
            py, px = p // TILE_W, p % TILE_W
            if py < tile_h and px < tile_w:
                # OpenCV's rounded quotient, in unsigned 32-bit arithmetic as OpenCV's
                w = np.uint32(total[k])
                dst[f, y0 + py, x0 + px] = np.uint8(np.uint32(np.uint32(est[k]) + (w >> np.uint32(1))) // w)

    return nlm


def launch(src, dst, table, template: int, search: int, shift: int, stream) -> None:
    """Denoise the frames ``src`` (uint8 [N, H, W]) into ``dst`` with the weights ``table`` (int32
    device array), one launch."""
    kernel = nlm_kernel(template, search, int(table.shape[0]), shift)
    frames, height, width = src.shape
    grid = ((width + TILE_W - 1) // TILE_W, (height + TILE_H - 1) // TILE_H, frames)
    kernel[grid, THREADS, stream](src, dst, table)


def device_times(frame: np.ndarray, h: float, template: int, search: int, rounds: int) -> tuple[list[float], np.ndarray]:
    """The kernel alone on one uint8 frame: milliseconds per launch from CUDA events (device time,
    no copies), and its output, for the GPU check."""
    from .tables import nlm_weights

    dev = target()
    table, shift = nlm_weights(h, template, search)
    src, table_dev = dev.cuda.to_device(np.ascontiguousarray(frame)[None]), dev.cuda.to_device(table)
    dst = dev.cuda.device_array_like(src)
    stream = dev.cuda.stream()
    launch(src, dst, table_dev, template, search, shift, stream)  # compiles
    stream.synchronize()
    times = []
    for _ in range(rounds):
        start, end = dev.cuda.event(), dev.cuda.event()
        start.record(stream)
        launch(src, dst, table_dev, template, search, shift, stream)
        end.record(stream)
        end.synchronize()
        times.append(dev.cuda.event_elapsed_time(start, end))
    return times, dst.copy_to_host()[0]
