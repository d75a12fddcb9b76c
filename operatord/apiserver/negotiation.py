"""Content negotiation of the embedded API server: which representation an `Accept` header
asks for, and the `PartialObjectMetadata` transforms.

Guarantees, as kube-apiserver negotiates:
- The media ranges of `Accept` are tried in order of their `q` (default 1; equal `q` keep the
  order of the header). The first one the server can produce wins: `application/json`,
  `application/*` or `*/*` without a transform (the object as stored), or `application/json`
  with `as=Table`, `as=PartialObjectMetadata` or `as=PartialObjectMetadataList` and
  `g=meta.k8s.io` with `v=v1` or `v=v1beta1`. Anything else (protobuf, YAML, CBOR, unknown
  transforms, a transform without `g`/`v`) is skipped; when nothing is left the answer is
  406 NotAcceptable. An empty header means `*/*`.
- With `partial_metadata=False` (a server before meta.k8s.io PartialObjectMetadata) the
  `as=PartialObjectMetadata*` ranges are skipped like any unknown transform: a header with a
  plain `application/json` fallback gets the full object, one without gets 406.
- The transform is chosen before it is known whether the answer is a list, as the real server
  does: `as=PartialObjectMetadata` on a list, or `as=PartialObjectMetadataList` on a single
  object, is a 406 even when a plain fallback follows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ApiError

META_GROUP = "meta.k8s.io"
META_VERSIONS = ("v1", "v1beta1")
PARTIAL = "PartialObjectMetadata"
PARTIAL_LIST = "PartialObjectMetadataList"
TABLE = "Table"
_TRANSFORMS = (TABLE, PARTIAL, PARTIAL_LIST)


@dataclass(frozen=True)
class Target:
    """What to answer with: `kind` "" (the object itself), "Table", "PartialObjectMetadata" or
    "PartialObjectMetadataList"; `api_version` of the transform (meta.k8s.io/v1 or v1beta1)."""

    kind: str = ""
    api_version: str = ""

    @property
    def partial(self) -> bool:
        return self.kind in (PARTIAL, PARTIAL_LIST)


PLAIN = Target()


def _ranges(accept: str) -> list[tuple[str, dict[str, str]]]:
    """(media type, parameters) of each range, ordered by `q` (stable), `q=0` dropped."""
    out: list[tuple[float, int, str, dict[str, str]]] = []
    for i, part in enumerate(accept.split(",")):
        fields = [f.strip() for f in part.split(";")]
        mtype = fields[0].lower()
        if not mtype:
            continue
        params: dict[str, str] = {}
        q = 1.0
        for f in fields[1:]:
            k, _, v = f.partition("=")
            k, v = k.strip().lower(), v.strip().strip('"')
            if k == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
            elif k:
                params[k] = v
        if q > 0:
            out.append((-q, i, mtype, params))
    out.sort(key=lambda t: (t[0], t[1]))
    return [(m, p) for _, _, m, p in out]


def negotiate(accept: str, *, partial_metadata: bool = True) -> Target:
    """The representation `accept` asks for (see the module docstring); raises 406."""
    if not accept.strip():
        return PLAIN
    for mtype, params in _ranges(accept):
        if mtype not in ("application/json", "application/*", "*/*"):
            continue
        if not any(k in params for k in ("as", "g", "v")):
            return PLAIN
        kind, group, version = params.get("as", ""), params.get("g", ""), params.get("v", "")
        if group != META_GROUP or version not in META_VERSIONS or kind not in _TRANSFORMS:
            continue
        if kind != TABLE and not partial_metadata:
            continue
        if kind == TABLE and mtype != "application/json":
            continue
        return Target(kind, f"{META_GROUP}/{version}")
    raise ApiError(
        406,
        "only the following media types are accepted: application/json",
        "NotAcceptable",
    )


def _go_type(kind: str, group: str, custom: bool, is_list: bool) -> str:
    """How the real server names the Go type of an object in a NotAcceptable message."""
    if custom:
        return "*unstructured.UnstructuredList" if is_list else "*unstructured.Unstructured"
    package = group.split(".")[0] if group else "core"
    return f"*{package}.{kind}{'List' if is_list else ''}"


def check(target: Target, *, is_list: bool, kind: str, group: str, custom: bool) -> None:
    """406 when the transform does not fit the answer (a list as PartialObjectMetadata, a
    single object as PartialObjectMetadataList), with the real server's message."""
    if target.kind == PARTIAL and is_list:
        what = _go_type(kind, group, custom, True)
        raise ApiError(
            406,
            f"you requested PartialObjectMetadata, but the requested object is a list ({what})",
            "NotAcceptable",
        )
    if target.kind == PARTIAL_LIST and not is_list:
        what = _go_type(kind, group, custom, False)
        raise ApiError(
            406,
            f"you requested PartialObjectMetadataList, but the requested object is not a list "
            f"({what})",
            "NotAcceptable",
        )


def partial(obj: dict, api_version: str) -> dict:
    """`obj` as a PartialObjectMetadata: its metadata only."""
    return {"kind": PARTIAL, "apiVersion": api_version, "metadata": obj["metadata"]}


def partial_list(items: Sequence[dict], meta: dict, api_version: str) -> dict:
    """A PartialObjectMetadataList of `items` with the list metadata `meta`."""
    return {
        "kind": PARTIAL_LIST,
        "apiVersion": api_version,
        "metadata": meta,
        "items": [partial(o, api_version) for o in items],
    }
