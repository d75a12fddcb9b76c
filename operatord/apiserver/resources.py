"""Resource types the embedded API server serves, and the discovery documents describing them.

Guarantees: every served type is reachable by (group, version, plural); built-in types are always
present; types defined by a CustomResourceDefinition appear as soon as the CRD is stored and
disappear when it is removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .crdschema import compile_schema

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass
class ResourceType:
    """One served resource type (all of its served versions)."""

    group: str
    versions: list[str]
    plural: str
    singular: str
    kind: str
    namespaced: bool
    status_subresource: bool = False
    custom: bool = False  # defined by a CRD: no strategic-merge patch
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    storage_version: str = ""
    returns_deleted: bool = False  # DELETE answers with the object, not a Status
    verbs: list[str] = field(default_factory=lambda: list(ALL_VERBS))
    virtual: bool = False  # answered on create, never stored (the review APIs)
    # per served version, from the CRD: compiled structural schema (None: no constraints), the
    # raw openAPIV3Schema, additionalPrinterColumns, and the scale subresource
    schemas: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    raw_schemas: dict[str, dict] = field(default_factory=dict, compare=False, repr=False)
    columns: dict[str, list] = field(default_factory=dict, compare=False, repr=False)
    scale: dict[str, dict] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.storage_version:
            self.storage_version = self.versions[0]

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    def api_version(self, version: str | None = None) -> str:
        v = version or self.storage_version
        return f"{self.group}/{v}" if self.group else v

    @property
    def gr(self) -> str:
        """`plural` or `plural.group`, as Kubernetes error messages spell it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


def builtin_types() -> list[ResourceType]:
    """The built-in types every server starts with."""
    R = ResourceType
    return [
        R("", ["v1"], "namespaces", "namespace", "Namespace", False, True, short_names=["ns"]),
        R("", ["v1"], "configmaps", "configmap", "ConfigMap", True, short_names=["cm"]),
        R("", ["v1"], "secrets", "secret", "Secret", True),
        R(
            "",
            ["v1"],
            "services",
            "service",
            "Service",
            True,
            True,
            short_names=["svc"],
            categories=["all"],
            returns_deleted=True,
        ),
        R(
            "",
            ["v1"],
            "serviceaccounts",
            "serviceaccount",
            "ServiceAccount",
            True,
            short_names=["sa"],
            returns_deleted=True,
        ),
        R(
            "",
            ["v1"],
            "pods",
            "pod",
            "Pod",
            True,
            True,
            short_names=["po"],
            categories=["all"],
            returns_deleted=True,
        ),
        R("", ["v1"], "events", "event", "Event", True, short_names=["ev"]),
        R(
            "apps",
            ["v1"],
            "deployments",
            "deployment",
            "Deployment",
            True,
            True,
            short_names=["deploy"],
            categories=["all"],
        ),
        R(
            "apps",
            ["v1"],
            "statefulsets",
            "statefulset",
            "StatefulSet",
            True,
            True,
            short_names=["sts"],
            categories=["all"],
        ),
        R("coordination.k8s.io", ["v1"], "leases", "lease", "Lease", True),
        R("events.k8s.io", ["v1"], "events", "event", "Event", True, short_names=["ev"]),
        R(
            "authorization.k8s.io",
            ["v1"],
            "selfsubjectaccessreviews",
            "",
            "SelfSubjectAccessReview",
            False,
            verbs=["create"],
            virtual=True,
        ),
        R(
            "authorization.k8s.io",
            ["v1"],
            "selfsubjectrulesreviews",
            "",
            "SelfSubjectRulesReview",
            False,
            verbs=["create"],
            virtual=True,
        ),
        R(
            "authentication.k8s.io",
            ["v1"],
            "selfsubjectreviews",
            "",
            "SelfSubjectReview",
            False,
            verbs=["create"],
            virtual=True,
        ),
        R(
            "apiextensions.k8s.io",
            ["v1"],
            "customresourcedefinitions",
            "customresourcedefinition",
            "CustomResourceDefinition",
            False,
            True,
            short_names=["crd", "crds"],
            categories=["api-extensions"],
        ),
    ]


def type_from_crd(crd: dict) -> ResourceType:
    """The ResourceType a stored CustomResourceDefinition serves."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    served = [v for v in spec.get("versions") or [] if v.get("served", True)]
    storage = next((v["name"] for v in spec.get("versions") or [] if v.get("storage")), "")
    versions = [v["name"] for v in served]
    status = any("status" in (v.get("subresources") or {}) for v in served)
    schemas, raw_schemas, columns, scale = {}, {}, {}, {}
    for v in served:
        raw = (v.get("schema") or {}).get("openAPIV3Schema")
        schemas[v["name"]] = compile_schema(raw)
        if isinstance(raw, dict):
            raw_schemas[v["name"]] = raw
        if v.get("additionalPrinterColumns"):
            columns[v["name"]] = list(v["additionalPrinterColumns"])
        sc = (v.get("subresources") or {}).get("scale")
        if isinstance(sc, dict):
            scale[v["name"]] = sc
    return ResourceType(
        group=spec.get("group", ""),
        versions=versions,
        plural=names.get("plural", ""),
        singular=names.get("singular") or names.get("kind", "").lower(),
        kind=names.get("kind", ""),
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        status_subresource=status,
        custom=True,
        short_names=list(names.get("shortNames") or []),
        categories=list(names.get("categories") or []),
        storage_version=storage or (versions[0] if versions else ""),
        schemas=schemas,
        raw_schemas=raw_schemas,
        columns=columns,
        scale=scale,
    )


class Registry:
    """Served types, indexed by (group, version, plural) and by (group, plural)."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], ResourceType] = {}
        for rt in builtin_types():
            self.add(rt)

    def add(self, rt: ResourceType) -> None:
        self._by_key[rt.key] = rt

    def remove(self, key: tuple[str, str]) -> None:
        self._by_key.pop(key, None)

    def by_key(self, key: tuple[str, str]) -> ResourceType | None:
        return self._by_key.get(key)

    def get(self, key: tuple[str, str]) -> ResourceType:
        """A type that is always served (namespaces, CRDs): KeyError when it is not."""
        return self._by_key[key]

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        rt = self._by_key.get((group, plural))
        if rt is not None and version in rt.versions:
            return rt
        return None

    def types(self) -> list[ResourceType]:
        return list(self._by_key.values())

    def group_versions(self) -> dict[str, list[str]]:
        """group -> served versions, preferred first (core group excluded)."""
        out: dict[str, list[str]] = {}
        for rt in self._by_key.values():
            if not rt.group or not rt.versions:
                continue
            vs = out.setdefault(rt.group, [])
            for v in rt.versions:
                if v not in vs:
                    vs.append(v)
        for vs in out.values():
            vs.sort(key=_version_priority)
        return out

    # -- discovery documents ------------------------------------------------------------------

    def resource_list(self, group: str, version: str) -> dict | None:
        resources = []
        gv = f"{group}/{version}" if group else version
        for rt in self._by_key.values():
            if rt.group != group or version not in rt.versions:
                continue
            entry = {
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": list(rt.verbs),
            }
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            if rt.categories:
                entry["categories"] = list(rt.categories)
            resources.append(entry)
            if rt.status_subresource:
                resources.append(
                    {
                        "name": f"{rt.plural}/status",
                        "singularName": "",
                        "namespaced": rt.namespaced,
                        "kind": rt.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
            if rt.scale.get(version) or (
                not rt.custom and rt.key in (("apps", "deployments"), ("apps", "statefulsets"))
            ):
                resources.append(
                    {
                        "name": f"{rt.plural}/scale",
                        "singularName": "",
                        "namespaced": rt.namespaced,
                        "group": "autoscaling",
                        "version": "v1",
                        "kind": "Scale",
                        "verbs": ["get", "patch", "update"],
                    }
                )
        if not resources and not (group == "" and version == "v1"):
            return None
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": resources,
        }

    def api_group(self, group: str) -> dict | None:
        vs = self.group_versions().get(group)
        if not vs:
            return None
        return {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(group, vs)}

    def api_group_list(self) -> dict:
        gvs = self.group_versions()
        groups = [_group_entry(g, gvs[g]) for g in sorted(gvs)]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _group_entry(group: str, versions: list[str]) -> dict[str, Any]:
    """An `APIGroup` without kind and apiVersion, as `APIGroupList` lists it; `versions`
    preferred first and not empty."""
    return {
        "name": group,
        "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
        "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
    }


def _version_priority(v: str) -> tuple:
    """Kubernetes version ordering: GA > beta > alpha, higher numbers first."""
    import re

    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", v)
    if not m:
        return (3, v)
    major = int(m.group(1))
    stage = {"": 0, "beta": 1, "alpha": 2}[m.group(2) or ""]
    minor = int(m.group(3) or 0)
    return (stage, -major, -minor)
