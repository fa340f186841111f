"""FusedRecipe: the preprocessing recipe as CUDA kernels, from a uint8 frame on the host to the
model's float32 input on the device.

    fused = FusedRecipe(recipe, frame_hw=(480, 640), input_hw=(480, 640))
    view = device_array_from_pointer(ortvalue.data_ptr(), (1, 1, 480, 640))   # ORT's bound input
    box = fused.run(grey_frame, view)      # one host-to-device copy of the frame, nothing back
    session.run_with_iobinding(binding)

Every device buffer is allocated once, here; ``run`` copies the frame into a pinned host buffer,
copies that to the device on the stream, launches the kernels (shrink, NLM, CLAHE, unsharp,
min-max) and leaves the result in ``out``. Frames must have the one size given at construction.
"""

from __future__ import annotations

from functools import lru_cache

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
        frame_hw: the one (height, width) of the uint8 grey frames ``run`` takes.
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
        cuda, r, box = self._cuda, self.recipe, self.letterbox
        h, w = box.new_h, box.new_w
        self._pinned = cuda.pinned_array(self.frame_hw, np.uint8)
        self._frame = cuda.device_array(self.frame_hw, np.uint8)
        self._copied = cuda.event()
        self._copied.record(self.stream)
        # the content: the frame buffer itself when no shrink is needed, then two buffers that the
        # steps write in turn; each with a flat view for the min-max reduction
        first = self._frame if self._plan.kind == "copy" else cuda.device_array((h, w), np.uint8)
        self._images = [first] + [cuda.device_array((h, w), np.uint8) for _ in range(2)]
        self._flat = [img.reshape(h * w) for img in self._images]
        self._stats = cuda.device_array(2, np.int32)
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
            self._lut = cuda.device_array((r.clahe_tile * r.clahe_tile, 256), np.uint8)
        if r.unsharp:
            self._taps = cuda.to_device(tables.gaussian_taps(r.unsharp_sigma))
        self._last = 0  # index in self._images of the last frame's result
        self.stream.synchronize()

    # -- per frame ------------------------------------------------------------------------------
    def run(self, frame: np.ndarray, out, stream=None, synchronize: bool = True) -> Letterbox:
        """Preprocess one uint8 grey ``frame`` into ``out`` (float32 [1, 1, H, W] or [H, W] on the
        device: a Numba device array or any object with ``__cuda_array_interface__``).

        Runs on ``stream`` (default: this object's); with ``synchronize`` it returns once ``out`` is
        written, else the caller orders later work on the same stream. Returns the letterbox.
        """
        stream = stream if stream is not None else self.stream
        target = self._output_view(out)
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.shape != self.frame_hw:
            got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise FrameError(f"frame {got}: the fused preprocessing takes uint8 grey frames of "
                             f"{self.frame_hw[0]}x{self.frame_hw[1]} only")
        self._copied.synchronize()  # the previous frame's copy has left the pinned buffer
        np.copyto(self._pinned, frame)
        self._frame.copy_to_device(self._pinned, stream=stream)
        self._copied.record(stream)
        self._enhance(stream)
        from . import minmax

        box = self.letterbox
        minmax.launch(self._images[self._last], self._flat[self._last], self._stats, self._reciprocal,
                      target, box.top, box.left, stream)
        if synchronize:
            stream.synchronize()
        return box

    def _enhance(self, stream) -> None:
        """The recipe's 8-bit steps, each from one content buffer into the next."""
        from . import clahe, nlm, resize, unsharp

        r, plan, img = self.recipe, self._plan, self._images
        if plan.kind == "block":
            resize.launch_block(self._frame, img[0], plan.fy, plan.fx, plan.half_up, stream)
        elif plan.kind == "taps":
            resize.launch_taps(self._frame, img[0], *self._area, stream)
        k = 0  # img[0] holds the content now; each step writes the next buffer of img[1], img[2]
        if r.denoise == "nlm":
            nlm.launch(img[k], img[k % 2 + 1], self._nlm_table, r.nlm_template, r.nlm_search, self._nlm_shift, stream)
            k = k % 2 + 1
        if r.clahe:
            clahe.launch(img[k], img[k % 2 + 1], self._lut, self._clahe, *self._clahe_dev, stream)
            k = k % 2 + 1
        if r.unsharp:
            unsharp.launch(img[k], img[k % 2 + 1], self._taps, r.unsharp_amount, stream)
            k = k % 2 + 1
        self._last = k

    def _output_view(self, out):
        """``out`` as a 2-D Numba device array, after checking its shape and dtype."""
        cuda, (h, w) = self._cuda, self.input_hw
        array = out
        if not isinstance(out, type(self._frame)):
            if not hasattr(out, "__cuda_array_interface__"):
                raise FusedRecipeError(f"output {type(out).__name__}: expected a device array "
                                       f"(an object with __cuda_array_interface__)")
            array = cuda.as_cuda_array(out)
        shape, dtype = tuple(array.shape), np.dtype(array.dtype)
        if dtype != np.float32 or shape not in ((1, 1, h, w), (h, w)):
            raise FusedRecipeError(f"output {dtype} {list(shape)}: expected float32 [1, 1, {h}, {w}] "
                                   f"(the model input)")
        if not array.is_c_contiguous():
            raise FusedRecipeError("output: the model input buffer must be C-contiguous")
        return array.reshape(h, w) if len(shape) == 4 else array

    # -- for checks -----------------------------------------------------------------------------
    def enhanced(self) -> np.ndarray:
        """The last frame's 8-bit content after the recipe, before min-max (copied to the host)."""
        self._cuda.synchronize()  # whichever stream the frame ran on
        return self._images[self._last].copy_to_host()

    def input_array(self):
        """A device array shaped like the model input ([1, 1, H, W] float32), for callers that
        bring no buffer of their own."""
        return self._cuda.device_array((1, 1) + self.input_hw, np.float32)
