"""Kubernetes API access for every operatord process.

Guarantees:
- Where the API server is and how to log in comes from `operatord.kubeconfig` for the common
  configurations (in-cluster, a kubeconfig with a token, token file, client certificate or
  basic auth) and from the official client for everything else (exec plugins, auth
  providers, merged kubeconfigs); bodies are plain JSON dicts either way: no typed models.
- Every request has a connect timeout (10 s) and a read timeout: ``timeout`` when given, else
  ``default_timeout`` (30 s); opening a watch waits ``open_timeout`` (default: its stream
  timeout) for the answer, and each read of an open watch ``idle_timeout`` (default
  ``timeout_seconds + 30``). No request can wait forever on a server that accepted the
  connection and never answers.
- Requests that fail with 429, 5xx (except 501) or a connection error are retried with capped
  exponential backoff, honouring ``Retry-After``; any other non-2xx answer raises `ApiError`
  at once, carrying the HTTP status, the Status reason and the body.
- ``(apiVersion, kind)`` is resolved to a plural and a scope through discovery, once per process
  (one request per group-version; a type that is not served yet is looked up again next time).
- A `Kube` is safe to share between threads; it is never sent to another process. Send
  `ClientSettings.to_dict()` instead and build a new `Kube` there, or (cheaper) a resolved
  `Connection`: a `Kube` built from a `Connection` never imports the ``kubernetes`` package
  (its typed models cost ~35 MB per process) and takes fresh credentials through
  `Kube.set_auth` from whoever resolved them. Neither does one built from `ClientSettings`
  that `operatord.kubeconfig` resolves.
"""

from __future__ import annotations

import json
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from operatord import kubeconfig
from operatord.transport import HttpClient, TransportError

if TYPE_CHECKING:  # imported where used: workers, whose calls all go through the lean client
    import urllib3

AUTH_REFRESH_SECONDS = 30.0

# Streaming lists and metadata-only reads: the Accept headers of client-go's metadata client
# (without protobuf), and the annotation of the bookmark that ends a streaming list's state.
METADATA_ACCEPT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
METADATA_LIST_ACCEPT = (
    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
)
INITIAL_EVENTS_END = "k8s.io/initial-events-end"

# Callback for every finished request: (verb, status code or 0 for a connection error, seconds).
RequestObserver = Callable[[str, int, float], None]

_RETRYABLE_CONNECTION_ERRORS = (TransportError, ConnectionError, TimeoutError)


def _urllib3_errors() -> tuple[type[BaseException], ...]:
    """What urllib3 raises for a connection that failed (ProtocolError, ReadTimeoutError, ...)."""
    import urllib3

    return (urllib3.exceptions.HTTPError, *_RETRYABLE_CONNECTION_ERRORS)


class ApiError(Exception):
    """A non-2xx answer from the API server (after retries, for retryable ones)."""

    def __init__(self, status: int, reason: str, body: dict | None = None, message: str = ""):
        self.status = status
        self.reason = reason
        self.body = body or {}
        self.message = message or self.body.get("message", "") or reason
        super().__init__(f"{status} {reason}: {self.message}")

    @property
    def retry_after(self) -> float | None:
        details = self.body.get("details") or {}
        value = details.get("retryAfterSeconds")
        return float(value) if isinstance(value, int | float) else None


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.status == 404


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.status == 409


@dataclass(frozen=True)
class ClientSettings:
    """Where and how to reach the API server; plain data, safe to send to another process.

    ``kubeconfig=None`` means the in-cluster service account when running in a pod, else the
    default kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``).
    """

    kubeconfig: str | None = None
    context: str | None = None
    qps_pool_size: int = 32

    def to_dict(self) -> dict:
        return {
            "kubeconfig": self.kubeconfig,
            "context": self.context,
            "poolSize": self.qps_pool_size,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ClientSettings:
        return cls(d.get("kubeconfig"), d.get("context"), int(d.get("poolSize", 32)))

    def build_api_client(self) -> Any:
        """The official client's ``ApiClient`` for these settings (imports ``kubernetes``)."""
        from kubernetes import client as k8s_client
        from kubernetes import config as k8s_config

        cfg = k8s_client.Configuration()
        if self.kubeconfig:
            k8s_config.load_kube_config(
                config_file=self.kubeconfig, context=self.context, client_configuration=cfg
            )
        else:
            try:
                k8s_config.load_incluster_config(client_configuration=cfg)
            except k8s_config.ConfigException:
                k8s_config.load_kube_config(context=self.context, client_configuration=cfg)
        cfg.connection_pool_maxsize = self.qps_pool_size
        cfg.retries = False
        return k8s_client.ApiClient(cfg)


@dataclass(frozen=True)
class Connection:
    """A resolved connection to the API server: plain data, no ``kubernetes`` import needed.

    ``headers`` carries the credentials at the time of resolving; they expire with the
    token, so the process that resolved them pushes fresh ones (`Kube.set_auth`).
    """

    host: str
    headers: dict
    user_agent: str = "operatord"
    verify: bool = True
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_server_name: str | None = None
    proxy: str | None = None
    pool_size: int = 32
    # Every write of a `Kube` built from this connection carries dryRun=All: the server
    # validates and defaults it and persists nothing (`operatord diff`).
    dry_run: bool = False

    def to_dict(self) -> dict:
        return {
            "dryRun": self.dry_run,
            "host": self.host,
            "headers": dict(self.headers),
            "userAgent": self.user_agent,
            "verify": self.verify,
            "caFile": self.ca_file,
            "certFile": self.cert_file,
            "keyFile": self.key_file,
            "tlsServerName": self.tls_server_name,
            "proxy": self.proxy,
            "poolSize": self.pool_size,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Connection:
        return cls(
            host=d["host"],
            headers=dict(d.get("headers") or {}),
            user_agent=d.get("userAgent", "operatord"),
            verify=bool(d.get("verify", True)),
            ca_file=d.get("caFile"),
            cert_file=d.get("certFile"),
            key_file=d.get("keyFile"),
            tls_server_name=d.get("tlsServerName"),
            proxy=d.get("proxy"),
            pool_size=int(d.get("poolSize", 32)),
            dry_run=bool(d.get("dryRun", False)),
        )

    def http_client(self) -> HttpClient | None:
        """The lean client for request/answer calls, or None behind a proxy (urllib3 then)."""
        if self.proxy:
            return None
        return HttpClient(
            self.host,
            verify=self.verify,
            ca_file=self.ca_file,
            cert_file=self.cert_file,
            key_file=self.key_file,
            server_hostname=self.tls_server_name,
            pool_size=self.pool_size,
        )

    def pool_manager(self) -> urllib3.PoolManager:
        import urllib3

        args: dict[str, Any] = {
            "maxsize": self.pool_size,
            "cert_reqs": ssl.CERT_REQUIRED if self.verify else ssl.CERT_NONE,
            "ca_certs": self.ca_file,
            "cert_file": self.cert_file,
            "key_file": self.key_file,
        }
        if self.tls_server_name:
            args["server_hostname"] = self.tls_server_name
        if self.proxy:
            return urllib3.ProxyManager(proxy_url=self.proxy, **args)
        return urllib3.PoolManager(**args)


@dataclass(frozen=True)
class Resource:
    """A served resource type: where its objects live."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def key(self) -> str:
        """A short stable name for metrics and logs, e.g. ``configmaps`` or ``widgets.example.com``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str = ""
    ) -> str:
        base = f"/apis/{self.api_version}" if self.group else f"/api/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
            if subresource:
                base += f"/{subresource}"
        return base


_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _with_dry_run(query: dict | list | None) -> dict | list:
    """``query`` plus ``dryRun=All`` (any dryRun it had is replaced)."""
    if isinstance(query, list):
        return [(k, v) for k, v in query if k != "dryRun"] + [("dryRun", "All")]
    return {**(query or {}), "dryRun": "All"}


class Kube:
    """A thread-safe JSON client for the Kubernetes API."""

    def __init__(
        self,
        settings: ClientSettings | Connection | None = None,
        *,
        on_request: RequestObserver | None = None,
        max_attempts: int = 6,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
        default_timeout: float = 30.0,
    ):
        self.settings = settings or ClientSettings()
        self.on_request = on_request
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.default_timeout = default_timeout
        self._resources: dict[tuple[str, str], Resource] = {}
        self._lock = threading.Lock()
        self._auth: tuple[float, dict] | None = None
        self._resolved: kubeconfig.Resolved | None = None
        self.api_client: Any = None  # a kubernetes ApiClient when the official client resolved
        self._pool_manager: Any = None  # urllib3's, built on first use (watches, proxies)
        self._static_auth: dict = {}
        if isinstance(self.settings, ClientSettings):
            # The common configurations without the kubernetes package; None: the client's.
            self._resolved = kubeconfig.resolve(self.settings.kubeconfig, self.settings.context)
        if self._resolved is not None:
            self._host = self._resolved.host
            self._base_headers = {"User-Agent": "operatord"}
        elif isinstance(self.settings, Connection):
            self._host = self.settings.host.rstrip("/")
            self._base_headers = {"User-Agent": self.settings.user_agent}
            self._static_auth = dict(self.settings.headers)
        else:
            self.api_client = self.settings.build_api_client()
            self._pool_manager = self.api_client.rest_client.pool_manager
            self._host = self.api_client.configuration.host.rstrip("/")
            self._base_headers = {"User-Agent": self.api_client.user_agent}
        # Request/answer calls go through the lean client; watches (streams) through urllib3.
        self._http = self.connection().http_client()
        # Every POST, PUT, PATCH and DELETE carries dryRun=All (a dry-run `Connection`).
        self.dry_run = isinstance(self.settings, Connection) and self.settings.dry_run

    @property
    def host(self) -> str:
        """The API server's base URL."""
        return self._host

    @property
    def _pool(self) -> urllib3.PoolManager:
        if self._pool_manager is None:
            with self._lock:
                if self._pool_manager is None:
                    self._pool_manager = self.connection().pool_manager()
        return self._pool_manager

    def connection(self) -> Connection:
        """This client's connection as plain data, with its current credentials."""
        resolved = self._resolved
        if resolved is not None:
            assert isinstance(self.settings, ClientSettings)
            return Connection(
                host=resolved.host,
                headers=dict(resolved.headers()),
                user_agent=self._base_headers["User-Agent"],
                verify=resolved.verify,
                ca_file=resolved.ca_file,
                cert_file=resolved.cert_file,
                key_file=resolved.key_file,
                tls_server_name=resolved.tls_server_name,
                proxy=resolved.proxy,
                pool_size=self.settings.qps_pool_size,
            )
        if isinstance(self.settings, Connection):
            return Connection.from_dict(
                {**self.settings.to_dict(), "headers": self._auth_headers()}
            )
        assert self.api_client is not None
        cfg = self.api_client.configuration
        return Connection(
            host=self._host,
            headers=dict(self._auth_headers()),
            user_agent=self.api_client.user_agent,
            verify=bool(cfg.verify_ssl),
            ca_file=cfg.ssl_ca_cert,
            cert_file=cfg.cert_file,
            key_file=cfg.key_file,
            tls_server_name=cfg.tls_server_name,
            proxy=cfg.proxy,
            pool_size=cfg.connection_pool_maxsize or 32,
        )

    def set_auth(self, headers: dict) -> None:
        """Use these credentials from now on (a `Kube` built from a `Connection`)."""
        self._static_auth = dict(headers)

    def close(self) -> None:
        try:
            if self._http is not None:
                self._http.close()
            if self.api_client is not None:
                self.api_client.close()
            elif self._pool_manager is not None:
                self._pool_manager.clear()
        except Exception:  # noqa: BLE001 - closing must never raise
            pass

    # ---- raw requests -------------------------------------------------------------------

    def _auth_headers(self) -> dict:
        """Authorization headers, recomputed at most every AUTH_REFRESH_SECONDS.

        The client's own per-request path re-reads the kubeconfig (and the proxy environment)
        on every call; caching keeps exec-plugin and token-file credentials fresh at a tiny
        fraction of the cost.
        """
        if self._resolved is not None:
            return self._resolved.headers()
        if self.api_client is None:
            return self._static_auth
        now = time.monotonic()
        cached = self._auth
        if cached is not None and now - cached[0] < AUTH_REFRESH_SECONDS:
            return cached[1]
        headers: dict = {}
        self.api_client.update_params_for_auth(headers, [], ["BearerToken"], "", "GET", None)
        self._auth = (now, headers)
        return headers

    def _send(
        self,
        method: str,
        path: str,
        query: dict | list | None,
        body: Any,
        content_type: str | None,
        timeout: float | tuple | None,
        accept: str = "application/json",
    ) -> urllib3.BaseHTTPResponse:
        headers = {"Accept": accept, **self._base_headers, **self._auth_headers()}
        url = self._host + path
        if query:
            items = query.items() if isinstance(query, dict) else query
            url += "?" + urlencode([(k, _qv(v)) for k, v in items if v is not None])
        payload = None
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
            payload = body if isinstance(body, str | bytes) else json.dumps(body)
        import urllib3

        if isinstance(timeout, tuple):
            tmo = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        else:
            tmo = urllib3.Timeout(total=timeout if timeout is not None else self.default_timeout)
        return self._pool.request(
            method,
            url,
            body=payload,
            headers=headers,
            timeout=tmo,
            retries=False,
            preload_content=False,
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict | list | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: float | None = None,
        verb: str | None = None,
        retry: bool = True,
        accept: str = "application/json",
    ) -> dict:
        """Send one request and return the decoded JSON body (``{}`` for an empty body).

        ``accept``: the ``Accept`` header (e.g. a PartialObjectMetadata media type)."""
        verb = verb or _verb_for(method, path)
        if self.dry_run and method in _WRITE_METHODS:
            query = _with_dry_run(query)
        attempts = self.max_attempts if retry else 1
        delay = self.backoff_initial
        for attempt in range(1, attempts + 1):
            start = time.monotonic()
            try:
                status, reason, data, retry_after = self._exchange(
                    method,
                    path,
                    query,
                    body,
                    content_type,
                    timeout or self.default_timeout,
                    accept,
                )
            except _RETRYABLE_CONNECTION_ERRORS as exc:
                self._observe(verb, 0, start)
                if attempt >= attempts:
                    raise ApiError(0, "ConnectionError", message=str(exc)) from exc
                time.sleep(_jittered(delay))
                delay = min(delay * 2, self.backoff_max)
                continue
            self._observe(verb, status, start)
            if 200 <= status < 300:
                if not data:
                    return {}
                return json.loads(data)
            decoded = _decode_status(data)
            if _retryable(status) and attempt < attempts:
                wait = _retry_after(retry_after)
                time.sleep(wait if wait is not None else _jittered(delay))
                delay = min(delay * 2, self.backoff_max)
                continue
            raise ApiError(status, decoded.get("reason") or reason or "Error", decoded)
        raise AssertionError("unreachable")

    def _exchange(
        self,
        method: str,
        path: str,
        query: dict | list | None,
        body: Any,
        content_type: str | None,
        timeout: float,
        accept: str = "application/json",
    ) -> tuple[int, str, bytes, str | None]:
        """One request, answer read whole: (status, reason, body, Retry-After header)."""
        if self._http is None:
            try:
                resp = self._send(method, path, query, body, content_type, timeout, accept)
                try:
                    data = resp.data
                finally:
                    resp.release_conn()
            except _urllib3_errors() as exc:
                raise TransportError(f"{type(exc).__name__}: {exc}") from exc
            return resp.status, resp.reason or "", data, resp.headers.get("Retry-After")
        headers = {"Accept": accept, **self._base_headers, **self._auth_headers()}
        if query:
            items = query.items() if isinstance(query, dict) else query
            path += "?" + urlencode([(k, _qv(v)) for k, v in items if v is not None])
        payload = None
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
            if isinstance(body, bytes):
                payload = body
            else:
                payload = (body if isinstance(body, str) else json.dumps(body)).encode()
        answer = self._http.request(method, path, headers, payload, timeout)
        return answer.status, answer.reason, answer.data, answer.headers.get("retry-after")

    def _observe(self, verb: str, code: int, start: float) -> None:
        if self.on_request is not None:
            try:
                self.on_request(verb, code, time.monotonic() - start)
            except Exception:  # noqa: BLE001 - metrics must never break a request
                pass

    # ---- discovery ----------------------------------------------------------------------

    def resource(self, api_version: str, kind: str) -> Resource:
        """Resolve a type through discovery; raises ApiError(404) when the type is not served."""
        key = (api_version, kind)
        with self._lock:
            found = self._resources.get(key)
        if found:
            return found
        group = api_version.rpartition("/")[0]
        path = f"/apis/{api_version}" if group else f"/api/{api_version}"
        doc = self.request("GET", path, verb="discovery")
        served = {
            (api_version, r["kind"]): Resource(
                api_version, r["kind"], r["name"], bool(r.get("namespaced"))
            )
            for r in doc.get("resources", [])
            if r.get("kind") and "/" not in r.get("name", "")
        }
        with self._lock:  # every type of the group-version: one discovery request per group
            for k, v in served.items():
                self._resources.setdefault(k, v)
        if key in served:
            return served[key]
        raise ApiError(404, "NotFound", message=f"{kind} is not served by {api_version}")

    # ---- verbs on objects -----------------------------------------------------------------

    def get(self, res: Resource, name: str, namespace: str | None = None) -> dict:
        return self.request("GET", res.path(namespace, name), verb="get")

    def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
        timeout: float | None = None,
        retry: bool = True,
        shard_selector: str | None = None,
        on_meta: Callable[[dict], None] | None = None,
        accept: str = "application/json",
        transform: Callable[[dict], dict] | None = None,
    ) -> tuple[list[dict], str]:
        """List every object (following ``continue``); returns (items, list resourceVersion).

        ``timeout`` and ``retry`` apply to each page as in :meth:`request`. ``shard_selector``
        is sent as ``shardSelector`` (KEP-5866; servers without it ignore it); ``on_meta`` gets
        the list metadata of the first page (its ``shardInfo`` tells whether it was applied).
        ``accept``: the ``Accept`` header (``METADATA_LIST_ACCEPT`` for PartialObjectMetadata;
        items keep the ``kind`` the server gave them). ``transform`` is applied to each item as
        its page is decoded, so only one page of untransformed items is ever held."""
        items: list[dict] = []
        cont = None
        while True:
            query = {
                "labelSelector": label_selector,
                "fieldSelector": field_selector,
                "shardSelector": shard_selector or None,
                "limit": page_size,
                "continue": cont,
            }
            page = self.request(
                "GET",
                res.path(namespace),
                query=query,
                verb="list",
                timeout=timeout,
                retry=retry,
                accept=accept,
            )
            for item in page.get("items") or []:
                item.setdefault("apiVersion", res.api_version)
                item.setdefault("kind", res.kind)
                items.append(transform(item) if transform is not None else item)
            meta = page.get("metadata") or {}
            if on_meta is not None and cont is None:
                on_meta(meta)
            cont = meta.get("continue")
            if not cont:
                return items, meta.get("resourceVersion", "")

    def create(self, res: Resource, obj: dict, namespace: str | None = None, **query: Any) -> dict:
        ns = namespace or (obj.get("metadata") or {}).get("namespace")
        return self.request("POST", res.path(ns), body=obj, query=query or None, verb="create")

    def replace(self, res: Resource, obj: dict, *, subresource: str = "", **query: Any) -> dict:
        meta = obj["metadata"]
        path = res.path(meta.get("namespace"), meta["name"], subresource)
        return self.request("PUT", path, body=obj, query=query or None, verb="update")

    def patch(
        self,
        res: Resource,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        patch_type: str = "merge",
        subresource: str = "",
        field_manager: str | None = None,
        force: bool | None = None,
    ) -> dict:
        content_type = {
            "merge": "application/merge-patch+json",
            "json": "application/json-patch+json",
            "apply": "application/apply-patch+yaml",
            "strategic": "application/strategic-merge-patch+json",
        }[patch_type]
        query = {"fieldManager": field_manager, "force": force}
        body = json.dumps(patch) if patch_type == "apply" else patch
        return self.request(
            "PATCH",
            res.path(namespace, name, subresource),
            body=body,
            content_type=content_type,
            query=query,
            verb="patch",
        )

    def delete(
        self,
        res: Resource,
        name: str,
        namespace: str | None = None,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
        propagation_policy: str | None = None,
    ) -> dict:
        body: dict = {"apiVersion": "v1", "kind": "DeleteOptions"}
        pre = {}
        if uid:
            pre["uid"] = uid
        if resource_version:
            pre["resourceVersion"] = resource_version
        if pre:
            body["preconditions"] = pre
        if propagation_policy:
            body["propagationPolicy"] = propagation_policy
        return self.request("DELETE", res.path(namespace, name), body=body, verb="delete")

    # ---- watch --------------------------------------------------------------------------

    def watch(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        label_selector: str | None = None,
        shard_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
        allow_bookmarks: bool = True,
        idle_timeout: float | None = None,
        open_timeout: float | None = None,
        on_open: Callable[[urllib3.BaseHTTPResponse], None] | None = None,
        send_initial_events: bool = False,
        accept: str = "application/json",
    ) -> Iterator[dict]:
        """Yield raw watch events (``{"type": ..., "object": {...}}``) until the server closes.

        Connecting and waiting for the answer take at most ``open_timeout`` each (default: 10 s
        to connect, ``idle_timeout`` for the answer); once open, each socket read waits at most
        ``idle_timeout`` (default ``timeout_seconds + 30``), so a half-open connection raises
        instead of hanging. Errors opening the watch raise ApiError (status 0: no answer); a
        connection lost afterwards raises ApiError(0). ``ERROR`` events are yielded as they
        are, for the caller to act on (e.g. 410). ``on_open`` receives the open urllib3
        response: another thread may call its ``shutdown()`` to end a blocked read.
        ``send_initial_events``: a streaming list (``sendInitialEvents=true``,
        ``resourceVersionMatch=NotOlderThan``): the state as ADDED events, then a BOOKMARK
        annotated ``INITIAL_EVENTS_END`` on servers that support it. ``accept``: the
        ``Accept`` header (``METADATA_ACCEPT`` for PartialObjectMetadata events).
        """
        query = {
            "watch": "true",
            "resourceVersion": resource_version or None,
            "labelSelector": label_selector,
            "shardSelector": shard_selector or None,
            "fieldSelector": field_selector or None,
            "timeoutSeconds": timeout_seconds,
            "allowWatchBookmarks": "true" if allow_bookmarks else None,
        }
        if send_initial_events:
            query["sendInitialEvents"] = "true"
            query["resourceVersionMatch"] = "NotOlderThan"
        read_timeout = idle_timeout or timeout_seconds + 30
        timeouts = (open_timeout or 10, open_timeout or read_timeout)
        start = time.monotonic()
        connection_errors = _urllib3_errors()
        try:
            resp = self._send("GET", res.path(namespace), query, None, None, timeouts, accept)
        except connection_errors as exc:
            self._observe("watch", 0, start)
            raise ApiError(0, "ConnectionError", message=str(exc)) from exc
        self._observe("watch", resp.status, start)
        if resp.status != 200:
            data = resp.data
            resp.release_conn()
            decoded = _decode_status(data)
            raise ApiError(resp.status, decoded.get("reason") or resp.reason or "Error", decoded)
        raw = resp
        if timeouts[1] != read_timeout:  # the answer came: reads of the stream get their own
            sock = _stream_socket(raw)
            if sock is not None:
                sock.settimeout(read_timeout)
        if on_open is not None:
            on_open(raw)
        try:
            buf = b""
            for chunk in raw.stream(amt=None, decode_content=False):
                if b"\n" not in chunk:
                    buf += chunk
                    continue
                # one split per chunk: linear in the chunk, however many events it holds
                lines = (buf + chunk).split(b"\n")
                buf = lines.pop()
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
            if buf.strip():
                yield json.loads(buf)
        except connection_errors + (OSError,) as exc:
            raise ApiError(0, "ConnectionError", message=str(exc)) from exc
        finally:
            raw.release_conn()

    def watch_window(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        resource_version: str,
        label_selector: str | None = None,
        shard_selector: str | None = None,
        seconds: int = 1,
        timeout: float = 3.0,
    ) -> Iterator[dict]:
        """The events a watch from ``resource_version`` gets within ``seconds``: one watch
        request that the server ends itself, its answer read whole (a cheap check that the
        watch path answers and of what an open watch should have delivered).

        Connect and every read wait at most ``timeout``; no retries. No answer raises
        ApiError(0); a non-200 answer raises ApiError with its status, a body that is not watch
        events ValueError. Bookmarks are not asked for; ``ERROR`` events are returned as they
        are."""
        query = {
            "watch": "true",
            "resourceVersion": resource_version or None,
            "labelSelector": label_selector,
            "shardSelector": shard_selector or None,
            "timeoutSeconds": seconds,
        }
        start = time.monotonic()
        try:
            status, reason, data, _ = self._exchange(
                "GET", res.path(namespace), query, None, None, timeout
            )
        except _RETRYABLE_CONNECTION_ERRORS as exc:
            self._observe("watchcheck", 0, start)
            raise ApiError(0, "ConnectionError", message=str(exc)) from exc
        self._observe("watchcheck", status, start)
        if status != 200:
            decoded = _decode_status(data)
            raise ApiError(status, decoded.get("reason") or reason or "Error", decoded)
        # decoded as the caller reads them: a check stops at the first event that matters
        return (json.loads(line) for line in data.splitlines() if line.strip())


def _stream_socket(resp: urllib3.BaseHTTPResponse) -> Any:
    """The socket an open urllib3 response reads from. http.client hands a connection that
    will close (a watch usually is one) over to the response, so the connection's ``sock`` is
    None then and the socket is the one under the response's file. None when neither is found
    (the stream then keeps the open timeout: tests/test_watch_liveness.py fails)."""
    sock = getattr(getattr(resp, "connection", None), "sock", None)
    if sock is None:
        fp = getattr(getattr(resp, "_fp", None), "fp", None)  # http.client's buffered file
        sock = getattr(getattr(fp, "raw", None), "_sock", None)  # socket.SocketIO
    return sock


def _qv(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _verb_for(method: str, path: str) -> str:
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
        method.upper(), "get"
    )


def _retryable(status: int) -> bool:
    return status == 429 or (status >= 500 and status != 501)


def _retry_after(header: str | None) -> float | None:
    if not header:
        return None
    try:
        return min(max(float(header), 0.0), 30.0)
    except ValueError:
        return None


def _jittered(delay: float) -> float:
    return delay * random.uniform(0.5, 1.5)


def _decode_status(data: bytes | None) -> dict:
    if not data:
        return {}
    try:
        decoded = json.loads(data)
    except ValueError:
        return {"message": data[:200].decode("utf-8", "replace")}
    return decoded if isinstance(decoded, dict) else {}
