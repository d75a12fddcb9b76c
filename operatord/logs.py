"""Logging for every operatord process: structlog, one renderer, redacted secrets.

Call :func:`configure_logging` once at the start of each process (leader and every worker, since
spawned processes inherit no logging setup). Guarantees after the call:

- Everything goes to stdout through one ``logging.StreamHandler``: structlog loggers and
  stdlib loggers alike (``kubernetes``, ``urllib3``, ...), rendered by the same
  ``structlog.stdlib.ProcessorFormatter``.
- ``fmt="json"``: one JSON object per line. ``fmt="console"``: human-readable lines.
  ``fmt="auto"``: console when stdout is a TTY, JSON otherwise.
- Every line carries ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``, ``event``, the static
  context passed to :func:`configure_logging` (e.g. ``process="worker", worker=1``) and whatever
  is bound in ``structlog.contextvars`` (see :func:`bind_parent`).
- Secrets are redacted anywhere in the event, nested dicts and lists included: values under keys
  such as ``authorization``, ``token``, ``password``, ``api_key``; the values of ``data`` and
  ``stringData`` of any object with ``kind: Secret``; ``Bearer``/``Basic`` credentials and URL
  user-info inside strings. Objects passed to a logger are never mutated.
- Exceptions are rendered as one plain traceback (``traceback.format_exception``: frames and
  source lines, never local variables), turned into text before the redaction runs, so the
  redaction covers the exception message and the traceback too. This holds in both formats and
  whatever is installed: ``rich`` or ``better_exceptions`` never render a traceback here.
- ``kubernetes.client.rest`` is held at INFO even at ``level="debug"``: at DEBUG it logs whole
  response bodies, which can contain Secret data.
- Calling it again replaces the previous configuration (handler, level, static context).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import structlog

from operatord.config import LOGGING_FORMATS

REDACTED = "[REDACTED]"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# Keys are compared after lower-casing and dropping "-" and "_".
_SECRET_KEYS = frozenset(
    {
        "authorization",
        "proxyauthorization",
        "cookie",
        "setcookie",
        "token",
        "password",
        "passwd",
        "apikey",
        "xapikey",
        "clientsecret",
        "privatekey",
        "clientkeydata",
        "clientkey",
        "credentials",
    }
)
_SECRET_SUFFIXES = ("token", "password", "secretkey", "apikey")

_STRING_PATTERNS = (
    # "authorization: Bearer xyz", "token=xyz", "'password': 'xyz'", '"token": "xyz"'
    (
        re.compile(
            r"(?i)([\"']?\b(?:authorization|[a-z_]*token|password|passwd|api[_-]?key)[\"']?"
            r"\s*[:=]\s*)(?!\[REDACTED\])"
            r"(?:[\"'][^\"']*[\"']|(?:bearer|basic)\s+[^\s,;}\]]+|[^\s,;}\]]+)"
        ),
        r"\1" + REDACTED,
    ),
    # Authorization header values on their own: "Bearer abc", "Basic dXNlcjpwYXNz"
    (
        re.compile(r"(?i)\b(bearer|basic)\s+(?!\[REDACTED\])[A-Za-z0-9\-._~+/]+=*"),
        r"\1 " + REDACTED,
    ),
    # user-info in URLs: https://user:pass@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s:@]+:[^/\s@]+@"), r"\1" + REDACTED + "@"),
)

_state: dict[str, Any] = {"context": {}, "handler": None}


def _is_secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    k = key.lower().replace("-", "").replace("_", "")
    return k in _SECRET_KEYS or k.endswith(_SECRET_SUFFIXES)


def redact(value: Any, _depth: int = 0) -> Any:
    """Return ``value`` with secrets replaced by ``[REDACTED]``; the input is not modified.

    Containers are copied only where something changed.
    """
    if _depth > 20:
        return value
    if isinstance(value, str):
        out = value
        for pattern, repl in _STRING_PATTERNS:
            out = pattern.sub(repl, out)
        return out
    if isinstance(value, Mapping):
        is_secret_object = value.get("kind") == "Secret"
        changed = False
        new: dict[Any, Any] = {}
        for k, v in value.items():
            if _is_secret_key(k) and not (v is None or isinstance(v, bool) or v in ("", REDACTED)):
                nv: Any = REDACTED
            elif is_secret_object and k in ("data", "stringData") and isinstance(v, Mapping):
                nv = {dk: REDACTED for dk in v}
            else:
                nv = redact(v, _depth + 1)
            changed = changed or nv is not v
            new[k] = nv
        return new if changed else value
    if isinstance(value, (list, tuple)):
        items = [redact(v, _depth + 1) for v in value]
        if any(a is not b for a, b in zip(items, value, strict=True)):
            return type(value)(items) if isinstance(value, list) else tuple(items)
        return value
    return value


def redact_secrets(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: :func:`redact` over the whole event dict."""
    return redact(event_dict)


def _add_static_context(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict:
    for key, value in _state["context"].items():
        event_dict.setdefault(key, value)
    return event_dict


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        _add_static_context,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


def _resolve_format(fmt: str) -> str:
    if fmt not in LOGGING_FORMATS:
        raise ValueError(f"logging format must be one of {LOGGING_FORMATS}, got {fmt!r}")
    if fmt == "auto":
        isatty = getattr(sys.stdout, "isatty", None)
        return "console" if isatty is not None and isatty() else "json"
    return fmt


def configure_logging(fmt: str = "auto", level: str = "info", **context: Any) -> str:
    """Configure structlog and stdlib logging for this process; returns the format in use.

    ``context`` is bound to every line of the process (e.g. ``process="leader"``); values bound
    per call or in contextvars take precedence over it.
    """
    if str(level).lower() not in _LEVELS:
        raise ValueError(f"logging level must be one of {sorted(_LEVELS)}, got {level!r}")
    numeric = _LEVELS[str(level).lower()]
    resolved = _resolve_format(fmt)
    _state["context"] = dict(context)

    shared = _shared_processors()
    # format_exc_info turns exc_info into the "exception" string (a plain traceback) before
    # redact_secrets sees the event, in both formats: a renderer's own exception formatter
    # (structlog's ConsoleRenderer picks rich's, with every frame's locals, when rich is
    # importable) would run after the redaction.
    if resolved == "json":
        renderer: Any = structlog.processors.JSONRenderer(default=repr)
    else:
        colors = bool(getattr(sys.stdout, "isatty", lambda: False)())
        renderer = structlog.dev.ConsoleRenderer(
            colors=colors, exception_formatter=structlog.dev.plain_traceback
        )
    final: list[Any] = [structlog.processors.format_exc_info, redact_secrets, renderer]

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *final,
        ],
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    old = _state["handler"]
    if old is not None:
        root.removeHandler(old)
    # Other handlers on the root logger would print the same record unredacted a second time.
    for h in list(root.handlers):
        if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (
            sys.stdout,
            sys.stderr,
            sys.__stdout__,
            sys.__stderr__,
        ):
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(numeric)
    _state["handler"] = handler
    logging.getLogger("kubernetes.client.rest").setLevel(max(numeric, logging.INFO))
    logging.captureWarnings(True)
    return resolved


@contextmanager
def bind_parent(
    parent: Mapping[str, Any], worker: int | str | None = None, controller: str | None = None
) -> Iterator[None]:
    """Bind the parent's identity to every log line in this context (thread/task local).

    Binds ``parent_namespace`` (None for cluster-scoped parents), ``parent_name``,
    ``parent_uid`` and, when given, ``worker`` and ``controller``; restores the previous
    bindings on exit.
    """
    meta = parent.get("metadata") or {}
    values: dict[str, Any] = {
        "parent_namespace": meta.get("namespace"),
        "parent_name": meta.get("name"),
        "parent_uid": meta.get("uid"),
    }
    if worker is not None:
        values["worker"] = worker
    if controller is not None:
        values["controller"] = controller
    with structlog.contextvars.bound_contextvars(**values):
        yield
