"""The blackhole scenario of the API-hang tests: `operatord run` behind a TCP proxy
(tests/blackhole_proxy.py) that swallows every connection, open and new, for a while.

`run_cut` converges a set of parents, cuts the operator off, creates and changes parents during
the cut, lets traffic flow again and measures when the operator reported itself not ready and
when the changes converged. Connections open during the cut stay dead afterwards.
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from conftest import wait_for
from kubernetes import client
from widgets import GROUP, PLURAL, VERSION, create_widget, patch_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the proxy
from blackhole_proxy import BlackholeProxy  # noqa: E402

__all__ = ["BlackholeProxy", "Cut", "converged", "readyz", "run_cut"]

PARENTS = 50
CUT_SECONDS = 15.0
NOT_READY_WITHIN = 15.0  # /readyz turns 503 this soon after the cut
CONVERGED_WITHIN = 15.0  # every change made during the cut converges this soon after it


def readyz(op) -> tuple[int, str]:
    """(status, body) of ``op``'s /readyz; (0, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{op.health_port}/readyz", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def converged(kube, ns, sizes: dict[str, int]) -> bool:
    """Every parent of ``sizes`` (and no other in ``ns``) is ready at its generation and its
    ConfigMap child carries its size."""
    items = client.CustomObjectsApi(kube).list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
    found = {w["metadata"]["name"]: w for w in items["items"]}
    if set(found) != set(sizes):
        return False
    cms = {c.metadata.name: c for c in client.CoreV1Api(kube).list_namespaced_config_map(ns).items}
    for name, size in sizes.items():
        st = found[name].get("status") or {}
        if st.get("ready") is not True:
            return False
        if st.get("observedGeneration") != found[name]["metadata"]["generation"]:
            return False
        if name not in cms or cms[name].data != {"size": str(size)}:
            return False
    return True


@dataclass
class Cut:
    """What one cut measured (seconds)."""

    not_ready_after: float  # from the cut to the first 503 of /readyz
    reason: str  # the body of that 503
    converged_after: float  # from traffic flowing again to every change converged


def run_cut(kube, ns: str, proxy: BlackholeProxy, leader, replicas: list) -> Cut:
    """The scenario on an operator whose API traffic goes through ``proxy``; ``leader`` is the
    replica that works, ``replicas`` every replica started (for the crash-loop checks)."""
    sizes = {f"w{i}": 1 for i in range(PARENTS)}
    for name in sizes:
        create_widget(kube, ns, name, size=1)
    wait_for(lambda: converged(kube, ns, sizes), 60, message=f"{PARENTS} parents converged")
    wait_for(lambda: readyz(leader)[0] == 200, 15, message="ready before the cut")
    restarts = [op.metric("operatord_worker_restarts_total") for op in replicas]

    proxy.hang()
    cut = time.monotonic()
    for i in range(5):  # created and changed during the cut
        create_widget(kube, ns, f"n{i}", size=2)
        sizes[f"n{i}"] = 2
        patch_spec(kube, ns, f"w{i}", size=10 + i)
        sizes[f"w{i}"] = 10 + i
    status = wait_for(
        lambda: (s := readyz(leader))[0] == 503 and s,
        NOT_READY_WITHIN + 2,
        interval=0.1,
        message="/readyz 503 during the cut",
    )
    not_ready_after = time.monotonic() - cut
    wait_for(lambda: time.monotonic() - cut >= CUT_SECONDS, CUT_SECONDS + 5, message="the cut")
    assert not converged(kube, ns, sizes), "changes converged although the API was cut off"
    assert readyz(leader)[0] == 503, readyz(leader)

    proxy.recover()
    back = time.monotonic()
    wait_for(
        lambda: converged(kube, ns, sizes),
        CONVERGED_WITHIN + 10,
        interval=0.1,
        message="every parent created or changed during the cut",
    )
    converged_after = time.monotonic() - back
    print(
        f"/readyz 503 {not_ready_after:.1f}s after the cut; "
        f"converged {converged_after:.1f}s after traffic flowed again"
    )
    wait_for(lambda: readyz(leader)[0] == 200, 10, message="ready again")
    for op, before in zip(replicas, restarts, strict=True):  # no worker crash loop
        assert op.proc.poll() is None, op.output()[-3000:]
        assert op.metric("operatord_worker_restarts_total") == before
    assert leader.metric("operatord_workers_alive") == leader.config["workers"]
    return Cut(not_ready_after, status[1], converged_after)
