"""README.md stays true: every exported metric is documented, the commands exist."""

from pathlib import Path

from operatord.metrics import CATALOG

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_metric_is_in_the_readme():
    missing = [m.full_name for m in CATALOG if f"`{m.full_name}`" not in README]
    assert not missing, missing


def test_readme_shows_the_two_commands_and_no_placeholders():
    assert "make demo" in README and "make test" in README
    assert "METRICS_TABLE" not in README and "BENCHMARKS" not in README


def test_every_config_key_of_the_example_is_in_the_readme():
    for key in ("resyncSeconds", "handlerTimeoutSeconds", "leaderElection", "updateStrategy"):
        assert key in README, key


def test_the_not_converging_count_in_the_docs_is_the_code_s():
    from operatord.controller import MAX_WRITE_STREAK
    from operatord.worker import MAX_RUNS

    syncs = MAX_WRITE_STREAK + 1
    runs = syncs * MAX_RUNS
    readme = " ".join(README.split())
    assert (
        f"after {syncs} syncs in a row whose every handler run ({MAX_RUNS} per sync, {runs} in "
        "all) changed children" in readme
    )
    design = " ".join(
        (Path(__file__).resolve().parents[1] / "docs" / "design.md").read_text().split()
    )
    assert f"after {syncs} syncs in a row whose every handler run ({MAX_RUNS} per sync)" in design


def _helm_section() -> str:
    return README.split("## Deploy with Helm", 1)[1].split("\n## ", 1)[0]


def test_the_readme_helm_values_config_is_a_valid_config_file():
    """What the README shows under `config:` can be copied into a config file as it is."""
    import yaml

    from operatord.config import Config

    section = _helm_section()
    values = yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    Config.from_dict(values["config"])  # raises ConfigError naming a chart-only key


def test_the_readme_helm_block_applies_the_crd_of_the_parent_it_configures():
    import re

    import yaml

    section = _helm_section()
    commands = section.split("```sh\n", 1)[1].split("```", 1)[0]
    crd_file = re.search(r"kubectl apply -f (\S+)", commands).group(1)
    kind = yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])["config"]["parent"][
        "kind"
    ]
    path = Path(__file__).resolve().parents[1] / crd_file
    if path.exists():  # a file of this repository: its CRD must be the parent's
        assert yaml.safe_load(path.read_text())["spec"]["names"]["kind"] == kind
    else:  # the user's own file, named after the kind
        assert kind.lower() in crd_file, (crd_file, kind)
