"""The socket side of ``ocistore serve``: a bounded, threaded HTTP/1.1 server from the standard library.

Why the standard library: the work is streaming whole files to a few clients (a node's
containerd fetches three layers at a time), which ``os.sendfile`` does without the bytes
ever entering Python (and without the GIL), so a thread per connection is cheap and the
request parsing of :mod:`http.server` is all the HTTP that is needed. An event-loop server
(asyncio, or a library such as aiohttp or uvicorn) would hold idle connections more
cheaply but would add a dependency, and its sendfile path is the same system call.

Shape and limits:

* one accept thread and ``workers`` worker threads; accepted connections wait in a queue
  of ``queue`` entries; when that is full the connection is answered ``429
  TOOMANYREQUESTS`` (``Retry-After: 1``) at once and closed (over TLS it is just closed:
  a TLS answer would need a handshake on the accept thread);
* while connections wait in the queue, a worker closes its connection once it has been
  idle for a moment (0.25 s between two requests, 1 s before the first one), so idle
  kept-alive connections, or connections that never send a request, never starve new ones;
* ``timeout``: a request's line and headers must arrive within that many seconds of its
  first byte, and a send that makes no progress for that long drops the client;
  ``keepalive``: seconds an idle connection is kept between two requests;
* request lines over 64 KiB, more than 100 headers, or header lines over 64 KiB are
  refused by :mod:`http.server` (414/431);
* blobs are sent with :meth:`socket.socket.sendfile` (``os.sendfile`` on plain sockets)
  from the store's file, never read whole; over TLS they are copied in 256 KiB reads;
* TLS (``tls_cert`` / ``tls_key``): the handshake runs on the worker, under ``timeout``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any, Self

from ocistore import errors
from ocistore.server.app import API_VERSION, BadBody, Request, Response, error_response

__all__ = ["HTTPServer", "parse_listen"]

log = logging.getLogger("ocistore.server")

_COPY = 256 << 10
_POLL_SLICE = 0.05
_FIRST_GRACE = 1.0  # a new connection keeps its worker this long while others queue, waiting for a request
_IDLE_GRACE = 0.25  # a kept-alive one, between two requests


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:5000"``, ``"[::1]:5000"``, ``":5000"`` (all interfaces) -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise errors.InvalidArgument(f"invalid listen address {listen!r}: use HOST:PORT, e.g. 127.0.0.1:5000")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Stats:
    """Counters of one server (read them through :attr:`HTTPServer.stats`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: dict[str, int] = {"connections": 0, "rejected": 0, "requests": 0, "bytes_sent": 0}

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.values[key] = self.values.get(key, 0) + n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.values)


class _Reader(io.RawIOBase):
    """The socket's read side with the server's time limits.

    In the *idle* state (before a request's first byte) it waits in short slices and
    reports end-of-file when the idle time is over, the server stops, or connections are
    queued for a worker; once a byte arrives the request's headers must follow within
    ``timeout`` seconds.
    """

    def __init__(self, sock: socket.socket, server: HTTPServer) -> None:
        self._sock = sock
        self._server = server
        self._idle_until: float | None = None
        self._grace_until = 0.0
        self._deadline: float | None = 0.0

    def readable(self) -> bool:
        return True

    def idle(self, seconds: float, grace: float) -> None:
        """Wait at most ``seconds`` for the next request, and only ``grace`` seconds while others queue."""
        now = time.monotonic()
        self._idle_until = now + seconds
        self._grace_until = now + min(grace, seconds)

    def streaming(self) -> None:
        """Reading a request body: each read may wait ``timeout`` seconds, with no overall deadline."""
        self._deadline = None

    def _pending(self) -> bool:
        return isinstance(self._sock, ssl.SSLSocket) and self._sock.pending() > 0

    def readinto(self, b: Any) -> int:
        if self._idle_until is not None:
            if not self._pending() and not self._wait_idle(self._idle_until, self._grace_until):
                return 0
            self._idle_until = None
            self._deadline = time.monotonic() + self._server.timeout
        if self._deadline is None:
            self._sock.settimeout(self._server.timeout)
            return self._sock.recv_into(b)
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(left)
        return self._sock.recv_into(b)

    def _wait_idle(self, until: float, grace_until: float) -> bool:
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR)
        while True:
            now = time.monotonic()
            left = until - now
            if left <= 0 or self._server.stopping:
                return False
            if now >= grace_until and self._server.connections_waiting():
                return False
            if poller.poll(min(left, _POLL_SLICE) * 1000):
                return True


class _Body:
    """A request body of ``Content-Length`` bytes, or in ``Transfer-Encoding: chunked``."""

    def __init__(self, rfile: io.BufferedIOBase, length: int | None, chunked: bool) -> None:
        self._rfile = rfile
        self._left = length or 0
        self._chunked = chunked
        self._chunk_left = 0
        self.done = not chunked and not self._left

    def read(self, n: int = -1, /) -> bytes:
        if self.done:
            return b""
        if n is None or n < 0:
            n = 1 << 20
        if not self._chunked:
            data = self._rfile.read(min(n, self._left))
            if not data:
                raise BadBody("the request body ended before its Content-Length")
            self._left -= len(data)
            self.done = self._left == 0
            return data
        if self._chunk_left == 0:
            size = self._chunk_size()
            if size == 0:
                self._trailers()
                self.done = True
                return b""
            self._chunk_left = size
        data = self._rfile.read(min(n, self._chunk_left))
        if not data:
            raise BadBody("the request body ended inside a chunk")
        self._chunk_left -= len(data)
        if self._chunk_left == 0 and self._rfile.read(2) != b"\r\n":
            raise BadBody("a chunk is not followed by CRLF")
        return data

    def _chunk_size(self) -> int:
        line = self._rfile.readline(1026)
        if not line.endswith(b"\n") or len(line) > 1024:
            raise BadBody("malformed chunk header")
        text = line.split(b";", 1)[0].strip()
        if not text or len(text) > 16 or any(c not in b"0123456789abcdefABCDEF" for c in text):
            raise BadBody("malformed chunk size")
        return int(text, 16)

    def _trailers(self) -> None:
        for _ in range(64):
            line = self._rfile.readline(8194)
            if line in (b"\r\n", b"\n", b""):
                return
        raise BadBody("too many trailer lines")


class _Writer:
    """The socket's write side (what :class:`BaseHTTPRequestHandler` calls ``wfile``)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def write(self, data: bytes) -> int:
        self._sock.sendall(data)
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered."""


class _Handler(BaseHTTPRequestHandler):
    """One connection: requests are parsed by :mod:`http.server`, answered by the app."""

    protocol_version = "HTTP/1.1"
    server_version = "ocistore"
    sys_version = ""
    server: HTTPServer  # type: ignore[assignment]

    def version_string(self) -> str:
        """The ``Server`` header."""
        return self.server_version

    def setup(self) -> None:
        self.connection = self.request
        self._raw = _Reader(self.connection, self.server)
        self.rfile = io.BufferedReader(self._raw, 64 << 10)
        self.wfile = _Writer(self.connection)  # type: ignore[assignment]
        self._started = 0.0

    def finish(self) -> None:
        """Nothing to flush: writes go straight to the socket."""

    def handle(self) -> None:
        self.close_connection = True
        self._raw.idle(self.server.timeout, _FIRST_GRACE)
        self.handle_one_request()
        while not self.close_connection:
            self._raw.idle(self.server.keepalive, _IDLE_GRACE)
            self.handle_one_request()

    def parse_request(self) -> bool:
        self._started = time.monotonic()
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":
            self.send_error(505, "HTTP/0.9 is not supported")
            return False
        if not hasattr(self, "do_" + self.command):  # an unknown method: the app answers 405, not 501
            self._dispatch()
            return False
        return True

    # every method goes to the app, which knows what it supports
    def do_GET(self) -> None:
        """``GET``: answered by the app."""
        self._dispatch()

    def do_HEAD(self) -> None:
        """``HEAD``: answered by the app, without a body."""
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        body = self._body()
        if body is None:
            return
        req = Request(self.command, self.path, self.headers, self.client_address[0], body)
        try:
            resp = self.server.app(req)
        except BadBody as exc:
            self.send_error(400, str(exc))
            return
        if not body.done:
            self.close_connection = True  # the rest of the body was never read: the connection is not reusable
        try:
            self._respond(resp)
        finally:
            resp.close()

    def _body(self) -> _Body | None:
        """The request's body (None after answering 400 for a bad framing)."""
        length_text = self.headers.get("Content-Length")
        coding = (self.headers.get("Transfer-Encoding") or "").strip().lower()
        if coding and coding != "chunked":
            self.send_error(501, f"Transfer-Encoding {coding!r} is not supported")
            return None
        length = None
        if length_text is not None:
            text = length_text.strip()
            if not text.isdigit() or len(text) > 19 or coding:
                self.send_error(400, "invalid Content-Length")
                return None
            length = int(text)
        body = _Body(self.rfile, length, coding == "chunked")
        if not body.done:
            if self.server.accepts_bodies:
                self._raw.streaming()
            else:
                self.close_connection = True  # a body this server never reads
                body.done = True
        return body

    def _respond(self, resp: Response) -> None:
        self.connection.settimeout(self.server.timeout)
        self.send_response(resp.status)
        self.send_header(*API_VERSION)
        for k, v in resp.headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(resp.content_length))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        sent = 0
        if self.command != "HEAD" and resp.status not in (204, 304):
            if resp.file is not None:
                sent = self._send_file(resp)
            elif resp.body:
                self.wfile.write(resp.body)
                sent = len(resp.body)
        self.server.stats.add("requests")
        self.server.stats.add("bytes_sent", sent)
        self.server.stats.add(f"status_{resp.status}")
        if self.server.access_log:
            log.info('%s "%s %s" %d %d %.3fs', self.client_address[0], self.command, self.path[:300],
                     resp.status, sent, time.monotonic() - self._started)

    def _send_file(self, resp: Response) -> int:
        assert resp.file is not None
        count = resp.content_length
        if isinstance(self.connection, ssl.SSLSocket):
            sent = _copy_to(resp.file, self.connection, resp.offset, count)
        else:
            sent = self.connection.sendfile(resp.file, resp.offset, count)
        if sent != count:  # the file shrank under us: the client must not take it as complete
            self.close_connection = True
            raise ConnectionError(f"sent {sent} of {count} bytes")
        return sent

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (bad request line, headers too large) as OCI error JSON."""
        self.close_connection = True
        self.request_version = "HTTP/1.1"  # an answer with a status line, whatever the request was
        try:
            resp = error_response(code, "UNSUPPORTED", message or self.responses.get(code, ("error",))[0])
            if getattr(self, "command", None) is None:
                self.command = "GET"
            self._respond(resp)
        except OSError:
            pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Logged once the answer is sent (see ``_respond``)."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.client_address[0], format % args)


def _copy_to(f: Any, sock: socket.socket, offset: int, count: int) -> int:
    """Send ``count`` bytes of ``f`` from ``offset`` by reads and writes (TLS sockets)."""
    fd = f.fileno()
    sent = 0
    while sent < count:
        data = os.pread(fd, min(_COPY, count - sent), offset + sent)
        if not data:
            break
        sock.sendall(data)
        sent += len(data)
    return sent


_TOO_MANY = (
    b"HTTP/1.1 429 Too Many Requests\r\n"
    b"Content-Type: application/json; charset=utf-8\r\n"
    b"Docker-Distribution-API-Version: registry/2.0\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n"
    b'Content-Length: 83\r\n\r\n{"errors": [{"code": "TOOMANYREQUESTS", "message": "too many connections; retry"}]}'
)


class HTTPServer:
    """A bounded threaded HTTP/1.1 server answering with ``app`` (see the module docstring)."""

    def __init__(
        self, app: Callable[[Request], Response], listen: str = "127.0.0.1:5000", *, workers: int = 16,
        queue_size: int = 64, timeout: float = 30.0, keepalive: float = 5.0, tls_cert: str | None = None,
        tls_key: str | None = None, access_log: bool = False,
    ) -> None:
        """Configure; nothing is bound until :meth:`start`."""
        if workers < 1 or queue_size < 0:
            raise errors.InvalidArgument("workers must be at least 1 and queue_size at least 0")
        if timeout <= 0 or keepalive < 0:
            raise errors.InvalidArgument("timeout must be positive and keepalive not negative")
        if (tls_cert is None) != (tls_key is None) and tls_cert is None:
            raise errors.InvalidArgument("tls_key needs tls_cert")
        self.app = app
        self.listen = listen
        self._host, self._port = parse_listen(listen)
        self.workers = workers
        self.queue_size = queue_size
        self.timeout = float(timeout)
        self.keepalive = float(keepalive)
        self.access_log = access_log
        self.accepts_bodies = False  # set by a server whose app reads request bodies (uploads)
        self.stats = _Stats()
        self._tls: ssl.SSLContext | None = None
        if tls_cert is not None:
            self._tls = _tls_context(tls_cert, tls_key)
        self._sock: socket.socket | None = None
        self._queue: queue.Queue[socket.socket | None] = queue.Queue(maxsize=max(1, queue_size))
        self._threads: list[threading.Thread] = []
        self._active: set[socket.socket] = set()
        self._active_lock = threading.Lock()
        self._wake_r, self._wake_w = -1, -1
        self.stopping = False
        self._stopped = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        """``host:port`` actually bound once started (the requested one before)."""
        if self._sock is None:
            return self.listen
        host, port = self._sock.getsockname()[:2]
        return _format_address(host, port)

    @property
    def scheme(self) -> str:
        """``https`` with TLS, else ``http``."""
        return "https" if self._tls is not None else "http"

    @property
    def url(self) -> str:
        """``http[s]://host:port``."""
        return f"{self.scheme}://{self.address}"

    def start(self) -> Self:
        """Bind, then start the accept thread and the workers; returns ``self``."""
        if self._sock is not None:
            return self
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        try:
            sock = socket.create_server((self._host, self._port), family=family, backlog=max(16, self.queue_size))
        except OSError as exc:
            raise errors.Unavailable(f"cannot listen on {self.listen}: {exc.strerror or exc}") from None
        self._sock = sock
        self._wake_r, self._wake_w = os.pipe()
        self.stopping = False
        self._stopped.clear()
        self._threads = [threading.Thread(target=self._accept_loop, name="ocistore-serve-accept", daemon=True)]
        self._threads += [threading.Thread(target=self._worker, name=f"ocistore-serve-{i}", daemon=True)
                          for i in range(self.workers)]
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, drop open connections, and wait up to ``timeout`` s for the threads."""
        if self._sock is None:
            return
        self.stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        with self._active_lock:
            active = list(self._active)
        for conn in active:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for _ in range(self.workers):
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=0.1)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        while True:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                break
            if pending is not None:
                pending.close()
        self._sock.close()
        self._sock = None
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._threads = []
        self._stopped.set()

    def serve_forever(self) -> None:
        """Start if needed and block until :meth:`stop` (from a signal handler or another thread)."""
        self.start()
        while not self._stopped.wait(0.5):
            pass

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def connections_waiting(self) -> bool:
        """Whether accepted connections wait for a worker."""
        return not self._queue.empty()

    # -- threads -------------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._sock is not None
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self.stopping:
            try:
                events = poller.poll(1000)
            except InterruptedError:
                continue
            if self.stopping:
                return
            if not any(fd == self._sock.fileno() for fd, _ in events):
                continue
            try:
                conn, _addr = self._sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            except OSError as exc:
                log.error("accept: %s", exc)
                time.sleep(0.1)  # out of file descriptors: let the workers close some
                continue
            self.stats.add("connections")
            try:
                self._queue.put_nowait(conn)
            except queue.Full:
                self.stats.add("rejected")
                self._reject(conn)

    def _reject(self, conn: socket.socket) -> None:
        try:
            if self._tls is None:
                conn.setblocking(False)
                conn.send(_TOO_MANY)
                conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            conn.close()

    def _worker(self) -> None:
        while True:
            conn = self._queue.get()
            if conn is None or self.stopping:
                if conn is not None:
                    conn.close()
                return
            self._serve_connection(conn)

    def _serve_connection(self, conn: socket.socket) -> None:
        with self._active_lock:
            self._active.add(conn)
        sock: socket.socket = conn
        try:
            conn.settimeout(self.timeout)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(conn, server_side=True)
                with self._active_lock:
                    self._active.add(sock)
            _Handler(sock, sock.getpeername(), self)  # type: ignore[arg-type]
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.debug("connection closed: %s", exc)
        except Exception:
            log.exception("unexpected error while serving a connection")
        finally:
            with self._active_lock:
                self._active.discard(conn)
                self._active.discard(sock)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            if sock is not conn:
                conn.close()


def _tls_context(cert: str, key: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise errors.InvalidArgument(f"cannot load the TLS certificate {cert} / key {key}: {exc}") from None
    return ctx
