"""usseg.runtime.cuda: the preprocessing recipe as fused CUDA kernels (Numba's CUDA target).

The fast GPU path: the frame crosses the bus once (uint8), the recipe runs as a handful of
kernels that reproduce OpenCV's arithmetic in int32 / float32, and the result is written straight
into the network's bound input buffer (the Segmenter's ``fused-cuda`` preparer, runtime/prepare.py).
The recipe as ONNX operators (runtime/recipe/graph.py, ``usseg export --graph-preprocess``) stays
the portable path.

Nothing here imports ``numba.cuda`` until a ``FusedRecipe`` is built or ``unavailable_reason()``
is asked, so this package imports on machines without numba-cuda or a GPU.

    from usseg.runtime.cuda import FusedRecipe, device_array_from_pointer, unavailable_reason
"""

from .fused import CudaUnavailableError, FusedRecipe, FusedRecipeError, unavailable_reason


def device_array_from_pointer(pointer: int, shape: tuple[int, ...], dtype="float32"):
    """A Numba device array over another library's device memory (see ``device.device_array_from_pointer``)."""
    missing = unavailable_reason()
    if missing:
        raise CudaUnavailableError(missing)
    from .device import device_array_from_pointer as wrap

    try:
        return wrap(pointer, shape, dtype)
    except (ValueError, RuntimeError) as exc:
        raise FusedRecipeError(str(exc)) from None


__all__ = ["CudaUnavailableError", "FusedRecipe", "FusedRecipeError", "device_array_from_pointer",
           "unavailable_reason"]
