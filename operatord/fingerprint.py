"""A parent's inputs fingerprint: what a sync's answer depends on, hashed.

The handler contract makes the desired state a function of the observed state: the parent,
its children and its selected related objects. With the same handler code and the same
controller config, the same inputs give the same answer. A sync that converged records the
fingerprint of its inputs in the status it writes anyway (`FIELD`); a later dispatch whose
inputs hash to the recorded value (a restart, a takeover, a periodic resync) has nothing to
do, and the leader skips it (``skipUnchanged``).

What the fingerprint covers (`of`):

- the parent without ``status`` and without the bookkeeping the server changes on every write
  (``metadata.resourceVersion``, ``managedFields``, ``generation``): spec, labels,
  annotations, finalizers, owner references, name, namespace, uid and every other field;
- the ``(apiVersion, kind, namespace, name, resourceVersion)`` of each observed child: a child
  changed, created or deleted by anyone gets a new version (resourceVersions are never reused);
- the related selection and the same tuple for each related object it matches;
- the controller digest (`controller_digest`): the controller's config and the handler's
  version (``handlerVersion``, or a hash of its source, `source_version`).

Guarantees:

- Deterministic across processes and restarts: the leader and the workers compute the same
  value from the same inputs (canonical JSON, sorted keys and objects).
- Any change to one covered input changes the value (up to a 128-bit BLAKE2b collision).
- `source_version` imports nothing: it finds the handler's files the way the import system
  would (``pythonPath`` first), so the leader can compute it without running user code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.machinery import PathFinder
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from operatord.config import ControllerConfig

#: The status field a converged sync records its inputs in.
FIELD = "observedInputs"

# Parent metadata the server (or operatord's own status write) changes without any input
# changing: a status write moves resourceVersion, and, on a parent without a status
# subresource, generation too.
_BOOKKEEPING = frozenset(("resourceVersion", "managedFields", "generation"))


_UNKNOWN = "unknown:" + os.urandom(8).hex()


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a parent's status says about its last converged sync."""

    fingerprint: str
    # The related selection that sync ran with (wire form, `operatord.selectors.Selection`);
    # None when the controller has no related types.
    selection: tuple | None


def _dumps(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def parent_inputs(parent: dict) -> dict:
    """The parent as the fingerprint sees it: without status and server bookkeeping."""
    out = {k: v for k, v in parent.items() if k != "status"}
    meta = parent.get("metadata") or {}
    out["metadata"] = {k: v for k, v in meta.items() if k not in _BOOKKEEPING}
    return out


def _versions(objects: Iterable[dict]) -> list[tuple[str, str, str, str, str]]:
    out = []
    for obj in objects:
        meta = obj.get("metadata") or {}
        out.append(
            (
                obj.get("apiVersion", ""),
                obj.get("kind", ""),
                meta.get("namespace") or "",
                meta.get("name") or "",
                str(meta.get("resourceVersion") or ""),
            )
        )
    out.sort()
    return out


def of(
    digest: str,
    parent: dict,
    children: Iterable[dict],
    selection: tuple | list | None = None,
    related: Iterable[dict] = (),
) -> str:
    """The fingerprint of one parent's inputs (``digest``: its controller's, from
    `controller_digest`). A selection of None and an empty one are the same input."""
    h = hashlib.blake2b(digest_size=16)
    h.update(digest.encode())
    h.update(b"\x00parent\x00")
    h.update(_dumps(parent_inputs(parent)))
    h.update(b"\x00children\x00")
    h.update(_dumps(_versions(children)))
    h.update(b"\x00selection\x00")
    h.update(_dumps(list(selection or ())))
    h.update(b"\x00related\x00")
    h.update(_dumps(_versions(related)))
    return h.hexdigest()


def record(fingerprint: str, selection: tuple | None, version: str = "") -> dict:
    """The value of `FIELD` for a converged sync (``version``: its controller digest, so a
    worker can tell a record made by another config or handler version)."""
    out: dict[str, Any] = {"fingerprint": fingerprint}
    if version:
        out["version"] = version
    if selection is not None:
        out["selection"] = [list(s) for s in selection]
    return out


def recorded_version(parent: dict) -> str | None:
    """The controller digest the parent's record was made with (None: no record)."""
    status = parent.get("status")
    value = status.get(FIELD) if isinstance(status, dict) else None
    if not isinstance(value, dict):
        return None
    version = value.get("version")
    return version if isinstance(version, str) else None


def recorded(parent: dict) -> Recorded | None:
    """The inputs the parent's status records (None: none, or not in the expected shape)."""
    status = parent.get("status")
    if not isinstance(status, dict):
        return None
    value = status.get(FIELD)
    if not isinstance(value, dict):
        return None
    fingerprint = value.get("fingerprint")
    if not isinstance(fingerprint, str) or not fingerprint:
        return None
    raw = value.get("selection")
    selection = None
    if isinstance(raw, list):
        try:
            selection = tuple(
                (str(a), str(k), tuple(names or ()), ns, sel) for a, k, names, ns, sel in raw
            )
        except (TypeError, ValueError):
            return None
    return Recorded(fingerprint, selection)


# ---- the controller digest ---------------------------------------------------------------------


def controller_digest(config: ControllerConfig, version: str | None = None) -> str:
    """A hash of everything about ``config`` that may change a sync's answer: its keys, the
    names derived from the daemon (finalizer, field manager, managed-by value) and the
    handler's version (``version``, default `handler_version`)."""
    data = {
        **config.to_dict(),
        "finalizer": config.finalizer,
        "fieldManager": config.field_manager,
        "managedBy": config.managed_by,
        "handlerVersion": handler_version(config) if version is None else version,
    }
    return hashlib.blake2b(_dumps(data), digest_size=16).hexdigest()


def unknown(version: str) -> bool:
    """The handler's source could not be found (no parent is ever skipped)."""
    return version.startswith("unknown:")


def handler_version(config: ControllerConfig) -> str:
    """``handlerVersion`` when set, else the hash of the handler's source."""
    if config.handler_version:
        return "set:" + config.handler_version
    return "source:" + source_version(config.handler, config.python_path)


def _module_files(module: str, python_path: Iterable[str]) -> list[str]:
    """The source files the fingerprint takes for ``module``: its own file, and when it is in a
    package, every ``.py`` file of its top-level package. [] when it cannot be found."""
    parts = module.split(".")
    search = [*python_path, *(p for p in sys.path if p not in python_path)]
    top = PathFinder.find_spec(parts[0], search or None)
    if top is None:  # e.g. an editable install's import hook: ask the import system
        try:
            top = importlib.util.find_spec(parts[0])
        except (ImportError, ValueError):
            return []
    if top is None:
        return []
    roots = list(top.submodule_search_locations or ())
    if not roots:  # a plain module
        return [top.origin] if top.origin and os.path.isfile(top.origin) else []
    files: list[str] = []
    for root in roots:
        for directory, subdirs, names in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if d != "__pycache__" and not d.startswith("."))
            files.extend(os.path.join(directory, n) for n in sorted(names) if n.endswith(".py"))
    return files


def source_version(handler: str, python_path: Iterable[str] = ()) -> str:
    """A hash of the handler's source files (see `_module_files`). When they cannot be found
    or read: ``unknown:`` and a random token of this process, which no other process's
    version matches, so nothing is ever skipped rather than skipped wrongly."""
    module = handler.split(":", 1)[0]
    paths = list(python_path)
    files = _module_files(module, paths)
    if not files:
        return _UNKNOWN
    h = hashlib.blake2b(digest_size=16)
    base = os.path.dirname(files[0]) if len(files) == 1 else os.path.commonpath(files)
    try:
        for path in files:
            with open(path, "rb") as f:
                data = f.read()
            h.update(os.path.relpath(path, base).encode() + b"\x00")
            h.update(len(data).to_bytes(8, "big"))
            h.update(data)
    except OSError:
        return _UNKNOWN
    return h.hexdigest()
