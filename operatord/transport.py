"""A lean HTTP/1.1 client for API requests: keep-alive connections, one write per request.

Guarantees:
- A request is written with a single ``sendall`` (request line, headers and body together)
  and its answer is read completely (``Content-Length``, chunked, or until the server closes)
  before the connection is reused, so connections never carry half-read answers.
- Idle connections are kept (at most ``pool_size``) and reused in last-in first-out order;
  a connection the server closed or that has unread bytes is discarded before reuse, and one
  that failed mid-request is closed, never reused.
- Every socket operation has a timeout: ``connect_timeout`` to connect (and for the TLS
  handshake), the request's ``timeout`` (``default_timeout`` when None) for each read and
  write. Failures raise `TransportError` (an ``OSError``), so callers treat them like any
  other connection error.
- A request that fails on its connection (reset, closed, timed out) also closes every idle
  connection: they were opened before the failure, over the same path, and one that a NAT or
  load balancer silently dropped would only fail the next request after its full timeout.
- A GET, HEAD or OPTIONS that fails on a reused connection other than by a timeout (reset or
  closed before the answer) is sent once more on a new connection; other methods are never
  resent here (`operatord.kube` decides about their retries).
- TLS follows the connection settings: the CA file (or the system's), an optional client
  certificate, hostname checking against ``server_hostname`` (or the host); ``verify=False``
  turns certificate checks off.
- Thread-safe: each request holds its connection exclusively.

This is for request/answer calls only; watches (long-lived streams) use another client.
"""

from __future__ import annotations

import select
import socket
import ssl
from collections import deque
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlsplit

MAX_LINE = 65536  # longest status or header line accepted
MAX_HEADERS = 200
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})


class TransportError(OSError):
    """The request could not be completed: connect, write or read failed, or a broken answer."""


@dataclass(frozen=True)
class Response:
    """A complete answer: status, reason phrase, headers (names lower-cased) and body."""

    status: int
    reason: str
    headers: dict[str, str]
    data: bytes


class _Conn:
    __slots__ = ("sock", "rfile")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.rfile = sock.makefile("rb")

    def close(self) -> None:
        try:
            self.rfile.close()
        finally:
            self.sock.close()

    def stale(self) -> bool:
        """True when the server closed the connection or sent something unasked."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)


class HttpClient:
    """Requests to one API server over pooled keep-alive connections."""

    def __init__(
        self,
        base_url: str,
        *,
        verify: bool = True,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        server_hostname: str | None = None,
        pool_size: int = 32,
        connect_timeout: float = 10.0,
        default_timeout: float = 30.0,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported API server URL {base_url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")
        default_port = 443 if self.tls else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if self.port == default_port else f"{host}:{self.port}"
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.default_timeout = default_timeout
        self._idle: deque[_Conn] = deque()
        self._closed = False
        self._ssl: ssl.SSLContext | None = None
        self._server_hostname = server_hostname or self.host
        if self.tls:
            ctx = ssl.create_default_context(cafile=ca_file)
            if not verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if cert_file:
                ctx.load_cert_chain(cert_file, key_file)
            self._ssl = ctx

    def close(self) -> None:
        """Close every idle connection; connections in use close when their request ends."""
        self._closed = True
        self._close_idle()

    def _close_idle(self) -> None:
        while self._idle:
            try:
                self._idle.pop().close()
            except IndexError:
                break

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Send one request and read its whole answer. ``path`` includes the query."""
        lines = [f"{method} {self.prefix}{path} HTTP/1.1\r\nHost: {self.host_header}\r\n"]
        for name, value in headers.items():
            lines.append(f"{name}: {value}\r\n")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body) if body else 0}\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        data = head + body if body else head
        conn, reused = self._take()
        try:
            return self._exchange(conn, data, method, timeout)
        except TransportError as exc:
            if not reused or method not in _IDEMPOTENT or isinstance(exc.__cause__, TimeoutError):
                raise
        # A kept-alive connection that a server or a middlebox dropped without telling us:
        # an idempotent request goes once more, on a new connection.
        return self._exchange(self._connect(), data, method, timeout)

    def _exchange(self, conn: _Conn, data: bytes, method: str, timeout: float | None) -> Response:
        try:
            conn.sock.settimeout(timeout if timeout is not None else self.default_timeout)
            conn.sock.sendall(data)
            resp, reusable = _read_response(conn.rfile, method)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, OSError | ValueError):
                self._close_idle()
            if isinstance(exc, TransportError):
                raise
            if isinstance(exc, OSError | ValueError | ssl.SSLError):
                raise TransportError(f"{type(exc).__name__}: {exc}") from exc
            raise
        if reusable and not self._closed and len(self._idle) < self.pool_size:
            self._idle.append(conn)
        else:
            conn.close()
        return resp

    def _take(self) -> tuple[_Conn, bool]:
        """An idle connection (reused: True) or a new one."""
        while True:
            try:
                conn = self._idle.pop()
            except IndexError:
                return self._connect(), False
            if conn.stale():
                conn.close()
                continue
            return conn, True

    def _connect(self) -> _Conn:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(sock, server_hostname=self._server_hostname)
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        return _Conn(sock)


def _read_response(rfile: BinaryIO, method: str) -> tuple[Response, bool]:
    """(the answer, whether the connection may carry another request)."""
    while True:
        line = rfile.readline(MAX_LINE + 1)
        if not line:
            raise TransportError("connection closed before an answer")
        if len(line) > MAX_LINE:
            raise TransportError("status line too long")
        parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise TransportError(f"malformed status line {line[:80]!r}")
        try:
            status = int(parts[1])
        except ValueError:
            raise TransportError(f"malformed status line {line[:80]!r}") from None
        reason = parts[2] if len(parts) > 2 else ""
        headers = _read_headers(rfile)
        if 100 <= status < 200 and status != 101:
            continue  # an interim answer (100 Continue): the real one follows
        break
    keep = parts[0] != "HTTP/1.0"
    conn_header = headers.get("connection", "").lower()
    if "close" in conn_header:
        keep = False
    elif "keep-alive" in conn_header:
        keep = True
    if method == "HEAD" or status in (204, 304):
        return Response(status, reason, headers, b""), keep
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return Response(status, reason, headers, _read_chunked(rfile)), keep
    length = headers.get("content-length")
    if length is not None:
        try:
            n = int(length)
        except ValueError:
            raise TransportError(f"bad Content-Length {length!r}") from None
        data = rfile.read(n) if n else b""
        if len(data) != n:
            raise TransportError("connection closed in the middle of an answer")
        return Response(status, reason, headers, data), keep
    return Response(status, reason, headers, rfile.read()), False  # body until close


def _read_headers(rfile: BinaryIO) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = rfile.readline(MAX_LINE + 1)
        if not line:
            raise TransportError("connection closed in the headers")
        if len(line) > MAX_LINE:
            raise TransportError("header line too long")
        if line in (b"\r\n", b"\n"):
            return headers
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise TransportError(f"malformed header line {line[:80]!r}")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    raise TransportError("too many headers")


def _read_chunked(rfile: BinaryIO) -> bytes:
    out = bytearray()
    while True:
        line = rfile.readline(MAX_LINE + 1)
        if not line:
            raise TransportError("connection closed in a chunked answer")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise TransportError(f"bad chunk size {line[:40]!r}") from None
        if size == 0:
            _read_headers(rfile)  # trailers, up to the empty line
            return bytes(out)
        chunk = rfile.read(size)
        if len(chunk) != size or rfile.read(2) != b"\r\n":
            raise TransportError("connection closed in a chunked answer")
        out += chunk
