"""FusedRecipe: the preprocessing recipe as CUDA kernels, from uint8 frames on the host to the
model's float32 input on the device.

    fused = FusedRecipe(recipe, frame_hw=(480, 640), input_hw=(480, 640))
    view = device_array_from_pointer(ortvalue.data_ptr(), (1, 1, 480, 640))   # ORT's bound input
    box = fused.run(grey_frame, view)      # one host-to-device copy of the frame, nothing back
    session.run_with_iobinding(binding)
    boxes = fused.run_batch(frames, view_of_n)   # N frames: [N, 1, 480, 640], the same launches

``run_batch`` copies the N frames into a pinned host buffer, copies that to the device on the
stream in one copy, launches each step's kernels (shrink, NLM, CLAHE, unsharp, min-max) once for
all N frames (the frame is a grid axis) and leaves the result in ``out``; ``run`` is its one-frame
case. The device buffers are allocated here and grow to the most frames a call has brought.
Frames must have the one size given at construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from types import SimpleNamespace

import numpy as np

from ..errors import UssegError
from ..preprocess import FrameError, Letterbox, Recipe
from . import tables


class FusedRecipeError(UssegError, ValueError):
    """A recipe, frame size or output buffer the fused kernels cannot take."""


class CudaUnavailableError(UssegError, RuntimeError):
    """No usable CUDA target: numba-cuda missing or broken, or no device."""


def unavailable_reason() -> str | None:
    """Why the fused kernels cannot run here (None when they can: a CUDA device, or Numba's
    simulator). The first call imports ``numba.cuda`` and, on a device, compiles and runs a test
    kernel on GPU 0 (a CUDA context, about a second); the answer is kept for the process."""
    from .device import target

    try:
        dev = target()
    except ImportError as exc:
        return f"Numba's CUDA target is not installed ({exc}); install usseg[gpu] (numba-cuda)"
    except Exception as exc:  # noqa: BLE001 - a numba-cuda built for another numpy or driver fails anyhow
        return f"numba.cuda failed to import: {type(exc).__name__}: {exc}"
    if dev.simulated:
        return None
    try:
        if not dev.cuda.is_available():
            return "no CUDA device or driver (numba.cuda.is_available() is False)"
    except Exception as exc:  # noqa: BLE001 - any driver failure means the same: not here
        return f"CUDA driver error: {type(exc).__name__}: {exc}"
    return _compile_reason()


@lru_cache(maxsize=1)
def _compile_reason() -> str | None:
    """Why a kernel cannot be compiled and run here, or None: an import can succeed where the first
    compile fails (a numba-cuda older than this NumPy, an NVVM missing), and callers choosing a
    preprocessing path must learn that before they pick this one."""
    from .device import target

    cuda = target().cuda
    try:
        @cuda.jit
        def count(out):
            i = cuda.grid(1)
            if i < out.size:
                out[i] = i

        out = cuda.device_array(SMOKE_BLOCKS, np.int32)
        count[SMOKE_BLOCKS, 1](out)
        got = out.copy_to_host()
    except Exception as exc:  # noqa: BLE001 - compiler, linker or driver: any of them means not here
        return f"numba.cuda cannot compile and run a kernel here: {type(exc).__name__}: {exc}"
    if got.tolist() != list(range(SMOKE_BLOCKS)):
        return f"numba.cuda ran a test kernel that returned {got.tolist()[:8]}... instead of 0, 1, 2..."
    return None


SMOKE_BLOCKS = 128  # the fewest blocks numba-cuda launches without a low-occupancy warning


class FusedRecipe:
    """The recipe's kernels for ``frame_hw`` frames into an ``input_hw`` model input.

    Args:
        recipe: the model's preprocessing recipe (``supports(recipe)`` must be None).
        frame_hw: the one (height, width) of the uint8 grey frames ``run`` and ``run_batch`` take.
        input_hw: the model input's (height, width); the frame is letterboxed into it.
        stream: a Numba CUDA stream to run on (default: one of its own).

    Raises:
        FusedRecipeError: the recipe or the sizes are not supported (the message says why).
        CudaUnavailableError: no CUDA target (see ``unavailable_reason``).
    """

    def __init__(self, recipe: Recipe, frame_hw: tuple[int, int], input_hw: tuple[int, int], stream=None) -> None:
        reason = self.supports(recipe, frame_hw, input_hw)
        if reason:
            raise FusedRecipeError(reason)
        missing = unavailable_reason()
        if missing:
            raise CudaUnavailableError(missing)
        from .device import target

        self._cuda = cuda = target().cuda
        self.recipe = recipe
        self.frame_hw = (int(frame_hw[0]), int(frame_hw[1]))
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.letterbox = Letterbox.fit(*self.frame_hw, *self.input_hw)
        self.stream = stream if stream is not None else cuda.stream()
        self._plan = tables.ResizePlan.of(self.letterbox)
        self._allocate()

    # -- set-up ---------------------------------------------------------------------------------
    @staticmethod
    def supports(recipe: Recipe, frame_hw: tuple[int, int] | None = None,
                 input_hw: tuple[int, int] | None = None) -> str | None:
        """Why the fused kernels cannot run ``recipe`` (for these sizes, when given), or None."""
        reason = tables.recipe_reason(recipe)
        if reason is None and frame_hw is not None and input_hw is not None:
            reason = tables.size_reason(recipe, frame_hw, input_hw)
        return reason

    def _allocate(self) -> None:
        """The tables, made once, and the buffers of one frame (``_grow`` widens them for more)."""
        cuda, r, box = self._cuda, self.recipe, self.letterbox
        h, w = box.new_h, box.new_w
        self._copied = cuda.event()
        self._copied.record(self.stream)
        self._reciprocal = cuda.to_device(tables.reciprocals())
        if self._plan.kind == "taps":
            rows, row_w = tables.area_axis(box.src_h, h)
            cols, col_w = tables.area_axis(box.src_w, w)
            self._area = [cuda.to_device(a) for a in (rows, row_w, cols, col_w)]
        if r.denoise == "nlm":
            table, self._nlm_shift = tables.nlm_weights(r.nlm_h, r.nlm_template, r.nlm_search)
            self._nlm_table = cuda.to_device(table)
        if r.clahe:
            self._clahe = tables.ClaheTables.of(h, w, r.clahe_tile, r.clahe_clip)
            self._clahe_dev = [cuda.to_device(a) for a in (self._clahe.rows, self._clahe.row_w,
                                                           self._clahe.cols, self._clahe.col_w)]
        if r.unsharp:
            self._taps = cuda.to_device(tables.gaussian_taps(r.unsharp_sigma))
        self._grow(1)
        self._last = 0  # index in the content buffers of the last call's result
        self._last_frames = 0  # how many frames the last call took
        self.stream.synchronize()

    def _grow(self, capacity: int) -> None:
        """Buffers for ``capacity`` frames at once: the pinned and device frames, then the content
        (the frame buffer itself when no shrink is needed, then two buffers that the steps write in
        turn), the min-max scratch and the CLAHE LUTs, all [capacity, ...]; a call of fewer frames
        uses their first rows (``_batch``)."""
        cuda, r, box = self._cuda, self.recipe, self.letterbox
        h, w = box.new_h, box.new_w
        self._pinned = cuda.pinned_array((capacity,) + self.frame_hw, np.uint8)
        self._frame = cuda.device_array((capacity,) + self.frame_hw, np.uint8)
        first = self._frame if self._plan.kind == "copy" else cuda.device_array((capacity, h, w), np.uint8)
        self._images = [first] + [cuda.device_array((capacity, h, w), np.uint8) for _ in range(2)]
        self._stats = cuda.device_array((capacity, 2), np.int32)
        if r.clahe:
            self._luts = cuda.device_array((capacity, r.clahe_tile * r.clahe_tile, 256), np.uint8)
        self._capacity, self._batches = capacity, {}

    def _batch(self, n: int) -> SimpleNamespace:
        """The buffers' first ``n`` rows, as views made once per ``n``; the buffers grow (after the
        device finishes what it was doing with them) when ``n`` is more than they hold."""
        if n > self._capacity:
            self._cuda.synchronize()
            self._grow(n)
        views = self._batches.get(n)
        if views is None:
            h, w = self.letterbox.new_h, self.letterbox.new_w
            images = [img[:n] for img in self._images]
            views = self._batches[n] = SimpleNamespace(
                pinned=self._pinned[:n], frame=self._frame[:n], images=images,
                flat=[img.reshape(n, h * w) for img in images], stats=self._stats[:n],
                luts=self._luts[:n] if self.recipe.clahe else None)
        return views

    # -- per call -------------------------------------------------------------------------------
    def run(self, frame: np.ndarray, out, stream=None, synchronize: bool = True) -> Letterbox:
        """Preprocess one uint8 grey ``frame`` into ``out`` (float32 [1, 1, H, W] or [H, W] on the
        device: a Numba device array or any object with ``__cuda_array_interface__``): ``run_batch``
        of one frame. Returns the letterbox."""
        return self.run_batch([frame], out, stream, synchronize)[0]

    def run_batch(self, frames: Sequence[np.ndarray], out, stream=None, synchronize: bool = True) -> list[Letterbox]:
        """Preprocess N uint8 grey ``frames`` (a sequence of [h, w] arrays or one [N, h, w] array)
        into ``out`` (float32 [N, 1, H, W] or [N, H, W] on the device; [H, W] too for one frame):
        one host-to-device copy of the N frames, then each step's kernels launched once for all N.

        Runs on ``stream`` (default: this object's); with ``synchronize`` it returns once ``out`` is
        written, else the caller orders later work on the same stream. Returns each frame's
        letterbox (the same for all: the frames have one size).
        """
        stream = stream if stream is not None else self.stream
        n = len(frames)
        if n == 0:
            raise FusedRecipeError("no frames: run_batch takes one or more")
        target = self._output_view(out, n)
        for i, frame in enumerate(frames):
            if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.shape != self.frame_hw:
                got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
                which = f"frame {i} of {n}" if n > 1 else "frame"
                raise FrameError(f"{which} {got}: the fused preprocessing takes uint8 grey frames of "
                                 f"{self.frame_hw[0]}x{self.frame_hw[1]} only")
        views = self._batch(n)
        self._copied.synchronize()  # the previous call's copy has left the pinned buffer
        for i, frame in enumerate(frames):
            np.copyto(views.pinned[i], frame)
        views.frame.copy_to_device(views.pinned, stream=stream)
        self._copied.record(stream)
        self._enhance(views, stream)
        self._last_frames = n
        from . import minmax

        box = self.letterbox
        minmax.launch(views.images[self._last], views.flat[self._last], views.stats, self._reciprocal,
                      target, box.top, box.left, stream)
        if synchronize:
            stream.synchronize()
        return [box] * n

    def _enhance(self, views: SimpleNamespace, stream) -> None:
        """The recipe's 8-bit steps on all the call's frames, each from one content buffer into
        the next."""
        from . import clahe, nlm, resize, unsharp

        r, plan, img = self.recipe, self._plan, views.images
        if plan.kind == "block":
            resize.launch_block(views.frame, img[0], plan.fy, plan.fx, plan.half_up, stream)
        elif plan.kind == "taps":
            resize.launch_taps(views.frame, img[0], *self._area, stream)
        k = 0  # img[0] holds the content now; each step writes the next buffer of img[1], img[2]
        if r.denoise == "nlm":
            nlm.launch(img[k], img[k % 2 + 1], self._nlm_table, r.nlm_template, r.nlm_search, self._nlm_shift, stream)
            k = k % 2 + 1
        if r.clahe:
            clahe.launch(img[k], img[k % 2 + 1], views.luts, self._clahe, *self._clahe_dev, stream)
            k = k % 2 + 1
        if r.unsharp:
            unsharp.launch(img[k], img[k % 2 + 1], self._taps, r.unsharp_amount, stream)
            k = k % 2 + 1
        self._last = k

    def _output_view(self, out, n: int):
        """``out`` as an [n, H, W] Numba device array, after checking its shape and dtype."""
        cuda, (h, w) = self._cuda, self.input_hw
        array = out
        if not isinstance(out, type(self._frame)):
            if not hasattr(out, "__cuda_array_interface__"):
                raise FusedRecipeError(f"output {type(out).__name__}: expected a device array "
                                       f"(an object with __cuda_array_interface__)")
            array = cuda.as_cuda_array(out)
        shape, dtype = tuple(array.shape), np.dtype(array.dtype)
        if dtype != np.float32 or shape not in ((n, 1, h, w), (n, h, w)) + (((h, w),) if n == 1 else ()):
            raise FusedRecipeError(f"output {dtype} {list(shape)}: expected float32 [{n}, 1, {h}, {w}] "
                                   f"(the model input of {n} frame{'s' if n > 1 else ''})")
        if not array.is_c_contiguous():
            raise FusedRecipeError("output: the model input buffer must be C-contiguous")
        return array if shape == (n, h, w) else array.reshape(n, h, w)

    # -- for checks -----------------------------------------------------------------------------
    def enhanced(self, index: int = 0) -> np.ndarray:
        """Frame ``index`` of the last call: its 8-bit content after the recipe, before min-max
        (copied to the host)."""
        if not 0 <= index < self._last_frames:
            raise IndexError(f"frame {index}: the last call took {self._last_frames} frame(s)")
        self._cuda.synchronize()  # whichever stream the frames ran on
        return self._images[self._last][index].copy_to_host()

    def input_array(self, frames: int = 1):
        """A device array shaped like the model input of ``frames`` frames ([N, 1, H, W] float32),
        for callers that bring no buffer of their own."""
        return self._cuda.device_array((frames, 1) + self.input_hw, np.float32)
