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
