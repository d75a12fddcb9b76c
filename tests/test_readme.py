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
