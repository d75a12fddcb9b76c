"""A TCP proxy on 127.0.0.1 that can play a hung or refusing API server, for liveness tests.

- ``forward`` (the start state): bytes flow both ways to the target.
- ``hang()``: every connection, open or new, becomes a black hole: it stays open, bytes sent
  into it are discarded and nothing comes back (a hung server, or a dropped load-balancer or
  conntrack entry). New connections are accepted and never answered.
- ``refuse()``: open connections are closed abruptly and new ones at once (a server that is
  down).
- ``recover()``: new connections are forwarded again. A black-holed connection stays silent
  for as long as its client only waits on it (a watch on a dead connection never hears
  anything again); a client that sends on it has it closed, as by a server that no longer
  knows the connection.

``requests`` records ``(time.monotonic(), method, path)`` for every HTTP request line the proxy
forwarded (at the start of a chunk from the client, which is where the client writes them).
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from pathlib import Path

import yaml

_REQUEST_LINE = re.compile(rb"^(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP/1\.[01]\r\n")


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN (a FIN first when another thread is reading it)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    _close(sock)


def _close(sock: socket.socket | None) -> None:
    """Close ``sock`` for real: shutdown() first, since close() alone neither wakes another
    thread blocked in recv() on it nor ends the connection while that call is in progress."""
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Conn:
    def __init__(self, client: socket.socket, upstream: socket.socket | None):
        self.client = client
        self.upstream = upstream
        self.dead = upstream is None

    def close(self, reset: bool = False) -> None:
        (_reset if reset else _close)(self.client)
        _close(self.upstream)


class BlackholeProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.mode = "forward"
        self._lock = threading.Lock()
        self._conns: list[_Conn] = []
        self._closed = False
        self.requests: list[tuple[float, str, str]] = []
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    # ---- control ------------------------------------------------------------------------

    def hang(self) -> None:
        with self._lock:
            self.mode = "hang"
            for conn in self._conns:
                conn.dead = True

    def refuse(self) -> None:
        with self._lock:
            self.mode = "refuse"
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close(reset=True)

    def recover(self) -> None:
        with self._lock:
            self.mode = "forward"

    def close(self) -> None:
        self._closed = True
        _close(self.listener)
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()

    def kubeconfig(self, original: str, out: Path) -> str:
        """A copy of the kubeconfig ``original`` whose server is this proxy."""
        doc = yaml.safe_load(Path(original).read_text())
        for cluster in doc["clusters"]:
            cluster["cluster"]["server"] = f"http://127.0.0.1:{self.port}"
        out.write_text(yaml.safe_dump(doc))
        return str(out)

    # ---- plumbing -----------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                mode = self.mode
            if mode == "refuse":
                _reset(client)
                continue
            upstream = None
            if mode == "forward":
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                    upstream.settimeout(None)
                except OSError:
                    _reset(client)
                    continue
            conn = _Conn(client, upstream)
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._up, args=(conn,), daemon=True).start()
            if upstream is not None:
                threading.Thread(target=self._down, args=(conn,), daemon=True).start()

    def _forget(self, conn: _Conn, reset: bool = False) -> None:
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)
        conn.close(reset)

    def _up(self, conn: _Conn) -> None:
        """Client -> target."""
        while True:
            try:
                data = conn.client.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._forget(conn)
                return
            if conn.dead:
                if self.mode == "hang":
                    continue  # swallowed
                self._forget(conn, reset=True)  # a dead connection used after recovery
                return
            line = _REQUEST_LINE.match(data)
            try:
                conn.upstream.sendall(data)
            except OSError:
                self._forget(conn, reset=True)
                return
            if line:
                request = (time.monotonic(), line[1].decode(), line[2].decode())
                with self._lock:
                    self.requests.append(request)

    def _down(self, conn: _Conn) -> None:
        """Target -> client."""
        while True:
            try:
                data = conn.upstream.recv(65536)
            except OSError:
                data = b""
            if not data:
                if not conn.dead:
                    self._forget(conn)
                return
            if conn.dead:
                continue  # swallowed
            try:
                conn.client.sendall(data)
            except OSError:
                self._forget(conn)
                return
