"""Related objects without a cluster: the selector grammar, the leader's index from objects to
the parents that select them, the handler API and a handler unit-tested with related objects."""

from __future__ import annotations

import base64
import hashlib

import pytest

from examples.websites import Websites
from operatord import Related, SyncRequest, load_config
from operatord.handler import (
    HandlerImportError,
    InvalidResponse,
    load_handler,
    validate_related,
    validate_sync_response,
)
from operatord.related import MetaStub, RelatedIndex, trim_metadata
from operatord.selectors import SelectorError, parse_selector

# ---- label selectors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("", {}, True),
        ("team", {"team": "a"}, True),
        ("team", {}, False),
        ("!team", {}, True),
        ("!team", {"team": "a"}, False),
        ("team=a", {"team": "a"}, True),
        ("team==a", {"team": "b"}, False),
        ("team!=a", {}, True),
        ("team!=a", {"team": "a"}, False),
        ("tier in (web, db)", {"tier": "db"}, True),
        ("tier in (web,db)", {"tier": "cache"}, False),
        ("tier notin (web,db)", {}, True),
        ("team=a,tier notin (db)", {"team": "a", "tier": "web"}, True),
        ("team=a,tier notin (db)", {"team": "a", "tier": "db"}, False),
        ("example.com/team=a", {"example.com/team": "a"}, True),
    ],
)
def test_label_selector_grammar(selector, labels, expected):
    assert parse_selector(selector)(labels) is expected


@pytest.mark.parametrize("selector", ["a in x", "a=(", "=b", "a b", "a=b=c", "(a)", "a)", "a=b c"])
def test_label_selector_rejects_garbage(selector):
    with pytest.raises(SelectorError):
        parse_selector(selector)


# ---- the index ------------------------------------------------------------------------------


def obj(kind, name, namespace="ns", labels=None, rv="1", api_version="v1"):
    meta = {"name": name, "resourceVersion": rv}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels
    return {"apiVersion": api_version, "kind": kind, "metadata": meta}


def parent(uid, namespace="ns"):
    meta = {"name": uid, "uid": uid}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "example.com/v1", "kind": "Website", "metadata": meta}


def by_name(kind, *names, namespace=None):
    return ("v1", kind, tuple(names), namespace, None)


def by_label(kind, selector, namespace=None):
    return ("v1", kind, (), namespace, selector)


def index() -> RelatedIndex:
    return RelatedIndex(
        {("v1", "Secret"): True, ("v1", "ConfigMap"): True, ("v1", "Namespace"): False}
    )


def test_metadata_stubs_are_indexed_like_objects_and_sent_as_metadata():
    idx = index()
    idx.set_selection("p1", (by_label("Secret", "app=web"),), parent("p1"))
    idx.set_selection("p2", (by_name("Secret", "db"),), parent("p2"))
    web = trim_metadata(obj("Secret", "tls", labels={"app": "web"}, rv="7"))
    assert isinstance(web, MetaStub) and web.resource_version == 7
    assert idx.upsert(web) == {"p1"}
    assert idx.upsert(trim_metadata(obj("Secret", "tls", labels={"app": "web"}, rv="7"))) == set()
    assert idx.replace("v1", "Secret", [web, trim_metadata(obj("Secret", "db", rv="3"))]) == {"p2"}
    assert idx.selected("p1") == [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "tls",
                "namespace": "ns",
                "labels": {"app": "web"},
                "resourceVersion": "7",
            },
        }
    ]
    moved = trim_metadata(obj("Secret", "tls", labels={"app": "db"}, rv="8"))
    assert idx.upsert(moved) == {"p1"}  # its old labels matched
    assert idx.selected("p1") == []
    assert idx.delete(trim_metadata(obj("Secret", "db", rv="9"))) == {"p2"}


def test_a_named_object_affects_the_parents_that_name_it_in_their_namespace():
    idx = index()
    idx.set_selection("p1", (by_name("Secret", "tls"),), parent("p1"))
    idx.set_selection("p2", (by_name("Secret", "tls"),), parent("p2", "other"))
    idx.set_selection("p3", (by_name("Secret", "db"),), parent("p3"))
    assert idx.upsert(obj("Secret", "tls")) == {"p1"}
    assert idx.upsert(obj("Secret", "tls", "other")) == {"p2"}
    assert idx.upsert(obj("Secret", "unrelated")) == set()
    assert [o["metadata"]["name"] for o in idx.selected("p1")] == ["tls"]
    assert idx.selected("p3") == []  # selected, but it does not exist


def test_update_delete_and_recreate_affect_the_selecting_parent():
    idx = index()
    idx.set_selection("p1", (by_name("Secret", "tls"),), parent("p1"))
    assert idx.upsert(obj("Secret", "tls", rv="1")) == {"p1"}
    assert idx.upsert(obj("Secret", "tls", rv="2")) == {"p1"}
    assert idx.upsert(obj("Secret", "tls", rv="2")) == set()  # nothing newer: no sync
    assert idx.upsert(obj("Secret", "tls", rv="1")) == set()  # never back in time
    assert idx.delete(obj("Secret", "tls", rv="3")) == {"p1"}
    assert idx.selected("p1") == []
    assert idx.upsert(obj("Secret", "tls", rv="4")) == {"p1"}
    assert idx.selected("p1")[0]["metadata"]["resourceVersion"] == "4"


def test_a_repointed_parent_stops_reacting_to_the_old_object():
    idx = index()
    idx.set_selection("p1", (by_name("Secret", "old"),), parent("p1"))
    idx.set_selection("p1", (by_name("Secret", "new"),), parent("p1"))
    assert idx.upsert(obj("Secret", "old")) == set()
    assert idx.upsert(obj("Secret", "new")) == {"p1"}
    idx.set_selection("p1", (), parent("p1"))
    assert idx.upsert(obj("Secret", "new", rv="2")) == set()
    assert idx.selection("p1") is None


def test_forget_drops_the_selection():
    idx = index()
    idx.set_selection("p1", (by_name("Secret", "tls"), by_label("ConfigMap", "a=b")), parent("p1"))
    idx.forget("p1")
    assert idx.upsert(obj("Secret", "tls")) == set()
    assert idx.upsert(obj("ConfigMap", "c", labels={"a": "b"})) == set()
    assert idx.selection_count() == 0


def test_label_selection_matches_old_and_new_labels():
    idx = index()
    idx.set_selection("p1", (by_label("ConfigMap", "app=web"),), parent("p1"))
    assert idx.upsert(obj("ConfigMap", "c", labels={"app": "db"})) == set()
    assert idx.upsert(obj("ConfigMap", "c", labels={"app": "web"}, rv="2")) == {"p1"}
    # the object leaves the selection: the parent must see it go
    assert idx.upsert(obj("ConfigMap", "c", labels={"app": "db"}, rv="3")) == {"p1"}
    assert idx.selected("p1") == []
    assert idx.upsert(obj("ConfigMap", "c", "elsewhere", {"app": "web"})) == set()


def test_names_and_label_selector_together_must_both_match():
    idx = index()
    idx.set_selection("p1", (("v1", "ConfigMap", ("c",), None, "app=web"),), parent("p1"))
    assert idx.upsert(obj("ConfigMap", "c", labels={"app": "db"})) == set()
    assert idx.upsert(obj("ConfigMap", "d", labels={"app": "web"})) == set()
    assert idx.upsert(obj("ConfigMap", "c", labels={"app": "web"}, rv="2")) == {"p1"}
    assert [o["metadata"]["name"] for o in idx.selected("p1")] == ["c"]


def test_cluster_scoped_types_ignore_namespaces_and_explicit_namespaces_are_honoured():
    idx = index()
    idx.set_selection("p1", (by_label("Namespace", "team=a"),), parent("p1"))
    idx.set_selection("p2", (by_name("Secret", "shared", namespace="infra"),), parent("p2"))
    assert idx.upsert(obj("Namespace", "team-a-prod", None, {"team": "a"})) == {"p1"}
    assert idx.upsert(obj("Namespace", "team-b-prod", None, {"team": "b"})) == set()
    assert [o["metadata"]["name"] for o in idx.selected("p1")] == ["team-a-prod"]
    assert idx.upsert(obj("Secret", "shared", "ns")) == set()
    assert idx.upsert(obj("Secret", "shared", "infra")) == {"p2"}


def test_a_cluster_scoped_parent_selects_in_every_namespace():
    idx = index()
    idx.set_selection("g", (by_name("Secret", "tls"),), parent("g", namespace=None))
    assert idx.upsert(obj("Secret", "tls", "a")) == {"g"}
    assert idx.upsert(obj("Secret", "tls", "b")) == {"g"}
    assert len(idx.selected("g")) == 2


def test_undeclared_types_and_bad_selectors_select_nothing_in_the_leader():
    idx = index()
    idx.set_selection("p1", (("apps/v1", "Deployment", ("d",), None, None),), parent("p1"))
    assert idx.upsert(obj("Deployment", "d", api_version="apps/v1")) == set()


def test_relist_reports_what_changed_only():
    idx = index()
    idx.set_selection("p1", (by_name("Secret", "a"),), parent("p1"))
    idx.set_selection("p2", (by_name("Secret", "b"),), parent("p2"))
    idx.set_selection("p3", (by_name("Secret", "c"),), parent("p3"))
    assert idx.replace("v1", "Secret", [obj("Secret", "a"), obj("Secret", "b")]) == {"p1", "p2"}
    # a unchanged, b changed, c appeared, an unrelated one appeared
    fresh = [obj("Secret", "a"), obj("Secret", "b", rv="2"), obj("Secret", "c"), obj("Secret", "x")]
    assert idx.replace("v1", "Secret", fresh) == {"p2", "p3"}
    assert idx.replace("v1", "Secret", [obj("Secret", "c")]) == {"p1", "p2"}
    assert idx.count("v1", "Secret") == 1


def test_a_change_evaluates_only_the_label_selections_of_its_type_and_namespace():
    calls = []
    idx = RelatedIndex({("v1", "ConfigMap"): True, ("v1", "Secret"): True})
    for i in range(5000):  # name selections: found by dict lookup only
        idx.set_selection(f"n{i}", (by_name("Secret", f"s{i}"),), parent(f"n{i}", f"ns{i % 50}"))
    for i in range(100):  # label selections in other namespaces
        idx.set_selection(f"l{i}", (by_label("Secret", "x=y"),), parent(f"l{i}", f"other{i}"))
    idx.set_selection("here", (by_label("Secret", "x=y"),), parent("here", "ns1"))
    real = idx._by_label[("v1", "Secret", "ns1")]["here"][0].matcher
    idx._by_label[("v1", "Secret", "ns1")]["here"][0].matcher = lambda labels: (
        calls.append(labels) or real(labels)
    )
    assert idx.upsert(obj("Secret", "unrelated", "ns1")) == set()
    assert len(calls) == 1  # one label selection evaluated; no parent scanned
    assert idx.upsert(obj("Secret", "s7", "ns7")) == {"n7"}


def test_200_parents_sharing_an_object_are_all_affected_once():
    idx = index()
    for i in range(200):
        idx.set_selection(f"p{i}", (by_name("ConfigMap", "shared"),), parent(f"p{i}"))
    assert idx.upsert(obj("ConfigMap", "shared", rv="5")) == {f"p{i}" for i in range(200)}


# ---- the handler API ----------------------------------------------------------------------


ALLOWED = {("v1", "Secret"), ("v1", "Namespace")}


def test_validate_related_returns_plain_data_in_order():
    selection = validate_related(
        [
            Related("v1", "Secret", names=["tls"]),
            Related("v1", "Namespace", label_selector="team=a"),
            Related("v1", "Secret", names=("a", "b"), namespace="infra", label_selector=""),
        ],
        allowed_types=ALLOWED,
    )
    assert selection == (
        ("v1", "Secret", ("tls",), None, None),
        ("v1", "Namespace", (), None, "team=a"),
        ("v1", "Secret", ("a", "b"), "infra", ""),
    )
    assert validate_related([], allowed_types=ALLOWED) == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "related returned None"),
        (Related("v1", "Secret", names=["a"]), "must return a list of Related"),
        (["tls"], "related[0] must be a Related"),
        (
            [Related("v1", "ConfigMap", names=["a"])],
            "related[0] selects v1/ConfigMap, which is not a configured related type "
            "(configured: v1/Namespace, v1/Secret)",
        ),
        ([Related("v1", "Secret", names="tls")], "related[0].names must be a list of names"),
        ([Related("v1", "Secret", names=[""])], "related[0].names[0] must be a non-empty string"),
        ([Related("v1", "Secret")], "related[0] selects nothing"),
        ([Related("v1", "Secret", label_selector="a b")], "related[0].label_selector: cannot"),
        ([Related("v1", "Secret", names=["a"], namespace=3)], "namespace must be a string"),
    ],
)
def test_validate_related_rejects_what_the_leader_cannot_index(value, message):
    with pytest.raises(InvalidResponse) as info:
        validate_related(value, allowed_types=ALLOWED)
    assert message in str(info.value)


def test_loaded_handlers_expose_related(tmp_path):
    module = tmp_path / "rel_handlers.py"
    module.write_text(
        "from operatord import Handler, Related, SyncResponse\n"
        "class Plain(Handler):\n"
        "    def sync(self, request):\n"
        "        return SyncResponse()\n"
        "class Selecting(Plain):\n"
        "    def related(self, parent):\n"
        "        return [Related('v1', 'Secret', names=['x'])]\n"
        "def sync(request):\n"
        "    return SyncResponse()\n"
        "sync.related = lambda parent: [Related('v1', 'Secret', names=[parent['n']])]\n"
        "def bare(request):\n"
        "    return SyncResponse()\n"
        "def broken(request):\n"
        "    return SyncResponse()\n"
        "broken.related = 'not callable'\n"
    )
    path = [str(tmp_path)]
    assert load_handler("rel_handlers:Plain", path).related is None
    assert load_handler("rel_handlers:bare", path).related is None
    assert load_handler("rel_handlers:Selecting", path).related({})[0].names == ["x"]
    assert load_handler("rel_handlers:sync", path).related({"n": "s"})[0].names == ["s"]
    with pytest.raises(HandlerImportError, match="related is not callable"):
        load_handler("rel_handlers:broken", path)


def test_request_related_behaves_like_children():
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls", "namespace": "a"}}
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}
    request = SyncRequest.build(parent("p1"), related=[secret, ns])
    assert len(request.related) == 2
    assert list(request.related) == [secret, ns]
    assert request.related.of_type("v1", "Secret").get("tls") is secret
    assert request.related.of_type("v1", "Secret").get("other") is None
    assert len(request.related.of_type("v1", "ConfigMap")) == 0
    assert len(SyncRequest.build(parent("p1")).related) == 0


# ---- the example, unit-tested with SyncRequest.build(..., related=...) ------------------------

CERT = b"-----BEGIN CERTIFICATE-----\nexample\n-----END CERTIFICATE-----\n"


def website(**spec):
    return {
        "apiVersion": "example.com/v1",
        "kind": "Website",
        "metadata": {"name": "www", "namespace": "web", "uid": "u1"},
        "spec": {"host": "www.example.com", **spec},
    }


def tls_secret(name="www-tls", cert=CERT):
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "web"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": base64.b64encode(cert).decode(), "tls.key": "c2VjcmV0"},
    }


def test_website_selects_its_secret_and_team_namespaces():
    selection = Websites().related(website(tlsSecret="www-tls", team="web"))
    assert selection == [
        Related("v1", "Secret", names=["www-tls"]),
        Related("v1", "Namespace", label_selector="team=web"),
    ]
    cfg = load_config("examples/websites.yaml")
    validate_related(selection, allowed_types=cfg.related_keys)
    assert Websites().related(website()) == []


def test_website_reports_the_certificate_fingerprint_from_its_related_secret():
    team_ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web-prod"}}
    request = SyncRequest.build(
        website(tlsSecret="www-tls", team="web"), related=[tls_secret(), team_ns]
    )
    response = Websites().sync(request)
    fingerprint = hashlib.sha256(CERT).hexdigest()[:16]
    assert response.status == {
        "tls": "ready",
        "certSha256": fingerprint,
        "teamNamespaces": ["web-prod"],
    }
    assert response.children[0]["data"]["certSha256"] == fingerprint
    assert "c2VjcmV0" not in repr(response)  # the key never leaves the handler
    cfg = load_config("examples/websites.yaml")
    validate_sync_response(response, default_namespace="web", allowed_types=cfg.child_keys)


def test_website_without_its_secret_reports_missing():
    response = Websites().sync(SyncRequest.build(website(tlsSecret="www-tls")))
    assert response.status["tls"] == "missing"
    other = Websites().sync(
        SyncRequest.build(website(tlsSecret="www-tls"), related=[tls_secret("other")])
    )
    assert other.status["tls"] == "missing"


def test_related_secrets_are_redacted_in_log_events():
    from operatord.logs import REDACTED, redact_secrets

    secret = tls_secret()
    event = {"event": "task", "related": [secret, {"kind": "ConfigMap", "data": {"a": "b"}}]}
    out = redact_secrets(None, "info", event)
    assert out["related"][0]["data"] == {"tls.crt": REDACTED, "tls.key": REDACTED}
    assert out["related"][1]["data"] == {"a": "b"}
    assert secret["data"]["tls.key"] == "c2VjcmV0"  # the handler's copy is untouched
