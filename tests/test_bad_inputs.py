"""Hostile config inputs: one clear error line and a documented exit code, never a traceback.

`check-config` and `run` exit 1 for an invalid config or a handler that cannot be imported
(`check-config` exits 2 for a missing file); stderr is exactly one line starting ``error:``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from operatord.config import MAX_YAML_DEPTH, ConfigError, load_config

HEAD = (
    "name: x\nhandler: {handler}\npythonPath: ['.']\nparent: {{apiVersion: v1, kind: ConfigMap}}\n"
)


def operatord(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "operatord", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def assert_one_error_line(r, *needles: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    assert len(lines[0]) < 300
    for needle in needles:
        assert needle in lines[0]


def both_commands(tmp_path, config: str):
    path = tmp_path / "config.yaml"
    path.write_text(config)
    missing_kubeconfig = str(tmp_path / "no-kubeconfig")
    yield operatord(tmp_path, "check-config", "--config", str(path))
    yield operatord(tmp_path, "run", "--config", str(path), "--kubeconfig", missing_kubeconfig)


@pytest.mark.parametrize(
    "value",
    [
        "[" * 20000 + "]" * 20000,  # far past Python's recursion limit
        "[" * 900 + "]" * 900,  # just past it
        "{a: " * 5000 + "1" + "}" * 5000,
        "\n" + "".join("  " * i + f"k{i}:\n" for i in range(3000)) + "  " * 3000 + "v",
    ],
    ids=["flow-lists-20000", "flow-lists-900", "flow-maps-5000", "block-maps-3000"],
)
def test_a_deeply_nested_document_is_one_error_line(tmp_path, value):
    for r in both_commands(tmp_path, HEAD.format(handler="m:h") + f"extra: {value}\n"):
        assert_one_error_line(
            r, "config.yaml: line ", f"nested deeper than {MAX_YAML_DEPTH} levels"
        )


def test_nesting_up_to_the_limit_reaches_validation(tmp_path):
    depth = MAX_YAML_DEPTH - 1  # the document itself is the outermost mapping
    path = tmp_path / "c.yaml"
    path.write_text(HEAD.format(handler="m:h") + "extra: " + "[" * depth + "]" * depth + "\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert len(exc.value.errors) == 1 and exc.value.errors[0].startswith("extra: unknown key")
    path.write_text(HEAD.format(handler="m:h") + "extra: " + "[" * 65 + "]" * 65 + "\n")
    with pytest.raises(ConfigError, match="nested deeper"):
        load_config(path)


@pytest.mark.parametrize(
    ("module", "needle"),
    [
        ("class Boom(BaseException):\n    pass\n\nraise Boom('no')\n", "raised Boom: no"),
        ("raise KeyboardInterrupt\n", "raised KeyboardInterrupt"),
        ("raise GeneratorExit('bye')\n", "raised GeneratorExit: bye"),
        ("raise SystemExit(3)\n", "raised SystemExit: 3"),
        (
            "class Boom(BaseException):\n    pass\n\n"
            "class H:\n    def __init__(self):\n        raise Boom('ctor')\n"
            "    def sync(self, request):\n        return None\n",
            "constructing H() failed: Boom: ctor",
        ),
    ],
    ids=["custom-baseexception", "keyboardinterrupt", "generatorexit", "systemexit", "ctor"],
)
def test_a_handler_raising_a_base_exception_at_import_is_one_error_line(tmp_path, module, needle):
    (tmp_path / "hostile.py").write_text(module)
    for r in both_commands(tmp_path, HEAD.format(handler="hostile:H")):
        assert_one_error_line(r, "hostile:H", needle)
