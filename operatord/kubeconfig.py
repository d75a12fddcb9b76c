"""Where the API server is and how to log in, for the common configurations, without the
``kubernetes`` package (its typed models cost a process ~35 MB).

Guarantees:
- `resolve` answers an in-cluster service account (``KUBERNETES_SERVICE_HOST``/``_PORT``, the
  mounted token and CA) and a single kubeconfig file whose user authenticates with a token,
  a token file, a client certificate or a username/password, with the cluster's server,
  certificate authority, ``insecure-skip-tls-verify``, ``tls-server-name`` and ``proxy-url``.
  Inline ``*-data`` certificates and keys are written to private temporary files (mode 0600,
  removed at exit) so that every process can load them by path.
- Anything else — an ``exec`` or ``auth-provider`` user, impersonation, several files in
  ``$KUBECONFIG``, a key this module does not know — makes `resolve` return None: the caller
  then uses the official client, which knows them all. Nothing is guessed.
- A token read from a file (in-cluster, ``tokenFile``) is re-read by `Resolved.headers`
  at most every ``refresh`` seconds, so rotated tokens are picked up.
- Paths in a kubeconfig resolve against the file's directory, as kubectl does.
"""

from __future__ import annotations

import atexit
import base64
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

# Keys whose meaning this module implements; any other key of the user (or cluster) entry
# means a configuration it does not fully understand.
_USER_KEYS = {
    "token",
    "tokenFile",
    "client-certificate",
    "client-certificate-data",
    "client-key",
    "client-key-data",
    "username",
    "password",
    "extensions",
}
_CLUSTER_KEYS = {
    "server",
    "certificate-authority",
    "certificate-authority-data",
    "insecure-skip-tls-verify",
    "tls-server-name",
    "proxy-url",
    "extensions",
    "disable-compression",
}


@dataclass
class Resolved:
    """A resolved endpoint: ``host`` and TLS settings, and the current auth headers."""

    host: str
    verify: bool = True
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_server_name: str | None = None
    proxy: str | None = None
    static_headers: dict = field(default_factory=dict)
    token_file: str | None = None  # re-read for a fresh bearer token
    refresh: float = 60.0
    _cached: tuple[float, dict] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def headers(self) -> dict:
        """The auth headers to send now (a token file is re-read every ``refresh`` seconds)."""
        if self.token_file is None:
            return self.static_headers
        now = time.monotonic()
        with self._lock:
            cached = self._cached
            if cached is not None and now - cached[0] < self.refresh:
                return cached[1]
            try:
                with open(self.token_file, encoding="utf-8") as f:
                    token = f.read().strip()
            except OSError:
                if cached is not None:
                    return cached[1]  # keep the last good token through a brief outage
                raise
            headers = {"authorization": f"Bearer {token}"}
            self._cached = (now, headers)
            return headers


def resolve(
    kubeconfig: str | None = None,
    context: str | None = None,
    *,
    environ: dict[str, str] | None = None,
    service_account_dir: str = SERVICE_ACCOUNT_DIR,
) -> Resolved | None:
    """Resolve like the official client would (``kubeconfig=None``: in-cluster when running in
    a pod, else ``$KUBECONFIG`` or ``~/.kube/config``); None when the official client is
    needed. Raises ValueError for a kubeconfig that is unreadable or names a missing context,
    cluster or user."""
    env = os.environ if environ is None else environ
    if kubeconfig is None:
        in_cluster = _in_cluster(env, service_account_dir)
        if in_cluster is not None:
            return in_cluster
        paths = [p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
        if len(paths) > 1:
            return None  # merged kubeconfigs: the official client's rules
        kubeconfig = paths[0] if paths else os.path.expanduser("~/.kube/config")
    return _from_file(kubeconfig, context)


def _in_cluster(env: Any, sa_dir: str) -> Resolved | None:
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    token_file = os.path.join(sa_dir, "token")
    if not host or not port or not os.path.exists(token_file):
        return None
    if ":" in host:
        host = f"[{host}]"
    ca = os.path.join(sa_dir, "ca.crt")
    return Resolved(
        host=f"https://{host}:{port}",
        ca_file=ca if os.path.exists(ca) else None,
        token_file=token_file,
    )


def _from_file(path: str, context: str | None) -> Resolved | None:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read kubeconfig {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"kubeconfig {path} is not a mapping")
    base = os.path.dirname(os.path.abspath(path))
    name = context or doc.get("current-context")
    ctx = _named(doc, "contexts", "context", name, path)
    cluster = _named(doc, "clusters", "cluster", ctx.get("cluster"), path)
    user = _named(doc, "users", "user", ctx.get("user"), path) if ctx.get("user") else {}
    if set(user) - _USER_KEYS or set(cluster) - _CLUSTER_KEYS:
        return None  # exec, auth-provider, impersonation, ...: the official client
    server = cluster.get("server")
    if not server:
        raise ValueError(f"kubeconfig {path}: cluster {ctx.get('cluster')!r} has no server")
    resolved = Resolved(
        host=str(server).rstrip("/"),
        verify=not cluster.get("insecure-skip-tls-verify", False),
        ca_file=_file(cluster, "certificate-authority", base),
        cert_file=_file(user, "client-certificate", base),
        key_file=_file(user, "client-key", base),
        tls_server_name=cluster.get("tls-server-name") or None,
        proxy=cluster.get("proxy-url") or None,
    )
    if user.get("token"):
        resolved.static_headers = {"authorization": f"Bearer {user['token']}"}
    elif user.get("tokenFile"):
        resolved.token_file = _path(user["tokenFile"], base)
    elif user.get("username") is not None and user.get("password") is not None:
        basic = base64.b64encode(f"{user['username']}:{user['password']}".encode()).decode()
        resolved.static_headers = {"authorization": f"Basic {basic}"}
    return resolved


def _named(doc: dict, section: str, key: str, name: Any, path: str) -> dict:
    if not name:
        raise ValueError(f"kubeconfig {path}: no {key} selected (current-context unset)")
    for entry in doc.get(section) or ():
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(key) or {}
            if not isinstance(value, dict):
                raise ValueError(f"kubeconfig {path}: {key} {name!r} is not a mapping")
            return value
    raise ValueError(f"kubeconfig {path}: {key} {name!r} not found")


def _path(value: str, base: str) -> str:
    return value if os.path.isabs(value) else os.path.join(base, value)


def _file(entry: dict, key: str, base: str) -> str | None:
    """The file holding ``key``: its path, or its inline ``<key>-data`` written to a private
    temporary file."""
    data = entry.get(f"{key}-data")
    if data:
        return _write_private(base64.b64decode(data))
    value = entry.get(key)
    return _path(value, base) if value else None


_tmpdir: str | None = None
_tmp_lock = threading.Lock()


def _write_private(content: bytes) -> str:
    global _tmpdir
    with _tmp_lock:
        if _tmpdir is None:
            _tmpdir = tempfile.mkdtemp(prefix="operatord-credentials-")  # mode 0700
            atexit.register(shutil.rmtree, _tmpdir, True)
        fd, path = tempfile.mkstemp(dir=_tmpdir)  # mode 0600
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    return path
