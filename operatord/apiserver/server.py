"""HTTP/1.1 front end of the embedded API server, on asyncio.

Guarantees: keep-alive connections; watches stream chunked JSON lines and end with a terminating
chunk (or are aborted by the `drop-watches` fault); every resource request is recorded in the
audit log with the code it was answered with; control endpoints live under `/_operatord/` and
are neither faulted nor audited.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import listoptions, negotiation, openapi, reviews, scale, tables
from . import patch as P
from .errors import ApiError
from .listoptions import INITIAL_EVENTS_END
from .negotiation import Target
from .objects import Matcher
from .resources import Registry, ResourceType
from .selectors import SelectorError, combine, parse_fields, parse_labels
from .shardselector import ShardSelectorError, parse_shard_selector
from .store import Store, Watcher, encode, now_time

_REASON_PHRASES = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    410: "Gone",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

VERSION_INFO = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-operatord",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}

PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/json-patch+json": "json",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+json": "apply",
}


class Faults:
    """Server-side fault state; mutated only through `configure` and the control endpoints."""

    def __init__(self) -> None:
        self.latency = 0.0
        self.jitter = 0.0
        self.errors: list[dict] = []
        self.watch_drop_after: float | None = None
        # Behave like an API server without ShardedListAndWatch: ignore shardSelector.
        self.ignore_shard_selector = False
        # Behave like an API server without WatchList: "ignore" drops sendInitialEvents and
        # resourceVersionMatch of watches (a plain watch), "reject" answers 422 as
        # kube-apiserver with the feature gate off.
        self.without_watch_list: str | None = None
        # Behave like an API server without meta.k8s.io PartialObjectMetadata: the
        # `as=PartialObjectMetadata*` media types are not acceptable.
        self.without_partial_metadata = False

    def to_dict(self) -> dict:
        return {
            "latency": self.latency,
            "latencyJitter": self.jitter,
            "errors": [{k: v for k, v in e.items() if k != "rng"} for e in self.errors],
            "watchDropAfter": self.watch_drop_after,
            "ignoreShardSelector": self.ignore_shard_selector,
            "withoutWatchList": self.without_watch_list,
            "withoutPartialObjectMetadata": self.without_partial_metadata,
        }

    def configure(self, cfg: dict) -> None:
        """Replace the whole fault configuration; raises ValueError on a malformed one."""
        errors = []
        for e in cfg.get("errors") or []:
            code = int(e.get("code", 500))
            if code not in (429, 500, 503):
                raise ValueError("error code must be 429, 500 or 503")
            frac = float(e.get("fraction", 1.0))
            if not 0.0 <= frac <= 1.0:
                raise ValueError("fraction must be within [0, 1]")
            seed = e.get("seed")
            if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
                raise ValueError("seed must be an integer")
            errors.append(
                {
                    "code": code,
                    "fraction": frac,
                    "verbs": list(e.get("verbs") or []),
                    "resources": list(e.get("resources") or []),
                    "retryAfter": e.get("retryAfter"),
                    "count": e.get("count"),
                    "seed": seed,
                    "rng": random.Random(seed) if seed is not None else random,
                }
            )
        self.latency = float(cfg.get("latency") or 0.0)
        self.jitter = float(cfg.get("latencyJitter") or 0.0)
        self.errors = errors
        wda = cfg.get("watchDropAfter")
        self.watch_drop_after = float(wda) if wda is not None else None
        without_watch_list = cfg.get("withoutWatchList") or None
        if without_watch_list not in (None, "ignore", "reject"):
            raise ValueError('withoutWatchList must be null, "ignore" or "reject"')
        self.ignore_shard_selector = bool(cfg.get("ignoreShardSelector") or False)
        self.without_watch_list = without_watch_list
        self.without_partial_metadata = bool(cfg.get("withoutPartialObjectMetadata") or False)

    def pick_error(self, verb: str, rt: ResourceType, sub: str) -> dict | None:
        for e in self.errors:
            if e["verbs"] and verb not in e["verbs"]:
                continue
            if e["resources"]:
                names = {rt.plural, rt.gr}
                if sub:
                    names |= {f"{rt.plural}/{sub}", f"{rt.gr}/{sub}"}
                if not names & set(e["resources"]):
                    continue
            if e["count"] is not None and e["count"] <= 0:
                continue
            if e["fraction"] < 1.0 and e["rng"].random() >= e["fraction"]:
                continue
            if e["count"] is not None:
                e["count"] -= 1
            return e
        return None


class _Req:
    __slots__ = ("method", "path", "query", "headers", "body", "uri")

    def __init__(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
        uri: str = "",
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.uri = uri  # the request target as sent: path and query

    def q(self, name: str, default: str | None = None) -> str | None:
        v = self.query.get(name)
        return v[-1] if v else default

    def flag(self, name: str) -> bool:
        v = self.q(name)
        return v is not None and v.lower() in ("true", "1", "")


class ApiHttpServer:
    """The embedded API server: store, HTTP front end, faults, audit log, collector loop."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        history_size: int = 10_000,
        bookmark_interval: float = 1.0,
        gc_delay: float = 0.05,
        audit_size: int = 100_000,
    ) -> None:
        self.host = host
        self.port = port
        self.registry = Registry()
        self.store = Store(self.registry, history_size=history_size)
        self.faults = Faults()
        self.audit: deque[dict[str, Any]] = deque(maxlen=audit_size)
        self.bookmark_interval = bookmark_interval
        self.gc_delay = gc_delay
        self._watches: set[tuple[asyncio.StreamWriter, Watcher]] = set()
        self._server: asyncio.base_events.Server | None = None
        self._gc_handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.store.wakeup = self._schedule_gc
        self._server = await asyncio.start_server(
            self._connection, self.host, self.port, limit=1 << 20, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer, w in list(self._watches):
            w.closed = True
            writer.transport.abort()
        if self._gc_handle is not None:
            self._gc_handle.cancel()

    # -- garbage collector scheduling -------------------------------------------------------

    def _schedule_gc(self) -> None:
        if self._gc_handle is None and self._loop is not None:
            self._gc_handle = self._loop.call_later(self.gc_delay, self._run_gc)

    def _run_gc(self) -> None:
        self._gc_handle = None
        try:
            self.store.collect_garbage()
        finally:
            if self.store.has_pending_work():
                # namespaces or CRDs still waiting for finalizers: look again later
                if self._gc_handle is None and self._loop is not None:
                    self._gc_handle = self._loop.call_later(max(self.gc_delay, 0.2), self._run_gc)

    # -- connection handling ----------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    self._raw(writer, 431, b"", "text/plain", keep=False)
                    return
                lines = head[:-4].decode("latin-1").split("\r\n")
                try:
                    method, target, proto = lines[0].split(" ", 2)
                except ValueError:
                    self._raw(writer, 400, b"bad request line", "text/plain", keep=False)
                    return
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
                if "content-length" in headers:
                    body = await reader.readexactly(int(headers["content-length"]))
                elif headers.get("transfer-encoding", "").lower() == "chunked":
                    body = await _read_chunked(reader)
                else:
                    body = b""
                keep = proto == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
                parts = urlsplit(target)
                req = _Req(
                    method,
                    unquote(parts.path),
                    parse_qs(parts.query, keep_blank_values=True),
                    headers,
                    body,
                    target,
                )
                ok = await self._dispatch(req, reader, writer, keep)
                if not (ok and keep):
                    return
                if writer.transport.get_write_buffer_size() > 1 << 16:
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            try:
                writer.close()
            except RuntimeError:
                pass

    def _raw(
        self,
        writer: asyncio.StreamWriter,
        code: int,
        body: bytes,
        ctype: str = "application/json",
        *,
        keep: bool = True,
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
        newline: bool = False,
    ) -> None:
        """One response; `newline` ends the body with "\\n", as the real server ends JSON."""
        pairs = headers.items() if isinstance(headers, dict) else headers or ()
        extra = "".join(f"{k}: {v}\r\n" for k, v in pairs)
        head = (
            f"HTTP/1.1 {code} {_REASON_PHRASES.get(code, 'Unknown')}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body) + newline}\r\n"
            f"Cache-Control: no-cache, private\r\n{extra}"
            f"{'' if keep else 'Connection: close' + chr(13) + chr(10)}\r\n"
        ).encode("latin-1")
        writer.write(head + body + b"\n" if newline else head + body)

    def _json(
        self,
        writer: asyncio.StreamWriter,
        code: int,
        obj: Any,
        keep: bool = True,
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
    ) -> None:
        if isinstance(obj, _Raw):
            body = obj.raw
        elif isinstance(obj, dict):
            body = encode(obj)
        else:
            body = json.dumps(obj).encode()
        self._raw(writer, code, body, keep=keep, headers=headers, newline=True)

    async def _dispatch(
        self, req: _Req, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, keep: bool
    ) -> bool:
        path = req.path
        if len(path) > 1 and path.endswith("/"):
            path = req.path = path.rstrip("/")
        if path.startswith("/_operatord/"):
            code, out = self._control(req)
            self._json(writer, code, out, keep)
            return True
        if path in ("/healthz", "/livez", "/readyz"):
            self._raw(writer, 200, b"ok", "text/plain; charset=utf-8", keep=keep)
            return True
        f = self.faults
        if f.latency or f.jitter:
            await asyncio.sleep(f.latency + random.random() * f.jitter)
        try:
            if path.startswith("/api/") or path.startswith("/apis/"):
                return await self._resource(req, reader, writer, keep)
            code, out = self._non_resource(path)
        except ApiError as e:
            code, out = e.code, e.status()
        self._json(writer, code, out, keep)
        return True

    # -- control endpoints --------------------------------------------------------------------

    def _control(self, req: _Req) -> tuple[int, Any]:
        path, m = req.path.rstrip("/"), req.method
        try:
            body = json.loads(req.body) if req.body else {}
        except ValueError:
            return 400, {"error": "body is not JSON"}
        if path == "/_operatord/faults":
            if m == "GET":
                return 200, self.faults.to_dict()
            if m in ("PUT", "POST"):
                try:
                    self.faults.configure(body)
                except (ValueError, TypeError) as e:
                    return 400, {"error": str(e)}
                return 200, self.faults.to_dict()
            if m == "DELETE":
                self.faults.configure({})
                return 200, self.faults.to_dict()
        if path == "/_operatord/faults/drop-watches" and m == "POST":
            return 200, {"dropped": self.drop_watches()}
        if path == "/_operatord/faults/compact" and m == "POST":
            self.store.compact()
            return 200, {"resourceVersion": str(self.store.rv)}
        if path == "/_operatord/requests":
            if m == "GET":
                return 200, list(self.audit)
            if m == "DELETE":
                self.audit.clear()
                return 200, []
        if path == "/_operatord/state" and m == "GET":
            return 200, {
                "resourceVersion": str(self.store.rv),
                "watches": len(self._watches),
                "types": sorted(rt.gr for rt in self.registry.types()),
            }
        return 404, {"error": f"no control endpoint {m} {path}"}

    def drop_watches(self) -> int:
        n = 0
        for writer, w in list(self._watches):
            w.closed = True
            writer.transport.abort()
            n += 1
        self._watches.clear()
        return n

    # -- discovery ----------------------------------------------------------------------------

    def _non_resource(self, path: str) -> tuple[int, Any]:
        path = path.rstrip("/") or "/"
        if path == "/version":
            return 200, VERSION_INFO
        if path == "/api":
            return 200, {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}
                ],
            }
        if path == "/apis":
            return 200, self.registry.api_group_list()
        if path == "/openapi/v3" or path.startswith("/openapi/v3/"):
            gv_path = path[len("/openapi/v3") :].lstrip("/")
            doc = (
                openapi.index(self.registry)
                if not gv_path
                else openapi.document(self.registry, gv_path)
            )
            if doc is not None:
                return 200, doc
        if path == "/":
            paths = ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"]
            for g, vs in self.registry.group_versions().items():
                paths.append(f"/apis/{g}")
                paths.extend(f"/apis/{g}/{v}" for v in vs)
            return 200, {"paths": sorted(paths)}
        raise ApiError(404, "the server could not find the requested resource", "NotFound", {})

    # -- resources ----------------------------------------------------------------------------

    def _route(self, req: _Req) -> tuple[str, str, ResourceType | tuple[str, dict], str, str, str]:
        """(group, version, ResourceType|discovery marker, namespace, name, subresource)."""
        segs = [s for s in req.path.split("/") if s]
        if segs[0] == "api":
            group = ""
            rest = segs[1:]
        else:
            if len(segs) < 2:
                raise ApiError(
                    404, "the server could not find the requested resource", "NotFound", {}
                )
            group = segs[1]
            rest = segs[2:]
            if not rest:
                doc = self.registry.api_group(group)
                if doc is None:
                    raise ApiError(
                        404, "the server could not find the requested resource", "NotFound", {}
                    )
                return group, "", ("doc", doc), "", "", ""
        version = rest[0]
        rest = rest[1:]
        if not rest:
            doc = self.registry.resource_list(group, version)
            if doc is None:
                raise ApiError(
                    404, "the server could not find the requested resource", "NotFound", {}
                )
            return group, version, ("doc", doc), "", "", ""
        ns = ""
        if rest[0] == "namespaces" and len(rest) >= 3:
            cand = self.registry.lookup(group, version, rest[2])
            if cand is not None and cand.namespaced:
                ns = rest[1]
                rest = rest[2:]
        rt = self.registry.lookup(group, version, rest[0])
        if rt is None or len(rest) > 3:
            raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        if sub and not (
            (sub == "status" and rt.status_subresource)
            or (sub == "scale" and scale.spec_of(rt, version) is not None)
        ):
            raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
        return group, version, rt, ns, name, sub

    async def _resource(
        self, req: _Req, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, keep: bool
    ) -> bool:
        group, version, rt, ns, name, sub = self._route(req)
        if isinstance(rt, tuple):
            self._json(writer, 200, rt[1], keep)
            return True
        m = req.method
        watch = m == "GET" and req.flag("watch") if "watch" in req.query else False
        if m == "GET":
            verb = "get" if name else ("watch" if watch else "list")
        elif m == "POST":
            verb = "create"
        elif m == "PUT":
            verb = "update"
        elif m == "PATCH":
            verb = "patch"
        elif m == "DELETE":
            verb = "delete" if name else "deletecollection"
        else:
            verb = m.lower()
        audited_name = name
        if verb in ("list", "watch") and not name:
            # As kube-apiserver's RequestInfo: a list or watch of one object by fieldSelector
            # metadata.name=X is authorized (and audited) with that name (RBAC resourceNames).
            audited_name = _selected_name(req.q("fieldSelector"))
        entry = {
            "verb": verb,
            "apiGroup": group,
            "resource": rt.plural,
            "subresource": sub,
            "namespace": ns,
            "name": audited_name,
            "code": 0,
            "requestURI": req.uri,
            # who asked: tells apart clients that share the server (e.g. an operator and a test)
            "userAgent": req.headers.get("user-agent", ""),
            # when it arrived: time.monotonic(), system-wide on Linux, so comparable with the
            # clock of any other process on the host
            "time": time.monotonic(),
        }
        if verb in _WRITE_VERBS:
            entry["dryRun"] = req.q("dryRun") == "All"
        try:
            fault = self.faults.pick_error(verb, rt, sub)
            if fault is not None:
                hdrs = {}
                if fault.get("retryAfter") is not None:
                    hdrs["Retry-After"] = str(int(fault["retryAfter"]))
                elif fault["code"] == 429:
                    hdrs["Retry-After"] = "1"
                msg = (
                    "Too many requests, please try again later."
                    if fault["code"] == 429
                    else "Internal error injected by operatord faults"
                )
                raise ApiError(
                    fault["code"],
                    msg,
                    headers=hdrs,
                    details={"retryAfterSeconds": int(hdrs.get("Retry-After", 0))}
                    if hdrs
                    else None,
                )
            if verb == "watch":
                entry["code"] = 200
                self.audit.append(entry)
                return await self._watch(req, reader, writer, rt, version, ns)
            validator = self.store.validator
            validator.field_validation = req.q("fieldValidation") or "Warn"
            validator.warnings = []
            try:
                code, out = self._handle_verb(req, verb, rt, version, ns, name, sub)
            finally:
                # writes outside requests (the garbage collector's) prune silently
                validator.field_validation = "Ignore"
        except ApiError as e:
            if not entry["code"]:  # a watch refused after it was recorded is recorded once
                self.audit.append(entry)
            entry["code"] = e.code
            self._json(writer, e.code, e.status(), keep, e.headers)
            return True
        entry["code"] = code
        self.audit.append(entry)
        headers = None
        if validator.warnings:
            # one Warning header per warning, as the real server sends them
            headers = [("Warning", _warning(w)) for w in validator.warnings]
        self._json(writer, code, out, keep, headers)
        return True

    def _body(self, req: _Req) -> Any:
        if not req.body:
            return None
        try:
            return json.loads(req.body)
        except ValueError:
            raise ApiError(400, "the request body is not valid JSON") from None

    def _manager(self, req: _Req) -> str:
        fm = req.q("fieldManager")
        if fm:
            return fm
        ua = req.headers.get("user-agent", "unknown")
        return ua.split("/", 1)[0] or "unknown"

    def _selectors(self, req: _Req, rt: ResourceType) -> Matcher | None:
        try:
            matcher = combine(
                parse_labels(req.q("labelSelector")), parse_fields(req.q("fieldSelector"), rt.kind)
            )
        except SelectorError as e:
            raise ApiError(400, f"unable to parse requirement: {e}") from None
        return combine(matcher, self._shard_matcher(req))

    def _shard_selector(self, req: _Req) -> str | None:
        """The shardSelector this request applies (None: none, or the feature is off)."""
        selector = req.q("shardSelector")
        if self.faults.ignore_shard_selector or not selector or not selector.strip():
            return None
        return selector

    def _shard_matcher(self, req: _Req) -> Callable[[dict], bool] | None:
        try:
            return parse_shard_selector(self._shard_selector(req))
        except ShardSelectorError as e:
            raise ApiError(400, f"invalid shardSelector: {e}") from None

    def _target(self, req: _Req) -> Target:
        """The representation the request's `Accept` asks for (406 when none can be served)."""
        return negotiation.negotiate(
            req.headers.get("accept", ""),
            partial_metadata=not self.faults.without_partial_metadata,
        )

    def _handle_verb(
        self, req: _Req, verb: str, rt: ResourceType, version: str, ns: str, name: str, sub: str
    ) -> tuple[int, Any]:
        s = self.store
        dry = _dry_run(req, verb)
        if rt.namespaced and not ns and verb not in ("list", "watch", "deletecollection"):
            raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
        if rt.virtual:
            if verb != "create":
                raise ApiError(
                    405,
                    "the server does not allow this method on the requested resource",
                    "MethodNotAllowed",
                )
            return 201, reviews.answer(rt.key, rt.api_version(version), self._body(req))
        if sub == "scale":
            return self._scale(req, verb, rt, version, ns, name, dry)
        if verb == "get":
            target = self._target(req)
            obj = _as_version(s.get(rt, ns, name), rt, version)
            negotiation.check(target, is_list=False, kind=rt.kind, group=rt.group, custom=rt.custom)
            if target.kind == negotiation.TABLE:
                meta = {"resourceVersion": obj["metadata"]["resourceVersion"]}
                return 200, tables.table(rt, version, [obj], meta, include=_include(req))
            if target.partial:
                return 200, negotiation.partial(obj, target.api_version)
            return 200, obj
        if verb == "list":
            return 200, self._list(req, rt, version, ns)
        if verb == "create":
            if name:
                raise ApiError(
                    405,
                    "the server does not allow this method on the requested resource",
                    "MethodNotAllowed",
                )
            body = self._body(req)
            return 201, _as_version(
                s.create(rt, ns, body, manager=self._manager(req), version=version, dry_run=dry),
                rt,
                version,
            )
        if verb == "update":
            body = self._body(req)
            return 200, _as_version(
                s.update(
                    rt,
                    ns,
                    name,
                    body,
                    subresource=sub,
                    manager=self._manager(req),
                    version=version,
                    dry_run=dry,
                ),
                rt,
                version,
            )
        if verb == "patch":
            ctype = req.headers.get("content-type", "").split(";")[0].strip().lower()
            kind = PATCH_TYPES.get(ctype)
            if kind is None or (kind == "strategic" and rt.custom):
                accepted = "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
                if not rt.custom:
                    accepted += ", application/strategic-merge-patch+json"
                raise ApiError(
                    415,
                    f"the body of the request was in an unknown format - accepted media types include: {accepted}",
                    "UnsupportedMediaType",
                )
            if kind == "apply":
                body = _load_apply(req.body)
                obj, created = s.apply(
                    rt,
                    ns,
                    name,
                    body,
                    manager=req.q("fieldManager") or "",
                    force=req.flag("force"),
                    subresource=sub,
                    version=version,
                    dry_run=dry,
                )
                return (201 if created else 200), _as_version(obj, rt, version)
            body = self._body(req)
            return 200, _as_version(
                s.patch(
                    rt,
                    ns,
                    name,
                    kind,
                    body,
                    subresource=sub,
                    manager=self._manager(req),
                    version=version,
                    dry_run=dry,
                ),
                rt,
                version,
            )
        if verb in ("delete", "deletecollection"):
            opts = self._body(req) or {}
            if not isinstance(opts, dict):
                raise ApiError(400, "DeleteOptions must be an object")
            if req.q("propagationPolicy"):
                opts["propagationPolicy"] = req.q("propagationPolicy")
            if req.q("orphanDependents") is not None:
                opts["orphanDependents"] = req.flag("orphanDependents")
            if verb == "delete":
                obj = s.delete(rt, ns, name, opts, dry_run=dry)
                gone = not obj["metadata"].get("deletionTimestamp")
                if gone and not rt.returns_deleted:
                    return 200, _deleted_status(rt, obj)
                # as the real server: 202 for a pending deletion only with orphanDependents=false
                code = 202 if not gone and opts.get("orphanDependents") is False else 200
                return code, _as_version(obj, rt, version)
            items = s.delete_collection(rt, ns, self._selectors(req, rt), opts, dry_run=dry)
            return 200, {
                "kind": f"{rt.kind}List",
                "apiVersion": rt.api_version(version),
                "metadata": {"resourceVersion": str(s.rv)},
                "items": [_as_version(o, rt, version) for o in items],
            }
        raise ApiError(
            405,
            "the server does not allow this method on the requested resource",
            "MethodNotAllowed",
        )

    def _scale(
        self, req: _Req, verb: str, rt: ResourceType, version: str, ns: str, name: str, dry: bool
    ) -> tuple[int, dict]:
        """The `/scale` subresource: get, update or (merge/JSON/strategic) patch a Scale."""
        spec = scale.spec_of(rt, version)
        if spec is None:  # not routed here (`_route`)
            raise ApiError(404, "the server could not find the requested resource", "NotFound", {})
        obj = self.store.get(rt, ns, name)
        if verb == "get":
            return 200, scale.scale_of(rt, obj, spec)
        if verb == "update":
            body = self._body(req)
        elif verb == "patch":
            ctype = req.headers.get("content-type", "").split(";")[0].strip().lower()
            kind = PATCH_TYPES.get(ctype)
            current = scale.scale_of(rt, obj, spec)
            try:
                if kind in ("merge", "strategic"):
                    body = P.merge_patch(current, self._body(req))
                elif kind == "json":
                    body = P.json_patch(current, self._body(req))
                else:
                    raise ApiError(
                        415,
                        "the body of the request was in an unknown format - accepted media "
                        "types include: application/json-patch+json, "
                        "application/merge-patch+json, application/strategic-merge-patch+json",
                        "UnsupportedMediaType",
                    )
            except P.PatchError as e:
                raise ApiError(e.code, str(e)) from None
        else:
            raise ApiError(
                405,
                "the server does not allow this method on the requested resource",
                "MethodNotAllowed",
            )
        new = scale.scaled(rt, obj, spec, body)
        out = self.store.update(
            rt, ns, name, new, manager=self._manager(req), version=version, dry_run=dry
        )
        return 200, scale.scale_of(rt, out, spec)

    def _list(self, req: _Req, rt: ResourceType, version: str, ns: str) -> dict:
        listoptions.parse(req.query, watch=False)
        target = self._target(req)
        try:
            limit = int(req.q("limit") or 0)
        except ValueError:
            raise ApiError(400, "limit must be an integer") from None
        items, rv, cont, remaining = self.store.list(
            rt, ns, self._selectors(req, rt), limit, req.q("continue")
        )
        meta: dict[str, Any] = {"resourceVersion": rv}
        shard_selector = self._shard_selector(req)
        if shard_selector is not None:
            meta["shardInfo"] = {"selector": shard_selector}
        if cont:
            meta["continue"] = cont
            meta["remainingItemCount"] = remaining
        negotiation.check(target, is_list=True, kind=rt.kind, group=rt.group, custom=rt.custom)
        if target.kind == negotiation.TABLE:
            return tables.table(rt, version, items, meta, include=_include(req))
        if target.partial:
            return negotiation.partial_list(items, meta, target.api_version)
        out: dict[str, Any] = {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version(version),
            "metadata": meta,
            "items": [],
        }
        if version == rt.storage_version or len(rt.versions) == 1:
            # splice pre-encoded items: the hot path of big lists
            head = json.dumps(out, separators=(",", ":")).encode()
            raw = head[:-2] + b",".join(encode(o) for o in items) + b"]}"
            return _Raw(raw)
        out["items"] = [_as_version(o, rt, version) for o in items]
        return out

    # -- watch --------------------------------------------------------------------------------

    async def _watch(
        self,
        req: _Req,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        rt: ResourceType,
        version: str,
        ns: str,
    ) -> bool:
        """Stream one watch. Without `sendInitialEvents`: the legacy start (no resourceVersion
        or "0": the current state as ADDED events; otherwise the history after it). With
        `sendInitialEvents=true` (WatchList): the current state as ADDED events, then, with
        `allowWatchBookmarks`, a BOOKMARK at the state's resourceVersion annotated
        `k8s.io/initial-events-end: "true"`, then the changes after it. With
        `sendInitialEvents=false`: the changes after `resourceVersion` (or from now)."""
        faults = self.faults
        opts = listoptions.parse(
            req.query, watch=True, watch_list=faults.without_watch_list != "reject"
        )
        send_initial = opts.send_initial_events
        if faults.without_watch_list == "ignore":
            send_initial = None  # an older server does not know the parameters
        target = self._target(req)
        match = self._selectors(req, rt)
        try:
            timeout = float(req.q("timeoutSeconds") or 1800)
        except ValueError:
            raise ApiError(400, "timeoutSeconds must be a number") from None
        bookmarks = req.flag("allowWatchBookmarks")
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            b"Cache-Control: no-cache, private\r\nConnection: close\r\n\r\n"
        )
        since = req.q("resourceVersion")
        if send_initial:
            since = None  # NotOlderThan: the store is never behind, its current state will do
        elif send_initial is False and since in (None, "", "0"):
            since = str(self.store.rv)  # start at the most recent resourceVersion
        try:
            w, initial = self.store.watch(rt, ns, match, since)
        except ApiError as e:
            if e.code != 410:
                raise
            line = (
                json.dumps({"type": "ERROR", "object": e.status()}, separators=(",", ":")).encode()
                + b"\n"
            )
            writer.write(head + _chunk(line) + b"0\r\n\r\n")
            await writer.drain()
            return False
        snapshot_rv = self.store.rv  # `initial` is the state at this resourceVersion
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        w.wake = wake.set
        pair = (writer, w)
        self._watches.add(pair)
        eof = asyncio.ensure_future(reader.read(1))

        def _client_gone(f: asyncio.Future) -> None:
            if not f.cancelled():
                f.exception()  # a reset connection is the normal end of a watch: retrieve it
            w.closed = True
            wake.set()

        eof.add_done_callback(_client_gone)
        api_version = rt.api_version(version)
        convert = version != rt.storage_version and len(rt.versions) > 1
        start = loop.time()
        deadline = start + timeout
        if faults.watch_drop_after is not None:
            drop_at = start + faults.watch_drop_after
        else:
            drop_at = None
        last_bookmark = start
        event_line: Callable[[str, dict, str, bool], bytes] = _event_line
        if target.kind == negotiation.TABLE:
            include = _include(req)
            headers = [True]

            def table_line(t: str, o: dict, api_version: str, convert: bool) -> bytes:
                # a Table of one row; column definitions with the first event only
                meta = {"resourceVersion": o["metadata"]["resourceVersion"]}
                tab = tables.table(rt, version, [o], meta, include=include, headers=headers[0])
                headers[0] = False
                return _event_line(t, tab, api_version, False)

            event_line = table_line
        elif target.partial:

            def partial_line(t: str, o: dict, api_version: str, convert: bool) -> bytes:
                if target.kind == negotiation.PARTIAL_LIST:
                    raise _NotTransformable  # no single object is a list: the stream ends
                return _event_line(t, negotiation.partial(o, target.api_version), "", False)

            event_line = partial_line

        def bookmark_line(rv: int, initial_end: bool = False) -> bytes:
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            if initial_end:
                meta["annotations"] = {INITIAL_EVENTS_END: "true"}
            obj = {"kind": rt.kind, "apiVersion": api_version, "metadata": meta}
            if target.partial:
                return event_line("BOOKMARK", obj, api_version, False)
            return _event_line("BOOKMARK", obj, api_version, False)

        try:
            writer.write(head)
            buf: list[bytes] = []
            size = 0
            for t, o in initial:
                line = event_line(t, o, api_version, convert)
                buf.append(line)
                size += len(line)
                if size >= _INITIAL_CHUNK:
                    # big initial states go out in bounded chunks, as they are encoded
                    writer.write(_chunk(b"".join(buf)))
                    buf, size = [], 0
                    await writer.drain()
                    if w.closed:
                        return False
            if send_initial and bookmarks:
                buf.append(bookmark_line(snapshot_rv, initial_end=True))
                last_bookmark = loop.time()
            if buf:
                writer.write(_chunk(b"".join(buf)))
            del initial, buf
            await writer.drain()
            while True:
                if w.closed:
                    break
                if w.overflowed:
                    writer.transport.abort()
                    return False
                if w.events:
                    evs = w.events
                    lines = []
                    while evs:
                        t, o = evs.popleft()
                        lines.append(event_line(t, o, api_version, convert))
                    if bookmarks and loop.time() - last_bookmark >= self.bookmark_interval:
                        # a busy stream still gets its periodic bookmark, after the events
                        lines.append(bookmark_line(self.store.rv))
                        last_bookmark = loop.time()
                    writer.write(_chunk(b"".join(lines)))
                    await writer.drain()
                    continue
                now = loop.time()
                if drop_at is not None and now >= drop_at:
                    writer.transport.abort()
                    return False
                if now >= deadline:
                    break
                if bookmarks and now - last_bookmark >= self.bookmark_interval:
                    writer.write(_chunk(bookmark_line(self.store.rv)))
                    await writer.drain()
                    last_bookmark = now
                    continue
                until = deadline
                if bookmarks:
                    until = min(until, last_bookmark + self.bookmark_interval)
                if drop_at is not None:
                    until = min(until, drop_at)
                wake.clear()
                if w.events or w.closed:
                    continue
                h = loop.call_later(max(0.0, until - now), wake.set)
                await wake.wait()
                h.cancel()
            if w.closed and (eof.done() or writer.transport.is_closing()):
                return False
            if bookmarks:
                writer.write(_chunk(bookmark_line(self.store.rv)))
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return False
        except _NotTransformable:
            # as the real server: an event it cannot transform ends the stream
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return False
        except (ConnectionError, RuntimeError):
            return False
        finally:
            self.store.unwatch(w)
            self._watches.discard(pair)
            if not eof.done():
                eof.cancel()


_INITIAL_CHUNK = 1 << 18  # bytes of initial watch events per HTTP chunk


class _NotTransformable(Exception):
    """A watch event cannot be given the negotiated representation."""


class _Raw(dict[str, Any]):
    """A pre-encoded JSON response body."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        super().__init__()
        self.raw = raw


_WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
_OPTIONS_KIND = {
    "create": "CreateOptions",
    "delete": "DeleteOptions",
    "deletecollection": "DeleteOptions",
}


def _dry_run(req: _Req, verb: str) -> bool:
    """Whether a write is a dry run: ``dryRun=All``, the one value the API accepts (absent or
    empty: a real write). Any other value is refused with 422, as the real server does,
    rather than risk persisting what the client meant not to."""
    values = [v for v in req.query.get("dryRun", []) if v]
    if not values:
        return False
    if verb in _WRITE_VERBS and values != ["All"]:
        kind = _OPTIONS_KIND.get(verb, "UpdateOptions" if verb == "update" else "PatchOptions")
        raise ApiError(
            422,
            f'{kind}.meta.k8s.io "" is invalid: dryRun: Unsupported value: {values!r}: '
            'supported values: "All"',
            "Invalid",
        )
    return True


def _warning(text: str) -> str:
    """The value of a `Warning` header (RFC 7234 code 299) carrying `text`."""
    return '299 - "' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _deleted_status(rt: ResourceType, obj: dict) -> dict:
    """The `Status` a delete answers with for types that do not return the deleted object."""
    details: dict[str, Any] = {"name": obj["metadata"]["name"]}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = rt.plural
    details["uid"] = obj["metadata"]["uid"]
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }


def _include(req: _Req) -> str:
    """What each Table row carries: `includeObject` (Metadata, Object or None)."""
    v = req.q("includeObject") or "Metadata"
    return v if v in ("Metadata", "Object", "None") else "Metadata"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event_line(etype: str, obj: dict, api_version: str, convert: bool) -> bytes:
    if convert and obj.get("apiVersion") != api_version:
        obj = dict(obj)
        obj["apiVersion"] = api_version
        raw = json.dumps(obj, separators=(",", ":")).encode()
    else:
        raw = encode(obj)
    return b'{"type":"' + etype.encode() + b'","object":' + raw + b"}\n"


def _as_version(obj: dict, rt: ResourceType, version: str) -> dict:
    av = rt.api_version(version)
    if obj.get("apiVersion") == av:
        return obj
    out = dict(obj)
    out["apiVersion"] = av
    return out


def _load_apply(body: bytes) -> Any:
    if not body:
        raise ApiError(400, "empty apply patch")
    try:
        return json.loads(body)
    except ValueError:
        pass
    import yaml

    try:
        return yaml.safe_load(body)
    except yaml.YAMLError as e:
        raise ApiError(400, f"error decoding YAML: {e}") from None


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readexactly(2)


_ = now_time


def _selected_name(field_selector: str | None) -> str:
    """X when the field selector is exactly ``metadata.name=X`` (or ``==``), else ""."""
    if not field_selector or "," in field_selector or "!=" in field_selector:
        return ""
    key, sep, value = field_selector.replace("==", "=").partition("=")
    return value.strip() if sep and key.strip() == "metadata.name" else ""
