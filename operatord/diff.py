"""`operatord diff`: every write `operatord run` would make now, shown before it happens.

Guarantees:
- Reads the live state with the lists `run`'s informers start from (parents in the config's
  namespace; children by the operator's labels; related objects by their selectors), runs the
  handler in worker processes exactly as `run` does (`supervisor.WorkerProcess`, the
  `protocol` messages, the worker's own apply path), and records what each sync would write.
- Writes nothing: the workers' connection is a dry-run one (`kube.Connection.dry_run`), so
  every create, update, patch and delete they send carries ``dryRun=All`` (the server
  validates and defaults it, runs admission, and persists nothing). No lease is taken, no
  finalizer added, no Event posted.
- Prints one unified diff per object that would change (``--- live/...`` / ``+++
  desired/...``, as YAML with sorted keys, server-populated metadata removed) on stdout, then a
  summary line on stderr. ``-o json`` prints one JSON document instead: ``changes`` (one entry
  per object with the writes it would get), ``errors`` and ``summary``.
- Exit status: 0 nothing would change, 1 something would, 2 an error (a parent whose handler
  failed is reported, the other parents are still diffed).
- Cannot see: what other controllers would do in reaction (including the operator's own next
  syncs after children change status), and the effect of admission webhooks unless the server
  runs them in dry run (webhooks declaring ``sideEffects: None``/``NoneOnDryRun``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO

import yaml
from multiprocess.connection import wait as wait_connections

from operatord import protocol
from operatord.apply import without_server_fields
from operatord.cache import Cache
from operatord.config import Config, ConfigError, apply_overrides, isolate_import_path, load_config
from operatord.handler import HandlerImportError, load_handler
from operatord.kube import ApiError, ClientSettings, Kube, Resource
from operatord.logs import configure_logging
from operatord.namespaces import NamespaceScope
from operatord.related import RelatedTypes
from operatord.supervisor import WorkerGone, WorkerProcess, worker_context

EXIT_SAME = 0
EXIT_CHANGES = 1
EXIT_ERROR = 2

# Re-dispatches of one parent (a new related-objects selection, a task given back) before
# diff gives up on it.
MAX_ATTEMPTS = 5
# Worker restarts (a handler that kills its process) before the remaining parents fail.
MAX_RESTARTS = 5
BATCH = 64


@dataclass
class Change:
    """One object that would change: its state now and after the writes (None: absent)."""

    parent: str  # namespace/name (name for a cluster-scoped parent)
    api_version: str
    kind: str
    namespace: str
    name: str
    operations: list[str] = field(default_factory=list)
    live: dict | None = None
    desired: dict | None = None

    @property
    def path(self) -> str:
        """kubectl diff's file name: ``group.version.Kind.namespace.name``."""
        gv = self.api_version.replace("/", ".")
        parts = [gv, self.kind] + ([self.namespace] if self.namespace else []) + [self.name]
        return ".".join(parts)

    def text(self) -> str:
        """The unified diff of this object, live -> desired."""
        before = _yaml(self.live)
        after = _yaml(self.desired)
        return "".join(
            difflib.unified_diff(
                before, after, fromfile=f"live/{self.path}", tofile=f"desired/{self.path}"
            )
        )

    def to_dict(self) -> dict:
        return {
            "parent": self.parent,
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "operations": list(self.operations),
            "live": self.live,
            "desired": self.desired,
            "diff": self.text(),
        }


# libyaml's emitter when PyYAML has it (about 5x faster than the pure-Python one).
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _yaml(obj: dict | None) -> list[str]:
    if obj is None:
        return []
    text = yaml.dump(obj, Dumper=_DUMPER, sort_keys=True, default_flow_style=False)
    return text.splitlines(keepends=True)


def parent_name(parent: dict) -> str:
    meta = parent.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


def changes_of(parent: dict, plan: Iterable[dict]) -> list[Change]:
    """The objects ``plan`` (one task's dry-run writes, in order) would change, each from its
    state before the first write to its state after the last; objects the writes leave as
    they were (created and deleted again, or written back unchanged) are left out.

    A status write changes only the parent's status and a finalizer write only its
    finalizers, so both fold into one change of the parent."""
    by_key: dict[tuple[str, str, str, str], Change] = {}
    pname = parent_name(parent)
    for w in plan:
        key = (w["apiVersion"], w["kind"], w["namespace"], w["name"])
        ch = by_key.get(key)
        if ch is None:
            ch = by_key[key] = Change(pname, *key, live=w["live"], desired=w["live"])
        ch.operations.append(w["operation"])
        answer = w["answer"]
        base = ch.desired if ch.desired is not None else ch.live
        if w["operation"] == "delete":
            ch.desired = None
        elif w["operation"] == "status" and base is not None and answer is not None:
            ch.desired = dict(base)
            if "status" in answer:
                ch.desired["status"] = answer["status"]
            else:
                ch.desired.pop("status", None)
        elif w["operation"] == "finalizer" and base is not None and answer is not None:
            ch.desired = dict(base)
            meta = dict(base.get("metadata") or {})
            meta["finalizers"] = list((answer.get("metadata") or {}).get("finalizers") or [])
            if not meta["finalizers"]:
                meta.pop("finalizers")
            ch.desired["metadata"] = meta
        else:
            ch.desired = answer
    out = []
    for ch in by_key.values():
        ch.live = _clean(ch.live)
        ch.desired = _clean(ch.desired)
        if ch.live != ch.desired:
            out.append(ch)
    return out


def _clean(obj: dict | None) -> dict | None:
    """``obj`` without what the server populates (`apply.SERVER_FIELDS`), as kubectl diff
    shows it."""
    out = without_server_fields(obj)
    if out is not None and not out.get("metadata"):
        out.pop("metadata", None)
    return out


@dataclass
class Report:
    changes: list[Change] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (parent, error)
    parents: int = 0
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        if self.errors:
            return EXIT_ERROR
        return EXIT_CHANGES if self.changes else EXIT_SAME

    def summary(self) -> dict:
        ops: dict[str, int] = {}
        for ch in self.changes:
            for op in ch.operations:
                ops[op] = ops.get(op, 0) + 1
        return {
            "parents": self.parents,
            "parentsChanged": len({ch.parent for ch in self.changes}),
            "objectsChanged": len(self.changes),
            "writes": dict(sorted(ops.items())),
            "errors": len(self.errors),
            "seconds": round(self.seconds, 3),
        }

    def summary_line(self) -> str:
        s = self.summary()
        writes = ", ".join(f"{n} {op}" for op, n in s["writes"].items()) or "no writes"
        return (
            f"{s['objectsChanged']} objects would change in {s['parentsChanged']} of "
            f"{s['parents']} parents ({writes}); {s['errors']} errors"
        )

    def to_dict(self) -> dict:
        return {
            "changes": [ch.to_dict() for ch in self.changes],
            "errors": [{"parent": p, "error": e} for p, e in self.errors],
            "summary": self.summary(),
        }


# ---- running the handlers ----------------------------------------------------------------------


class Differ:
    """Reads the live state and runs every parent's sync once, in dry run, in worker
    processes; `run` returns the `Report`."""

    def __init__(
        self,
        config: Config,
        settings: ClientSettings,
        *,
        parent: str | None = None,
        controller: str | None = None,
        start_method: str = "forkserver",
        workers: int | None = None,
    ) -> None:
        self.config = config
        self.kube = Kube(settings)
        self.only = parent
        self.controllers = [
            c for c in config.controllers if controller is None or c.name == controller
        ]
        self.ctx = worker_context(start_method)
        self.workers = workers or config.workers
        self.cache = Cache(config.parent_uid_label)
        self.related = RelatedTypes(config, lambda _uids: None)
        self.scope = NamespaceScope(config.namespace_patterns, config.namespace_selector)
        self._controller_of: dict[str, str] = {}  # parent uid -> controller name
        self._parent_kinds = {c.parent.kind for c in self.controllers}

    def close(self) -> None:
        self.kube.close()

    # -- live state --

    def _list(self, res: Resource, label_selector: str | None = None) -> list[dict]:
        """Every object of ``res`` in the daemon's namespace scope."""
        if res.namespaced and self.scope.literal:
            out: list[dict] = []
            for ns in self.scope.names:
                items, _ = self.kube.list(res, ns, label_selector=label_selector)
                out.extend(items)
            return out
        items, _ = self.kube.list(res, None, label_selector=label_selector)
        if not res.namespaced or self.scope.everything:
            return items
        labels: dict[str, dict] = {}
        if self.scope.selector:
            spaces, _ = self.kube.list(self.kube.resource("v1", "Namespace"), None)
            labels = {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in spaces}
        return [
            i
            for i in items
            if self.scope.admits(
                i["metadata"].get("namespace", ""), labels.get(i["metadata"].get("namespace", ""))
            )
        ]

    def read(self) -> list[str]:
        """List parents, children and related objects; returns the uids of the parents to
        diff."""
        cfg = self.config
        uids: list[str] = []
        children_seen: set[tuple[str, str]] = set()
        for ctl in self.controllers:
            parent_res = self.kube.resource(ctl.parent.api_version, ctl.parent.kind)
            if self.only is not None:
                ns, _, name = self.only.rpartition("/")
                if parent_res.namespaced and not ns:
                    raise ValueError(
                        f"--parent {self.only!r}: {ctl.parent.kind} needs NAMESPACE/NAME"
                    )
                try:
                    one = self.kube.get(parent_res, name, ns or None)
                except ApiError as exc:
                    if exc.status == 404:
                        raise ValueError(f"{ctl.parent.kind} {self.only} not found") from None
                    raise
                one.setdefault("apiVersion", parent_res.api_version)
                one.setdefault("kind", parent_res.kind)
                parents = [one]
            else:
                parents = self._list(parent_res)
            self.cache.replace_parents(
                parents, api_version=ctl.parent.api_version, kind=ctl.parent.kind
            )
            for p in parents:
                uid = (p.get("metadata") or {}).get("uid")
                if uid:
                    self._controller_of[uid] = ctl.name
                    uids.append(uid)
            selector = f"{cfg.managed_by_label}={cfg.name},{cfg.parent_uid_label}"
            if self.only is not None:
                uid = parents[0]["metadata"]["uid"]
                selector = f"{cfg.managed_by_label}={cfg.name},{cfg.parent_uid_label}={uid}"
            for c in ctl.children:
                if c.key in children_seen and self.only is None:
                    continue
                children_seen.add(c.key)
                res = self.kube.resource(c.api_version, c.kind)
                items = self._list(res, label_selector=selector)
                self.cache.replace_children(res.api_version, res.kind, items)
        if self.related.types:
            self.related.resolve(self.kube.resource)
            for rt, res in zip(self.related.types, self.related.resources, strict=True):
                items = self._list(res, label_selector=rt.label_selector or None)
                self.related.index.replace(res.api_version, res.kind, items)
        return uids

    def _task(self, uid: str, parent: dict | None = None) -> protocol.SyncTask | None:
        cached, children = self.cache.snapshot(uid)
        parent = parent or cached
        if parent is None:
            return None
        return protocol.SyncTask(
            uid,
            parent,
            children,
            None,
            **self.related.task_fields(uid),
            controller=self._controller_of.get(uid, ""),
        )

    # -- the workers --

    def _worker_config(self) -> dict:
        data = self.config.to_dict()
        # stdout carries the diff; the workers' logs go to stderr (see `main`), warnings only.
        if data["logging"]["level"] == "info":
            data["logging"]["level"] = "warning"
        return data

    def run(self) -> Report:
        start = time.monotonic()
        uids = self.read()
        report = Report(parents=len(uids))
        if not uids:
            report.seconds = time.monotonic() - start
            return report
        connection = dataclasses.replace(self.kube.connection(), dry_run=True)
        config_dict, connection_dict = self._worker_config(), connection.to_dict()
        count = max(1, min(self.workers, len(uids)))
        procs = [WorkerProcess(i, config_dict, connection_dict, self.ctx) for i in range(count)]
        try:
            for p in procs:
                p.start()
            self._drive(procs, uids, report)
        finally:
            for p in procs:
                p.stop(timeout=10)
            for p in procs:
                if p.board is not None:
                    p.board.close()
        report.seconds = time.monotonic() - start
        report.changes.sort(key=lambda ch: (ch.parent, ch.kind not in self._parent_kinds, ch.path))
        report.errors.sort()
        return report

    def _drive(self, procs: list[WorkerProcess], uids: list[str], report: Report) -> None:
        pending = list(uids)
        attempts: dict[str, int] = {}
        inflight: list[dict[str, protocol.SyncTask]] = [{} for _ in procs]
        restarts = 0
        next_worker = 0

        def dispatch(items: list[tuple[str, dict | None]]) -> None:
            nonlocal next_worker
            batches: list[list[protocol.SyncTask]] = [[] for _ in procs]
            for uid, parent in items:
                attempts[uid] = attempts.get(uid, 0) + 1
                task = self._task(uid, parent)
                if task is None:
                    continue
                i = next_worker % len(procs)
                next_worker += 1
                batches[i].append(task)
                inflight[i][uid] = task
            for i, tasks in enumerate(batches):
                for k in range(0, len(tasks), BATCH):
                    try:
                        procs[i].send(protocol.Tasks(tuple(tasks[k : k + BATCH])))
                    except WorkerGone:
                        pass  # seen by the receiving loop below

        dispatch([(uid, None) for uid in pending])
        while any(inflight):
            busy = {procs[i].conn: i for i in range(len(procs)) if inflight[i]}
            try:
                readable = set(wait_connections(list(busy), timeout=0.2))
            except (OSError, ValueError):
                readable = set(busy)
            for conn, i in busy.items():
                proc = procs[i]
                if conn not in readable and proc.alive():
                    continue
                try:
                    msg = proc.receive(0)
                except WorkerGone as exc:
                    lost = inflight[i]
                    inflight[i] = {}
                    running = set(proc.running_calls())
                    proc.kill()
                    again: list[tuple[str, dict | None]] = []
                    for uid, task in lost.items():
                        if uid in running or restarts >= MAX_RESTARTS:
                            report.errors.append(
                                (parent_name(task.parent), f"the worker process died: {exc}")
                            )
                        else:
                            again.append((uid, None))
                    restarts += 1
                    if restarts > MAX_RESTARTS:
                        for uid, _ in again:
                            parent = self.cache.parent(uid) or {}
                            report.errors.append((parent_name(parent), "worker keeps dying"))
                        again = []
                    try:
                        proc.start()
                    except WorkerGone as start_exc:
                        for uid, _ in again:
                            parent = self.cache.parent(uid) or {}
                            report.errors.append((parent_name(parent), str(start_exc)))
                        again = []
                    dispatch(again)
                    continue
                if not isinstance(msg, protocol.Results):
                    continue
                retry: list[tuple[str, dict | None]] = []
                for result in msg.results:
                    done = inflight[i].pop(result.uid, None)
                    if done is None:
                        continue
                    step = self._complete(done, result, report, attempts.get(result.uid, 0))
                    if step is not None:
                        retry.append((result.uid, step))
                dispatch(retry)

    def _complete(
        self, task: protocol.SyncTask, result: protocol.SyncResult, report: Report, attempt: int
    ) -> dict | None:
        """Record one result; returns the parent to dispatch again with (a new selection, a
        task given back), or None when the parent is done."""
        name = parent_name(task.parent)
        if result.selection is not None:
            self.related.record(task.uid, result.selection, task.parent)
        again = result.reselect or result.outcome == protocol.ABANDONED
        if again:
            if attempt >= MAX_ATTEMPTS:
                why = result.error or "its related-objects selection keeps changing"
                report.errors.append((name, f"gave up after {attempt} attempts: {why}"))
                return None
            parent = task.parent
            for w in result.written:  # the parent as the server has it now (ParentChanged)
                obj = w["object"]
                if w["action"] == "upsert" and obj.get("kind") == parent.get("kind"):
                    if (obj.get("metadata") or {}).get("uid") == task.uid:
                        parent = obj
            return parent
        if result.outcome == protocol.ERROR:
            report.errors.append((name, result.error or "the sync failed"))
            return None
        report.changes.extend(changes_of(task.parent, result.plan))
        return None


# ---- the command -------------------------------------------------------------------------------


def render(report: Report, out: IO[str], err: IO[str], fmt: str = "diff") -> None:
    if fmt == "json":
        json.dump(report.to_dict(), out, indent=2, sort_keys=False)
        out.write("\n")
    else:
        for ch in report.changes:
            out.write(ch.text())
    for parent, error in report.errors:
        err.write(f"error: {parent}: {error}\n")
    if fmt != "json":
        err.write(report.summary_line() + "\n")
    out.flush()
    err.flush()


def main(
    config_path: str,
    *,
    kubeconfig: str | None = None,
    flags: dict[str, str | None] | None = None,
    parent: str | None = None,
    controller: str | None = None,
    output: str = "diff",
) -> int:
    """``operatord diff``; returns the exit status (0 same, 1 changes, 2 error)."""
    # The diff goes to the original stdout; everything else that writes to fd 1 (this
    # process's logs, the worker processes, the handler's prints) goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        try:
            isolate_import_path()
            config, _ = apply_overrides(load_config(config_path), flags)
            for ctl in config.controllers:
                load_handler(ctl.handler, ctl.python_path)
        except ConfigError as exc:
            for line in getattr(exc, "errors", None) or [str(exc)]:
                print(f"error: {line}", file=sys.stderr)
            return EXIT_ERROR
        except HandlerImportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        names = [c.name for c in config.controllers]
        if controller is not None and controller not in names:
            print(
                f"error: no controller named {controller!r} (have: {', '.join(names)})",
                file=sys.stderr,
            )
            return EXIT_ERROR
        if parent is not None and controller is None and len(names) > 1:
            print(
                "error: --parent needs --controller when the config has several controllers",
                file=sys.stderr,
            )
            return EXIT_ERROR
        level = "warning" if config.logging_level == "info" else config.logging_level
        configure_logging(config.logging_format, level, process="diff")
        differ = Differ(
            config, ClientSettings(kubeconfig=kubeconfig), parent=parent, controller=controller
        )
        try:
            report = differ.run()
        except (ApiError, ValueError, WorkerGone) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        finally:
            differ.close()
        render(report, out, sys.stderr, output)
        return report.exit_code
    finally:
        out.close()
