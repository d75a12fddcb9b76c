"""Handlers for the end-to-end tests; their behaviour is driven by the parent's spec.

spec keys:
- ``size``: data of the ConfigMap child.
- ``fail``: raise in sync. ``garbage``: return something that is not a SyncResponse.
- ``badChild``: return a child of an undeclared type.
- ``unstable``: the ConfigMap carries the current time, so it changes on every sync.
- ``otherNamespace``: put the ConfigMap child in that namespace (not the parent's).
- ``resyncAfter``: ask for a resync after that many seconds.
- ``holdFinalizer``: finalize returns finalized=False (retry_after from ``finalizeRetryAfter``).
- ``secret``: also desire a Secret child.
- ``sleep``: seconds to sleep in sync (handler timeout tests).
- ``crash``: the handler kills its own worker process (``os._exit``).
- ``announce``: record a Normal Event ``Announced`` with that message.
- ``reportManagedFields``: the status lists the objects of the request that carry
  ``metadata.managedFields``.
- ``creatingEvent``: record a Normal Event ``Creating`` while the ConfigMap is not observed yet
  (the README's example: only the run that creates it returns the Event).
- ``hog``: allocate that many MiB in sync (memory limit tests).
Every call is appended to ``$E2E_LOG_DIR/<name>.log`` (one line: "<op> <monotonic time>") so
tests can see how often and when a parent was handled.
"""

from __future__ import annotations

import os
import time

from operatord import Event, FinalizeResponse, Handler, SyncResponse


def log_call(request, op: str) -> None:
    log_dir = os.environ.get("E2E_LOG_DIR")
    if not log_dir:
        return
    name = request.parent["metadata"]["name"]
    with open(os.path.join(log_dir, f"{name}.log"), "a") as f:
        f.write(f"{op} {time.time():.6f}\n")


class Driven(Handler):
    def sync(self, request):
        log_call(request, "sync")
        p = request.parent
        spec = p.get("spec") or {}
        name = p["metadata"]["name"]
        if spec.get("sleep"):
            time.sleep(float(spec["sleep"]))
        if spec.get("crash"):
            os._exit(1)
        if spec.get("hog"):
            hoard = bytearray(int(spec["hog"]) * 1024 * 1024)
            del hoard
        if spec.get("fail"):
            raise RuntimeError(f"asked to fail ({name})")
        if spec.get("garbage"):
            return {"not": "a response"}
        children = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name},
                "data": {"size": str(spec.get("size", 1))},
            }
        ]
        if spec.get("secret"):
            children.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": f"{name}-secret"},
                    "stringData": {"token": "t"},
                    "type": "Opaque",
                }
            )
        if spec.get("unstable"):
            children[0]["data"]["at"] = repr(time.time())  # never the same twice
        if spec.get("otherNamespace"):
            children[0]["metadata"]["namespace"] = spec["otherNamespace"]
        if spec.get("badChild"):
            children.append(
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": {}}
            )
        observed = request.children.of_type("v1", "ConfigMap").get(name)
        status = {
            "ready": observed is not None
            and (observed.get("data") or {}).get("size") == str(spec.get("size", 1)),
            "children": len(request.children),
        }
        if spec.get("reportManagedFields"):
            seen = [p, *request.children]
            status["managedFields"] = [
                o["metadata"]["name"] for o in seen if "managedFields" in o["metadata"]
            ]
        events = [Event("Announced", spec["announce"])] if spec.get("announce") else []
        if spec.get("creatingEvent") and observed is None:
            events.append(Event("Creating", f"creating the ConfigMap {name}"))
        return SyncResponse(
            status=status, children=children, resync_after=spec.get("resyncAfter"), events=events
        )

    def finalize(self, request):
        log_call(request, "finalize")
        spec = request.parent.get("spec") or {}
        attempts = int((request.parent.get("status") or {}).get("finalizeAttempts", 0)) + 1
        status = dict(request.parent.get("status") or {})
        status["finalizeAttempts"] = attempts
        if spec.get("holdFinalizer"):
            return FinalizeResponse(
                status=status, finalized=False, retry_after=spec.get("finalizeRetryAfter")
            )
        return FinalizeResponse(status=status, finalized=True)


def cluster_sync(request):
    """A plain-function handler for a cluster-scoped parent: one ConfigMap in spec.namespace."""
    log_call(request, "sync")
    p = request.parent
    return SyncResponse(
        status={"ok": True},
        children=[
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": p["metadata"]["name"], "namespace": p["spec"]["namespace"]},
                "data": {"owner": p["metadata"]["name"]},
            }
        ],
    )


def mutating(request):
    """Edits the request's parent in place and returns that status: must still be written."""
    status = request.parent.setdefault("status", {})
    status["tier"] = (request.parent["metadata"].get("labels") or {}).get("tier")
    return SyncResponse(status=status, children=[])


class Gathering:
    """Calls wait until ``spec.gather`` calls are inside ``sync`` at the same time (or 10 s
    pass); reports how many ran at once. Async: the worker must run its calls concurrently.
    """

    def __init__(self):
        self.inside = 0
        self.most = 0
        self.together = None  # an asyncio.Event, made on the worker's event loop

    async def sync(self, request):
        import asyncio

        log_call(request, "sync")
        want = int(request.parent["spec"].get("gather", 1))
        if self.together is None:
            self.together = asyncio.Event()
        self.inside += 1
        self.most = max(self.most, self.inside)
        if self.most >= want:
            self.together.set()
        try:
            await asyncio.wait_for(self.together.wait(), 10)
        except TimeoutError:
            pass  # the test reports how many were ever inside together
        finally:
            self.inside -= 1
        return SyncResponse(status={"together": self.most}, children=[])

    async def finalize(self, request):
        return FinalizeResponse(finalized=True)


gathering = Gathering()


async def napping(request):
    """An async plain-function handler: sleeps ``spec.sleep`` seconds on the event loop."""
    import asyncio

    await asyncio.sleep(float((request.parent.get("spec") or {}).get("sleep", 0)))
    return SyncResponse(status={"napped": True}, children=[])


class FailingFollowUp(Driven):
    """`Driven`, raising in every run that observes its ConfigMap (the follow-up run)."""

    def sync(self, request):
        if request.children.of_type("v1", "ConfigMap").get(request.parent["metadata"]["name"]):
            raise RuntimeError("the follow-up run fails")
        return super().sync(request)


class Flaky(Driven):
    """`Driven` whose ``sync`` (with ``spec.flakySync``) and ``finalize`` raise while
    ``request.retry < 2``. Every call appends "<op> <retry> <pid>" to
    ``$E2E_LOG_DIR/<name>.retries``; the status records the retry count the sync succeeded at.
    """

    def _note(self, request, op: str) -> None:
        log_dir = os.environ.get("E2E_LOG_DIR")
        if not log_dir:
            return
        name = request.parent["metadata"]["name"]
        with open(os.path.join(log_dir, f"{name}.retries"), "a") as f:
            f.write(f"{op} {request.retry} {os.getpid()}\n")

    def sync(self, request):
        if not (request.parent.get("spec") or {}).get("flakySync"):
            return super().sync(request)
        self._note(request, "sync")
        if request.retry < 2:
            raise RuntimeError(f"sync fails at retry {request.retry}")
        return SyncResponse(status={"succeededAtRetry": request.retry}, children=[])

    def finalize(self, request):
        self._note(request, "finalize")
        if request.retry < 2:
            raise RuntimeError(f"finalize fails at retry {request.retry}")
        return FinalizeResponse(finalized=True)


class Counting(Driven):
    """`Driven`, counting how many synchronous calls overlap (there must never be two)."""

    def __init__(self):
        self.inside = 0
        self.most = 0

    def sync(self, request):
        self.inside += 1
        self.most = max(self.most, self.inside)
        try:
            time.sleep(0.02)  # simulated handler work: an overlap would last this long
            return super().sync(request)
        finally:
            self.inside -= 1


counting = Counting()
