"""The operatord image: Dockerfile lint (hadolint), its structure, and its build context.

These checks need no container engine; tests/e2e/test_image.py builds and runs the image. The
package build is also exercised here from exactly the files .dockerignore lets into the context,
the way the build stage runs `pip install .`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
CUSTOM_DOCKERFILE = ROOT / "examples" / "custom-image" / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"
CHART_VALUES = ROOT / "helm" / "operatord" / "values.yaml"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of a Dockerfile; continuation lines are joined."""
    logical, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$", rest, re.I)
            assert m, line
            stages.append(Stage(m.group(1), m.group(2)))
        elif not stages:
            if keyword == "ARG":
                name, _, default = rest.partition("=")
                args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest.strip()))
    return args, stages


def resolve(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), value)


def labels(stage: Stage) -> dict[str, str]:
    out = {}
    for args in stage.all("LABEL"):
        for key, value in re.findall(r'([\w.-]+)="([^"]*)"', args):
            out[key] = value
    return out


def hadolint(path: Path) -> list[dict]:
    result = subprocess.run(
        [str(HADOLINT), "--config", str(ROOT / ".hadolint.yaml"), "--format", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(result.stdout or "[]")


# ---------------------------------------------------------------------------------------------
# hadolint


@pytest.mark.parametrize("path", [DOCKERFILE, CUSTOM_DOCKERFILE], ids=["operatord", "custom-image"])
def test_hadolint_reports_nothing(path: Path) -> None:
    assert hadolint(path) == []


def test_hadolint_config_requires_the_oci_labels(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text(
        re.sub(r'\s+org\.opencontainers\.image\.source="[^"]*" \\\n', "\n", DOCKERFILE.read_text())
    )
    assert "org.opencontainers.image.source" not in broken.read_text()
    assert "DL3049" in {finding["code"] for finding in hadolint(broken)}


def test_hadolint_would_flag_a_root_final_stage(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text().replace("USER 65532:65532", "USER root"))
    codes = {finding["code"] for finding in hadolint(broken)}
    assert codes & {"DL3002", "DL3066"}


# ---------------------------------------------------------------------------------------------
# structure of the image


def test_multi_stage_build_on_a_slim_python_base() -> None:
    args, stages = parse(DOCKERFILE)
    assert len(stages) >= 2
    build, final = stages[0], stages[-1]
    assert build.name and final.name is None
    for stage in stages:
        base = resolve(stage.base, args)
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", base), base
    assert any(f"--from={build.name}" in copy for copy in final.all("COPY"))
    runs = build.all("RUN")
    assert any("pip install --requirement" in run for run in runs)
    assert any(re.search(r"pip install --no-deps \.( |$)", run) for run in runs)
    assert any("pip check" in run for run in runs)


COMPILERS = re.compile(r"\b(gcc|g\+\+|cc|clang|make|build-essential|python3?-dev|libc6?-dev)\b")


def test_final_stage_installs_no_compilers_and_nothing_from_the_network() -> None:
    _, stages = parse(DOCKERFILE)
    final = stages[-1]
    for run in final.all("RUN"):
        assert "apt-get install" not in run and "apk add" not in run, run
        assert "pip install" not in run, run
        assert not COMPILERS.search(run), run


def test_final_stage_runs_operatord_as_the_non_root_user_of_the_chart() -> None:
    _, stages = parse(DOCKERFILE)
    final = stages[-1]
    user = final.last("USER")
    assert user and re.fullmatch(r"\d+(:\d+)?", user), user
    uid, _, gid = user.partition(":")
    values = yaml.safe_load(CHART_VALUES.read_text())
    assert int(uid) != 0
    assert int(uid) == values["podSecurityContext"]["runAsUser"]
    assert int(gid or uid) == values["podSecurityContext"]["runAsGroup"]
    assert json.loads(final.last("ENTRYPOINT")) == ["operatord"]


def test_default_command_runs_the_config_the_chart_mounts() -> None:
    _, stages = parse(DOCKERFILE)
    command = json.loads(stages[-1].last("CMD"))
    assert command == ["run", "--config", "/etc/operatord/config.yaml"]
    deployment = (ROOT / "helm" / "operatord" / "templates" / "deployment.yaml").read_text()
    assert "mountPath: /etc/operatord\n" in deployment


def test_example_handler_of_the_chart_defaults_is_in_the_image() -> None:
    _, stages = parse(DOCKERFILE)
    final = stages[-1]
    env = " ".join(final.all("ENV"))
    assert "PYTHONPATH=/app" in env
    copies = final.all("COPY")
    assert any(c.endswith("examples /app/examples") for c in copies)
    assert any(c.endswith("config /app/config") for c in copies)
    handler = yaml.safe_load(CHART_VALUES.read_text())["config"]["handler"]
    module = handler.split(":")[0]
    assert (ROOT / (module.replace(".", "/") + ".py")).is_file()


def test_oci_labels() -> None:
    _, stages = parse(DOCKERFILE)
    found = labels(stages[-1])
    for key in ("title", "description", "version", "revision", "created", "licenses", "source"):
        assert found.get(f"org.opencontainers.image.{key}"), key
    assert found["org.opencontainers.image.licenses"] == "Apache-2.0"


def test_custom_image_extends_operatord_and_drops_root_again() -> None:
    args, stages = parse(CUSTOM_DOCKERFILE)
    (stage,) = stages
    assert "operatord" in resolve(stage.base, args)
    users = stage.all("USER")
    assert users[-1] == "65532:65532"
    assert stage.last("ENTRYPOINT") is None and stage.last("CMD") is None
    assert any("pip install --no-cache-dir /src" in run for run in stage.all("RUN"))


# ---------------------------------------------------------------------------------------------
# the build context


def dockerignore_patterns(path: Path) -> list[tuple[bool, re.Pattern]]:
    """(negated, regex) per .dockerignore line, with Docker's matching rules: patterns are
    relative to the context root, `*` stays within one path element, `**` spans any number."""
    out = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        out.append((negated, re.compile(regex + "$")))
    return out


def in_context(relative: str, patterns: list[tuple[bool, re.Pattern]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent dirs decides."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, regex in patterns:
        if any(regex.match(c) for c in candidates):
            excluded = not negated
    return not excluded


def context_files() -> list[str]:
    patterns = dockerignore_patterns(ROOT / ".dockerignore")
    files = []
    for path in ROOT.rglob("*"):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith((".git/", ".venv/")):
            continue
        if path.is_file() and in_context(relative, patterns):
            files.append(relative)
    return sorted(files)


def test_build_context_holds_the_package_and_examples_only() -> None:
    files = context_files()
    for needed in (
        "setup.cfg",
        "pyproject.toml",
        "operatord/cli.py",
        "examples/widgets.py",
        "config/example.yaml",
    ):
        assert needed in files, needed
    for path in files:
        assert not path.startswith(("tests/", "helm/", "bench/", "docs/", ".git", ".venv")), path
        assert "__pycache__" not in path and not path.startswith("examples/custom-image"), path


def test_dockerignore_matching_follows_docker_rules() -> None:
    patterns = dockerignore_patterns(ROOT / ".dockerignore")
    assert in_context("operatord/apiserver/process.py", patterns)
    assert not in_context("operatord/__pycache__/cli.cpython-311.pyc", patterns)
    assert not in_context("tests/test_helm.py", patterns)
    assert not in_context("examples/custom-image/Dockerfile", patterns)


def test_build_context_builds_the_operatord_package(tmp_path: Path) -> None:
    """What the build stage's `pip install .` sees is enough to build operatord with its console
    script and package data (setuptools' own build, as pip runs it, without a network)."""
    context = tmp_path / "context"
    for relative in context_files():
        target = context / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, target)
    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import setuptools; setuptools.setup()",
            "-q",
            "egg_info",
            "--egg-base",
            str(out),
            "build",
            "--build-base",
            str(out / "build"),
        ],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    built = out / "build" / "lib"
    assert (built / "operatord" / "cli.py").is_file()
    assert (built / "operatord" / "schema" / "config.schema.json").is_file()
    assert not (built / "examples").exists() and not (built / "tests").exists()
    entry_points = (out / "operatord.egg-info" / "entry_points.txt").read_text()
    assert "operatord = operatord.cli:main" in entry_points
