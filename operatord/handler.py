"""The handler API: what a user's operator receives and returns.

A handler is an object with ``sync(request) -> SyncResponse`` and, optionally,
``finalize(request) -> FinalizeResponse`` and ``related(parent) -> list[Related]``; a plain
function ``sync(request)`` is a handler too (its ``related`` is an attribute of the function).
operatord calls it with a :class:`SyncRequest` built from plain dicts (the parent and its
observed children, exactly as the API server returned them) and turns the response into API
writes. Nothing in this module talks to a cluster, so a handler can be unit-tested with
``SyncRequest.build(parent_dict, children=[...], related=[...])`` alone.

Guarantees of this module:

- ``SyncRequest``, ``Children`` and ``ChildrenOfType`` never copy or mutate the dicts they are
  given; a request is a read-only view over them.
- ``load_handler`` either returns an object whose ``sync``/``finalize`` can be called, or raises
  ``HandlerImportError`` naming the import path and the reason. It never returns a half-loaded
  handler.
- ``validate_related`` either returns a selection as plain data (`operatord.selectors.Selection`)
  or raises ``InvalidResponse`` with a one-line reason.
- ``validate_sync_response``/``validate_finalize_response`` either return a normalized response
  (children as a tuple, numbers as float) or raise ``InvalidResponse`` with a one-line reason.
  A response that passes is plain JSON-serializable data and can cross process boundaries.
"""

from __future__ import annotations

import importlib
import inspect
import math
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Children",
    "ChildrenOfType",
    "FinalizeResponse",
    "Handler",
    "HandlerImportError",
    "InvalidResponse",
    "LoadedHandler",
    "Related",
    "SyncRequest",
    "SyncResponse",
    "load_handler",
    "validate_finalize_response",
    "validate_related",
    "validate_sync_response",
]


# --------------------------------------------------------------------------------------------
# Observed children
# --------------------------------------------------------------------------------------------


class ChildrenOfType:
    """The observed children of one ``(apiVersion, kind)``, in the order they were given.

    Supports ``len()``, iteration and ``get(name, namespace=None)``.
    """

    __slots__ = ("_api_version", "_kind", "_items")

    def __init__(self, api_version: str, kind: str, items: Sequence[dict]) -> None:
        self._api_version = api_version
        self._kind = kind
        self._items = tuple(items)

    @property
    def api_version(self) -> str:
        return self._api_version

    @property
    def kind(self) -> str:
        return self._kind

    def get(self, name: str, namespace: str | None = None) -> dict | None:
        """The child called ``name``, or None when there is none.

        With ``namespace=None`` the first child with that name matches, whatever its namespace:
        children of a namespaced parent all live in the parent's namespace, so the name alone is
        unique there. Pass ``namespace`` to match a namespaced child exactly; ``""`` matches a
        cluster-scoped child (one without ``metadata.namespace``).
        """
        for obj in self._items:
            meta = obj.get("metadata") or {}
            if meta.get("name") != name:
                continue
            if namespace is None or (meta.get("namespace") or "") == namespace:
                return obj
        return None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def names(self) -> list[str]:
        """The ``metadata.name`` of every child of this type, in order."""
        return [(obj.get("metadata") or {}).get("name", "") for obj in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[dict]:
        return iter(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __repr__(self) -> str:
        return f"ChildrenOfType({self._api_version!r}, {self._kind!r}, {self.names()!r})"


class Children:
    """All observed children of one parent, built from an iterable of object dicts.

    Every object must be a dict with string ``apiVersion`` and ``kind`` (list responses from the
    API server omit them on items: whoever builds a ``Children`` must fill them in). Iteration
    yields the objects in the order given; ``of_type`` selects one type.
    """

    __slots__ = ("_items", "_by_type")

    def __init__(self, objects: Iterable[dict] = ()) -> None:
        items = tuple(objects)
        by_type: dict[tuple[str, str], list[dict]] = {}
        for i, obj in enumerate(items):
            if not isinstance(obj, dict):
                raise TypeError(f"children[{i}]: expected an object dict, got {type(obj).__name__}")
            api_version, kind = obj.get("apiVersion"), obj.get("kind")
            if not isinstance(api_version, str) or not isinstance(kind, str):
                raise ValueError(f"children[{i}]: apiVersion and kind must be strings")
            by_type.setdefault((api_version, kind), []).append(obj)
        self._items = items
        self._by_type = by_type

    def of_type(self, api_version: str, kind: str) -> ChildrenOfType:
        """The children of ``(api_version, kind)``; an empty view when there are none."""
        return ChildrenOfType(api_version, kind, self._by_type.get((api_version, kind), ()))

    def types(self) -> list[tuple[str, str]]:
        """The ``(apiVersion, kind)`` pairs present, in order of first appearance."""
        return list(self._by_type)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[dict]:
        return iter(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Children):
            return NotImplemented
        return self._items == other._items

    __hash__ = None  # type: ignore[assignment]  # holds dicts

    def __repr__(self) -> str:
        names = [f"{o['kind']}/{(o.get('metadata') or {}).get('name', '?')}" for o in self._items]
        return f"Children({names!r})"


# --------------------------------------------------------------------------------------------
# Requests and responses
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncRequest:
    """What a handler is called with.

    ``parent`` is the parent object as the API server returned it (without
    ``metadata.managedFields``, which operatord's cache drops); ``children`` holds every
    observed child of this parent (of every configured child type); ``finalizing`` is True when
    the parent is being deleted and ``finalize`` is the method being called. ``related`` holds
    the cached objects the handler's ``related(parent)`` selected (the same view as
    ``children``: ``of_type``, ``get``, iteration, ``len``); a selected object that does not
    exist is simply absent.

    ``retry`` is the number of consecutive attempts for this parent before this one that did
    not succeed (raised, timed out, returned an invalid response, killed its worker, or were
    retried after a backoff): 0 on a first try and after a success, for ``sync`` and
    ``finalize`` alike. It is kept by the leader, so it survives worker restarts (not a restart
    of the leader). All handler runs of one sync see the same value.
    """

    parent: dict
    children: Children = field(default_factory=Children)
    finalizing: bool = False
    related: Children = field(default_factory=Children)
    retry: int = 0

    @classmethod
    def build(
        cls,
        parent: dict,
        children: Iterable[dict] = (),
        finalizing: bool = False,
        related: Iterable[dict] = (),
        retry: int = 0,
    ) -> SyncRequest:
        """Build a request from plain dicts: the way to unit-test a handler without a cluster."""
        if not isinstance(parent, dict):
            raise TypeError(f"parent: expected an object dict, got {type(parent).__name__}")
        kids = children if isinstance(children, Children) else Children(children)
        rel = related if isinstance(related, Children) else Children(related)
        return cls(
            parent=parent, children=kids, finalizing=bool(finalizing), related=rel, retry=retry
        )


@dataclass(frozen=True)
class Related:
    """What ``related(parent)`` returns: objects of one configured ``related`` type to read.

    Select by ``names``, by ``label_selector`` (Kubernetes syntax: ``"team=a,tier!=db"``;
    ``""`` selects every object), or both (an object must have one of the names *and* match).
    ``namespace`` defaults to the parent's; for a cluster-scoped parent it means every
    namespace, and it is ignored for cluster-scoped types (Namespace, Node, ...).
    """

    api_version: str
    kind: str
    names: Sequence[str] = ()
    namespace: str | None = None
    label_selector: str | None = None


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event about the parent, recorded by operatord for a handler.

    ``type`` is "Normal" or "Warning"; ``reason`` a short CamelCase word (``ScaledUp``);
    ``message`` one human-readable line. Events are rate-limited per parent and type (one API
    call a minute; repeats of a reason update one Event's count) and redacted like logs.
    """

    reason: str
    message: str = ""
    type: str = "Normal"


EVENT_TYPES = ("Normal", "Warning")


@dataclass(frozen=True)
class SyncResponse:
    """What ``sync`` returns.

    ``status`` replaces the parent's ``.status`` (None leaves it alone); ``children`` is the
    complete desired set: an observed child that is not listed is deleted. ``resync_after``
    (seconds) asks for one more sync of this parent after that delay. ``events`` are recorded
    on the parent once the sync's writes succeeded.
    """

    status: dict | None = None
    children: Sequence[dict] = ()
    resync_after: float | None = None
    events: Sequence[Event] = ()


@dataclass(frozen=True)
class FinalizeResponse:
    """What ``finalize`` returns.

    ``finalized=True`` lets operatord remove its finalizer from the parent. ``finalized=False``
    retries after ``retry_after`` seconds, or after the parent's backoff when it is None.
    ``status`` (when not None) replaces the parent's ``.status`` either way.
    """

    status: dict | None = None
    finalized: bool = True
    retry_after: float | None = None
    events: Sequence[Event] = ()


class Handler:
    """Base class for operators: override ``sync``, and ``finalize`` when deletion needs work.

    ``sync`` must be idempotent: it is called whenever the parent or one of its children changes,
    on periodic resync, and again after any failure. Raising an exception changes nothing in the
    cluster and retries the parent with backoff.
    """

    def sync(self, request: SyncRequest) -> SyncResponse:
        """Return the desired children and status of ``request.parent``."""
        raise NotImplementedError(f"{type(self).__name__}.sync is not implemented")

    def finalize(self, request: SyncRequest) -> FinalizeResponse:
        """Clean up before the parent is deleted; by default there is nothing to do."""
        return FinalizeResponse(finalized=True)

    def related(self, parent: dict) -> list[Related]:
        """The objects (of the configured ``related`` types) that ``request.related`` should
        hold for ``parent``; a change to any of them syncs the parent. It must depend on the
        parent only; by default nothing is selected."""
        return []


# --------------------------------------------------------------------------------------------
# Loading a handler by import path
# --------------------------------------------------------------------------------------------


class HandlerImportError(ImportError):
    """The handler at an import path cannot be loaded; the message says which and why."""


def _default_finalize(request: SyncRequest) -> FinalizeResponse:
    return FinalizeResponse(finalized=True)


class LoadedHandler:
    """A handler ready to call: ``sync(request)`` and ``finalize(request)``.

    The methods call the user's code and return whatever it returned, unvalidated: pass the
    result through ``validate_sync_response``/``validate_finalize_response``. For an
    ``async def`` method they return the coroutine; ``sync_is_async``/``finalize_is_async``
    say which is which before calling.
    """

    __slots__ = (
        "import_path",
        "target",
        "_sync",
        "_finalize",
        "sync_is_async",
        "finalize_is_async",
        "related",
        "related_is_async",
    )

    def __init__(
        self,
        import_path: str,
        target: Any,
        sync: Callable[[SyncRequest], Any],
        finalize: Callable[[SyncRequest], Any],
        related: Callable[[dict], Any] | None = None,
    ) -> None:
        self.import_path = import_path
        self.target = target  # the instance or function the user wrote
        self._sync = sync
        self._finalize = finalize
        self.sync_is_async = _is_async(sync)
        self.finalize_is_async = _is_async(finalize)
        # related(parent) -> list[Related], or None when the handler selects nothing.
        self.related = related
        self.related_is_async = related is not None and _is_async(related)

    def sync(self, request: SyncRequest) -> Any:
        return self._sync(request)

    def finalize(self, request: SyncRequest) -> Any:
        return self._finalize(request)

    def __repr__(self) -> str:
        return f"LoadedHandler({self.import_path!r})"


def _is_async(fn: Any) -> bool:
    """True for ``async def`` functions and methods (and callables whose ``__call__`` is one)."""
    call = type(fn).__dict__.get("__call__") if not inspect.isroutine(fn) else None
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


def _check_callable_with_request(what: str, fn: Any, import_path: str) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins and C callables: trust them
    try:
        sig.bind(object())
    except TypeError:
        raise HandlerImportError(
            f"cannot load handler {import_path!r}: {what} must accept one argument "
            f"(the request), its signature is {sig}"
        ) from None


def _split_import_path(import_path: str) -> tuple[str, list[str]]:
    if not isinstance(import_path, str):
        raise HandlerImportError(f"handler import path must be a string, got {import_path!r}")
    module_name, sep, attr_path = import_path.partition(":")
    parts = attr_path.split(".") if attr_path else []
    if (
        not sep
        or not module_name
        or not parts
        or ":" in attr_path
        or not all(p.isidentifier() for p in parts)
        or not all(p.isidentifier() for p in module_name.split("."))
    ):
        raise HandlerImportError(
            f"invalid handler import path {import_path!r}: expected 'module:attribute', "
            "e.g. 'examples.widgets:Widgets'"
        )
    return module_name, parts


def _import_module(module_name: str, import_path: str, python_path: Sequence[str]) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if missing == module_name or module_name.startswith(missing + "."):
            where = f" (pythonPath: {list(python_path)})" if python_path else ""
            raise HandlerImportError(
                f"cannot import handler {import_path!r}: module {missing!r} not found{where}"
            ) from e
        raise HandlerImportError(
            f"cannot import handler {import_path!r}: importing module {module_name!r} raised "
            f"ModuleNotFoundError: {e}"
        ) from e
    except BaseException as e:  # noqa: BLE001 - SystemExit, KeyboardInterrupt, custom ones too
        detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise HandlerImportError(
            f"cannot import handler {import_path!r}: importing module {module_name!r} raised "
            f"{detail}"
        ) from e


def load_handler(import_path: str, python_path: Sequence[str] = ()) -> LoadedHandler:
    """Import ``module:attribute`` and wrap it as a handler.

    The attribute may be a class (instantiated with no arguments), an instance with a ``sync``
    method, or a plain function ``sync(request)``; a dotted attribute (``mod:Outer.inner``) is
    followed. ``python_path`` entries are prepended to ``sys.path`` (once each) before importing.
    Any failure, including a ``BaseException`` raised while importing the module or constructing
    the class (``SystemExit``, ``KeyboardInterrupt``, custom subclasses), raises
    ``HandlerImportError`` naming the import path and the reason.
    """
    module_name, attrs = _split_import_path(import_path)
    for entry in reversed(list(python_path)):
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)
    importlib.invalidate_caches()

    obj: Any = _import_module(module_name, import_path, python_path)
    for i, attr in enumerate(attrs):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            owner = module_name if i == 0 else f"{module_name}:{'.'.join(attrs[:i])}"
            raise HandlerImportError(
                f"cannot load handler {import_path!r}: {owner!r} has no attribute {attr!r}"
            ) from None

    name = ".".join(attrs)
    if inspect.isclass(obj):
        if not callable(getattr(obj, "sync", None)):
            raise HandlerImportError(
                f"cannot load handler {import_path!r}: class {name} has no sync method"
            )
        try:
            obj = obj()
        except BaseException as e:  # noqa: BLE001 - whatever a constructor raises is its failure
            raise HandlerImportError(
                f"cannot load handler {import_path!r}: constructing {name}() failed: "
                f"{type(e).__name__}: {e}"
            ) from e

    if inspect.isclass(obj) or inspect.ismodule(obj):
        raise HandlerImportError(
            f"cannot load handler {import_path!r}: {name} is not a handler class, instance or "
            "function"
        )
    sync = getattr(obj, "sync", None)
    if sync is not None and not inspect.isroutine(obj):
        # an instance (of a Handler subclass or any object with sync/finalize)
        if not callable(sync):
            raise HandlerImportError(
                f"cannot load handler {import_path!r}: {name}.sync is not callable"
            )
        if isinstance(obj, Handler) and type(obj).sync is Handler.sync:
            raise HandlerImportError(
                f"cannot load handler {import_path!r}: {type(obj).__name__} does not override "
                "Handler.sync"
            )
        _check_callable_with_request(f"{name}.sync", sync, import_path)
        finalize = getattr(obj, "finalize", None)
        if finalize is None:
            finalize = _default_finalize
        elif not callable(finalize):
            raise HandlerImportError(
                f"cannot load handler {import_path!r}: {name}.finalize is not callable"
            )
        else:
            _check_callable_with_request(f"{name}.finalize", finalize, import_path)
        related = getattr(obj, "related", None)
        if isinstance(obj, Handler) and type(obj).related is Handler.related:
            related = None
        _check_related(name, related, import_path)
        return LoadedHandler(import_path, obj, sync, finalize, related)

    if not callable(obj):
        raise HandlerImportError(
            f"cannot load handler {import_path!r}: {name} is not callable "
            f"(got {type(obj).__name__}); expected a Handler class, instance or sync function"
        )
    _check_callable_with_request(name, obj, import_path)
    related = getattr(obj, "related", None)
    _check_related(name, related, import_path)
    return LoadedHandler(import_path, obj, obj, _default_finalize, related)


def _check_related(name: str, related: Any, import_path: str) -> None:
    if related is None:
        return
    if not callable(related):
        raise HandlerImportError(
            f"cannot load handler {import_path!r}: {name}.related is not callable"
        )
    _check_callable_with_request(f"{name}.related", related, import_path)


# --------------------------------------------------------------------------------------------
# Validating what a handler returned
# --------------------------------------------------------------------------------------------


class InvalidResponse(ValueError):
    """A handler returned something operatord cannot act on; the message is one line."""


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _check_plain(value: Any, where: str) -> None:
    """Raise InvalidResponse unless ``value`` is JSON data (dict/list/str/int/float/bool/None)."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        v, path = stack.pop()
        if v is None or isinstance(v, (str, bool, int)):
            continue
        if isinstance(v, float):
            if not math.isfinite(v):
                raise InvalidResponse(f"{path}: {v} is not a finite number")
            continue
        if isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str):
                    raise InvalidResponse(f"{path}: key {k!r} is not a string")
                stack.append((item, f"{path}.{k}"))
            continue
        if isinstance(v, (list, tuple)):
            for i, item in enumerate(v):
                stack.append((item, f"{path}[{i}]"))
            continue
        raise InvalidResponse(f"{path}: {_describe(v)} is not JSON data")


def _check_seconds(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidResponse(
            f"{where} must be a number of seconds or None, got {_describe(value)}"
        )
    if not math.isfinite(value) or value < 0:
        raise InvalidResponse(f"{where} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_status(status: Any) -> None:
    if status is None:
        return
    if not isinstance(status, dict):
        raise InvalidResponse(f"status must be a dict or None, got {_describe(status)}")
    _check_plain(status, "status")


def validate_sync_response(
    obj: Any,
    *,
    default_namespace: str | None = None,
    allowed_types: Collection[tuple[str, str]] | None = None,
) -> SyncResponse:
    """Check what ``sync`` returned; return it normalized or raise ``InvalidResponse``.

    Checks: a ``SyncResponse``; ``status`` a dict of JSON data or None; ``children`` a list or
    tuple of dicts, each with string ``apiVersion``, ``kind`` and non-empty ``metadata.name``,
    optional string ``metadata.namespace``, JSON data only, no two with the same
    ``(apiVersion, kind, namespace, name)``; ``resync_after`` None or a finite number >= 0.
    A child without a namespace counts as being in ``default_namespace`` (the parent's) for the
    duplicate check. With ``allowed_types``, a child of any other ``(apiVersion, kind)`` is
    rejected (operatord only watches the configured child types).
    """
    if obj is None:
        raise InvalidResponse("sync returned None; expected a SyncResponse (missing return?)")
    if not isinstance(obj, SyncResponse):
        raise InvalidResponse(f"sync must return a SyncResponse, got {_describe(obj)}")
    _check_status(obj.status)
    children = obj.children
    if isinstance(children, (str, bytes, dict)) or not isinstance(children, (list, tuple)):
        raise InvalidResponse(
            f"children must be a list or tuple of dicts, got {_describe(children)}"
        )
    seen: dict[tuple[str, str, str, str], int] = {}
    for i, child in enumerate(children):
        where = f"children[{i}]"
        if not isinstance(child, dict):
            raise InvalidResponse(f"{where} must be a dict, got {_describe(child)}")
        for key in ("apiVersion", "kind"):
            value = child.get(key)
            if not isinstance(value, str) or not value:
                raise InvalidResponse(f"{where}.{key} must be a non-empty string, got {value!r}")
        meta = child.get("metadata")
        if not isinstance(meta, dict):
            raise InvalidResponse(f"{where}.metadata must be a dict, got {_describe(meta)}")
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidResponse(f"{where}.metadata.name must be a non-empty string, got {name!r}")
        namespace = meta.get("namespace")
        if namespace is not None and not isinstance(namespace, str):
            raise InvalidResponse(
                f"{where}.metadata.namespace must be a string, got {_describe(namespace)}"
            )
        type_key = (child["apiVersion"], child["kind"])
        if allowed_types is not None:
            check_child_type(where, type_key, allowed_types)
        check_unique_child(seen, (*type_key, namespace or default_namespace or "", name), i)
        _check_plain(child, where)
    resync_after = _check_seconds(obj.resync_after, "resync_after")
    return SyncResponse(
        status=obj.status,
        children=tuple(children),
        resync_after=resync_after,
        events=_check_events(obj.events),
    )


def validate_related(
    obj: Any, *, allowed_types: Collection[tuple[str, str]]
) -> tuple[tuple[str, str, tuple[str, ...], str | None, str | None], ...]:
    """Check what ``related(parent)`` returned; return the selection as plain data or raise
    ``InvalidResponse``.

    Checks: a list or tuple of ``Related``; each of a type in ``allowed_types`` (the configured
    ``related`` types); ``names`` a list or tuple of non-empty strings; ``namespace`` None or a
    string; ``label_selector`` None or a valid label selector; names or a label selector given.
    The result keeps the given order: ``(apiVersion, kind, names, namespace, labelSelector)``.
    """
    from operatord.selectors import SelectorError, parse_selector

    if obj is None:
        raise InvalidResponse("related returned None; expected a list of Related (missing return?)")
    if isinstance(obj, Related) or not isinstance(obj, (list, tuple)):
        raise InvalidResponse(f"related must return a list of Related, got {_describe(obj)}")
    out = []
    for i, rel in enumerate(obj):
        where = f"related[{i}]"
        if not isinstance(rel, Related):
            raise InvalidResponse(f"{where} must be a Related, got {_describe(rel)}")
        for key, value in (("api_version", rel.api_version), ("kind", rel.kind)):
            if not isinstance(value, str) or not value:
                raise InvalidResponse(f"{where}.{key} must be a non-empty string, got {value!r}")
        type_key = (rel.api_version, rel.kind)
        if type_key not in allowed_types:
            allowed = ", ".join(f"{a}/{k}" for a, k in sorted(allowed_types)) or "none"
            raise InvalidResponse(
                f"{where} selects {type_key[0]}/{type_key[1]}, which is not a configured related "
                f"type (configured: {allowed})"
            )
        names = rel.names
        if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)):
            raise InvalidResponse(f"{where}.names must be a list of names, got {_describe(names)}")
        for j, n in enumerate(names):
            if not isinstance(n, str) or not n:
                raise InvalidResponse(f"{where}.names[{j}] must be a non-empty string, got {n!r}")
        if rel.namespace is not None and not isinstance(rel.namespace, str):
            raise InvalidResponse(
                f"{where}.namespace must be a string or None, got {_describe(rel.namespace)}"
            )
        selector = rel.label_selector
        if selector is not None:
            if not isinstance(selector, str):
                raise InvalidResponse(
                    f"{where}.label_selector must be a string or None, got {_describe(selector)}"
                )
            try:
                parse_selector(selector)
            except SelectorError as exc:
                raise InvalidResponse(f"{where}.label_selector: {exc}") from None
        elif not names:
            raise InvalidResponse(f"{where} selects nothing: give names, label_selector or both")
        out.append((rel.api_version, rel.kind, tuple(names), rel.namespace or None, selector))
    return tuple(out)


def check_child_type(
    where: str, type_key: tuple[str, str], allowed_types: Collection[tuple[str, str]]
) -> None:
    """The one check that a child's ``(apiVersion, kind)`` is a configured child type
    (operatord only watches those); raises ``InvalidResponse`` naming ``where``."""
    if type_key not in allowed_types:
        allowed = ", ".join(f"{a}/{k}" for a, k in allowed_types) or "none"
        raise InvalidResponse(
            f"{where} is a {type_key[0]}/{type_key[1]}, which is not a configured child type "
            f"(configured: {allowed})"
        )


def check_unique_child(
    seen: dict[tuple[str, str, str, str], int], child_id: tuple[str, str, str, str], index: int
) -> None:
    """The one check that no two desired children are the same object: ``child_id`` is
    ``(apiVersion, kind, namespace, name)`` of ``children[index]``; ``seen`` maps the ids of the
    children checked so far to their index (updated). Raises ``InvalidResponse``."""
    if child_id in seen:
        api_version, kind, ns, name = child_id
        shown = f"{ns}/{name}" if ns else name
        raise InvalidResponse(
            f"children[{index}] duplicates children[{seen[child_id]}]: {kind} {shown} "
            f"({api_version}) is listed twice"
        )
    seen[child_id] = index


def validate_finalize_response(obj: Any) -> FinalizeResponse:
    """Check what ``finalize`` returned; return it normalized or raise ``InvalidResponse``.

    Checks: a ``FinalizeResponse``; ``status`` a dict of JSON data or None; ``finalized`` a bool;
    ``retry_after`` None or a finite number >= 0.
    """
    if obj is None:
        raise InvalidResponse(
            "finalize returned None; expected a FinalizeResponse (missing return?)"
        )
    if not isinstance(obj, FinalizeResponse):
        raise InvalidResponse(f"finalize must return a FinalizeResponse, got {_describe(obj)}")
    _check_status(obj.status)
    if not isinstance(obj.finalized, bool):
        raise InvalidResponse(f"finalized must be True or False, got {_describe(obj.finalized)}")
    retry_after = _check_seconds(obj.retry_after, "retry_after")
    return FinalizeResponse(
        status=obj.status,
        finalized=obj.finalized,
        retry_after=retry_after,
        events=_check_events(obj.events),
    )


_REASON_MAX = 128


def _check_events(events: Any) -> tuple[Event, ...]:
    if isinstance(events, (str, bytes, dict)) or not isinstance(events, (list, tuple)):
        raise InvalidResponse(f"events must be a list or tuple of Event, got {_describe(events)}")
    for i, event in enumerate(events):
        where = f"events[{i}]"
        if not isinstance(event, Event):
            raise InvalidResponse(f"{where} must be an Event, got {_describe(event)}")
        reason = event.reason
        if not isinstance(reason, str) or not reason or len(reason) > _REASON_MAX:
            raise InvalidResponse(
                f"{where}.reason must be a non-empty string of at most {_REASON_MAX} characters,"
                f" got {reason!r}"
            )
        if not isinstance(event.message, str):
            raise InvalidResponse(
                f"{where}.message must be a string, got {_describe(event.message)}"
            )
        if event.type not in EVENT_TYPES:
            raise InvalidResponse(f"{where}.type must be Normal or Warning, got {event.type!r}")
    return tuple(events)
