"""Every config default has one source: the Config dataclasses (`Config.from_dict` reads its
defaults from them). The JSON Schema's ``default``s, the table in docs/config.md and the Helm
chart's values must state the same values; these tests fail when one of them drifts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from operatord.config import Config, config_schema

ROOT = Path(__file__).resolve().parent.parent

# Values the chart sets on purpose to something else than the config's default.
CHART_OVERRIDES = {
    "workers": "a pod gets a fixed number of workers, not the node's CPU count",
    "logging.format": "a pod logs JSON lines for the cluster's log collector",
}


def _defaults() -> dict[str, Any]:
    """``{dotted key: default}`` of every scalar config key, from the dataclasses alone."""
    cfg = Config.from_dict(
        {"name": "d", "handler": "m:f", "parent": {"apiVersion": "v1", "kind": "ConfigMap"}}
    )
    data = cfg.to_dict()
    data["workers"] = None  # the dataclass default is "the CPU count", written null
    one = Config.from_dict(
        {
            "name": "d",
            "handler": "m:f",
            "parent": {"apiVersion": "v1", "kind": "ConfigMap"},
            "children": [{"apiVersion": "v1", "kind": "Secret"}],
            "related": [{"apiVersion": "v1", "kind": "Namespace"}],
        }
    ).to_dict()
    out: dict[str, Any] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else k)
        elif not isinstance(node, list):
            out[path] = node

    walk(data, "")
    for section in ("children", "related"):
        for k, v in one[section][0].items():
            if k not in ("apiVersion", "kind"):
                out[f"{section}[].{k}"] = v
    for required in ("name", "handler", "parent.apiVersion", "parent.kind"):
        del out[required]
    many = Config.from_dict(
        {
            "name": "d",
            "controllers": [
                {
                    "name": "c",
                    "handler": "m:f",
                    "parent": {"apiVersion": "v1", "kind": "ConfigMap"},
                    "children": [{"apiVersion": "v1", "kind": "Secret"}],
                    "related": [{"apiVersion": "v1", "kind": "Namespace"}],
                }
            ],
        }
    )
    ctl = many.to_dict()["controllers"][0]
    # A controller's other keys default to the top-level keys of the same names.
    out["controllers[].inFlightShare"] = ctl["inFlightShare"]
    for section in ("children", "related"):
        for k, v in ctl[section][0].items():
            if k not in ("apiVersion", "kind"):
                out[f"controllers[].{section}[].{k}"] = v
    return out


def _schema_defaults() -> dict[str, Any]:
    out: dict[str, Any] = {}

    def walk(node: dict, path: str) -> None:
        for k, v in node.get("properties", {}).items():
            key = f"{path}.{k}" if path else k
            if "default" in v and not isinstance(v["default"], (dict, list)):
                out[key] = v["default"]
            walk(v, key)
            if isinstance(v.get("items"), dict):
                walk(v["items"], f"{key}[]")

    walk(config_schema(), "")
    return out


def _docs_defaults() -> dict[str, str]:
    """``{key: default cell}`` of the keys table in docs/config.md (scalar rows only)."""
    out = {}
    for line in (ROOT / "docs" / "config.md").read_text().splitlines():
        m = re.match(r"^\| `([^`]+)` \| [^|]+ \| ([^|]+) \|", line)
        if m and m[2].strip() != "required":
            out[m[1]] = m[2].strip()
    return out


def _same(documented: str, value: Any) -> bool:
    cell = documented.strip("`")
    if value is None:
        return cell.startswith("null")
    if isinstance(value, bool):
        return cell == json.dumps(value)
    if isinstance(value, (int, float)):
        return float(cell) == float(value)
    return cell == json.dumps(value) or cell == value


def test_the_schema_states_every_default_of_the_dataclasses():
    defaults, schema = _defaults(), _schema_defaults()
    assert set(schema) == set(defaults), "keys with a default differ between schema and code"
    for key, value in defaults.items():
        assert schema[key] == value, f"{key}: schema says {schema[key]!r}, code {value!r}"


def test_docs_config_md_states_every_default_of_the_dataclasses():
    defaults, docs = _defaults(), _docs_defaults()
    for key, value in defaults.items():
        assert key in docs, f"docs/config.md has no row for {key}"
        assert _same(docs[key], value), f"{key}: docs say {docs[key]}, code {value!r}"


@pytest.mark.parametrize("key", sorted(_defaults()))
def test_the_chart_values_agree_with_the_defaults(key):
    values = yaml.safe_load((ROOT / "helm" / "operatord" / "values.yaml").read_text())["config"]
    node: Any = values
    for part in key.replace("[]", "").split("."):
        if not isinstance(node, dict) or part not in node:
            pytest.skip(f"the chart does not set {key}")
        node = node[part]
    if key in CHART_OVERRIDES:
        pytest.skip(CHART_OVERRIDES[key])
    assert node == _defaults()[key], f"{key}: chart says {node!r}, code {_defaults()[key]!r}"
