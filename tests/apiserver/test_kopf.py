"""kopf runs a tiny operator against the embedded server and handles a create."""

import textwrap

import pytest

from .conftest import wait_for

kopf = pytest.importorskip("kopf")
from kopf.testing import KopfRunner  # noqa: E402

OPERATOR = textwrap.dedent(
    """
    import kopf

    @kopf.on.startup()
    def configure(settings, **_):
        settings.watching.server_timeout = 10
        settings.watching.client_timeout = 15
        settings.posting.enabled = True

    @kopf.on.login()
    def login(**_):
        return kopf.ConnectionInfo(server=SERVER, token="operatord-embedded", scheme="Bearer")

    @kopf.on.create("kopf.example.com", "v1", "kexamples")
    def created(spec, name, namespace, patch, **_):
        import kubernetes
        cfg = kubernetes.client.Configuration()
        cfg.host = SERVER
        core = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(cfg))
        core.create_namespaced_config_map(namespace, {
            "metadata": {"name": name + "-child"}, "data": {"size": str(spec["size"])}})
        return {"message": "handled"}
    """
)


def test_kopf_handles_create(api, custom, core, ns, tmp_path):
    api.apply_crd("kopf.example.com", "v1", "KExample", "kexamples", namespaced=True)
    path = tmp_path / "op.py"
    path.write_text(f"SERVER = {api.url!r}\n" + OPERATOR)
    args = ["run", "--standalone", "--namespace", ns, str(path)]
    with KopfRunner(args, timeout=60) as runner:
        custom.create_namespaced_custom_object(
            "kopf.example.com",
            "v1",
            ns,
            "kexamples",
            {
                "apiVersion": "kopf.example.com/v1",
                "kind": "KExample",
                "metadata": {"name": "one"},
                "spec": {"size": 3},
            },
        )
        cm = wait_for(lambda: _get(core, ns, "one-child"), timeout=30)
        assert cm.data == {"size": "3"}

        def result():
            obj = custom.get_namespaced_custom_object(
                "kopf.example.com", "v1", ns, "kexamples", "one"
            )
            return (obj.get("status") or {}).get("created")

        assert wait_for(result, timeout=30) == {"message": "handled"}
        obj = custom.get_namespaced_custom_object("kopf.example.com", "v1", ns, "kexamples", "one")
        assert "kopf.zalando.org/last-handled-configuration" in obj["metadata"]["annotations"]
    assert runner.exit_code == 0, runner.output
    assert runner.exception is None


def _get(core, ns, name):
    from kubernetes.client import ApiException

    try:
        return core.read_namespaced_config_map(name, ns)
    except ApiException:
        return None
