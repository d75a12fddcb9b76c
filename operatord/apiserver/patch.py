"""Patch formats: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch
(the common subset), and the field-set algebra behind server-side apply.

Guarantees: every function here is pure — inputs are never mutated, results share no mutable
structure with the inputs. Invalid patches raise `PatchError` (the API answers 422 or 400).
"""

from __future__ import annotations

from typing import Any


class PatchError(ValueError):
    """The patch cannot be applied; `code` is the HTTP status to answer with."""

    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.code = code


def deepcopy(x: Any) -> Any:
    """A fast deep copy of JSON data."""
    if isinstance(x, dict):
        return {k: deepcopy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [deepcopy(v) for v in x]
    return x


# -- RFC 7386 -----------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply a JSON merge patch."""
    if not isinstance(patch, dict):
        return deepcopy(patch)
    out = deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            out[k] = merge_patch(out.get(k), v)
        else:
            out[k] = deepcopy(v)
    return out


# -- RFC 6902 -----------------------------------------------------------------------------------


def _unescape(tok: str) -> str:
    return tok.replace("~1", "/").replace("~0", "~")


def _split(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"invalid JSON pointer {pointer!r}")
    return [_unescape(t) for t in pointer[1:].split("/")]


def _resolve(doc: Any, parts: list[str]) -> Any:
    cur = doc
    for p in parts:
        if isinstance(cur, dict):
            if p not in cur:
                raise PatchError(f"path not found: /{'/'.join(parts)}")
            cur = cur[p]
        elif isinstance(cur, list):
            try:
                cur = cur[int(p)]
            except (ValueError, IndexError):
                raise PatchError(f"path not found: /{'/'.join(parts)}") from None
        else:
            raise PatchError(f"path not found: /{'/'.join(parts)}")
    return cur


def _add(doc: Any, parts: list[str], value: Any, replace: bool) -> Any:
    if not parts:
        return value
    parent = _resolve(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise PatchError(f"path not found: /{'/'.join(parts)}")
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-" and not replace:
            parent.append(value)
        else:
            try:
                idx = int(last)
            except ValueError:
                raise PatchError(f"invalid array index {last!r}") from None
            if replace:
                if not 0 <= idx < len(parent):
                    raise PatchError(f"array index {idx} out of range")
                parent[idx] = value
            else:
                if not 0 <= idx <= len(parent):
                    raise PatchError(f"array index {idx} out of range")
                parent.insert(idx, value)
    else:
        raise PatchError(f"cannot add at /{'/'.join(parts)}")
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent = _resolve(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path not found: /{'/'.join(parts)}")
        return parent.pop(last)
    if isinstance(parent, list):
        try:
            return parent.pop(int(last))
        except (ValueError, IndexError):
            raise PatchError(f"path not found: /{'/'.join(parts)}") from None
    raise PatchError(f"path not found: /{'/'.join(parts)}")


def json_patch(target: Any, ops: Any) -> Any:
    """Apply an RFC 6902 JSON patch; a failed `test` raises PatchError."""
    if not isinstance(ops, list):
        raise PatchError("json patch must be a list of operations", 400)
    doc = deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid json patch operation: {op!r}", 400)
        kind = op["op"]
        parts = _split(op["path"])
        if kind == "add":
            doc = _add(doc, parts, deepcopy(op.get("value")), replace=False)
        elif kind == "replace":
            doc = _add(doc, parts, deepcopy(op.get("value")), replace=True)
        elif kind == "remove":
            _remove(doc, parts)
        elif kind == "move":
            val = _remove(doc, _split(op["from"]))
            doc = _add(doc, parts, val, replace=False)
        elif kind == "copy":
            val = deepcopy(_resolve(doc, _split(op["from"])))
            doc = _add(doc, parts, val, replace=False)
        elif kind == "test":
            if _resolve(doc, parts) != op.get("value"):
                raise PatchError(f"testing value {op['path']} failed")
        else:
            raise PatchError(f"unknown json patch operation {kind!r}", 400)
    return doc


# -- strategic merge patch (subset) -------------------------------------------------------------

# List field name -> merge key. Lists not named here are replaced atomically, as for
# `patchStrategy` absent; primitive lists named in _SET_LISTS merge as sets.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "conditions": "type",
    "hostAliases": "ip",
    "ports": None,  # containerPort for containers, port for services: decided per item
}
_SET_LISTS = {"finalizers"}


def _port_key(items: list) -> str:
    for it in items:
        if isinstance(it, dict) and "containerPort" in it:
            return "containerPort"
    return "port"


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Apply a strategic merge patch for built-in types: keyed lists merge by their merge key,
    `$patch: replace|delete` and `$deleteFromPrimitiveList/<field>` directives are honoured,
    `$setElementOrder` and `$retainKeys` are accepted and ignored."""
    if not isinstance(patch, dict):
        return deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    out = deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$setElementOrder/") or k in ("$retainKeys", "$patch"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            if isinstance(out.get(field), list) and isinstance(v, list):
                out[field] = [x for x in out[field] if x not in v]
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            merged = strategic_merge_patch(out.get(k), v)
            if merged is None:
                out.pop(k, None)
            else:
                out[k] = merged
        elif isinstance(v, list) and k in _SET_LISTS and isinstance(out.get(k), list):
            cur = out[k]
            out[k] = cur + [x for x in v if x not in cur]
        elif isinstance(v, list) and k in _MERGE_KEYS and isinstance(out.get(k), list):
            key = _MERGE_KEYS[k] or _port_key(v + out[k])
            out[k] = _merge_keyed(out[k], v, key)
        else:
            out[k] = deepcopy(v)
    return out


def _merge_keyed(cur: list, patch: list, key: str) -> list:
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [deepcopy(p) for p in patch if not (isinstance(p, dict) and "$patch" in p)]
    out = [deepcopy(c) for c in cur]
    for p in patch:
        if not isinstance(p, dict) or key not in p:
            out.append(deepcopy(p))
            continue
        idx = next(
            (i for i, c in enumerate(out) if isinstance(c, dict) and c.get(key) == p[key]), None
        )
        if p.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append(deepcopy(p))
        else:
            out[idx] = strategic_merge_patch(out[idx], p)
    return out


# -- server-side apply field sets ---------------------------------------------------------------

Path = tuple[str, ...]
_IDENTITY: set[Path] = {
    ("apiVersion",),
    ("kind",),
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("metadata", "uid"),
    ("metadata", "resourceVersion"),
    ("metadata", "generation"),
    ("metadata", "creationTimestamp"),
    ("metadata", "deletionTimestamp"),
    ("metadata", "deletionGracePeriodSeconds"),
    ("metadata", "managedFields"),
    ("metadata", "selfLink"),
    ("metadata", "generateName"),
}


def field_paths(obj: Any, prefix: Path = ()) -> set[Path]:
    """Leaf paths of an object: maps are granular, lists and scalars are atomic leaves.
    Empty maps count as leaves so that `spec: {}` is owned too. Identity fields are excluded."""
    out: set[Path] = set()
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            p = prefix + (k,)
            if p in _IDENTITY:
                continue
            out |= field_paths(v, p)
    elif prefix:
        out.add(prefix)
    return out


def get_path(obj: Any, path: Path) -> Any:
    cur = obj
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return _MISSING
        cur = cur[p]
    return cur


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def remove_path(obj: dict, path: Path) -> None:
    """Remove a leaf in place and prune maps it leaves empty."""
    stack = []
    cur: Any = obj
    for p in path[:-1]:
        if not isinstance(cur, dict) or p not in cur:
            return
        stack.append((cur, p))
        cur = cur[p]
    if isinstance(cur, dict):
        cur.pop(path[-1], None)
        while stack and cur == {}:
            parent, key = stack.pop()
            parent.pop(key, None)
            cur = parent


def changed_paths(old: Any, new: Any, prefix: Path = ()) -> set[Path]:
    """Leaf paths whose value differs between two objects (present in either)."""
    if isinstance(old, dict) and isinstance(new, dict) and (old or new):
        out: set[Path] = set()
        for k in old.keys() | new.keys():
            p = prefix + (k,)
            if p in _IDENTITY:
                continue
            out |= changed_paths(old.get(k, _MISSING), new.get(k, _MISSING), p)
        return out
    if old == new or not prefix:
        return set()
    if isinstance(new, dict) and not isinstance(old, dict):
        return field_paths(new, prefix) or {prefix}
    return {prefix}


def paths_to_fields_v1(paths: set[Path]) -> dict:
    """Encode a path set as a FieldsV1 document (`f:` prefixed keys, `.` for owned maps)."""
    root: dict = {}
    for path in sorted(paths):
        cur = root
        for p in path:
            cur = cur.setdefault(f"f:{p}", {})
    return root


def fields_v1_to_paths(doc: Any, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    if not isinstance(doc, dict) or not doc:
        if prefix:
            out.add(prefix)
        return out
    for k, v in doc.items():
        if k == ".":
            continue
        name = k[2:] if k.startswith(("f:", "k:", "v:", "i:")) else k
        out |= fields_v1_to_paths(v, prefix + (name,))
    return out


def apply_merge(current: Any, applied: Any) -> Any:
    """Merge an applied configuration into the live object: maps merge recursively, lists and
    scalars from the applied configuration win."""
    if not isinstance(applied, dict) or not isinstance(current, dict):
        return deepcopy(applied)
    out = deepcopy(current)
    for k, v in applied.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = apply_merge(out[k], v)
        else:
            out[k] = deepcopy(v)
    return out
