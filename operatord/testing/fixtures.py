"""pytest fixtures for testing an operator end to end. Enable them in your ``conftest.py``::

    pytest_plugins = ["operatord.testing.fixtures"]

- ``apiserver``: an embedded `ApiServer`, one per test module.
- ``run_operator``: a factory ``run_operator(config) -> OperatorProcess`` that starts
  ``operatord run`` for ``config`` (a dict or a path) against ``apiserver``, waits until it is
  ready, and stops every operator it started when the test ends.
"""

from __future__ import annotations

import pytest

from operatord.apiserver import ApiServer
from operatord.testing.operator import OperatorProcess


@pytest.fixture(scope="module")
def apiserver():
    with ApiServer() as server:
        yield server


@pytest.fixture
def run_operator(apiserver, tmp_path):
    started: list[OperatorProcess] = []

    def start(config, *, ready_timeout: float = 60.0, **kwargs) -> OperatorProcess:
        op = OperatorProcess(apiserver, config, workdir=tmp_path / f"op{len(started)}", **kwargs)
        started.append(op.start())
        op.wait_ready(ready_timeout)
        return op

    yield start
    for op in started:
        op.stop()
