"""TritonSegmenter: the Segmenter's four stages with a Triton Inference Server as the engine.

    seg = TritonSegmenter("localhost:8000", model_name="usseg")
    result = seg(frame)          # same Result as Segmenter(frame): labels, masks, lines, box, timings

Only the graph runs on the server (:class:`TritonEngine`). The preparer, decoder and finisher are
the local Segmenter's (usseg.runtime.prepare, usseg.runtime.decode, usseg.runtime.finish), composed
the same way (usseg.runtime.segmenter.FramePipeline), so both give the same labels and geometry. The
contract (classes, input size, recipe) is read from the served model's config parameter
``usseg.contract``, which ``usseg-export --triton`` writes, and the served tensors are checked
against it with the rules of a local model file (usseg.runtime.model_io).

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
from .model_io import GraphMismatchError, ModelIO, check_graph_io, triton_tensors
from .prepare import HostPreparer
from .segmenter import FramePipeline

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


def check_config(config: dict, contract: Contract, where: str) -> ModelIO:
    """The served tensors, checked against the contract with the same rules as a local model file
    (usseg.runtime.model_io): names, ranks, dims, class count and data types."""
    try:
        return check_graph_io(*triton_tensors(config, where), contract, where)
    except GraphMismatchError as exc:
        raise TritonError(str(exc)) from None


class RequestBuffers:
    """The host input of one request, which the (host) preparer writes."""

    def __init__(self, io: ModelIO) -> None:
        self.host_in = np.zeros(io.shapes(1)[0], io.input.dtype)


class TritonEngine:
    """The graph run by a Triton server: one HTTP request per frame (the server's dynamic batching
    groups the requests of many clients)."""

    batches = False

    def __init__(self, client: Any, model_name: str, io: ModelIO, where: str) -> None:
        self.client, self.model_name, self.io, self.where = client, model_name, io, where
        self._buffers = RequestBuffers(io)

    def buffers(self, n: int) -> RequestBuffers:
        return self._buffers

    def run(self, buffers: RequestBuffers, model_input: Any) -> np.ndarray:
        """Send the prepared input; returns the output [1, ...] as the server gives it."""
        import tritonclient.http as httpclient
        from tritonclient.utils import InferenceServerException

        request = httpclient.InferInput(self.io.input.name, list(buffers.host_in.shape), "FP32")
        request.set_data_from_numpy(buffers.host_in, binary_data=True)
        wanted = httpclient.InferRequestedOutput(self.io.output.name, binary_data=True)
        try:
            reply = self.client.infer(self.model_name, [request], outputs=[wanted])
        except (InferenceServerException, OSError) as exc:
            raise TritonError(f"{self.where}: inference failed ({exc})") from None
        output = reply.as_numpy(self.io.output.name)
        if output is None:
            raise TritonError(f"{self.where}: the reply has no output {self.io.output.name!r}")
        shape = self.io.shapes(1)[1]
        if output.shape != shape:
            raise TritonError(f"{self.where}: the reply's {self.io.output.name!r} is {list(output.shape)}, "
                              f"the model config says {list(shape)}")
        return output

    def close(self) -> None:
        self.client.close()


class TritonSegmenter(FramePipeline):
    """Same ``__call__(frame) -> Result`` (and ``batch``, ``stream``) as Segmenter, with the graph
    run by a Triton server.

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
        self.model_name = model_name
        self.path = f"{'https' if ssl else 'http'}://{address}/v2/models/{model_name}"  # where the model lives
        self.provider = f"triton {address}"
        client = _http_client(address, ssl, timeout_s)
        config = _fetch_config(client, model_name, self.path)
        contract = contract_from_config(config, self.path)
        io = check_config(config, contract, self.path)
        if contract.frame is not None:
            raise TritonError(f"{self.path}: models with in-graph preprocessing are not served through Triton yet")
        self._compose(contract, HostPreparer(contract), TritonEngine(client, model_name, io, self.path),
                      spacing_mm=spacing_mm)
        log.info("usseg runtime: %s on %s", model_name, self.provider)

    def __enter__(self) -> "TritonSegmenter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        spec = self.contract.input
        return (f"TritonSegmenter({self.path!r}, input={spec.height}x{spec.width}, "
                f"recipe={self.contract.recipe.name!r}, classes={list(self.contract.classes)})")


def _fetch_config(client: Any, model_name: str, where: str) -> dict:
    from tritonclient.utils import InferenceServerException

    try:
        if not client.is_model_ready(model_name):
            raise TritonError(f"{where}: the model is not ready on the server (not loaded, or still loading)")
        return client.get_model_config(model_name)
    except (InferenceServerException, OSError) as exc:
        raise TritonError(f"{where}: cannot reach the Triton server ({exc})") from None
