"""TritonSegmenter: the Segmenter's pipeline with inference on a Triton Inference Server.

    seg = TritonSegmenter("localhost:8000", model_name="usseg")
    result = seg(frame)          # same Result as Segmenter(frame): labels, masks, lines, box, timings

Only the graph runs on the server. Preprocessing (usseg.runtime.preprocess.preprocess) and
post-processing with the mapping back to the frame (usseg.runtime.segmenter.finish) run here, in
the same code as the local Segmenter, so both give the same labels and geometry. The contract
(classes, input size, recipe) is read from the served model's config parameter
``usseg.contract``, which ``usseg-export --triton`` writes.

Needs the optional extra ``pip install 'usseg[triton]'`` (tritonclient, HTTP). usseg's tests
run this client against a small fake of Triton's HTTP (KServe v2) endpoints, not against a real
tritonserver.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from .contract import METADATA_KEY, Contract, ContractError
from .errors import UssegError
from .model_io import GraphMismatchError, check_graph_io, triton_tensors
from .pipeline import FramePipeline, labels_from_output

log = logging.getLogger("usseg.runtime")


class TritonError(UssegError, RuntimeError):
    """The server cannot be reached, does not serve the model, or serves one without a usseg contract."""


def split_url(url: str) -> tuple[str, bool]:
    """'http://host:port', 'https://host:port' or 'host:port' -> ('host:port', ssl)."""
    if "://" not in url:
        return url.rstrip("/"), False
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"Triton URL {url!r}: scheme {parts.scheme!r} is not supported; use http:// or https://")
    if not parts.netloc:
        raise ValueError(f"Triton URL {url!r}: no host:port")
    return parts.netloc + parts.path.rstrip("/"), parts.scheme == "https"


def _http_client(address: str, ssl: bool, timeout_s: float) -> Any:
    try:
        import tritonclient.http as httpclient
    except (ImportError, RuntimeError) as exc:  # tritonclient wraps a missing geventhttpclient
        raise TritonError(f"the Triton client needs tritonclient[http]: pip install 'usseg[triton]' "
                          f"({str(exc).splitlines()[0]})") from None
    return httpclient.InferenceServerClient(address, ssl=ssl, connection_timeout=timeout_s,
                                            network_timeout=timeout_s)


def contract_from_config(config: dict, where: str) -> Contract:
    """The usseg contract from a model config as Triton's HTTP API returns it (JSON)."""
    param = config.get("parameters", {}).get(METADATA_KEY)
    if not isinstance(param, dict) or "string_value" not in param:
        raise TritonError(f"{where}: the model config has no parameter {METADATA_KEY!r}; "
                          f"export the repository with usseg-export --triton")
    try:
        return Contract.from_json(param["string_value"])
    except ContractError as exc:
        raise TritonError(f"{where}: {exc}") from None


def check_config(config: dict, contract: Contract, where: str) -> None:
    """Check that the served tensors are the contract's, with the same rules as a local model file
    (usseg.runtime.model_io): names, ranks, dims, class count and data types."""
    try:
        check_graph_io(*triton_tensors(config, where), contract, where)
    except GraphMismatchError as exc:
        raise TritonError(str(exc)) from None


class TritonSegmenter(FramePipeline):
    """Same ``__call__(frame) -> Result`` as Segmenter, with the graph run by a Triton server.

    Args:
        url: ``host:port`` of Triton's HTTP endpoint, optionally with ``http://`` or ``https://``.
        model_name: the served model (the folder name in the model repository).
        spacing_mm: millimetres per pixel, for geometry in mm.
        timeout_s: connection and network timeout of each request.

    Raises:
        TritonError: the server is unreachable, the model is not ready, or its config carries no
            usseg contract or disagrees with it.
    """

    def __init__(self, url: str, model_name: str = "usseg", *, spacing_mm: float | None = None,
                 timeout_s: float = 30.0) -> None:
        if spacing_mm is not None and not spacing_mm > 0:
            raise ValueError(f"spacing_mm must be > 0, got {spacing_mm}")
        address, ssl = split_url(url)
        self.model_name, self.spacing_mm = model_name, spacing_mm
        self.path = f"{'https' if ssl else 'http'}://{address}/v2/models/{model_name}"  # where the model lives
        self.provider = f"triton {address}"
        self._client = _http_client(address, ssl, timeout_s)
        config = self._fetch_config()
        self.contract = contract_from_config(config, self.path)
        check_config(config, self.contract, self.path)
        if self.contract.frame is not None:
            raise TritonError(f"{self.path}: models with in-graph preprocessing are not served through Triton yet")
        spec = self.contract.input
        self._input = np.zeros((1, 1, spec.height, spec.width), np.float32)
        self._labels = np.zeros((spec.height, spec.width), np.uint8)
        if self.contract.postprocess.kind == "spine":
            from .postprocess import warmup as warm_post

            warm_post()  # compile the post-processing kernels before the first frame, as Segmenter does
        log.info("usseg runtime: %s on %s", model_name, self.provider)

    def _fetch_config(self) -> dict:
        from tritonclient.utils import InferenceServerException

        try:
            if not self._client.is_model_ready(self.model_name):
                raise TritonError(f"{self.path}: the model is not ready on the server (not loaded, or still loading)")
            return self._client.get_model_config(self.model_name)
        except (InferenceServerException, OSError) as exc:
            raise TritonError(f"{self.path}: cannot reach the Triton server ({exc})") from None

    def _infer(self) -> np.ndarray:
        """Send self._input; returns the [H, W] label map at model size (a reused buffer)."""
        import tritonclient.http as httpclient
        from tritonclient.utils import InferenceServerException

        c = self.contract
        request = httpclient.InferInput(c.input.name, list(self._input.shape), "FP32")
        request.set_data_from_numpy(self._input, binary_data=True)
        wanted = httpclient.InferRequestedOutput(c.output_name, binary_data=True)
        try:
            reply = self._client.infer(self.model_name, [request], outputs=[wanted])
        except (InferenceServerException, OSError) as exc:
            raise TritonError(f"{self.path}: inference failed ({exc})") from None
        output = reply.as_numpy(c.output_name)
        if output is None:
            raise TritonError(f"{self.path}: the reply has no output {c.output_name!r}")
        return labels_from_output(output[0], c, self._labels)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "TritonSegmenter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        spec = self.contract.input
        return (f"TritonSegmenter({self.path!r}, input={spec.height}x{spec.width}, "
                f"recipe={self.contract.recipe.name!r}, classes={list(self.contract.classes)})")
