"""The docs stay true: every Python block in README.md, CONTRIBUTING.md and docs/ runs, every
YAML block that is an operatord config (or some of its keys) validates, every block of chart values renders, and the
repository never points outside itself.

A Python block preceded by ``<!-- doc-test: compile-only (reason) -->`` is only compiled.
Each executed block runs in a fresh interpreter with the repository as the current directory
(as a user in their project would), then calls the zero-argument ``test_*`` functions it defined.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from operatord.config import Config, config_schema

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"(<!-- doc-test: ([a-z-]+)[^>]*-->\n)?```(\w+)\n(.*?)```", re.S)

RUNNER = """
import sys
namespace = {"__name__": "__doc_block__"}
exec(compile(sys.stdin.read(), "<doc block>", "exec"), namespace)
for name, value in list(namespace.items()):
    if name.startswith("test_") and callable(value) and value.__code__.co_argcount == 0:
        value()
"""


def blocks(language: str) -> list[tuple[str, str, str]]:
    """(id, marker, code) of every fenced block in ``language``."""
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for m in FENCE.finditer(text):
            if m.group(3) != language:
                continue
            line = text[: m.start()].count("\n") + 1
            out.append((f"{doc.relative_to(ROOT)}:{line}", m.group(2) or "", m.group(4)))
    return out


PYTHON = blocks("python")
YAML = blocks("yaml")


def test_the_docs_have_blocks_to_check():
    assert len(PYTHON) >= 8 and len(YAML) >= 5


@pytest.mark.parametrize(("where", "marker", "code"), PYTHON, ids=[b[0] for b in PYTHON])
def test_python_block_runs(where, marker, code):
    compile(code, where, "exec")
    if marker == "compile-only":
        return
    assert marker == "", f"{where}: unknown doc-test marker {marker!r}"
    r = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=code,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 0, f"{where}:\n{code}\n{r.stdout}\n{r.stderr}"


def _is_config(doc: object) -> bool:
    return isinstance(doc, dict) and (
        ("handler" in doc and "parent" in doc) or ("name" in doc and "controllers" in doc)
    )


def _is_config_fragment(doc: object) -> bool:
    """Some top-level keys of a config, shown on their own."""
    return isinstance(doc, dict) and set(doc) <= set(config_schema()["properties"])


MINIMAL = {
    "name": "doc-example",
    "handler": "examples.widgets:Widgets",
    "parent": {"apiVersion": "example.com/v1", "kind": "Widget"},
}


def _is_chart_values(doc: object) -> bool:
    return isinstance(doc, dict) and ("image" in doc or "config" in doc)


@pytest.mark.parametrize(("where", "marker", "code"), YAML, ids=[b[0] for b in YAML])
def test_yaml_block_is_valid(where, marker, code):
    doc = yaml.safe_load(code)
    assert doc is not None, where
    if _is_config(doc):
        base = (ROOT / where.split(":")[0]).parent
        Config.from_dict(doc, base_dir=base)  # raises ConfigError naming the key
    elif _is_config_fragment(doc):
        Config.from_dict({**MINIMAL, **doc})  # the keys shown, in an otherwise minimal config
    elif _is_chart_values(doc):
        from test_helm import render_objects

        assert render_objects(doc), where
    else:
        pytest.fail(f"{where}: neither an operatord config nor chart values; say what it is")


def test_readme_handler_is_the_example_handler():
    """The handler shown in the README behaves as examples/widgets.py, which its test imports."""
    from examples.widgets import Widgets
    from operatord import SyncRequest

    shown = next(code for where, _, code in PYTHON if "# examples/widgets.py" in code)
    namespace: dict = {}
    exec(compile(shown, "README handler", "exec"), namespace)
    parent = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "ns", "uid": "u1"},
        "spec": {"size": 3, "message": "hi"},
    }
    first = SyncRequest.build(parent)  # no ConfigMap yet
    expected = Widgets().sync(first)
    got = namespace["Widgets"]().sync(first)
    assert (got.status, got.children) == (expected.status, expected.children)
    config_map = {**expected.children[0], "metadata": {"name": "w", "namespace": "ns"}}
    second = SyncRequest.build(parent, [config_map])  # the ConfigMap in place
    assert namespace["Widgets"]().sync(second).status == Widgets().sync(second).status
    assert Widgets().sync(second).status == {"ready": True, "configMap": "w"}


def test_the_repository_never_points_outside_itself():
    offenders = []
    for path in [*ROOT.glob("*.md"), *ROOT.rglob("docs/*.md"), *ROOT.glob("helm/**/*")]:
        if path.is_file() and ".venv" not in path.parts:
            text = path.read_text(errors="replace")
            if re.search(r"\.\./shared|shared/DESIGN", text):
                offenders.append(str(path.relative_to(ROOT)))
    for path in [*ROOT.glob("operatord/**/*.py"), *ROOT.glob("tests/**/*.py")]:
        text = path.read_text()
        if "../shared" in text or "shared/DESIGN" in text:
            offenders.append(str(path.relative_to(ROOT)))
    offenders = [o for o in offenders if o != "tests/test_docs.py"]
    assert offenders == []


def test_relative_links_in_the_docs_resolve():
    broken = []
    for doc in [*DOCS, ROOT / "helm" / "operatord" / "README.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target:
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_readme_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    first_block = readme[readme.index("```") : readme.index("```", readme.index("```") + 3)]
    assert "make demo" in first_block and "make test" in first_block
    assert readme.index("## Two commands") < readme.index("## A handler")


def test_contributing_covers_build_test_bench_release_and_links_the_module_map():
    text = (ROOT / "CONTRIBUTING.md").read_text()
    for section in ("## Build and test", "## Benchmarks", "## Release", "## Module map"):
        assert section in text
    assert "](docs/ARCHITECTURE.md" in text
    # one module map: CONTRIBUTING links to it and has no table of modules of its own
    assert "| `operatord/" not in text
    assert "make test" in text


def test_the_architecture_module_map_names_every_module_of_the_package():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    # the first cell of each row: `operatord/<path>.py`, possibly with more files of the same
    # directory (`scale.py`, `reviews.py`) or a group (`{patch,selectors}.py`)
    cells = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| `operatord/")]
    named = set()
    for cell in cells:
        paths = re.findall(r"`operatord/([^`]*)`", cell)
        directory = paths[0].rpartition("/")[0] + "/" if "/" in paths[0] else ""
        for path in paths:
            group = re.fullmatch(r"(.*/)?\{([^}]*)\}\.py", path)
            if group:
                named |= {f"{group.group(1) or ''}{m}.py" for m in group.group(2).split(",")}
            else:
                named.add(path)
        named |= {directory + f for f in re.findall(r"`(\w+\.py)`", cell)}
    missing = []
    for package in ("", "apiserver/", "testing/"):
        for module in sorted((ROOT / "operatord" / package).glob("*.py")):
            if module.name == "__main__.py" or (package and module.name == "__init__.py"):
                continue
            if f"{package}{module.name}" not in named:
                missing.append(f"operatord/{package}{module.name}")
    assert missing == []


def _importlinter_layers() -> list[set[str]]:
    ini = (ROOT / ".importlinter").read_text()
    block = ini.split("layers =", 1)[1].split(";", 1)[0].split("exhaustive", 1)[0]
    return [{m.strip() for m in line.split("|")} for line in block.split("\n") if line.strip()]


def test_the_architecture_layer_table_is_the_import_contract():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    table = []
    for line in text.splitlines():
        m = re.match(r"\s*\| (\d+) \| (.*) \|$", line)
        if m:  # the modules of a layer, without the remark in parentheses
            table.append(set(re.findall(r"`(\w+)`", m.group(2).split("(")[0])))
    assert table == _importlinter_layers()
