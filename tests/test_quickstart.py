"""`operatord run handlers.py`: a one-file operator's config from flags or declarations."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from operatord.config import Config, ConfigError
from operatord.quickstart import QuickStart
from operatord.testing import ApiServer, wait_for

ROOT = Path(__file__).resolve().parents[1]

ONE_FILE = """
from operatord import Handler, SyncResponse

PARENT = "example.com/v1/Widget"
CHILDREN = ["v1/ConfigMap"]


class Widgets(Handler):
    def sync(self, request):
        name = request.parent["metadata"]["name"]
        seen = request.children.of_type("v1", "ConfigMap").get(name) is not None
        return SyncResponse(
            status={"ready": seen},
            children=[{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                       "data": {"from": "one file"}}],
        )
"""


@pytest.fixture(autouse=True)
def _own_imports():
    """QuickStart imports the handler file in this process (as `operatord run` does): take
    its module and path entry away again, so other tests' modules of the same name load."""
    modules, path = dict(sys.modules), list(sys.path)
    sys.modules.pop("handlers", None)  # another test's handlers module (tests/e2e) steps aside
    yield
    sys.modules.clear()
    sys.modules.update(modules)
    sys.path[:] = path


def write(tmp_path: Path, body: str, name: str = "handlers.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def operatord(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPERATORD_")}
    return subprocess.run(
        [sys.executable, "-m", "operatord", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**env, "PYTHONPATH": str(ROOT)},
    )


def test_declarations_in_the_file_make_the_same_validated_config(tmp_path):
    path = write(tmp_path, ONE_FILE)
    config = QuickStart(str(path))()
    expected = Config.from_dict(
        {
            "name": "widget-operator",
            "handler": "handlers:Widgets",
            "pythonPath": [str(tmp_path)],
            "parent": {"apiVersion": "example.com/v1", "kind": "Widget"},
            "children": [{"apiVersion": "v1", "kind": "ConfigMap"}],
        }
    )
    assert config == expected


def test_flags_beat_the_declarations_and_a_sync_function_is_found(tmp_path):
    path = write(
        tmp_path,
        """
        from operatord import SyncResponse
        PARENT = "example.com/v1/Widget"
        NAME = "declared"
        def sync(request):
            return SyncResponse(children=[])
        """,
        "fn.py",
    )
    config = QuickStart(str(path), "acme.io/v2/Site", ("v1/Secret", "apps/v1/Deployment"))()
    assert (config.name, config.handler) == ("declared", "fn:sync")
    assert (config.parent.api_version, config.parent.kind) == ("acme.io/v2", "Site")
    assert [(c.api_version, c.kind) for c in config.children] == [
        ("v1", "Secret"),
        ("apps/v1", "Deployment"),
    ]
    assert QuickStart(str(path), name="flagged")().name == "flagged"


@pytest.mark.parametrize(
    ("body", "args", "message"),
    [
        ("def sync(r): pass\n", {}, "no parent type: pass --parent"),
        ("def sync(r): pass\n", {"parent": "Widget"}, "--parent: must be APIVERSION/KIND"),
        ("PARENT = 'v1/ConfigMap'\n", {}, "no handler: define a Handler subclass"),
        (
            "from operatord import Handler\nPARENT = 'v1/ConfigMap'\n"
            "class A(Handler):\n    def sync(self, r): pass\n"
            "class B(Handler):\n    def sync(self, r): pass\n",
            {},
            "several Handler classes (A, B)",
        ),
        ("raise RuntimeError('boom')\n", {}, "RuntimeError: boom"),
    ],
)
def test_what_is_missing_is_named(tmp_path, body, args, message):
    path = write(tmp_path, body, f"m{abs(hash(body)) % 10_000}.py")
    with pytest.raises(ConfigError) as err:
        QuickStart(str(path), **args)()
    assert message in "\n".join(err.value.errors)


def test_check_config_show_prints_yaml_a_config_file_can_hold(tmp_path):
    write(tmp_path, ONE_FILE)
    shown = operatord("check-config", "handlers.py", "--show", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    (tmp_path / "config.yaml").write_text(shown.stdout)
    again = operatord("check-config", "--config", "config.yaml", "--show", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert yaml.safe_load(again.stdout) == yaml.safe_load(shown.stdout)
    assert yaml.safe_load(shown.stdout)["handler"] == "handlers:Widgets"
    assert operatord("check-config", "nope.py", cwd=tmp_path).stderr.startswith("error:")
    both = operatord("run", "handlers.py", "--config", "config.yaml", cwd=tmp_path)
    assert both.returncode == 2 and "not both" in both.stderr
    stray = operatord("check-config", "--config", "config.yaml", "--parent", "v1/X", cwd=tmp_path)
    assert stray.returncode == 2 and "go with a handler file" in stray.stderr


def test_operatord_run_handlers_py_runs_a_one_file_operator(tmp_path):
    write(tmp_path, ONE_FILE)
    with ApiServer() as api:
        api.apply_crd("example.com", "v1", "Widget")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "operatord",
                "run",
                "handlers.py",
                "--kubeconfig",
                api.kubeconfig,
                "--leader-elect=false",
                "--metrics-bind-address",
                "0",
                "--health-probe-bind-address",
                "0",
                "--log-format",
                "json",
            ],  # fmt: skip
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            widgets = client.CustomObjectsApi(api.client())
            widgets.create_namespaced_custom_object(
                "example.com", "v1", "default", "widgets",
                {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "one"}},
            )  # fmt: skip

            def ready():
                w = widgets.get_namespaced_custom_object(
                    "example.com", "v1", "default", "widgets", "one"
                )
                return (w.get("status") or {}).get("ready")

            wait_for(ready, 60, message="the one-file operator made the widget ready")
            finalizers = widgets.get_namespaced_custom_object(
                "example.com", "v1", "default", "widgets", "one"
            )["metadata"]["finalizers"]
            assert finalizers == ["operatord.io/widget-operator"]
        finally:
            proc.terminate()
            out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out


def test_the_readme_one_file_operator_checks_out(tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### One file, one command", 1)[1]
    body = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert body.startswith("# handlers.py\n")
    write(tmp_path, body)
    commands = section.split("```sh\n", 1)[1].split("```", 1)[0]
    assert "operatord check-config handlers.py --show > config.yaml" in commands
    shown = operatord("check-config", "handlers.py", "--show", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    config = yaml.safe_load(shown.stdout)
    assert (config["name"], config["handler"]) == ("widget-operator", "handlers:sync")
    assert config["children"][0]["kind"] == "ConfigMap"


def test_a_module_of_the_same_name_imported_from_elsewhere_is_named_not_used(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    QuickStart(str(write(tmp_path / "a", ONE_FILE)))()
    with pytest.raises(ConfigError, match="imported already"):
        QuickStart(str(write(tmp_path / "b", ONE_FILE)))()
