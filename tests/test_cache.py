import random

from operatord.apply import is_subset, overlay
from operatord.cache import PARENT_UID_LABEL, Cache, newer


def parent(uid, rv, name="p"):
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": str(rv)},
    }


def child(name, owner, rv, kind="ConfigMap"):
    return {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "ns",
            "resourceVersion": str(rv),
            "labels": {"operatord.io/parent-uid": owner} if owner else {},
        },
    }


def test_newer_compares_numerically():
    assert newer("10", "9")
    assert not newer("9", "10")
    assert not newer("10", "10")
    assert newer("1", None)
    assert not newer(None, "1")


def test_parent_upsert_ignores_stale_and_equal_versions():
    c = Cache()
    assert c.upsert_parent(parent("u1", 5))
    assert not c.upsert_parent(parent("u1", 5))
    assert not c.upsert_parent(parent("u1", 4))
    assert c.upsert_parent(parent("u1", 6))
    assert c.parent("u1")["metadata"]["resourceVersion"] == "6"


def test_children_are_indexed_by_parent_label():
    c = Cache()
    c.upsert_parent(parent("u1", 1))
    assert c.upsert_child(child("a", "u1", 2)) == {"u1"}
    assert c.upsert_child(child("b", "u1", 3, kind="Secret")) == {"u1"}
    c.upsert_child(child("orphan", None, 4))
    p, kids = c.snapshot("u1")
    assert p["metadata"]["uid"] == "u1"
    assert sorted(k["metadata"]["name"] for k in kids) == ["a", "b"]
    assert c.counts() == {"parents": 1, "v1/ConfigMap": 1, "v1/Secret": 1}


def test_own_write_fed_back_makes_the_later_identical_event_a_no_op():
    c = Cache()
    c.upsert_parent(parent("u1", 1))
    assert c.upsert_child(child("a", "u1", 7)) == {"u1"}  # the worker's write
    assert c.upsert_child(child("a", "u1", 7)) == set()  # the watch event for it
    assert c.upsert_child(child("a", "u1", 6)) == set()  # an older event


def test_tombstone_hides_older_versions_of_a_deleted_child():
    c = Cache()
    c.upsert_child(child("a", "u1", 5))
    assert c.delete_child(child("a", "u1", 5), tombstone=True) == {"u1"}
    assert c.upsert_child(child("a", "u1", 5)) == set()
    assert c.snapshot("u1")[1] == []
    # A re-created child (newer version) is accepted again.
    assert c.upsert_child(child("a", "u1", 9)) == {"u1"}
    assert len(c.snapshot("u1")[1]) == 1


def test_child_moving_between_parents_affects_both():
    c = Cache()
    c.upsert_child(child("a", "u1", 1))
    assert c.upsert_child(child("a", "u2", 2)) == {"u1", "u2"}
    assert c.snapshot("u1")[1] == []
    assert len(c.snapshot("u2")[1]) == 1


def test_replace_children_reports_removed_and_changed_only():
    c = Cache()
    c.upsert_child(child("a", "u1", 1))
    c.upsert_child(child("b", "u2", 2))
    affected = c.replace_children("v1", "ConfigMap", [child("a", "u1", 1), child("c", "u3", 5)])
    assert affected == {"u2", "u3"}
    assert c.snapshot("u2")[1] == []


def test_replace_parents_returns_changed_and_removed():
    c = Cache()
    c.upsert_parent(parent("u1", 1))
    c.upsert_parent(parent("u2", 1))
    c.upsert_child(child("a", "u2", 3))
    changed, removed = c.replace_parents([parent("u1", 1), parent("u3", 1)])
    assert changed == {"u3"}
    assert removed == {"u2"}
    assert c.snapshot("u2") == (None, [])


def test_is_subset_compares_only_desired_fields():
    observed = {"metadata": {"name": "a", "uid": "x"}, "data": {"k": "v"}, "extra": 1}
    assert is_subset({"metadata": {"name": "a"}, "data": {"k": "v"}}, observed)
    assert not is_subset({"data": {"k": "w"}}, observed)
    assert not is_subset({"data": {"k": "v", "k2": "v"}}, observed)
    assert not is_subset({"list": [1, 2]}, {"list": [1, 2, 3]})
    assert is_subset({"list": [{"a": 1}]}, {"list": [{"a": 1, "b": 2}]})
    assert not is_subset({"flag": True}, {"flag": 1})


def test_overlay_merges_dicts_and_replaces_the_rest():
    base = {
        "metadata": {"name": "a", "resourceVersion": "3"},
        "data": {"x": "1", "y": "2"},
        "l": [1],
    }
    top = {"data": {"x": "9"}, "l": [2, 3]}
    assert overlay(base, top) == {
        "metadata": {"name": "a", "resourceVersion": "3"},
        "data": {"x": "9", "y": "2"},
        "l": [2, 3],
    }
    assert base["data"]["x"] == "1"  # inputs untouched


def test_counts_stay_exact_through_any_sequence_of_changes():
    rng = random.Random(7)
    c = Cache()
    parents = [f"p{i}" for i in range(5)]
    for uid in parents:
        c.upsert_parent({"metadata": {"uid": uid, "resourceVersion": "1"}})
    rv = 1
    for _ in range(2000):
        rv += 1
        kind = rng.choice(["ConfigMap", "Secret"])
        obj = {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": {
                "name": f"c{rng.randrange(20)}",
                "namespace": "ns",
                "resourceVersion": str(rv),
                "labels": {PARENT_UID_LABEL: rng.choice(parents)},
            },
        }
        op = rng.random()
        if op < 0.6:
            c.upsert_child(obj)
        elif op < 0.85:
            c.delete_child(obj, tombstone=rng.random() < 0.5)
        elif op < 0.95:
            c.replace_children("v1", kind, [obj])
        else:
            uid = rng.choice(parents)
            c.delete_parent({"metadata": {"uid": uid}})
            c.upsert_parent({"metadata": {"uid": uid, "resourceVersion": str(rv)}})
        expected: dict[str, int] = {"parents": len(parents)}
        for api_version, k, _, _ in c._child:
            expected[f"{api_version}/{k}"] = expected.get(f"{api_version}/{k}", 0) + 1
        assert c.counts() == expected


def test_cached_objects_carry_no_managed_fields():
    c = Cache()
    p = parent("u1", 1)
    p["metadata"]["managedFields"] = [{"manager": "m", "fieldsV1": {"f:spec": {}}}]
    kid = child("c1", "u1", 2)
    kid["metadata"]["managedFields"] = [{"manager": "m"}]
    c.upsert_parent(p)
    c.upsert_child(kid)
    got, children = c.snapshot("u1")
    assert "managedFields" not in got["metadata"]
    assert ["managedFields" in k["metadata"] for k in children] == [False]
    listed = child("c2", "u1", 3)
    listed["metadata"]["managedFields"] = []
    c.replace_children("v1", "ConfigMap", [listed])
    assert all("managedFields" not in k["metadata"] for k in c.snapshot("u1")[1])


def test_deletions_index_follows_upserts_deletes_and_replaces():
    c = Cache()
    deleting = parent("u1", 1)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-02T03:04:05Z"
    c.upsert_parent(parent("u0", 1))
    c.upsert_parent(deleting)
    assert c.deletions() == [1767323045.0]
    gone_later = parent("u2", 1)
    gone_later["metadata"]["deletionTimestamp"] = "2026-01-02T03:05:05Z"
    c.replace_parents([parent("u0", 2), gone_later])  # u1 is gone, u2 is being deleted
    assert c.deletions() == [1767323105.0]
    c.delete_parent(gone_later)
    assert c.deletions() == []
    c.upsert_parent(deleting)
    c.upsert_parent(parent("u1", 2))  # a newer version without the timestamp (cannot happen in
    assert c.deletions() == []  # the API, but the index follows what is stored)


def test_parent_counts_by_type_follow_every_way_parents_come_and_go():
    def p(kind, name, ns="a", rv="1"):
        return {
            "apiVersion": "x/v1",
            "kind": kind,
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": f"{kind}-{ns}-{name}",
                "resourceVersion": rv,
            },
        }

    c = Cache()
    c.upsert_parent(p("A", "1"))
    c.upsert_parent(p("A", "1", rv="2"))  # an update is not a new parent
    c.upsert_parent(p("B", "1", ns="b"))
    assert c.parent_counts() == {("x/v1", "A"): 1, ("x/v1", "B"): 1}
    c.replace_parents([p("A", "2"), p("A", "3")], api_version="x/v1", kind="A")
    assert c.parent_counts() == {("x/v1", "A"): 2, ("x/v1", "B"): 1}
    c.drop_namespace("b")
    c.delete_parent(p("A", "2"))
    assert c.parent_counts() == {("x/v1", "A"): 1}
    c.replace_parents([p("B", "9")])
    assert c.parent_counts() == {("x/v1", "B"): 1}
    assert sum(c.parent_counts().values()) == c.parent_count()


def test_cached_objects_come_back_equal_whatever_path_they_came_by():
    """A parent from a watch, one from a list (packed as it arrived) and a child a worker
    wrote come back equal to what was stored, without managedFields, as fresh copies; the
    caller's object is not changed."""
    import json

    def decoded(name: str, uid: str, parent_uid: str = "", **extra: object) -> dict:
        obj = {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {
                "name": name,
                "namespace": "team-a",
                "uid": uid,
                "resourceVersion": "5",
                "labels": {"operatord.io/parent-uid": parent_uid} if parent_uid else {},
                "managedFields": [{"manager": "x"}],
            },
            "spec": {"ratio": 0.1, "big": 2**70, "text": "gr\u00fc\u00dfe \ud83d\ude00", **extra},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }
        return json.loads(json.dumps(obj))

    def without_managed_fields(obj: dict) -> dict:
        out = json.loads(json.dumps(obj))
        del out["metadata"]["managedFields"]
        return out

    cache = Cache()
    long_uid = "u" * 40
    listed = decoded("a", long_uid)
    watched = decoded("b", "uid-b", blob="x" * 100_000)  # larger than the codec's window
    kid = decoded("c", "uid-c", parent_uid="uid-b")
    kid.update(apiVersion="v1", kind="ConfigMap")
    cache.replace_parents([cache.pack(listed)])
    cache.upsert_parent(watched)
    cache.upsert_child(kid)
    assert "managedFields" in watched["metadata"] and "managedFields" in kid["metadata"]
    a, b = cache.parent(long_uid), cache.parent("uid-b")
    (c,) = cache.snapshot("uid-b")[1]
    assert a == without_managed_fields(listed)
    assert b == without_managed_fields(watched)
    assert c == without_managed_fields(kid)
    assert cache.parent("uid-b") is not b  # every read is a copy of its own
    assert cache.parent_type("uid-b") == ("example.com/v1", "Widget")
    assert cache.parent_name("uid-b") == ("team-a", "b")
    assert cache.has_parent(long_uid) and not cache.has_parent("nope")


def test_a_cached_object_is_stored_as_a_small_compressed_record():
    """What the leader holds per object: the record's blob is compressed against its type's
    dictionary, so an object costs a fraction of its JSON, also when the first object of its
    type looked different."""
    import json

    from operatord.cache import pack

    def widget(i: int) -> dict:
        return {
            "apiVersion": "test.example.com/v1",
            "kind": "Gadget",
            "metadata": {
                "name": f"g-{i:05d}",
                "namespace": "team-a",
                "uid": f"5b2f6a1c-0000-4000-8000-{i:012d}",
                "resourceVersion": str(1000 + i),
                "finalizers": ["operatord.io/x"],
            },
            "spec": {"size": i % 7, "message": "hello"},
            "status": {
                "conditions": [
                    {"type": t, "status": "True", "reason": "Synced", "message": ""}
                    for t in ("Ready", "Reconciling", "Stalled")
                ]
            },
        }

    new = widget(0)
    del new["status"], new["metadata"]["finalizers"]
    first = pack(new)  # the first object of a type makes its dictionary: one without status
    packed = [pack(widget(i)) for i in range(1, 50)]  # ... which grows by a converged one
    for i, p in enumerate(packed, 1):
        assert p.unpack() == widget(i)
    assert first.unpack() == new  # packed with the first dictionary, still readable
    assert packed[-1].codec is not first.codec
    size = len(json.dumps(widget(49), separators=(",", ":")))
    assert len(packed[-1].blob) < size / 5
    p = packed[0]
    assert p.rv == 1001 and p.uid == widget(1)["metadata"]["uid"] and p.owner is None


def test_resource_versions_that_are_not_canonical_integers_are_kept_as_strings():
    c = Cache()
    for rv in ("007", "abc", "12"):
        uid = f"u-{rv}"
        c.upsert_parent(parent(uid, rv))
        assert c.versions(uid) == {("example.com/v1", "Widget", "ns", "p"): rv}
        assert c.parent(uid)["metadata"]["resourceVersion"] == rv
    assert not c.upsert_parent(parent("u-abc", "abc"))
    assert c.upsert_parent(parent("u-abc", "abd"))  # not integers: any other version is newer


def test_a_parent_with_many_children_keeps_each_of_them():
    c = Cache()
    c.upsert_parent(parent("u1", 1))
    for i in range(40):
        assert c.upsert_child(child(f"c{i}", "u1", 10 + i)) == {"u1"}
    assert c.upsert_child(child("c3", "u1", 100)) == {"u1"}  # updated in place
    for i in range(0, 40, 2):
        c.delete_child(child(f"c{i}", "u1", 200))
    kids = c.snapshot("u1")[1]
    assert sorted(k["metadata"]["name"] for k in kids) == sorted(f"c{i}" for i in range(1, 40, 2))
    assert c.counts() == {"parents": 1, "v1/ConfigMap": 20}
    assert c.versions("u1")[("v1", "ConfigMap", "ns", "c3")] == "100"


def test_compacting_a_compact_object_returns_it_unchanged():
    import json

    from operatord.cache import compact

    once = compact(json.loads('{"metadata": {"name": "x", "managedFields": []}, "spec": {}}'))
    assert once == {"metadata": {"name": "x"}, "spec": {}}
    assert compact(once) is once


def test_parent_counts_follow_every_way_parents_come_and_go():
    def p(uid: str, kind: str, ns: str = "a", rv: str = "1") -> dict:
        meta = {"uid": uid, "name": uid, "namespace": ns, "resourceVersion": rv}
        return {"apiVersion": "x/v1", "kind": kind, "metadata": meta}

    def recount(cache: Cache) -> dict:
        out: dict = {}
        for uid in cache.parent_uids():
            obj = cache.parent(uid)
            key = (obj["apiVersion"], obj["kind"])
            out[key] = out.get(key, 0) + 1
        return out

    cache = Cache()
    cache.replace_parents([p("1", "A"), p("2", "A"), p("3", "B")])
    cache.upsert_parent(p("4", "B", ns="b"))
    cache.upsert_parent(p("1", "A", rv="2"))  # an update: no new parent
    cache.replace_parents([p("5", "A")], api_version="x/v1", kind="A")  # 1 and 2 go
    cache.delete_parent(p("3", "B"))
    assert cache.parent_counts() == recount(cache) == {("x/v1", "A"): 1, ("x/v1", "B"): 1}
    cache.drop_namespace("b")
    assert cache.parent_counts() == recount(cache) == {("x/v1", "A"): 1}
    cache.replace_parents([])
    assert cache.parent_counts() == {}


def test_children_come_and_go_one_by_one():
    c = Cache()
    names = lambda: sorted(k["metadata"]["name"] for k in c.snapshot("u1")[1])  # noqa: E731
    c.upsert_child(child("a", "u1", 1))
    c.upsert_child(child("b", "u1", 2))
    c.upsert_child(child("a", "u1", 3))
    assert names() == ["a", "b"]
    assert c.delete_child(child("a", "u1", 4)) == {"u1"}
    assert names() == ["b"]
    c.upsert_child(child("b", "u1", 5))
    assert c.versions("u1") == {("v1", "ConfigMap", "ns", "b"): "5"}
    assert c.delete_child(child("b", "u1", 6)) == {"u1"}
    assert names() == [] and c.counts() == {"parents": 0}
    assert c.delete_child(child("b", "u1", 7)) == set()
