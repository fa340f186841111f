"""The live view: a stream's overlay, readouts and statistics on a local web page. Standard library.

    view = LiveView(host="127.0.0.1", port=0, info={"model": provenance(seg), ...}, stats=stats)
    for item in stream(...):
        overlay = draw_overlay(item.frame, item.result) if view.wants_frame() else None
        view.publish(item, overlay)
    view.close("end of source")

The pipeline hands over each frame's overlay and record in O(1) and never waits for a viewer:
a one-slot holder keeps only the newest. Each viewer's connection has its own thread, which waits
for a frame newer than the one it sent last and sends the newest (so a slow viewer skips frames;
the pipeline drops none for it). A frame is JPEG-encoded once, by the first viewer thread that
needs it, and only while someone is watching.

Routes: ``/`` the page; ``/stream.mjpg`` the overlay as MJPEG (multipart/x-mixed-replace; each
part carries ``X-Frame-Seq`` and ``X-Frame-Record``, the frame's readouts as one line of JSON,
each with the text the overlay shows);
``/frame.jpg`` the newest frame; ``/status.json`` statistics, the newest record and provenance.
Requests whose Host header names a domain other than localhost or the bound name are refused, so
a web page elsewhere cannot read the images through DNS rebinding.

On any address but loopback a token is required, as Jupyter does it: a random one (or ``--token``)
printed in the URL (``/?token=...``). The page's own requests then carry it in a cookie set by
that first request; a player can give it in the URL (``/stream.mjpg?token=...``) or as the header
``Authorization: token ...``. A request without it is refused (403).
"""

from __future__ import annotations

import collections
import hmac
import ipaddress
import json
import logging
import re
import secrets
import select
import socket
import threading
import time
import urllib.parse
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

import cv2
import numpy as np

from ..errors import UsageError

log = logging.getLogger("usseg.view")

BOUNDARY = "usseg-frame"
TOKEN = re.compile(r"[A-Za-z0-9_-]{8,200}")  # URL- and cookie-safe as it is
LOOPBACK = ("127.0.0.1", "localhost", "::1")
RECENT = 300                  # frames in the rolling fps and latency window
SNAPSHOT_INTEREST_S = 2.0     # a /frame.jpg request keeps frames encoded for this long
WAIT_S = 0.5                  # how often a waiting viewer thread looks for shutdown


def check_token(token: str | None) -> None:
    """A token given with --token is safe in a URL and a cookie as it is, and not trivially short."""
    if token is not None and not TOKEN.fullmatch(token):
        raise UsageError("--token: 8 to 200 letters, digits, '-' or '_'")


class FrameSlot:
    """The newest overlay and record. ``publish`` never blocks on a viewer; ``jpeg`` encodes the
    newest overlay once, whoever asks first."""

    def __init__(self, quality: int = 80) -> None:
        self.quality = int(quality)
        self._cond = threading.Condition()
        self._encode_lock = threading.Lock()
        self.seq = 0                  # frames published
        self.image_seq = 0            # the newest frame that came with an overlay
        self._image: np.ndarray | None = None
        self._image_record: dict[str, Any] = {}
        self.record: dict[str, Any] = {}
        self._encoded: tuple[int, bytes, dict[str, Any]] = (0, b"", {})
        self.encodes = 0
        self.closed = False

    def publish(self, image: np.ndarray | None, record: dict[str, Any]) -> int:
        with self._cond:
            self.seq += 1
            self.record = record
            if image is not None:
                self.image_seq, self._image, self._image_record = self.seq, image, record
                self._cond.notify_all()
            return self.seq

    def wait_newer(self, seq: int, timeout: float) -> bool:
        """True when an overlay newer than ``seq`` is there (waits up to ``timeout`` s)."""
        with self._cond:
            self._cond.wait_for(lambda: self.image_seq > seq or self.closed, timeout)
            return self.image_seq > seq

    def jpeg(self) -> tuple[int, bytes, dict[str, Any]]:
        """(seq, JPEG bytes, record) of the newest overlay; (0, b"", {}) before the first."""
        with self._encode_lock:
            with self._cond:
                seq, image, record = self.image_seq, self._image, self._image_record
            if seq and self._encoded[0] != seq:
                ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                if not ok:
                    raise ValueError("the overlay could not be encoded as JPEG")
                self._encoded = (seq, data.tobytes(), record)
                self.encodes += 1
            return self._encoded

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    view: LiveView

    def handle_error(self, request: Any, client_address: Any) -> None:  # a viewer that went away
        log.debug("live view: connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 30  # a connection that sends nothing, or takes nothing, for this long is closed

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("live view %s: " + format, self.address_string(), *args)

    def _host_allowed(self) -> bool:
        """An IP address, a loopback name or the bound name: never a domain that could be rebound."""
        host = (self.headers.get("Host") or "").strip().lower()
        name = (host if host.endswith("]") else host.rsplit(":", 1)[0]).strip("[]")
        if name in LOOPBACK or name == self.server.view.host.lower():
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def _send(self, status: int, body: bytes, content_type: str, cookie: bool = False) -> None:
        self.send_response(status)
        self._common_headers(content_type)
        if cookie:  # the page's own requests (status, stream) carry the token from here on
            self.send_header("Set-Cookie", f"{self.server.view.cookie_name}={self.server.view.token}; Path=/; "
                                           f"HttpOnly; SameSite=Strict")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _common_headers(self, content_type: str) -> None:
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")

    def _token_given(self) -> str | None:
        """The token this request carries: in the query, the Authorization header or the cookie."""
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        if query.get("token"):
            return query["token"][0]
        scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "token" and value.strip():
            return value.strip()
        try:
            morsel = SimpleCookie(self.headers.get("Cookie") or "").get(self.server.view.cookie_name)
        except CookieError:
            return None
        return morsel.value if morsel is not None else None

    def _token_ok(self) -> bool:
        token = self.server.view.token
        if token is None:
            return True
        given = self._token_given()
        return given is not None and hmac.compare_digest(given.encode(), token.encode())

    def do_GET(self) -> None:
        view = self.server.view
        if not self._host_allowed():
            self._send(HTTPStatus.FORBIDDEN, b"forbidden host\n", "text/plain; charset=utf-8")
            return
        if not self._token_ok():
            self._send(HTTPStatus.FORBIDDEN, b"a token is needed: open the URL usseg stream printed\n",
                       "text/plain; charset=utf-8")
            return
        route = self.path.split("?", 1)[0]
        if route in ("/", "/index.html"):
            self._send(HTTPStatus.OK, view.page, "text/html; charset=utf-8", cookie=view.token is not None)
        elif route == "/status.json":
            self._send(HTTPStatus.OK, json.dumps(view.status()).encode(), "application/json")
        elif route == "/frame.jpg":
            view.snapshot_wanted = time.monotonic()
            if not view.slot.image_seq:
                view.slot.wait_newer(0, SNAPSHOT_INTEREST_S)
            seq, data, _ = view.slot.jpeg()
            if not seq:
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"no frame yet\n", "text/plain; charset=utf-8")
            else:
                self._send(HTTPStatus.OK, data, "image/jpeg")
        elif route == "/stream.mjpg":
            self._stream(view)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _stream(self, view: LiveView) -> None:
        self.send_response(HTTPStatus.OK)
        self._common_headers(f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        viewer = view.add_viewer(self.connection)
        sent = 0
        try:
            while not view.slot.closed:
                if not view.slot.wait_newer(sent, WAIT_S):
                    if _peer_closed(self.connection):
                        break
                    continue
                seq, data, record = view.slot.jpeg()
                head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n"
                        f"X-Frame-Seq: {seq}\r\nX-Frame-Record: {json.dumps(record)}\r\n\r\n")
                self.wfile.write(head.encode() + data + b"\r\n")
                self.wfile.flush()
                sent = seq
                viewer.sent += 1
        except OSError:  # the page was closed, or the view is shutting down
            pass
        finally:
            view.remove_viewer(viewer)


class Viewer:
    """One connected stream viewer: its socket and how many frames it was sent."""

    def __init__(self, connection: socket.socket) -> None:
        self.connection, self.sent = connection, 0


class LiveView:
    """A started live-view server (see the module docstring). ``port`` 0 takes a free port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, info: dict[str, Any] | None = None,
                 stats: Any = None, quality: int = 80, token: str | None = None) -> None:
        """``token``: required of every request (None: on loopback none is, elsewhere a random one)."""
        if not 0 <= int(port) <= 65535:
            raise UsageError(f"--port {port}: must be 0..65535 (0: any free port)")
        check_token(token)
        if token is None and host not in LOOPBACK:
            token = secrets.token_urlsafe(24)
        self.host, self.info, self.stats, self.token = host, dict(info or {}), stats, token
        self.slot = FrameSlot(quality)
        self.page = resources.files(__package__).joinpath("page.html").read_bytes()
        self.viewers: list[Viewer] = []
        self.viewers_seen = 0
        self._lock = threading.Lock()
        self._recent: collections.deque[tuple[float, float]] = collections.deque(maxlen=RECENT)
        self.snapshot_wanted = -1e9
        self.running, self.ended_by = True, None
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            server_class = type("_LiveServer", (_Server,), {"address_family": family})
            self.server = server_class((host, int(port)), _Handler)
        except (OSError, UnicodeError) as exc:
            raise UsageError(f"live view: cannot serve on {host}:{port} ({getattr(exc, 'strerror', None) or exc})") \
                from None
        self.server.view = self
        self.port = int(self.server.server_address[1])
        self.cookie_name = f"usseg-view-{self.port}"  # cookies ignore ports: one name per view
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="usseg-view", daemon=True)
        self._thread.start()
        if host not in LOOPBACK:
            log.warning("live view: serving on %s, reachable by anyone on that network who has its URL (it "
                        "carries the token); the default 127.0.0.1 with an SSH tunnel keeps the images on this "
                        "machine", host)

    @property
    def url(self) -> str:
        """The page's address, with the token when one is required."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    # -- viewers --------------------------------------------------------------------------------------
    def add_viewer(self, connection: socket.socket) -> Viewer:
        viewer = Viewer(connection)
        with self._lock:
            self.viewers.append(viewer)
            self.viewers_seen += 1
        return viewer

    def remove_viewer(self, viewer: Viewer) -> None:
        with self._lock:
            if viewer in self.viewers:
                self.viewers.remove(viewer)

    def wants_frame(self) -> bool:
        """Whether an overlay is worth drawing for the view: someone watches, or asked for a snapshot."""
        return bool(self.viewers) or time.monotonic() - self.snapshot_wanted < SNAPSHOT_INTEREST_S

    # -- the pipeline's side ---------------------------------------------------------------------------
    def publish(self, item: Any, overlay: np.ndarray | None) -> int:
        """Hand over one processed StreamItem (and its overlay, when drawn). Never waits."""
        record = {"index": int(item.index), "latency_ms": round(float(item.latency_ms), 2),
                  "measurements": {name: {**r.to_dict(), "display": r.number_text()}
                                   for name, r in item.result.measurements.items()},
                  "timings_ms": {k: round(float(v), 2) for k, v in item.result.timings.items()}}
        with self._lock:
            self._recent.append((time.monotonic(), float(item.latency_ms)))
        return self.slot.publish(overlay, record)

    def status(self) -> dict[str, Any]:
        with self._lock:
            recent = list(self._recent)
            viewers = len(self.viewers)
        fps = None
        if len(recent) >= 2 and recent[-1][0] > recent[0][0]:
            fps = round((len(recent) - 1) / (recent[-1][0] - recent[0][0]), 2)
        latencies = [lat for _, lat in recent]
        counts = {}
        if self.stats is not None:
            counts = {key: getattr(self.stats, key) for key in ("captured", "processed", "dropped", "failed")}
            counts["seconds"] = round(self.stats.elapsed_s, 2)
        return {"running": self.running, "ended_by": self.ended_by, "seq": self.slot.seq, "frame": self.slot.record,
                "stats": {**counts, "fps": fps, "window": len(recent),
                          "latency_ms_p50": _percentile(latencies, 50), "latency_ms_p99": _percentile(latencies, 99)},
                "viewers": viewers, **self.info}

    def close(self, ended_by: str | None = None) -> None:
        """Stop serving: viewer threads end, open connections are cut, the port is released."""
        self.running, self.ended_by = False, ended_by
        self.slot.close()
        with self._lock:
            connections = [v.connection for v in self.viewers]
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LiveView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _peer_closed(connection: socket.socket) -> bool:
    """A viewer that hung up while no frame was coming (a closed socket reads as ready, and empty)."""
    try:
        ready, _, _ = select.select([connection], [], [], 0)
        return bool(ready) and connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def start_view(seg: Any, *, source: str, calibration: Any, stats: Any, host: str = "127.0.0.1",
               port: int = 0, token: str | None = None) -> LiveView:
    """The live view of ``usseg stream --view``: provenance, source and spacing on the page."""
    from ..provenance import provenance

    view = LiveView(host, port, info={"model": provenance(seg), "source": str(source),
                                      "calibration": calibration.to_dict()}, stats=stats, token=token)
    log.info("live view at %s (from another machine: ssh -L %d:localhost:%d HOST, then open "
             "http://localhost:%d/%s)", view.url, view.port, view.port, view.port,
             f"?token={view.token}" if view.token else "")
    return view
