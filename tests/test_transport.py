"""The lean HTTP client (operatord.transport): framing, keep-alive, stale connections, TLS.

Framing cases run against a scripted socket server (each test says exactly what the server
writes); keep-alive and the API answers run against the embedded API server.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from operatord.kube import ApiError, ClientSettings, Kube
from operatord.testing import ApiServer
from operatord.transport import HttpClient, TransportError


class Scripted:
    """A TCP server whose every accepted connection is handled by ``serve(conn, index)``."""

    def __init__(
        self, serve: Callable[[socket.socket, int], None], tls: ssl.SSLContext | None = None
    ):
        self.serve = serve
        self.tls = tls
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.requests: list[bytes] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            index = self.accepted
            self.accepted += 1
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (OSError, ssl.SSLError):
                    conn.close()
                    continue
            threading.Thread(target=self._handle, args=(conn, index), daemon=True).start()

    def _handle(self, conn: socket.socket, index: int) -> None:
        try:
            self.serve(conn, index)
        except OSError:
            pass
        finally:
            conn.close()

    def read_request(self, conn: socket.socket) -> bytes:
        """One whole request (headers and a Content-Length body), or b'' at EOF."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return b""
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            body += conn.recv(65536)
        self.requests.append(data)
        return data

    def close(self) -> None:
        self.sock.close()


def ok(body: bytes = b"{}", extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_content_length_answers_reuse_one_connection() -> None:
    def serve(conn: socket.socket, _: int) -> None:
        while srv.read_request(conn):
            conn.sendall(ok(b'{"n": 1}'))

    srv = Scripted(serve)
    client = HttpClient(f"http://127.0.0.1:{srv.port}")
    for _ in range(5):
        resp = client.request("GET", "/x", {"Accept": "application/json"})
        assert (resp.status, resp.reason, resp.data) == (200, "OK", b'{"n": 1}')
        assert resp.headers["content-type"] == "application/json"
    assert srv.accepted == 1
    client.close()
    srv.close()


def test_request_carries_host_headers_length_and_body_in_one_piece() -> None:
    def serve(conn: socket.socket, _: int) -> None:
        while srv.read_request(conn):
            conn.sendall(ok())

    srv = Scripted(serve)
    client = HttpClient(f"http://127.0.0.1:{srv.port}/prefix/")
    client.request("PATCH", "/api/v1/x?a=b", {"Content-Type": "application/json"}, b'{"k": 1}')
    client.request("POST", "/empty", {})
    first, second = srv.requests
    assert first.startswith(b"PATCH /prefix/api/v1/x?a=b HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{srv.port}\r\n".encode() in first
    assert b"Content-Length: 8\r\n" in first and first.endswith(b'\r\n\r\n{"k": 1}')
    assert b"Content-Length: 0\r\n" in second  # a POST without a body still says so
    srv.close()


def test_chunked_answer_with_trailers_and_interim_100() -> None:
    def serve(conn: socket.socket, _: int) -> None:
        while srv.read_request(conn):
            conn.sendall(
                b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"4;ext=1\r\nabcd\r\n3\r\nefg\r\n0\r\nX-Trailer: t\r\n\r\n"
            )

    srv = Scripted(serve)
    client = HttpClient(f"http://127.0.0.1:{srv.port}")
    for _ in range(2):  # the connection stays usable after a chunked answer
        resp = client.request("POST", "/x", {}, b"{}")
        assert (resp.status, resp.data) == (201, b"abcdefg")
    assert srv.accepted == 1
    srv.close()


def test_connection_close_and_http10_are_not_reused() -> None:
    def serve(conn: socket.socket, index: int) -> None:
        srv.read_request(conn)
        if index == 0:
            conn.sendall(ok(extra="Connection: close\r\n"))
        else:  # HTTP/1.0 without a length: the body runs until the server closes
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nuntil-close")

    srv = Scripted(serve)
    client = HttpClient(f"http://127.0.0.1:{srv.port}")
    assert client.request("GET", "/a", {}).data == b"{}"
    assert client.request("GET", "/b", {}).data == b"until-close"
    assert not client._idle
    assert srv.accepted == 2
    srv.close()


def test_a_connection_the_server_closed_is_replaced_before_reuse() -> None:
    closed = threading.Event()

    def serve(conn: socket.socket, index: int) -> None:
        srv.read_request(conn)
        conn.sendall(ok(f'{{"conn": {index}}}'.encode()))
        if index == 0:
            conn.shutdown(socket.SHUT_RDWR)  # an idle timeout on the server's side
            closed.set()
            return
        while srv.read_request(conn):
            conn.sendall(ok(f'{{"conn": {index}}}'.encode()))

    srv = Scripted(serve)
    client = HttpClient(f"http://127.0.0.1:{srv.port}")
    assert client.request("GET", "/", {}).data == b'{"conn": 0}'
    assert closed.wait(5)
    deadline = time.monotonic() + 5
    while not client._idle[0].stale():  # the FIN reaches our socket
        assert time.monotonic() < deadline
    assert client.request("GET", "/", {}).data == b'{"conn": 1}'
    assert srv.accepted == 2
    srv.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"",  # closed without an answer
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",  # closed mid-body
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",  # mid-chunk
        b"garbage\r\n\r\n",  # not HTTP
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",  # bad length
    ],
)
def test_broken_answers_raise_transport_error_and_drop_the_connection(answer: bytes) -> None:
    def serve(conn: socket.socket, _: int) -> None:
        srv.read_request(conn)
        conn.sendall(answer)

    srv = Scripted(serve)
    client = HttpClient(f"http://127.0.0.1:{srv.port}")
    with pytest.raises(TransportError):
        client.request("GET", "/", {}, timeout=5)
    assert not client._idle
    srv.close()


def test_a_silent_server_times_out() -> None:
    release = threading.Event()

    def serve(conn: socket.socket, _: int) -> None:
        srv.read_request(conn)
        release.wait(10)  # accepts and never answers

    srv = Scripted(serve)
    client = HttpClient(f"http://127.0.0.1:{srv.port}")
    start = time.monotonic()
    with pytest.raises(TransportError):
        client.request("GET", "/", {}, timeout=0.3)
    assert time.monotonic() - start < 3
    release.set()
    srv.close()


def test_refused_connection_raises_transport_error() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(TransportError, match="cannot connect"):
        HttpClient(f"http://127.0.0.1:{port}").request("GET", "/", {})


def test_pool_keeps_at_most_pool_size_idle_connections() -> None:
    all_in = threading.Barrier(6, timeout=10)  # no answer before all six requests arrived

    def serve(conn: socket.socket, _: int) -> None:
        while srv.read_request(conn):
            all_in.wait()
            conn.sendall(ok())

    srv = Scripted(serve)
    client = HttpClient(f"http://127.0.0.1:{srv.port}", pool_size=2)
    threads = [threading.Thread(target=client.request, args=("GET", "/", {})) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert srv.accepted == 6
    assert len(client._idle) == 2
    srv.close()


# ---- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("certs")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=test-ca")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for who in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{who}.key", "-out",
            f"{who}.csr", "-subj", f"/CN={who}")  # fmt: skip
        run("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{who}.crt", "-days", "2", "-extfile", "san.ext")  # fmt: skip
    return {p.stem + p.suffix: p for p in d.iterdir()}


def tls_server(certs: dict[str, Path], require_client: bool) -> Scripted:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs["server.crt"], certs["server.key"])
    if require_client:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(certs["ca.crt"])

    def serve(conn: socket.socket, _: int) -> None:
        while srv.read_request(conn):
            peer = conn.getpeercert() if require_client else None  # type: ignore[attr-defined]
            cn = dict(x[0] for x in peer["subject"])["commonName"] if peer else "-"
            conn.sendall(ok(f'{{"client": "{cn}"}}'.encode()))

    srv = Scripted(serve, tls=ctx)
    return srv


def test_tls_with_ca_and_client_certificate(certs: dict[str, Path]) -> None:
    srv = tls_server(certs, require_client=True)
    client = HttpClient(
        f"https://127.0.0.1:{srv.port}",
        ca_file=str(certs["ca.crt"]),
        cert_file=str(certs["client.crt"]),
        key_file=str(certs["client.key"]),
    )
    for _ in range(3):
        assert client.request("GET", "/", {}).data == b'{"client": "client"}'
    assert srv.accepted == 1
    srv.close()


def test_tls_checks_the_certificate_unless_verify_is_off(certs: dict[str, Path]) -> None:
    srv = tls_server(certs, require_client=False)
    with pytest.raises(TransportError):  # the system CAs do not know the test CA
        HttpClient(f"https://127.0.0.1:{srv.port}").request("GET", "/", {}, timeout=5)
    with pytest.raises(TransportError):  # the name does not match the certificate
        HttpClient(
            f"https://127.0.0.1:{srv.port}", ca_file=str(certs["ca.crt"]), server_hostname="other"
        ).request("GET", "/", {}, timeout=5)
    assert (
        HttpClient(f"https://127.0.0.1:{srv.port}", verify=False).request("GET", "/", {}).status
        == 200
    )
    assert (
        HttpClient(f"https://localhost:{srv.port}", ca_file=str(certs["ca.crt"]))
        .request("GET", "/", {})
        .status
        == 200
    )
    srv.close()


# ---- through Kube, against the embedded API server -------------------------------------------


def test_kube_requests_go_through_the_lean_client() -> None:
    with ApiServer() as api:
        _kube_requests(api)


def _kube_requests(api: ApiServer) -> None:
    kube = Kube(Kube(ClientSettings(api.kubeconfig)).connection())
    assert kube._http is not None
    res = kube.resource("v1", "ConfigMap")
    created = kube.create(
        res,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "lean", "namespace": "default"},
        },
    )
    assert created["metadata"]["uid"]
    patched = kube.patch(res, "lean", {"data": {"a": "1"}}, "default")
    assert patched["data"] == {"a": "1"}
    with pytest.raises(ApiError) as err:
        kube.create(res, created)
    assert err.value.status == 409 and err.value.reason == "AlreadyExists"
    assert len(kube._http._idle) == 1  # every request above shared one connection
    kube.close()
