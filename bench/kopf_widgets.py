"""kopf twin of the example Widget operator (examples/widgets.py), for bench/vs_kopf.py.

The same job per Widget as operatord does with examples.widgets: a finalizer (kopf adds its own
because there is a delete handler; the ConfigMap is garbage-collected through its owner
reference, so the handler has nothing to clean up), one owned ConfigMap ``<name>`` holding the
spec (``size``, ``message``), created or updated with the official kubernetes client, and the
status ``{ready, configMap, observedGeneration}`` set through kopf's ``patch``.

- create: create the ConfigMap (on 409 AlreadyExists: patch its data);
- update: patch the ConfigMap's data (on 404: create it);
- resume (operator restart): read the ConfigMap and write only what differs, so a restart over
  converged Widgets writes nothing;
- the status is patched only when it differs.

Writes use ``_preload_content=False``: the client does not build typed models from answers the
handler does not read, which would only add client CPU to kopf's side.

Environment (set by the benchmark):
- ``KUBECONFIG``: the embedded API server (kopf logs in through the kubernetes client);
- ``BENCH_BURN_SECONDS``: CPU each handler call burns (the ``cpu`` scenario), default 0;
- ``BENCH_KOPF_CALLS``: a file that gets one letter per handler call (``c`` create, ``u``
  update, ``r`` resume, ``d`` delete): how the benchmark counts handler calls;
- ``BENCH_KOPF_THREADS``: the size of kopf's thread pool for synchronous handlers
  (``settings.execution.max_workers``); unset keeps kopf's default (a ``ThreadPoolExecutor()``:
  min(32, CPUs + 4) threads);
- ``BENCH_KOPF_POOL``: a file that gets the size of the pool kopf runs with, at start-up.

    KUBECONFIG=... python -m kopf run bench/kopf_widgets.py --standalone --all-namespaces -q
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading

import kopf
import kubernetes
from kubernetes.client.exceptions import ApiException

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from burn import burn_cpu  # noqa: E402

GROUP, VERSION, PLURAL = "example.com", "v1", "widgets"
DEFAULT_SIZE = 1
BURN_SECONDS = float(os.environ.get("BENCH_BURN_SECONDS") or 0)

_calls_lock = threading.Lock()
_calls = open(os.environ["BENCH_KOPF_CALLS"], "a") if os.environ.get("BENCH_KOPF_CALLS") else None  # noqa: SIM115
_core: kubernetes.client.CoreV1Api | None = None


def _called(letter: str) -> None:
    if _calls is not None:
        with _calls_lock:
            _calls.write(letter)
            _calls.flush()


def _api() -> kubernetes.client.CoreV1Api:
    global _core
    if _core is None:
        kubernetes.config.load_kube_config()  # KUBECONFIG
        _core = kubernetes.client.CoreV1Api()
    return _core


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_) -> None:
    # operatord posts only Warning events (failures); kopf by default also posts an Info event
    # per handler success, which would be one more write per change.
    settings.posting.level = logging.WARNING
    if os.environ.get("BENCH_KOPF_THREADS"):
        settings.execution.max_workers = int(os.environ["BENCH_KOPF_THREADS"])
    if os.environ.get("BENCH_KOPF_POOL"):
        pool = getattr(settings.execution.executor, "_max_workers", None)
        with open(os.environ["BENCH_KOPF_POOL"], "w") as f:
            f.write(str(pool or ""))
    _api()


def _desired_data(spec) -> dict[str, str]:
    return {"size": str(spec.get("size", DEFAULT_SIZE)), "message": str(spec.get("message", ""))}


def _config_map(name: str, data: dict, body) -> dict:
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"example.com/widget": name}},
        "data": data,
    }
    kopf.adopt(cm, owner=body)  # ownerReference (controller), namespace
    return cm


def _set_status(body, patch, name: str) -> None:
    want = {"ready": True, "configMap": name, "observedGeneration": body.meta.get("generation")}
    have = body.get("status") or {}
    if any(have.get(k) != v for k, v in want.items()):
        for k, v in want.items():
            patch.status[k] = v


def _create(name: str, namespace: str, data: dict, body) -> None:
    try:
        _api().create_namespaced_config_map(
            namespace, _config_map(name, data, body), _preload_content=False
        )
    except ApiException as exc:
        if exc.status != 409:
            raise
        _patch(name, namespace, data, body)


def _patch(name: str, namespace: str, data: dict, body) -> None:
    try:
        _api().patch_namespaced_config_map(name, namespace, {"data": data}, _preload_content=False)
    except ApiException as exc:
        if exc.status != 404:
            raise
        _create(name, namespace, data, body)


@kopf.on.create(GROUP, VERSION, PLURAL)
def create_widget(spec, name, namespace, body, patch, **_) -> None:
    _called("c")
    burn_cpu(BURN_SECONDS)
    _create(name, namespace, _desired_data(spec), body)
    _set_status(body, patch, name)


@kopf.on.update(GROUP, VERSION, PLURAL)
def update_widget(spec, name, namespace, body, patch, **_) -> None:
    _called("u")
    burn_cpu(BURN_SECONDS)
    _patch(name, namespace, _desired_data(spec), body)
    _set_status(body, patch, name)


@kopf.on.resume(GROUP, VERSION, PLURAL)
def resume_widget(spec, name, namespace, body, patch, **_) -> None:
    _called("r")
    burn_cpu(BURN_SECONDS)
    data = _desired_data(spec)
    try:
        cm = _api().read_namespaced_config_map(name, namespace, _preload_content=False)
    except ApiException as exc:
        if exc.status != 404:
            raise
        _create(name, namespace, data, body)
    else:
        if (json.loads(cm.data).get("data") or {}) != data:
            _patch(name, namespace, data, body)
    _set_status(body, patch, name)


@kopf.on.delete(GROUP, VERSION, PLURAL)
def delete_widget(**_) -> None:
    _called("d")  # the ConfigMap goes with its owner (garbage collector)
