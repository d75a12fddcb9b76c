"""The YAML config: defaults, round trip, every validation error, the schema, check-config."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from operatord.config import (
    BackoffConfig,
    Config,
    ConfigError,
    ConfigFileNotFoundError,
    LeaderElectionConfig,
    ResourceType,
    check_config_command,
    config_schema,
    load_config,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "example.yaml"

MINIMAL = {
    "name": "widget-operator",
    "handler": "examples.widgets:Widgets",
    "parent": {"apiVersion": "example.com/v1", "kind": "Widget"},
}


def with_(**changes) -> dict:
    d = copy.deepcopy(MINIMAL)
    d.update(changes)
    return d


def errors_of(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        Config.from_dict(data)
    assert str(info.value) == info.value.errors[0]
    return info.value.errors


# -- defaults, derived names, round trip ---------------------------------------------------------


def test_minimal_config_gets_every_default():
    cfg = Config.from_dict(MINIMAL)
    assert cfg.python_path == ()
    assert cfg.children == ()
    assert cfg.namespace == ""
    assert cfg.workers == (os.cpu_count() or 1)
    assert cfg.resync_seconds == 600.0
    assert cfg.handler_timeout_seconds == 30.0
    assert cfg.backoff == BackoffConfig(0.5, 300.0, 2.0, 0.5)
    assert cfg.leader_election == LeaderElectionConfig(True, "", "", 15.0, 10.0, 2.0)
    assert (cfg.metrics_port, cfg.health_port) == (8080, 8081)
    assert (cfg.logging_format, cfg.logging_level) == ("auto", "info")


def test_workers_null_means_cpu_count():
    assert Config.from_dict(with_(workers=None)).workers == (os.cpu_count() or 1)
    assert Config.from_dict(with_(workers=3)).workers == 3


def test_derived_names():
    cfg = Config.from_dict(MINIMAL)
    assert cfg.finalizer == "operatord.io/widget-operator"
    assert cfg.field_manager == "operatord-widget-operator"
    assert cfg.lease_name == "widget-operator-leader"
    assert cfg.parent_uid_label == "operatord.io/parent-uid"
    assert cfg.managed_by_label == "app.kubernetes.io/managed-by"
    custom = Config.from_dict(with_(leaderElection={"leaseName": "my.lease"}))
    assert custom.lease_name == "my.lease"


def test_resource_type_group_and_version():
    assert (
        ResourceType("example.com/v1", "Widget").group,
        ResourceType("example.com/v1", "W").version,
    ) == (
        "example.com",
        "v1",
    )
    core = ResourceType("v1", "ConfigMap")
    assert (core.group, core.version, core.key, str(core)) == (
        "",
        "v1",
        ("v1", "ConfigMap"),
        "v1/ConfigMap",
    )
    assert core.update_strategy == "Replace"


def test_child_lookup_helpers():
    cfg = Config.from_dict(
        with_(
            children=[
                {"apiVersion": "v1", "kind": "ConfigMap"},
                {"apiVersion": "v1", "kind": "Secret", "updateStrategy": "Apply"},
            ]
        )
    )
    assert cfg.child_keys == {("v1", "ConfigMap"), ("v1", "Secret")}
    assert cfg.child_type("v1", "Secret").update_strategy == "Apply"
    assert cfg.child_type("v1", "Pod") is None


def test_round_trip_is_exact(tmp_path):
    cfg = load_config(EXAMPLE)
    d = cfg.to_dict()
    assert Config.from_dict(d) == cfg
    assert Config.from_dict(d).to_dict() == d
    # to_dict is plain data that survives YAML and JSON (what crosses to worker processes)
    assert Config.from_dict(yaml.safe_load(yaml.safe_dump(d))) == cfg
    assert Config.from_dict(json.loads(json.dumps(d))) == cfg
    # a full dict with every key goes through unchanged, whatever the cwd/base_dir
    assert Config.from_dict(d, base_dir=tmp_path).to_dict() == d


def test_to_dict_fills_defaults_with_schema_defaults():
    d = Config.from_dict(MINIMAL).to_dict()
    props = config_schema()["properties"]
    for key, sub in props.items():
        if key in ("name", "handler", "parent", "workers", "controllers"):
            continue
        if sub.get("type") == "object":
            for inner, inner_schema in sub["properties"].items():
                assert d[key][inner] == inner_schema["default"], f"{key}.{inner}"
        else:
            assert d[key] == sub["default"], key
    assert set(d) == set(props) - {"controllers"}  # the single-controller form


def test_seconds_are_floats_and_ports_ints():
    cfg = Config.from_dict(with_(resyncSeconds=10, backoff={"initialSeconds": 1, "maxSeconds": 5}))
    assert isinstance(cfg.resync_seconds, float) and cfg.resync_seconds == 10.0
    assert isinstance(cfg.backoff.initial_seconds, float)
    assert isinstance(cfg.backoff.max_seconds, float)
    assert isinstance(cfg.leader_election.enabled, bool)
    assert isinstance(cfg.metrics_port, int)


def test_relative_python_path_resolves_against_base_dir(tmp_path):
    cfg = Config.from_dict(
        with_(pythonPath=["..", "lib", "/abs/dir"]), base_dir=tmp_path / "config"
    )
    assert cfg.python_path == (str(tmp_path), str(tmp_path / "config" / "lib"), "/abs/dir")


def test_load_config_resolves_python_path_against_the_file_not_the_cwd(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "op.yaml"
    path.write_text(yaml.safe_dump(with_(pythonPath=["..", "./src"])))
    monkeypatch.chdir("/")
    cfg = load_config(str(path))
    assert cfg.python_path == (str(tmp_path), str(tmp_path / "conf" / "src"))


def test_direct_construction_validates_and_normalizes():
    cfg = Config(
        name="op",
        handler="m:H",
        python_path=["rel"],
        parent=ResourceType("example.com/v1", "Widget"),
        children=[ResourceType("v1", "ConfigMap")],
        resync_seconds=5,
    )
    assert cfg.python_path == (os.path.abspath("rel"),)
    assert cfg.children == (ResourceType("v1", "ConfigMap"),)
    assert cfg.resync_seconds == 5.0 and isinstance(cfg.resync_seconds, float)
    assert hash(cfg) == hash(Config.from_dict(cfg.to_dict()))
    with pytest.raises(ConfigError, match=r"^workers: must be an integer >= 1, got 0$"):
        dataclasses.replace(cfg, workers=0)
    with pytest.raises(ConfigError, match=r"^children\[0\].updateStrategy: must be one of"):
        dataclasses.replace(cfg, children=(ResourceType("v1", "ConfigMap", "Patch"),))
    with pytest.raises(ConfigError, match=r"^parent: must be a ResourceType"):
        dataclasses.replace(cfg, parent=("v1", "ConfigMap"))
    with pytest.raises(ConfigError, match=r"^pythonPath: must be a list"):
        dataclasses.replace(cfg, python_path="src")


def test_example_config_loads():
    cfg = load_config(EXAMPLE)
    assert cfg.name == "widget-operator"
    assert cfg.handler == "examples.widgets:Widgets"
    assert cfg.python_path == (str(REPO),)
    assert cfg.parent == ResourceType("example.com/v1", "Widget")
    assert cfg.children == (ResourceType("v1", "ConfigMap", "Replace"),)


def test_example_config_shows_every_key():
    shown = yaml.safe_load(EXAMPLE.read_text())
    props = config_schema()["properties"]
    assert set(shown) == set(props) - {"controllers"}  # config/example-multi.yaml shows it
    for key, sub in props.items():
        if sub.get("type") == "object" and key != "parent":
            assert set(shown[key]) == set(sub["properties"]), key
    assert set(shown["children"][0]) == {"apiVersion", "kind", "updateStrategy"}


# -- validation errors ---------------------------------------------------------------------------

ALLOWED_TOP = (
    "allowed: name, handler, pythonPath, parent, children, related, controllers, namespace, "
    "namespaces, namespaceSelector, workers, "
    "inFlightPerWorker, inFlightAdaptive, workerMemoryLimitMB, "
    "resyncSeconds, "
    "handlerTimeoutSeconds, backoff, leaderElection, conditions, skipUnchanged, handlerVersion, sharding, metrics, health, logging"
)
DNS_LABEL = (
    "must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a "
    "letter or digit, at most 63 characters"
)
CM = {"apiVersion": "v1", "kind": "ConfigMap"}


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"spec": {}}, f"spec: unknown key ({ALLOWED_TOP})"),
        ({"workrs": 2}, f"workrs: unknown key, did you mean 'workers'? ({ALLOWED_TOP})"),
        (
            {"backoff": {"max": 3}},
            "backoff.max: unknown key (allowed: initialSeconds, maxSeconds, multiplier, jitter)",
        ),
        (
            {"children": [{**CM, "strategy": "Apply"}]},
            "children[0].strategy: unknown key, did you mean 'updateStrategy'? "
            "(allowed: apiVersion, kind, updateStrategy)",
        ),
        (
            {"parent": {**CM, "updateStrategy": "Apply"}},
            "parent.updateStrategy: unknown key (allowed: apiVersion, kind)",
        ),
        ({"workers": "two"}, "workers: must be an integer >= 1, got 'two'"),
        ({"workers": 0}, "workers: must be an integer >= 1, got 0"),
        ({"workers": 1.5}, "workers: must be an integer >= 1, got 1.5"),
        ({"workers": True}, "workers: must be an integer >= 1, got true"),
        (
            {"children": [CM, {"apiVersion": "v1", "kind": "Secret", "updateStrategy": "Patch"}]},
            "children[1].updateStrategy: must be one of Replace, Recreate, OnDelete, Apply, got 'Patch'",
        ),
        ({"children": CM}, "children: must be a list, got a mapping"),
        ({"children": [CM, "v1/Secret"]}, "children[1]: must be a mapping, got 'v1/Secret'"),
        ({"children": [{"kind": "ConfigMap"}]}, "children[0].apiVersion: required key missing"),
        (
            {"backoff": {"initialSeconds": 1, "maxSeconds": 0.5}},
            "backoff.maxSeconds: must be >= backoff.initialSeconds (1), got 0.5",
        ),
        (
            {"backoff": {"initialSeconds": 500}},
            "backoff.maxSeconds: must be >= backoff.initialSeconds (500), got 300 (the default)",
        ),
        ({"backoff": {"initialSeconds": 0}}, "backoff.initialSeconds: must be a number > 0, got 0"),
        ({"backoff": {"jitter": 1.5}}, "backoff.jitter: must be a number from 0 to 1, got 1.5"),
        ({"backoff": {"jitter": -0.1}}, "backoff.jitter: must be a number from 0 to 1, got -0.1"),
        ({"backoff": {"multiplier": 0.5}}, "backoff.multiplier: must be a number >= 1, got 0.5"),
        ({"backoff": []}, "backoff: must be a mapping, got a list"),
        (
            {"leaderElection": {"leaseDurationSeconds": 10}},
            "leaderElection.renewDeadlineSeconds: must be < leaderElection.leaseDurationSeconds "
            "(10), got 10 (the default)",
        ),
        (
            {"leaderElection": {"retryPeriodSeconds": 9}},
            "leaderElection.retryPeriodSeconds: must be < leaderElection.renewDeadlineSeconds / 1.2 "
            "(8.33333), got 9 (renewDeadline must exceed 1.2 * retryPeriod)",
        ),
        (
            {"leaderElection": {"enabled": False, "renewDeadlineSeconds": 20}},
            "leaderElection.renewDeadlineSeconds: must be < leaderElection.leaseDurationSeconds "
            "(15), got 20",
        ),
        (
            {"leaderElection": {"retryPeriodSeconds": 0}},
            "leaderElection.retryPeriodSeconds: must be a number > 0, got 0",
        ),
        (
            {"leaderElection": {"enabled": "yes"}},
            "leaderElection.enabled: must be true or false, got 'yes'",
        ),
        (
            {"leaderElection": {"leaseName": "Leader_1"}},
            'leaderElection.leaseName: must be "" or a DNS-1123 subdomain (lowercase letters, '
            "digits, '-' and '.'), got 'Leader_1'",
        ),
        (
            {"leaderElection": {"leaseNamespace": "kube.system"}},
            'leaderElection.leaseNamespace: must be "" or a namespace name (DNS-1123 label), '
            "got 'kube.system'",
        ),
        ({"metrics": {"port": 8081}}, "health.port: must differ from metrics.port (8081)"),
        ({"health": {"port": 8080}}, "health.port: must differ from metrics.port (8080)"),
        (
            {"metrics": {"port": 70000}},
            "metrics.port: must be an integer from 0 to 65535, got 70000",
        ),
        ({"health": {"port": -1}}, "health.port: must be an integer from 0 to 65535, got -1"),
        (
            {"health": {"port": "8081"}},
            "health.port: must be an integer from 0 to 65535, got '8081'",
        ),
        ({"name": "Widget_Op"}, f"name: {DNS_LABEL}, got 'Widget_Op'"),
        ({"name": "-op"}, f"name: {DNS_LABEL}, got '-op'"),
        ({"name": "a" * 64}, f"name: {DNS_LABEL}, got '{'a' * 56}..."),
        ({"name": ""}, f"name: {DNS_LABEL}, got ''"),
        ({"name": 7}, "name: must be a non-empty string, got 7"),
        (
            {"handler": "examples.widgets.Widgets"},
            "handler: must be 'module:attribute' like 'examples.widgets:Widgets', got "
            "'examples.widgets.Widgets'",
        ),
        ({"pythonPath": "src"}, "pythonPath: must be a list, got 'src'"),
        ({"pythonPath": ["ok", 3]}, "pythonPath[1]: must be a non-empty string, got 3"),
        (
            {"parent": {"apiVersion": "example.com", "kind": "Widget"}},
            "parent.apiVersion: must be 'group/version' (e.g. 'example.com/v1') or 'v1', got "
            "'example.com'",
        ),
        (
            {"parent": {"apiVersion": "Example.com/V1", "kind": "Widget"}},
            "parent.apiVersion: must be 'group/version' (e.g. 'example.com/v1') or 'v1', got "
            "'Example.com/V1'",
        ),
        (
            {"parent": {"apiVersion": "v1", "kind": "configmap"}},
            "parent.kind: must be a Kind in CamelCase like 'ConfigMap', got 'configmap'",
        ),
        ({"parent": None}, "parent: must be a mapping, got null"),
        (
            {"children": [{"apiVersion": "example.com/v1", "kind": "Widget"}]},
            "children[0]: example.com/v1/Widget is the parent type; a type cannot be both parent "
            "and child",
        ),
        (
            {"children": [CM, {**CM, "updateStrategy": "Apply"}]},
            "children[1]: v1/ConfigMap is already listed as children[0]",
        ),
        (
            {"logging": {"level": "INFO"}},
            "logging.level: must be one of debug, info, warning, error, got 'INFO'",
        ),
        (
            {"logging": {"format": "text"}},
            "logging.format: must be one of auto, console, json, got 'text'",
        ),
        ({"namespace": None}, "namespace: must be a string, got null"),
        (
            {"namespace": "Default"},
            "namespace: must be \"\" (all namespaces) or a namespace name (DNS-1123 label), got 'Default'",
        ),
        ({"resyncSeconds": -1}, "resyncSeconds: must be a number >= 0, got -1"),
        ({"resyncSeconds": "10m"}, "resyncSeconds: must be a number >= 0, got '10m'"),
        ({"handlerTimeoutSeconds": 0}, "handlerTimeoutSeconds: must be a number > 0, got 0"),
    ],
)
def test_invalid_config(changes, expected):
    assert errors_of(with_(**changes))[0] == expected


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"resyncSeconds": math.nan}, "resyncSeconds: must be a finite number, got nan"),
        (
            {"backoff": {"maxSeconds": math.inf}},
            "backoff.maxSeconds: must be a finite number, got inf",
        ),
        (
            {"leaderElection": {"retryPeriodSeconds": math.nan}},
            "leaderElection.retryPeriodSeconds: must be a finite number, got nan",
        ),
    ],
)
def test_non_finite_numbers_are_rejected(changes, expected):
    assert errors_of(with_(**changes)) == [expected]


def test_non_string_keys_are_unknown_keys(tmp_path):
    path = write(
        tmp_path, "name: op\nhandler: m:H\nparent: {apiVersion: v1, kind: Pod}\nbackoff: {2: 3}\n"
    )
    assert load_error(path) == (
        "backoff.2: unknown key (allowed: initialSeconds, maxSeconds, multiplier, jitter)"
    )


def test_allowed_edge_values():
    Config.from_dict(with_(resyncSeconds=0))  # periodic resync off
    Config.from_dict(with_(metrics={"port": 0}, health={"port": 0}))  # both disabled
    Config.from_dict(with_(metrics={"port": 0}, health={"port": 8080}))
    Config.from_dict(
        with_(backoff={"jitter": 0, "multiplier": 1, "initialSeconds": 3, "maxSeconds": 3})
    )
    Config.from_dict(with_(name="a" * 63, namespace="team-a"))
    Config.from_dict(with_(parent={"apiVersion": "apps/v1", "kind": "Deployment"}))
    Config.from_dict(with_(parent={"apiVersion": "v1", "kind": "Namespace"}))
    Config.from_dict(
        with_(
            leaderElection={
                "leaseDurationSeconds": 4,
                "renewDeadlineSeconds": 3,
                "retryPeriodSeconds": 2.4,
            }
        )
    )


def test_missing_required_keys_are_each_reported_once():
    assert errors_of({"handler": "m:H"}) == [
        "name: required key missing",
        "parent: required key missing",
    ]


def test_errors_are_in_document_order():
    data = {"zzz": 1, **with_(workers="x"), "backoff": {"jitter": 2}}
    assert errors_of(data) == [
        f"zzz: unknown key ({ALLOWED_TOP})",
        "workers: must be an integer >= 1, got 'x'",
        "backoff.jitter: must be a number from 0 to 1, got 2",
    ]


def test_semantic_checks_run_only_on_schema_valid_input():
    # a schema error hides cross-field errors (which would be about garbage values)
    data = with_(workers="x", backoff={"initialSeconds": 9, "maxSeconds": 1})
    assert errors_of(data) == ["workers: must be an integer >= 1, got 'x'"]


@pytest.mark.parametrize("data", [[1, 2], "name: x", 3, None])
def test_from_dict_rejects_non_mappings(data):
    assert errors_of(data)[0].startswith("(root): the config must be a mapping of keys, got ")


# -- files ---------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "op.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def load_error(path: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_yaml_syntax_error_has_line_and_column(tmp_path):
    path = write(
        tmp_path, "name: op\nhandler: m:H\nparent: {apiVersion: v1, kind: Pod\nworkers: 2\n"
    )
    message = load_error(path)
    assert message.startswith(f"{path}: line 4, column 8: invalid YAML: ")
    path = write(tmp_path, "name: op\n  handler: x\n", "indent.yaml")
    assert load_error(path) == (
        f"{path}: line 2, column 10: invalid YAML: mapping values are not allowed here"
    )


def test_duplicate_key_is_an_error(tmp_path):
    path = write(tmp_path, "name: op\nworkers: 1\nhandler: m:H\nworkers: 2\n")
    assert load_error(path) == (
        f"{path}: line 4, column 1: invalid YAML: duplicate key 'workers' (first at line 2)"
    )


def test_merge_keys_are_not_duplicates(tmp_path):
    # a YAML merge that a later key overrides is legal YAML, not a duplicate key
    text = (
        "name: op\nhandler: m:H\nparent: {apiVersion: v1, kind: Pod}\n"
        "backoff:\n  <<: {initialSeconds: 1, maxSeconds: 10}\n  maxSeconds: 20\n"
    )
    cfg = load_config(write(tmp_path, text))
    assert (cfg.backoff.initial_seconds, cfg.backoff.max_seconds) == (1.0, 20.0)


def test_empty_file_and_comment_only_file(tmp_path):
    for text in ("", "# nothing here\n"):
        path = write(tmp_path, text)
        assert load_error(path) == (
            f"{path}: the config file is empty; it needs at least name, handler and parent"
        )


@pytest.mark.parametrize("text, shown", [("- a\n- b\n", "a list"), ("just text\n", "'just text'")])
def test_file_that_is_not_a_mapping(tmp_path, text, shown):
    path = write(tmp_path, text)
    assert load_error(path) == f"{path}: the config must be a mapping of keys, got {shown}"


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ConfigFileNotFoundError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    assert "cannot read config file" in load_error(str(tmp_path))  # a directory
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    assert "cannot read config file" in load_error(str(bad))


def test_yaml_booleans_are_type_errors_not_strings(tmp_path):
    path = write(
        tmp_path, "name: op\nhandler: m:H\nparent: {apiVersion: v1, kind: Pod}\nnamespace: no\n"
    )
    assert load_error(path) == "namespace: must be a string, got false"


# -- schema --------------------------------------------------------------------------------------


def test_schema_copy_in_config_dir_is_identical():
    packaged = REPO / "operatord" / "schema" / "config.schema.json"
    assert (REPO / "config" / "config.schema.json").read_bytes() == packaged.read_bytes()


def test_schema_is_valid_and_accepts_the_example():
    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load(EXAMPLE.read_text()), schema)


def _objects(schema: dict, path: str = "(root)"):
    yield path, schema
    for key, sub in schema.get("properties", {}).items():
        yield from _objects(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        yield from _objects(schema["items"], f"{path}[]")


def test_schema_closes_every_object_and_documents_every_key():
    # controllers: the alternative to the required handler and parent
    required_anywhere = {"name", "handler", "parent", "apiVersion", "kind", "controllers"}
    for path, sub in _objects(config_schema()):
        assert sub.get("description"), f"{path} has no description"
        if sub.get("type") == "object":
            assert sub.get("additionalProperties") is False, path
        key = path.rsplit(".", 1)[-1]
        # A controller's pythonPath, resyncSeconds, handlerTimeoutSeconds and backoff default
        # to the top-level keys of the same names (their descriptions say so).
        inherited = path.startswith("(root).controllers[].") and "top-level" in (
            sub.get("description", "") + _parent_description(path)
        )
        if (
            path.count(".")
            and not path.endswith("[]")
            and key not in required_anywhere
            and not inherited
        ):
            assert "default" in sub, f"{path} has no default"


def _parent_description(path: str) -> str:
    """The description of the controller key ``path`` lies under (``backoff`` for
    ``(root).controllers[].backoff.jitter``)."""
    parts = path.split(".")
    if len(parts) < 4:
        return ""
    items = config_schema()["properties"]["controllers"]["items"]["properties"]
    return items.get(parts[2], {}).get("description", "")


# -- check-config --------------------------------------------------------------------------------


def test_check_config_command_ok(capsys):
    assert check_config_command(str(EXAMPLE)) == 0
    out, err = capsys.readouterr()
    assert out == (
        "ok: widget-operator handler=examples.widgets:Widgets parent=example.com/v1/Widget "
        "children=v1/ConfigMap(Replace)\n"
    )
    assert err == ""


def test_check_config_command_reports_every_error(tmp_path, capsys):
    path = write(
        tmp_path,
        "name: op\nhandler: m:H\nparent: {apiVersion: v1, kind: Pod}\nworkers: x\nspec: 1\n",
    )
    assert check_config_command(path) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "error: workers: must be an integer >= 1, got 'x'",
        f"error: spec: unknown key ({ALLOWED_TOP})",
    ]


def test_check_config_command_reports_handler_import_failure(tmp_path, capsys):
    (tmp_path / "myop.py").write_text("raise RuntimeError('boom')\n")
    path = write(
        tmp_path,
        "name: op\nhandler: myop:Handler\nparent: {apiVersion: v1, kind: Pod}\npythonPath: ['.']\n",
    )
    assert check_config_command(path) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: handler: cannot import handler 'myop:Handler'")
    assert "RuntimeError: boom" in err
    sys.modules.pop("myop", None)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "operatord", "check-config", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_check_config_exit_codes(tmp_path):
    # 0: the example, from an unrelated cwd (pythonPath resolves against the config file)
    ok = run_cli("--config", str(EXAMPLE), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: widget-operator handler=examples.widgets:Widgets")

    # 1: invalid config
    bad = write(
        tmp_path, "name: op\nhandler: m:H\nparent: {apiVersion: v1, kind: Pod}\nworkers: two\n"
    )
    res = run_cli("--config", bad, cwd=tmp_path)
    assert (res.returncode, res.stdout) == (1, "")
    assert res.stderr == "error: workers: must be an integer >= 1, got 'two'\n"

    # 1: valid config whose handler module does not exist
    missing = write(
        tmp_path,
        "name: op\nhandler: nowhere_xyz:H\nparent: {apiVersion: v1, kind: Pod}\n",
        "m.yaml",
    )
    res = run_cli("--config", missing, cwd=tmp_path)
    assert res.returncode == 1
    assert "cannot import handler 'nowhere_xyz:H': module 'nowhere_xyz' not found" in res.stderr

    # 2: no such file
    res = run_cli("--config", str(tmp_path / "absent.yaml"), cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr == f"error: {tmp_path / 'absent.yaml'}: config file not found\n"


def test_cli_imports_handler_from_python_path_relative_to_config(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "relop.py").write_text("def sync(request):\n    return None\n")
    (tmp_path / "conf").mkdir()
    cfg = write(
        tmp_path / "conf",
        "name: rel\nhandler: relop:sync\nparent: {apiVersion: v1, kind: Pod}\npythonPath: [../src]\n",
    )
    res = run_cli("--config", cfg, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "ok: rel handler=relop:sync parent=v1/Pod children=none\n"


def test_the_multi_controller_example_checks_and_names_each_controller(capsys):
    assert check_config_command(str(EXAMPLE.parent / "example-multi.yaml")) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("ok: examples/widgets handler=examples.widgets:Widgets")
    assert out[1].startswith("ok: examples/websites handler=examples.websites:Websites")
    assert out[2] == "ok: examples namespaces=default,team-*,!team-archive"
    cfg = load_config(EXAMPLE.parent / "example-multi.yaml")
    websites = cfg.controller("websites")
    assert websites.finalizer == "operatord.io/examples.websites"
    assert websites.backoff.initial_seconds == 1.0 and websites.backoff.max_seconds == 300.0
    assert websites.in_flight_share == 0.5 and cfg.controller("widgets").in_flight_share == 1.0
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_a_single_controller_file_keeps_its_names():
    cfg = Config.from_dict(MINIMAL)
    (only,) = cfg.controllers
    assert (only.name, only.finalizer, only.field_manager, only.managed_by) == (
        cfg.name,
        f"operatord.io/{cfg.name}",
        f"operatord-{cfg.name}",
        cfg.name,
    )
    assert "controllers" not in cfg.to_dict()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"controllers": [{"name": "a", "handler": "m:f", "parent": CM}] * 2},
            [
                "controllers[1].name: 'a' is already the name of controllers[0]",
                "controllers[1].parent: v1/ConfigMap is already the parent of controllers[0] "
                "(one controller per parent type)",
            ],
        ),
        (
            {"controllers": [{"name": "A", "handler": "m:f", "parent": CM}]},
            [f"controllers[0].name: {DNS_LABEL}, got 'A'"],
        ),
        (
            {"namespace": "x", "namespaces": ["y"]},
            ["namespaces: give either namespace ('x') or namespaces, not both"],
        ),
        (
            {"namespaces": ["Bad_NS"]},
            [
                "namespaces[0]: must be a namespace name or glob ('*', '?'), optionally starting "
                "with '!', got 'Bad_NS'"
            ],
        ),
    ],
)
def test_invalid_controllers_and_namespaces(changes, expected):
    data = {"name": "op", **changes}
    if "controllers" not in changes:
        data.update(handler="m:f", parent=CM)
    with pytest.raises(ConfigError) as exc:
        Config.from_dict(data)
    assert exc.value.errors == expected


def test_a_controller_next_to_top_level_handler_keys_is_refused():
    with pytest.raises(ConfigError) as exc:
        Config.from_dict(
            {
                "name": "op",
                "handler": "m:f",
                "children": [CM],
                "controllers": [{"name": "a", "handler": "m:f", "parent": CM}],
            }
        )
    assert exc.value.errors == [
        "handler: with a controllers list, each controller names its own handler: move it "
        "into the controllers that need it",
        "children: with a controllers list, each controller names its own children: move it "
        "into the controllers that need it",
    ]
