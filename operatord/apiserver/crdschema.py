"""Structural schemas of CustomResourceDefinitions: pruning, defaulting and validation of
custom objects, as the apiextensions server does them.

Guarantees:
- `compile_schema` returns None for a schema that constrains nothing (a root that preserves
  unknown fields and declares no properties or checks): writes of such types pay nothing.
- `normalize` prunes fields the schema does not declare (unless
  `x-kubernetes-preserve-unknown-fields` or `additionalProperties` keeps them; `apiVersion`,
  `kind` and `metadata` at the root and in embedded resources are always kept), drops `null`s
  of non-nullable fields, then applies `default`s of missing fields (defaults are themselves
  normalized). It works in place on a fresh object and returns the pruned paths.
- `validate` returns field errors in the real server's words and shapes: types (with
  `nullable` and `x-kubernetes-int-or-string`), required, enum, minimum/maximum (exclusive
  too), multipleOf, pattern, min/maxLength, min/maxItems, uniqueItems, min/maxProperties.
- `structural_errors` reports what makes a schema non-structural (missing or unknown types,
  arrays without items), with paths under the CRD's `spec.versions[i].schema.openAPIV3Schema`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from . import patch as P
from .errors import (
    FieldError,
    field_invalid,
    field_not_supported,
    field_required,
    field_too_long,
    field_too_many,
)

TYPES = ("array", "boolean", "integer", "number", "object", "string")
_ROOT_KEPT = ("apiVersion", "kind", "metadata")
_CHECKS = (
    "enum",
    "minimum",
    "maximum",
    "multipleOf",
    "pattern",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "required",
    "nullable",
)


class Node:
    """One compiled schema node."""

    __slots__ = (
        "type",
        "props",
        "additional",
        "items",
        "preserve",
        "embedded",
        "int_or_string",
        "nullable",
        "defaults",
        "required",
        "enum",
        "minimum",
        "maximum",
        "exclusive_min",
        "exclusive_max",
        "multiple_of",
        "pattern",
        "pattern_src",
        "min_length",
        "max_length",
        "min_items",
        "max_items",
        "unique",
        "min_props",
        "max_props",
    )

    def __init__(self, raw: dict) -> None:
        self.type: str = raw.get("type") or ""
        props = raw.get("properties")
        self.props: dict[str, Node] | None = (
            {k: Node(v) for k, v in props.items() if isinstance(v, dict)}
            if isinstance(props, dict)
            else None
        )
        add = raw.get("additionalProperties")
        self.additional: Node | bool | None = (
            Node(add) if isinstance(add, dict) else (True if add is True else None)
        )
        items = raw.get("items")
        self.items: Node | None = Node(items) if isinstance(items, dict) else None
        self.preserve = bool(raw.get("x-kubernetes-preserve-unknown-fields"))
        self.embedded = bool(raw.get("x-kubernetes-embedded-resource"))
        self.int_or_string = bool(raw.get("x-kubernetes-int-or-string"))
        self.nullable = bool(raw.get("nullable"))
        self.defaults: list[tuple[str, Any]] = [
            (k, v.get("default"))
            for k, v in (props or {}).items()
            if isinstance(v, dict) and "default" in v
        ]
        self.required: list[str] = [r for r in raw.get("required") or [] if isinstance(r, str)]
        self.enum: list | None = raw.get("enum") if isinstance(raw.get("enum"), list) else None
        self.minimum = raw.get("minimum")
        self.maximum = raw.get("maximum")
        self.exclusive_min = bool(raw.get("exclusiveMinimum"))
        self.exclusive_max = bool(raw.get("exclusiveMaximum"))
        self.multiple_of = raw.get("multipleOf")
        self.pattern_src: str | None = raw.get("pattern")
        self.pattern = re.compile(self.pattern_src) if self.pattern_src else None
        self.min_length = raw.get("minLength")
        self.max_length = raw.get("maxLength")
        self.min_items = raw.get("minItems")
        self.max_items = raw.get("maxItems")
        self.unique = bool(raw.get("uniqueItems"))
        self.min_props = raw.get("minProperties")
        self.max_props = raw.get("maxProperties")


def compile_schema(raw: Any) -> Node | None:
    """The compiled root of an `openAPIV3Schema`; None when it constrains nothing."""
    if not isinstance(raw, dict):
        return None
    if raw.get("x-kubernetes-preserve-unknown-fields") and not (
        raw.get("properties") or raw.get("additionalProperties") or any(k in raw for k in _CHECKS)
    ):
        return None
    try:
        return Node(raw)
    except re.error:
        return None  # rejected when the CRD is written (structural_errors)


# -- pruning and defaulting ----------------------------------------------------------------------


def normalize(obj: dict, root: Node) -> list[str]:
    """Prune, drop non-nullable nulls and default `obj` in place; returns the pruned paths."""
    pruned: list[str] = []
    _normalize_object(obj, root, "", pruned, keep=_ROOT_KEPT)
    return pruned


def _normalize_object(
    value: dict, node: Node, path: str, pruned: list[str], keep: tuple = ()
) -> None:
    props = node.props
    additional = node.additional
    for k in list(value):
        if k in keep:
            continue
        child = props.get(k) if props is not None else None
        if child is None:
            if isinstance(additional, Node):
                child = additional
            elif additional is True or node.preserve:
                continue
            else:
                del value[k]
                pruned.append(f"{path}.{k}" if path else k)
                continue
        v = value[k]
        if v is None:
            if not child.nullable:
                del value[k]
            continue
        _normalize(v, child, f"{path}.{k}" if path else k, pruned)
    if props is None:
        return  # defaults are only collected from declared properties
    for k, default in node.defaults:
        if k not in value:
            value[k] = P.deepcopy(default)
            if value[k] is not None:
                _normalize(value[k], props[k], f"{path}.{k}" if path else k, pruned)


def _normalize(value: Any, node: Node, path: str, pruned: list[str]) -> None:
    if isinstance(value, dict):
        if node.props is None and node.additional is None and (node.preserve or not node.type):
            return  # nothing declared below: keep as is
        _normalize_object(value, node, path, pruned, keep=_ROOT_KEPT if node.embedded else ())
    elif isinstance(value, list) and node.items is not None:
        for i, item in enumerate(value):
            if item is not None:
                _normalize(item, node.items, f"{path}[{i}]", pruned)


# -- validation ----------------------------------------------------------------------------------


def _type_of(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _has_type(v: Any, t: str) -> bool:
    if t == "object":
        return isinstance(v, dict)
    if t == "string":
        return isinstance(v, str)
    if t == "integer":
        return (isinstance(v, int) and not isinstance(v, bool)) or (
            isinstance(v, float) and v.is_integer()
        )
    if t == "number":
        return isinstance(v, int | float) and not isinstance(v, bool)
    if t == "boolean":
        return isinstance(v, bool)
    if t == "array":
        return isinstance(v, list)
    return True


def validate(obj: dict, root: Node) -> list[FieldError]:
    """Every field error of `obj` (already normalized) against `root`."""
    errors: list[FieldError] = []
    _validate_object(obj, root, "", errors, skip=_ROOT_KEPT)
    return errors


def _num(x: Any) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


def _validate(v: Any, node: Node, path: str, errors: list[FieldError]) -> None:
    if v is None:
        if not node.nullable and (node.type or node.int_or_string):
            want = node.type or "integer or string"
            errors.append(
                field_invalid(path, "null", f'{path} in body must be of type {want}: "null"')
            )
        return
    if node.int_or_string:
        if not (_has_type(v, "integer") or isinstance(v, str)):
            t = _type_of(v)
            errors.append(
                field_invalid(path, t, f'{path} in body must be of type integer or string: "{t}"')
            )
            return
    elif node.type and not _has_type(v, node.type):
        t = _type_of(v)
        errors.append(field_invalid(path, t, f'{path} in body must be of type {node.type}: "{t}"'))
        return
    if node.enum is not None and v not in node.enum:
        errors.append(field_not_supported(path, v, node.enum))
    if isinstance(v, int | float) and not isinstance(v, bool):
        _validate_number(v, node, path, errors)
    elif isinstance(v, str):
        if node.max_length is not None and len(v) > node.max_length:
            errors.append(field_too_long(path, node.max_length))
        if node.min_length is not None and len(v) < node.min_length:
            errors.append(
                field_invalid(
                    path, v, f"{path} in body should be at least {node.min_length} chars long"
                )
            )
        if node.pattern is not None and not node.pattern.search(v):
            errors.append(
                field_invalid(path, v, f"{path} in body should match '{node.pattern_src}'")
            )
    elif isinstance(v, list):
        if node.max_items is not None and len(v) > node.max_items:
            errors.append(field_too_many(path, len(v), node.max_items))
        if node.min_items is not None and len(v) < node.min_items:
            errors.append(
                field_invalid(
                    path, v, f"{path} in body should have at least {node.min_items} items"
                )
            )
        if node.unique:
            seen: set[str] = set()
            for item in v:
                k = json.dumps(item, sort_keys=True)
                if k in seen:
                    errors.append(("FieldValueDuplicate", path, f"Duplicate value: {k}"))
                    break
                seen.add(k)
        if node.items is not None:
            for i, item in enumerate(v):
                _validate(item, node.items, f"{path}[{i}]", errors)
    elif isinstance(v, dict):
        _validate_object(v, node, path, errors, skip=_ROOT_KEPT if node.embedded else ())


def _validate_number(v: float, node: Node, path: str, errors: list[FieldError]) -> None:
    if node.minimum is not None:
        if node.exclusive_min and v <= node.minimum:
            errors.append(
                field_invalid(
                    path, v, f"{path} in body should be greater than {_num(node.minimum)}"
                )
            )
        elif v < node.minimum:
            errors.append(
                field_invalid(
                    path,
                    v,
                    f"{path} in body should be greater than or equal to {_num(node.minimum)}",
                )
            )
    if node.maximum is not None:
        if node.exclusive_max and v >= node.maximum:
            errors.append(
                field_invalid(path, v, f"{path} in body should be less than {_num(node.maximum)}")
            )
        elif v > node.maximum:
            errors.append(
                field_invalid(
                    path, v, f"{path} in body should be less than or equal to {_num(node.maximum)}"
                )
            )
    if node.multiple_of:
        q = v / node.multiple_of
        if abs(q - round(q)) > 1e-9:
            errors.append(
                field_invalid(
                    path, v, f"{path} in body should be a multiple of {_num(node.multiple_of)}"
                )
            )


def _validate_object(
    v: dict, node: Node, path: str, errors: list[FieldError], skip: tuple = ()
) -> None:
    for r in node.required:
        if r not in v and r not in skip:
            errors.append(field_required(f"{path}.{r}" if path else r))
    n = len(v)
    if node.max_props is not None and n > node.max_props:
        errors.append(
            field_invalid(
                path, v, f"{path} in body should have at most {node.max_props} properties"
            )
        )
    if node.min_props is not None and n < node.min_props:
        errors.append(
            field_invalid(
                path, v, f"{path} in body should have at least {node.min_props} properties"
            )
        )
    props = node.props
    additional = node.additional if isinstance(node.additional, Node) else None
    for k, item in v.items():
        if k in skip:
            continue
        child = props.get(k) if props is not None else None
        if child is None:
            child = additional
        if child is not None:
            _validate(item, child, f"{path}.{k}" if path else k, errors)


# -- structural checks of a CRD's schema ---------------------------------------------------------


def structural_errors(raw: Any, path: str) -> list[FieldError]:
    """Why `raw` is not a structural schema (empty when it is)."""
    errors: list[FieldError] = []
    if not isinstance(raw, dict):
        return [field_invalid(path, raw, "must be an object")]
    _structural(raw, path, errors, root=True)
    return errors


def _structural(raw: dict, path: str, errors: list[FieldError], root: bool = False) -> None:
    t = raw.get("type")
    if t is None or t == "":
        if not (
            raw.get("x-kubernetes-int-or-string") or raw.get("x-kubernetes-preserve-unknown-fields")
        ):
            what = "at the root" if root else "for specified object fields"
            errors.append(field_required(f"{path}.type", f"must not be empty {what}"))
    elif t not in TYPES:
        errors.append(field_not_supported(f"{path}.type", t, list(TYPES)))
    if root and t not in (None, "", "object"):
        errors.append(field_invalid(f"{path}.type", t, 'must be "object" at the root'))
    if t == "array" and not isinstance(raw.get("items"), dict):
        errors.append(field_required(f"{path}.items", "must be specified"))
    if raw.get("pattern") is not None:
        try:
            re.compile(raw["pattern"])
        except (re.error, TypeError):
            errors.append(
                field_invalid(
                    f"{path}.pattern", raw["pattern"], "must be a valid regular expression"
                )
            )
    for k, sub in (raw.get("properties") or {}).items():
        if isinstance(sub, dict):
            _structural(sub, f"{path}.properties[{k}]", errors)
    if isinstance(raw.get("items"), dict):
        _structural(raw["items"], f"{path}.items", errors)
    if isinstance(raw.get("additionalProperties"), dict):
        _structural(raw["additionalProperties"], f"{path}.additionalProperties", errors)
