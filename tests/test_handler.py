"""The handler API: requests, children views, loading handlers by path, response validation."""

from __future__ import annotations

import dataclasses
import math
import sys
import textwrap
import uuid

import pytest

from operatord.handler import (
    Children,
    FinalizeResponse,
    Handler,
    HandlerImportError,
    InvalidResponse,
    SyncRequest,
    SyncResponse,
    load_handler,
    validate_finalize_response,
    validate_sync_response,
)


def cm(name: str, namespace: str | None = "ns", **data: str) -> dict:
    meta = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def secret(name: str, namespace: str = "ns") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
    }


PARENT = {
    "apiVersion": "example.com/v1",
    "kind": "Widget",
    "metadata": {"name": "w", "namespace": "ns", "uid": "u1"},
    "spec": {"size": 1},
}


# -- Children and SyncRequest -------------------------------------------------------------------


def test_children_iterate_in_order_and_count():
    objs = [cm("a"), secret("s"), cm("b")]
    children = Children(objs)
    assert len(children) == 3
    assert list(children) == objs
    assert children.types() == [("v1", "ConfigMap"), ("v1", "Secret")]


def test_of_type_selects_one_type():
    children = Children([cm("a"), secret("s"), cm("b")])
    cms = children.of_type("v1", "ConfigMap")
    assert len(cms) == 2
    assert [o["metadata"]["name"] for o in cms] == ["a", "b"]
    assert cms.names() == ["a", "b"]
    assert "a" in cms and "s" not in cms
    assert (cms.api_version, cms.kind) == ("v1", "ConfigMap")


def test_of_type_absent_type_is_an_empty_view():
    view = Children([cm("a")]).of_type("apps/v1", "Deployment")
    assert len(view) == 0
    assert list(view) == []
    assert not view
    assert view.get("a") is None


def test_get_by_name_matches_any_namespace_when_namespace_is_none():
    obj = cm("a", "ns")
    view = Children([obj]).of_type("v1", "ConfigMap")
    assert view.get("a") is obj
    assert view.get("missing") is None


def test_get_with_namespace_matches_exactly():
    a_ns1, a_ns2 = cm("a", "ns1"), cm("a", "ns2")
    view = Children([a_ns1, a_ns2]).of_type("v1", "ConfigMap")
    assert view.get("a", "ns2") is a_ns2
    assert view.get("a", "ns1") is a_ns1
    assert view.get("a", "other") is None
    assert view.get("a") is a_ns1  # first one given


def test_get_with_empty_namespace_matches_cluster_scoped_children():
    obj = cm("a", namespace=None)
    view = Children([obj]).of_type("v1", "ConfigMap")
    assert view.get("a", "") is obj
    assert view.get("a", "ns") is None


def test_children_rejects_objects_without_type():
    with pytest.raises(TypeError, match=r"children\[1\]"):
        Children([cm("a"), "not a dict"])
    with pytest.raises(ValueError, match=r"children\[0\]: apiVersion and kind"):
        Children([{"metadata": {"name": "x"}}])


def test_children_equality_by_content():
    assert Children([cm("a")]) == Children([cm("a")])
    assert Children([cm("a")]) != Children([cm("b")])


def test_build_request_from_plain_dicts():
    req = SyncRequest.build(PARENT, [cm("w")])
    assert req.parent is PARENT
    assert isinstance(req.children, Children)
    assert req.children.of_type("v1", "ConfigMap").get("w") == cm("w")
    assert req.finalizing is False
    assert SyncRequest.build(PARENT, finalizing=True).finalizing is True
    assert len(SyncRequest.build(PARENT).children) == 0


def test_build_accepts_a_children_instance_and_rejects_non_dict_parent():
    kids = Children([cm("w")])
    assert SyncRequest.build(PARENT, kids).children is kids
    with pytest.raises(TypeError, match="parent"):
        SyncRequest.build(["not", "a", "dict"])


def test_request_is_frozen():
    req = SyncRequest.build(PARENT)
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.finalizing = True  # type: ignore[misc]


def test_response_defaults():
    assert SyncResponse() == SyncResponse(status=None, children=(), resync_after=None)
    assert FinalizeResponse() == FinalizeResponse(status=None, finalized=True, retry_after=None)


def test_handler_base_sync_is_abstract_and_finalize_defaults_to_finalized():
    with pytest.raises(NotImplementedError):
        Handler().sync(SyncRequest.build(PARENT))
    assert Handler().finalize(SyncRequest.build(PARENT)) == FinalizeResponse(finalized=True)


# -- load_handler ---------------------------------------------------------------------------------


@pytest.fixture
def make_module(tmp_path):
    """Write a uniquely named module under tmp_path; returns (module name, directory)."""
    created: list[str] = []
    saved_path = list(sys.path)

    def make(source: str) -> str:
        name = f"h_{uuid.uuid4().hex[:12]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        created.append(name)
        return name

    yield make, str(tmp_path)
    sys.path[:] = saved_path
    for name in created:
        sys.modules.pop(name, None)


HEADER = "from operatord import Handler, SyncResponse, FinalizeResponse\n"


def test_load_class_instantiates_it(make_module):
    make, path = make_module
    mod = make(
        HEADER
        + """
        class H(Handler):
            def sync(self, request):
                return SyncResponse(status={"n": request.parent["spec"]["size"]})
            def finalize(self, request):
                return FinalizeResponse(finalized=False, retry_after=3)
        """.replace("\n        ", "\n")
    )
    h = load_handler(f"{mod}:H", [path])
    assert type(h.target).__name__ == "H"
    assert h.sync(SyncRequest.build(PARENT)) == SyncResponse(status={"n": 1})
    assert h.finalize(SyncRequest.build(PARENT)).finalized is False
    assert h.import_path == f"{mod}:H"


def test_load_instance_and_dotted_attribute(make_module):
    make, path = make_module
    mod = make(
        """
        class Ops:
            class Inner:
                def sync(self, request):
                    return "inner"
        class Duck:
            def sync(self, request):
                return "duck"
        duck = Duck()
        """
    )
    h = load_handler(f"{mod}:duck", [path])
    assert h.sync(SyncRequest.build(PARENT)) == "duck"
    # an instance without finalize gets the default one
    assert h.finalize(SyncRequest.build(PARENT)) == FinalizeResponse(finalized=True)
    assert load_handler(f"{mod}:Ops.Inner", [path]).sync(None) == "inner"


def test_load_plain_function_gets_default_finalize(make_module):
    make, path = make_module
    mod = make(
        HEADER
        + """
def sync(request):
    return SyncResponse(status={"ok": True})
"""
    )
    h = load_handler(f"{mod}:sync", [path])
    assert h.sync(SyncRequest.build(PARENT)).status == {"ok": True}
    assert h.finalize(SyncRequest.build(PARENT)) == FinalizeResponse(finalized=True)


def test_python_path_entries_are_prepended_once(make_module):
    make, path = make_module
    mod = make("def sync(request):\n    return None\n")
    load_handler(f"{mod}:sync", [path])
    load_handler(f"{mod}:sync", [path])
    assert sys.path[0] == path
    assert sys.path.count(path) == 1


def test_python_path_keeps_the_given_order_in_front(make_module, tmp_path):
    make, path = make_module
    first, second = tmp_path / "first", tmp_path / "second"
    for d in (first, second):
        d.mkdir()
        (d / "shadowed_mod_xyz.py").write_text(f"WHERE = {d.name!r}\n")
    mod = make("import shadowed_mod_xyz\ndef sync(request):\n    return shadowed_mod_xyz.WHERE\n")
    try:
        h = load_handler(f"{mod}:sync", [str(first), str(second), path])
        assert sys.path[:3] == [str(first), str(second), path]
        assert h.sync(None) == "first"
    finally:
        sys.modules.pop("shadowed_mod_xyz", None)


def _load_error(import_path: str, python_path=()) -> str:
    with pytest.raises(HandlerImportError) as info:
        load_handler(import_path, python_path)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("bad", ["nocolon", "mod:", ":attr", "a:b:c", "mod:1x", "my-mod:H"])
def test_malformed_import_path(bad):
    message = _load_error(bad)
    assert repr(bad) in message and "module:attribute" in message


def test_module_not_found_names_the_import_path(tmp_path):
    message = _load_error("no_such_module_xyz.sub:H", [str(tmp_path)])
    assert "'no_such_module_xyz.sub:H'" in message
    assert "module 'no_such_module_xyz' not found" in message
    assert str(tmp_path) in message


def test_missing_dependency_of_the_module_is_not_reported_as_the_module(make_module):
    make, path = make_module
    mod = make("import dependency_that_is_missing_xyz\n")
    message = _load_error(f"{mod}:H", [path])
    assert f"importing module '{mod}' raised ModuleNotFoundError" in message
    assert "dependency_that_is_missing_xyz" in message


def test_exception_during_import_gives_type_and_message(make_module):
    make, path = make_module
    mod = make("raise RuntimeError('database unreachable')\n")
    message = _load_error(f"{mod}:H", [path])
    assert f"'{mod}:H'" in message
    assert "RuntimeError: database unreachable" in message


def test_syntax_error_and_system_exit_during_import(make_module):
    make, path = make_module
    broken, exits = make("def broken(:\n"), make("raise SystemExit(3)\n")
    assert "SyntaxError" in _load_error(f"{broken}:H", [path])
    assert "SystemExit: 3" in _load_error(f"{exits}:H", [path])


def test_missing_attribute(make_module):
    make, path = make_module
    mod = make("class Widgets:\n    pass\n")
    assert f"'{mod}' has no attribute 'Nope'" in _load_error(f"{mod}:Nope", [path])
    assert f"'{mod}:Widgets' has no attribute 'inner'" in _load_error(
        f"{mod}:Widgets.inner", [path]
    )


def test_not_callable(make_module):
    make, path = make_module
    mod = make("CONFIG = {'a': 1}\nimport os\n")
    message = _load_error(f"{mod}:CONFIG", [path])
    assert "CONFIG is not callable (got dict)" in message
    assert "is not a handler class, instance or function" in _load_error(f"{mod}:os", [path])


def test_class_without_sync_and_constructor_failure(make_module):
    make, path = make_module
    mod = make(
        HEADER
        + """
class NoSync:
    pass
class NeedsArgs(Handler):
    def __init__(self, url):
        self.url = url
    def sync(self, request):
        return SyncResponse()
class Fails(Handler):
    def __init__(self):
        raise ValueError("no token")
    def sync(self, request):
        return SyncResponse()
class NotOverridden(Handler):
    pass
class BadSync:
    sync = 3
"""
    )
    assert "class NoSync has no sync method" in _load_error(f"{mod}:NoSync", [path])
    message = _load_error(f"{mod}:NeedsArgs", [path])
    assert "constructing NeedsArgs() failed: TypeError" in message
    assert "constructing Fails() failed: ValueError: no token" in _load_error(
        f"{mod}:Fails", [path]
    )
    assert "does not override Handler.sync" in _load_error(f"{mod}:NotOverridden", [path])
    assert "has no sync method" in _load_error(f"{mod}:BadSync", [path])


def test_instance_with_non_callable_parts(make_module):
    make, path = make_module
    mod = make(
        """
class A:
    def sync(self, request):
        return None
    finalize = "nope"
a = A()
class B:
    sync = "nope"
b = B()
"""
    )
    assert "a.finalize is not callable" in _load_error(f"{mod}:a", [path])
    assert "b.sync is not callable" in _load_error(f"{mod}:b", [path])


def test_wrong_signatures_are_rejected_and_async_is_recognised(make_module):
    make, path = make_module
    mod = make(
        """
def no_args():
    return None
def two_args(request, extra):
    return None
def with_default(request, extra=1):
    return None
async def coro(request):
    return None
"""
    )
    assert "must accept one argument" in _load_error(f"{mod}:no_args", [path])
    assert "must accept one argument" in _load_error(f"{mod}:two_args", [path])
    assert load_handler(f"{mod}:with_default", [path]).sync(None) is None
    loaded = load_handler(f"{mod}:coro", [path])
    assert loaded.sync_is_async and not loaded.finalize_is_async
    assert not load_handler(f"{mod}:with_default", [path]).sync_is_async


# -- validate_sync_response -----------------------------------------------------------------------


def test_valid_sync_response_is_normalized():
    resp = validate_sync_response(
        SyncResponse(status={"ready": True}, children=[cm("a"), secret("a")], resync_after=5)
    )
    assert resp.children == (cm("a"), secret("a"))
    assert resp.resync_after == 5.0 and isinstance(resp.resync_after, float)
    assert resp.status == {"ready": True}
    assert validate_sync_response(SyncResponse()) == SyncResponse()
    assert validate_sync_response(SyncResponse(resync_after=0)).resync_after == 0.0


def _invalid(obj, **kwargs) -> str:
    with pytest.raises(InvalidResponse) as info:
        validate_sync_response(obj, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def no_ns(name: str) -> dict:
    return cm(name, namespace=None)


@pytest.mark.parametrize(
    "response, expected",
    [
        (None, "sync returned None; expected a SyncResponse (missing return?)"),
        ({"status": {}}, "sync must return a SyncResponse, got dict"),
        (FinalizeResponse(), "sync must return a SyncResponse, got FinalizeResponse"),
        (SyncResponse(status=[1]), "status must be a dict or None, got list"),
        (SyncResponse(status={"at": {1, 2}}), "status.at: set {1, 2} is not JSON data"),
        (SyncResponse(status={1: "x"}), "status: key 1 is not a string"),
        (SyncResponse(status={"x": math.nan}), "status.x: nan is not a finite number"),
        (SyncResponse(children=cm("a")), "children must be a list or tuple of dicts, got dict"),
        (SyncResponse(children="abc"), "children must be a list or tuple of dicts, got str"),
        (
            SyncResponse(children=(c for c in [cm("a")])),
            "children must be a list or tuple of dicts, got generator",
        ),
        (SyncResponse(children=[cm("a"), "b"]), "children[1] must be a dict, got str 'b'"),
        (
            SyncResponse(children=[{"kind": "ConfigMap", "metadata": {"name": "a"}}]),
            "children[0].apiVersion must be a non-empty string, got None",
        ),
        (
            SyncResponse(children=[{"apiVersion": "v1", "kind": "", "metadata": {"name": "a"}}]),
            "children[0].kind must be a non-empty string, got ''",
        ),
        (
            SyncResponse(children=[{"apiVersion": "v1", "kind": "ConfigMap"}]),
            "children[0].metadata must be a dict, got NoneType None",
        ),
        (
            SyncResponse(children=[{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}]),
            "children[0].metadata.name must be a non-empty string, got None",
        ),
        (
            SyncResponse(
                children=[{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": 7}}]
            ),
            "children[0].metadata.name must be a non-empty string, got 7",
        ),
        (
            SyncResponse(
                children=[
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": "a", "namespace": 1},
                    }
                ]
            ),
            "children[0].metadata.namespace must be a string, got int 1",
        ),
        (
            SyncResponse(children=[cm("a"), secret("a"), cm("a")]),
            "children[2] duplicates children[0]: ConfigMap ns/a (v1) is listed twice",
        ),
        (
            SyncResponse(children=[cm("a", data=object())]),
            "children[0].data.data: object",
        ),
        (SyncResponse(resync_after=-1), "resync_after must be a finite number >= 0, got -1"),
        (SyncResponse(resync_after=math.inf), "resync_after must be a finite number >= 0, got inf"),
        (
            SyncResponse(resync_after="5"),
            "resync_after must be a number of seconds or None, got str",
        ),
        (
            SyncResponse(resync_after=True),
            "resync_after must be a number of seconds or None, got bool",
        ),
    ],
)
def test_invalid_sync_responses(response, expected):
    assert expected in _invalid(response)


def test_duplicates_consider_namespace():
    # the same name in two namespaces is two objects
    validate_sync_response(SyncResponse(children=[cm("a", "ns1"), cm("a", "ns2")]))
    # without default_namespace, "no namespace" only collides with "no namespace"
    validate_sync_response(SyncResponse(children=[no_ns("a"), cm("a", "ns")]))
    assert "duplicates" in _invalid(SyncResponse(children=[no_ns("a"), no_ns("a")]))
    # with the parent's namespace as default, an omitted namespace is that namespace
    message = _invalid(SyncResponse(children=[no_ns("a"), cm("a", "ns")]), default_namespace="ns")
    assert message == "children[1] duplicates children[0]: ConfigMap ns/a (v1) is listed twice"


def test_allowed_types_rejects_unconfigured_child_types():
    allowed = {("v1", "ConfigMap")}
    validate_sync_response(SyncResponse(children=[cm("a")]), allowed_types=allowed)
    message = _invalid(SyncResponse(children=[cm("a"), secret("s")]), allowed_types=allowed)
    assert message == (
        "children[1] is a v1/Secret, which is not a configured child type (configured: v1/ConfigMap)"
    )
    assert "(configured: none)" in _invalid(SyncResponse(children=[cm("a")]), allowed_types=())


# -- validate_finalize_response -------------------------------------------------------------------


def test_valid_finalize_response_is_normalized():
    resp = validate_finalize_response(
        FinalizeResponse(status={"phase": "x"}, finalized=False, retry_after=2)
    )
    assert resp == FinalizeResponse(status={"phase": "x"}, finalized=False, retry_after=2.0)
    assert isinstance(resp.retry_after, float)
    assert validate_finalize_response(FinalizeResponse()) == FinalizeResponse()


@pytest.mark.parametrize(
    "response, expected",
    [
        (None, "finalize returned None; expected a FinalizeResponse (missing return?)"),
        (True, "finalize must return a FinalizeResponse, got bool True"),
        (SyncResponse(), "finalize must return a FinalizeResponse, got SyncResponse"),
        (FinalizeResponse(status="done"), "status must be a dict or None, got str 'done'"),
        (FinalizeResponse(finalized=1), "finalized must be True or False, got int 1"),
        (FinalizeResponse(finalized=None), "finalized must be True or False, got NoneType"),
        (
            FinalizeResponse(finalized=False, retry_after=-0.5),
            "retry_after must be a finite number >= 0",
        ),
        (
            FinalizeResponse(retry_after=math.nan),
            "retry_after must be a finite number >= 0, got nan",
        ),
    ],
)
def test_invalid_finalize_responses(response, expected):
    with pytest.raises(InvalidResponse) as info:
        validate_finalize_response(response)
    assert expected in str(info.value)


# -- public API ---------------------------------------------------------------------------------


def test_public_api_reexports():
    import operatord
    from operatord import config, handler

    for name in ("Handler", "SyncRequest", "SyncResponse", "FinalizeResponse", "Children"):
        assert getattr(operatord, name) is getattr(handler, name)
    for name in ("load_config", "Config", "ConfigError"):
        assert getattr(operatord, name) is getattr(config, name)
    assert isinstance(operatord.__version__, str) and operatord.__version__
    assert operatord.__doc__
    assert set(operatord.__all__) >= {
        "Handler",
        "SyncRequest",
        "SyncResponse",
        "FinalizeResponse",
        "Children",
        "load_config",
        "Config",
        "ConfigError",
        "__version__",
    }


def test_events_in_responses_are_validated():
    from operatord import Event

    ok = validate_sync_response(SyncResponse(events=[Event("Scaled", "to 3")]))
    assert ok.events == (Event("Scaled", "to 3", "Normal"),)
    fin = validate_finalize_response(FinalizeResponse(events=(Event("Cleaned", type="Warning"),)))
    assert fin.events[0].type == "Warning"
    for bad, text in [
        ({"reason": "x"}, "events must be a list"),
        ([{"reason": "x"}], "events[0] must be an Event"),
        ([Event("")], "events[0].reason"),
        ([Event("R", type="Info")], "events[0].type must be Normal or Warning"),
        ([Event("R", message=3)], "events[0].message must be a string"),
    ]:
        with pytest.raises(InvalidResponse) as info:
            validate_sync_response(SyncResponse(events=bad))
        assert text in str(info.value)
