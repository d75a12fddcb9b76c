"""pytest fixtures for testing an operator end to end. Enable them in your ``conftest.py``::

    pytest_plugins = ["operatord.testing.fixtures"]

- ``apiserver``: an embedded `ApiServer`, one per test module.
- ``run_operator``: a factory ``run_operator(config) -> OperatorProcess`` that starts
  ``operatord run`` for ``config`` (a dict or a path) against ``apiserver``, waits until it is
  ready, and stops every operator it started when the test ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from operatord.apiserver import ApiServer
from operatord.testing.operator import OperatorProcess


@pytest.fixture(scope="module")
def apiserver() -> Iterator[ApiServer]:
    with ApiServer() as server:
        yield server


@pytest.fixture
def run_operator(apiserver: ApiServer, tmp_path: Path) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []

    def start(config: dict | str, *, ready_timeout: float = 60.0, **kwargs: Any) -> OperatorProcess:
        op = OperatorProcess(apiserver, config, workdir=tmp_path / f"op{len(started)}", **kwargs)
        started.append(op.start())
        op.wait_ready(ready_timeout)
        return op

    yield start
    for op in started:
        op.stop()
