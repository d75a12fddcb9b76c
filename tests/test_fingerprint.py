"""The inputs fingerprint of skipUnchanged: each input, changed alone, changes it; what is not
an input (status, server bookkeeping, order) does not; the controller digest follows the
config and the handler's source, and is the same in the leader and in a worker."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import pytest

from operatord import fingerprint
from operatord.config import Config

DIGEST = "d" * 32


def parent() -> dict:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {
            "name": "w",
            "namespace": "ns",
            "uid": "u-1",
            "resourceVersion": "10",
            "generation": 2,
            "labels": {"app": "w"},
            "annotations": {"note": "a"},
            "finalizers": ["operatord.io/e2e"],
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {"size": 3},
        "status": {"ready": True},
    }


def obj(kind: str, name: str, rv: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv},
    }


CHILDREN = [obj("ConfigMap", "w", "11"), obj("Secret", "w", "12")]
SELECTION = (("v1", "Secret", ("tls",), None, None),)
RELATED = [obj("Secret", "tls", "5")]


def base(**changes) -> str:
    args = {
        "digest": DIGEST,
        "parent": parent(),
        "children": CHILDREN,
        "selection": SELECTION,
        "related": RELATED,
    }
    args.update(changes)
    return fingerprint.of(
        args["digest"], args["parent"], args["children"], args["selection"], args["related"]
    )


def edited(path: tuple, value) -> dict:
    p = parent()
    target = p
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return p


# ---- each input, changed alone, changes the fingerprint -------------------------------------


@pytest.mark.parametrize(
    "path, value",
    [
        (("spec", "size"), 4),
        (("metadata", "labels"), {"app": "w", "tier": "web"}),
        (("metadata", "annotations"), {"note": "b"}),
        (("metadata", "finalizers"), []),
        (("metadata", "ownerReferences"), [{"uid": "o"}]),
        (("metadata", "deletionTimestamp"), "2024-01-01T00:00:00Z"),
        (("metadata", "name"), "v"),
        (("metadata", "uid"), "u-2"),
    ],
)
def test_a_change_to_the_parent_changes_it(path, value):
    assert base(parent=edited(path, value)) != base()


@pytest.mark.parametrize(
    "path, value",
    [
        (("status",), {"ready": False, "observedInputs": {"fingerprint": "x"}}),
        (("metadata", "resourceVersion"), "99"),
        (("metadata", "generation"), 7),
        (("metadata", "managedFields"), []),
    ],
)
def test_status_and_server_bookkeeping_are_not_inputs(path, value):
    assert base(parent=edited(path, value)) == base()


def test_a_child_changed_added_or_deleted_changes_it():
    assert base(children=[obj("ConfigMap", "w", "13"), CHILDREN[1]]) != base()
    assert base(children=[*CHILDREN, obj("ConfigMap", "extra", "14")]) != base()
    assert base(children=CHILDREN[:1]) != base()
    # Recreated under the same name: a new resourceVersion.
    assert base(children=[obj("ConfigMap", "w", "20"), CHILDREN[1]]) != base()


def test_the_order_of_children_and_related_objects_does_not_matter():
    assert base(children=list(reversed(CHILDREN))) == base()
    two = [obj("Secret", "a", "1"), obj("Secret", "b", "2")]
    assert base(related=two) == base(related=list(reversed(two)))


def test_a_related_object_or_the_selection_changed_changes_it():
    assert base(related=[obj("Secret", "tls", "6")]) != base()
    assert base(related=[]) != base()
    assert base(selection=(("v1", "Secret", ("other",), None, None),)) != base()


def test_no_selection_and_an_empty_selection_are_the_same_input():
    assert base(selection=None) == base(selection=())


def test_the_controller_digest_is_an_input():
    assert base(digest="e" * 32) != base()


# ---- the controller digest -------------------------------------------------------------------


def config(tmp_path, **top) -> Config:
    return Config.from_dict(
        {
            "name": "shop",
            "handler": "shophandler:Handler",
            "pythonPath": [str(tmp_path)],
            "parent": {"apiVersion": "example.com/v1", "kind": "Widget"},
            "children": [{"apiVersion": "v1", "kind": "ConfigMap"}],
            **top,
        }
    )


@pytest.fixture
def handler_dir(tmp_path):
    (tmp_path / "shophandler.py").write_text("def sync(request):\n    return None\n")
    return tmp_path


@pytest.mark.parametrize(
    "change",
    [
        {"children": [{"apiVersion": "v1", "kind": "Secret"}]},
        {"children": [{"apiVersion": "v1", "kind": "ConfigMap", "updateStrategy": "Apply"}]},
        {"related": [{"apiVersion": "v1", "kind": "Secret"}]},
        {"conditions": False},
        {"handlerVersion": "v2"},
        {"name": "other"},  # the finalizer and managed-by label derive from it
    ],
)
def test_a_config_change_changes_the_controller_digest(handler_dir, change):
    before = fingerprint.controller_digest(config(handler_dir).controllers[0])
    after = fingerprint.controller_digest(config(handler_dir, **change).controllers[0])
    assert before != after


def test_the_digest_is_the_same_in_a_worker_as_in_the_leader(handler_dir):
    for cfg in (
        config(handler_dir, handlerVersion="v1"),
        Config.from_dict(
            {
                "name": "shop",
                "resyncSeconds": 5,
                "controllers": [
                    {
                        "name": "a",
                        "handler": "shophandler:Handler",
                        "pythonPath": [str(handler_dir)],
                        "parent": {"apiVersion": "example.com/v1", "kind": "Widget"},
                        "skipUnchanged": True,
                    }
                ],
            }
        ),
    ):
        worker_side = Config.from_trusted_dict(cfg.to_dict())
        for leader_ctl, worker_ctl in zip(cfg.controllers, worker_side.controllers, strict=True):
            assert fingerprint.controller_digest(leader_ctl) == fingerprint.controller_digest(
                worker_ctl
            )


def test_a_changed_handler_source_changes_the_version(handler_dir):
    ctl = config(handler_dir).controllers[0]
    first = fingerprint.handler_version(ctl)
    assert first.startswith("source:") and not fingerprint.unknown(first)
    assert fingerprint.handler_version(ctl) == first  # stable
    (handler_dir / "shophandler.py").write_text("def sync(request):\n    return None  # v2\n")
    assert fingerprint.handler_version(ctl) != first


def test_a_changed_file_of_the_handlers_package_changes_the_version(tmp_path):
    pkg = tmp_path / "shoppkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "handlers.py").write_text("from shoppkg.sub.helpers import f\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "helpers.py").write_text("def f():\n    return 1\n")
    first = fingerprint.source_version("shoppkg.handlers:Handler", [str(tmp_path)])
    (pkg / "sub" / "helpers.py").write_text("def f():\n    return 2\n")
    assert fingerprint.source_version("shoppkg.handlers:Handler", [str(tmp_path)]) != first


def test_an_explicit_version_replaces_the_source_hash(handler_dir):
    ctl = config(handler_dir, handlerVersion="1.2.3").controllers[0]
    version = fingerprint.handler_version(ctl)
    assert version == "set:1.2.3"
    (handler_dir / "shophandler.py").write_text("# changed\n")
    assert fingerprint.handler_version(ctl) == version


def test_a_handler_whose_source_is_not_found_never_matches_another_process(tmp_path):
    version = fingerprint.source_version("no_such_module_here:f", [str(tmp_path)])
    assert fingerprint.unknown(version)
    # Another process draws another token: nothing recorded by it is ever matched.
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                from operatord import fingerprint
                print(fingerprint.source_version("no_such_module_here:f"))
                """
            ),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert fingerprint.unknown(other) and other != version


# ---- the record in the status ------------------------------------------------------------------


def test_the_record_reads_back_with_its_selection():
    value = fingerprint.record("abc", SELECTION)
    p = parent()
    p["status"] = {"ready": True, fingerprint.FIELD: copy.deepcopy(value)}
    got = fingerprint.recorded(p)
    assert got == fingerprint.Recorded("abc", SELECTION)
    # Read back from JSON (lists), the selection is the wire form again: same fingerprint.
    assert base(selection=got.selection) == base()


@pytest.mark.parametrize(
    "status",
    [None, {}, {"observedInputs": "abc"}, {"observedInputs": {"fingerprint": ""}}, []],
)
def test_anything_else_records_nothing(status):
    p = parent()
    p["status"] = status
    assert fingerprint.recorded(p) is None
