"""Logging: each scenario runs in a fresh subprocess and its real stdout is inspected."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from operatord.logs import REDACTED, redact

ROOT = Path(__file__).resolve().parents[1]


def run_script(body: str) -> tuple[list[str], str]:
    """Run ``body`` in a fresh interpreter; return (stdout lines, stderr)."""
    code = "import logging, structlog\nfrom operatord.logs import *\n" + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines(), proc.stderr


JSON_SCENARIO = """
configure_logging("json", "info", process="worker", worker=3)
log = structlog.get_logger("operatord.worker")
parent = {"metadata": {"namespace": "ns1", "name": "w1", "uid": "u-1"}}
log.info("worker started")
with bind_parent(parent, worker=3):
    log.info("sync done", children=2)
    logging.getLogger("kubernetes.client.rest").warning("GET %s returned %d", "/api/v1", 500)
    logging.getLogger("urllib3.connectionpool").warning("Retrying (%r) after failure", 1)
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("handler raised")
log.info("after sync")
structlog.get_logger("operatord.custom").info("named", x=1)
log.debug("hidden at info")
logging.getLogger("kubernetes.client.rest").info("plain stdlib %s", "line")
"""


def test_json_lines_with_static_and_bound_context_from_structlog_and_stdlib():
    lines, stderr = run_script(JSON_SCENARIO)
    assert stderr == ""
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    by_event = {e["event"]: e for e in events}
    assert set(by_event) == {
        "worker started",
        "sync done",
        "GET /api/v1 returned 500",
        "Retrying (1) after failure",
        "handler raised",
        "after sync",
        "plain stdlib line",
        "named",
    }
    assert by_event["named"]["logger"] == "operatord.custom"
    for e in events:
        assert e["process"] == "worker" and e["worker"] == 3
        assert e["timestamp"].endswith("Z") and "T" in e["timestamp"]
        assert e["level"] in {"info", "warning", "error"}
        assert e["logger"]
    sync_lines = ["sync done", "GET /api/v1 returned 500", "Retrying (1) after failure"]
    for name in [*sync_lines, "handler raised"]:
        e = by_event[name]
        assert (e["parent_namespace"], e["parent_name"], e["parent_uid"]) == ("ns1", "w1", "u-1")
    assert by_event["sync done"]["children"] == 2
    assert by_event["sync done"]["logger"] == "operatord.worker"
    assert by_event["GET /api/v1 returned 500"]["logger"] == "kubernetes.client.rest"
    assert by_event["Retrying (1) after failure"]["logger"] == "urllib3.connectionpool"
    assert "ZeroDivisionError" in by_event["handler raised"]["exception"]
    assert "parent_uid" not in by_event["after sync"]  # unbound after the context manager


SECRETS_SCENARIO = """
configure_logging("json", "debug")
log = structlog.get_logger("t")
secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
          "data": {"password": "c2VjcmV0"}, "stringData": {"key": "plaintext-value"}}
headers = {"Authorization": "Bearer sekret-token-1", "Accept": "application/json"}
log.info("write", object=secret, headers=headers, token="sekret-token-2")
log.info("children", children=[{"kind": "Secret", "data": {"k": "plaintext-value"}}])
log.info("sending Authorization: Bearer sekret-token-3 to server")
logging.getLogger("urllib3").warning("url https://admin:sekret-pw@example.com/x")
logging.getLogger("kubernetes.client.rest").debug("response body: %s", "sekret-token-4")
logging.getLogger("kubernetes").info("config", extra={"password": "sekret-pw-2"})
assert secret["data"]["password"] == "c2VjcmV0", "caller's object was mutated"
assert headers["Authorization"] == "Bearer sekret-token-1", "caller's object was mutated"
"""


def test_secrets_are_redacted_everywhere_and_inputs_are_not_mutated():
    lines, _ = run_script(SECRETS_SCENARIO)
    text = "\n".join(lines)
    for leak in ("sekret", "c2VjcmV0", "plaintext-value"):
        assert leak not in text
    events = {json.loads(line)["event"]: json.loads(line) for line in lines}
    write = events["write"]
    assert write["object"]["data"] == {"password": REDACTED}
    assert write["object"]["stringData"] == {"key": REDACTED}
    assert write["object"]["metadata"]["name"] == "creds"
    assert write["headers"] == {"Authorization": REDACTED, "Accept": "application/json"}
    assert write["token"] == REDACTED
    assert events["config"]["password"] == REDACTED
    # kubernetes.client.rest's DEBUG response bodies are held back even at level=debug
    assert not any(e.startswith("response body") for e in events)


def test_configure_twice_replaces_not_duplicates():
    lines, _ = run_script(
        """
        configure_logging("json", process="a")
        configure_logging("json", "warning", process="b")
        structlog.get_logger().info("dropped")
        structlog.get_logger().warning("kept")
        logging.getLogger("urllib3").warning("kept too")
        """
    )
    events = [json.loads(line) for line in lines]
    assert [e["event"] for e in events] == ["kept", "kept too"]
    assert all(e["process"] == "b" for e in events)


def test_auto_is_json_when_stdout_is_a_pipe_and_console_format_is_not_json():
    lines, _ = run_script('print(configure_logging("auto"))\nstructlog.get_logger().info("x")')
    assert lines[0] == "json" and json.loads(lines[1])["event"] == "x"
    lines, _ = run_script('configure_logging("console")\nstructlog.get_logger().info("hello")')
    assert len(lines) == 1 and "hello" in lines[0]
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])


def test_auto_is_console_on_a_tty():
    code = (
        "import structlog\nfrom operatord.logs import configure_logging\n"
        "print(configure_logging('auto'))\nstructlog.get_logger().info('on a tty', n=1)\n"
    )
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=slave,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the tty
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.wait(30) == 0, proc.stderr.read()
    text = out.decode(errors="replace")
    assert text.splitlines()[0].strip() == "console"
    assert "on a tty" in text and '"event"' not in text


def test_bad_format_or_level_is_rejected():
    from operatord.logs import configure_logging

    with pytest.raises(ValueError, match="format"):
        configure_logging("xml")
    with pytest.raises(ValueError, match="level"):
        configure_logging("json", "loud")


def test_redact_copies_only_what_changes():
    clean = {"metadata": {"name": "x"}, "spec": {"items": [1, 2]}}
    assert redact(clean) is clean
    cm = {"kind": "ConfigMap", "data": {"password-hint": "ask bob"}}
    assert redact(cm)["data"]["password-hint"] == "ask bob"  # only Secret data is blanket-hidden
    nested = {"a": [{"b": {"client_secret": "s"}}], "automountServiceAccountToken": False}
    out = redact(nested)
    assert out["a"][0]["b"]["client_secret"] == REDACTED
    assert out["automountServiceAccountToken"] is False
    assert nested["a"][0]["b"]["client_secret"] == "s"


# A handler failure as the worker logs it: the user's exception as exc_info, its frames holding a
# password in local variables, and the password in the exception message as "password=...".
HANDLER_FAILURE_SCENARIO = """
import sys
if {hide_rich}:
    class _Hide:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("rich", "better_exceptions"):
                raise ImportError(f"{{name}} hidden by the test")
            return None
    sys.meta_path.insert(0, _Hide())
    for mod in [m for m in sys.modules if m.split(".")[0] in ("rich", "structlog")]:
        del sys.modules[mod]
import structlog
from operatord.logs import configure_logging

def connect(dsn):
    password = "hunter2-local-" + "secret"
    db_token = "tok-local-" + "secret"
    raise ConnectionError(f"login failed for {{dsn}}: password={{password}}")

def sync(parent):
    creds = {{"user": "app", "password": "hunter2-dict-" + "secret"}}
    connect("postgres://app@db")

configure_logging("{fmt}")
log = structlog.get_logger("operatord.worker")
try:
    sync({{"metadata": {{"name": "db1"}}}})
except Exception as exc:
    log.error("handler raised", error=str(exc), exc_info=exc)
print("rich loaded:", "rich" in sys.modules, file=sys.stderr)
"""


@pytest.mark.parametrize("hide_rich", [False, True], ids=["rich-installed", "rich-hidden"])
@pytest.mark.parametrize("fmt", ["console", "json"])
def test_a_failing_handler_leaks_no_secret_and_logs_one_plain_traceback(fmt, hide_rich):
    if not hide_rich:
        pytest.importorskip("rich")  # the case that printed every frame's locals
    body = HANDLER_FAILURE_SCENARIO.format(fmt=fmt, hide_rich=hide_rich)
    proc = subprocess.run(
        [sys.executable, "-c", body],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    assert f"rich loaded: {not hide_rich}" in proc.stderr  # structlog.dev imports rich if it can
    out = proc.stdout
    assert "secret" not in out, out
    if fmt == "json":
        (line,) = out.splitlines()
        event = json.loads(line)
        text = event["exception"]
        assert "password=[REDACTED]" in event["error"]
    else:
        text = out
        assert "╭" not in out and "locals" not in out  # no rich box, no locals table
    # one block: the plain traceback once, naming the user's frames and the exception
    assert text.count("Traceback (most recent call last)") == 1
    assert "in connect" in text and "in sync" in text
    assert "ConnectionError: login failed for postgres://app@db: password=[REDACTED]" in text
    assert len(out.splitlines()) < 20, out
