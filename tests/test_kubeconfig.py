"""Resolving the API server and credentials without the kubernetes package (operatord.kubeconfig),
checked against the official client's own resolution and against the embedded API server."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from operatord import kubeconfig
from operatord.kube import ClientSettings, Kube
from operatord.testing import ApiServer


def write(path: Path, cluster: dict, user: dict, **extra: object) -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
        **extra,
    }
    path.write_text(json.dumps(doc))
    return str(path)


def official(path: str) -> dict:
    """What the official client resolves for ``path`` (host, TLS settings, auth headers)."""
    api_client = ClientSettings(path).build_api_client()
    cfg = api_client.configuration
    headers: dict = {}
    api_client.update_params_for_auth(headers, [], ["BearerToken"], "", "GET", None)
    return {
        "host": cfg.host,
        "verify": bool(cfg.verify_ssl),
        "tls_server_name": cfg.tls_server_name,
        "proxy": cfg.proxy,
        "headers": {k.lower(): v for k, v in headers.items()},
    }


def test_token_user_resolves_like_the_official_client(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config",
        {"server": "https://10.0.0.1:6443/", "insecure-skip-tls-verify": True},
        {"token": "t0k3n"},
    )
    got = kubeconfig.resolve(path)
    assert got is not None
    want = official(path)
    assert got.host == want["host"].rstrip("/") == "https://10.0.0.1:6443"
    assert got.verify is want["verify"] is False
    assert got.headers() == want["headers"] == {"authorization": "Bearer t0k3n"}


def test_inline_certificates_go_to_private_files(tmp_path: Path) -> None:
    ca, cert, key = b"-----CA-----\n", b"-----CERT-----\n", b"-----KEY-----\n"
    path = write(
        tmp_path / "config",
        {
            "server": "https://k8s.example:443",
            "certificate-authority-data": base64.b64encode(ca).decode(),
            "tls-server-name": "api.internal",
            "proxy-url": "http://proxy:3128",
        },
        {
            "client-certificate-data": base64.b64encode(cert).decode(),
            "client-key-data": base64.b64encode(key).decode(),
        },
    )
    got = kubeconfig.resolve(path)
    assert got is not None
    assert (got.tls_server_name, got.proxy, got.headers()) == (
        "api.internal",
        "http://proxy:3128",
        {},
    )
    for file, content in ((got.ca_file, ca), (got.cert_file, cert), (got.key_file, key)):
        assert file is not None and Path(file).read_bytes() == content
        assert stat.S_IMODE(os.stat(file).st_mode) == 0o600


def test_relative_paths_resolve_against_the_kubeconfig_directory(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    path = write(
        tmp_path / "config",
        {"server": "https://h:1", "certificate-authority": "certs/ca.crt"},
        {"client-certificate": "/abs/c.crt", "client-key": "certs/c.key"},
    )
    got = kubeconfig.resolve(path)
    assert got is not None
    assert got.ca_file == str(tmp_path / "certs" / "ca.crt")
    assert (got.cert_file, got.key_file) == ("/abs/c.crt", str(tmp_path / "certs" / "c.key"))


def test_basic_auth_and_the_chosen_context(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config",
        {"server": "http://h:8080"},
        {"username": "admin", "password": "s3cret"},
        contexts=[
            {"name": "ctx", "context": {"cluster": "c", "user": "u"}},
            {"name": "other", "context": {"cluster": "missing", "user": "u"}},
        ],
    )
    got = kubeconfig.resolve(path, context="ctx")
    assert got is not None
    assert got.headers() == {"authorization": "Basic " + base64.b64encode(b"admin:s3cret").decode()}
    with pytest.raises(ValueError, match="cluster 'missing' not found"):
        kubeconfig.resolve(path, context="other")
    with pytest.raises(ValueError, match="context 'nope' not found"):
        kubeconfig.resolve(path, context="nope")


def test_token_file_is_reread_after_the_refresh_period(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    path = write(tmp_path / "config", {"server": "http://h:1"}, {"tokenFile": "token"})
    got = kubeconfig.resolve(path)
    assert got is not None and got.headers() == {"authorization": "Bearer first"}
    token.write_text("second\n")
    assert got.headers() == {"authorization": "Bearer first"}  # within the refresh period
    got.refresh = 0
    assert got.headers() == {"authorization": "Bearer second"}


def test_in_cluster_service_account(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_text("ca")
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    got = kubeconfig.resolve(environ=env, service_account_dir=str(tmp_path))
    assert got is not None
    assert got.host == "https://[fd00::1]:443"
    assert got.ca_file == str(tmp_path / "ca.crt")
    assert got.headers() == {"authorization": "Bearer sa-token"}
    # Outside a pod (no service host): $KUBECONFIG.
    cfg = write(tmp_path / "kc", {"server": "http://h:2"}, {"token": "x"})
    outside = kubeconfig.resolve(environ={"KUBECONFIG": cfg}, service_account_dir=str(tmp_path))
    assert outside is not None and outside.host == "http://h:2"


@pytest.mark.parametrize(
    ("user", "cluster", "environ"),
    [
        ({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "x"}}, {}, None),
        ({"auth-provider": {"name": "oidc"}}, {}, None),
        ({"token": "t", "as": "someone-else"}, {}, None),
        ({"token": "t"}, {"unknown-cluster-key": 1}, None),
        ({"token": "t"}, {}, "merged"),
    ],
)
def test_what_it_does_not_know_goes_to_the_official_client(
    tmp_path: Path, user: dict, cluster: dict, environ: str | None
) -> None:
    path = write(tmp_path / "config", {"server": "http://h:1", **cluster}, user)
    if environ == "merged":
        env = {"KUBECONFIG": os.pathsep.join([path, str(tmp_path / "second")])}
        assert kubeconfig.resolve(environ=env, service_account_dir=str(tmp_path)) is None
    else:
        assert kubeconfig.resolve(path) is None


def test_exec_credentials_work_through_the_official_client(tmp_path: Path) -> None:
    """A kubeconfig with an exec plugin still logs in (the official client runs it)."""
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json\nprint(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1', "
        "'kind': 'ExecCredential', 'status': {'token': 'operatord-embedded'}}))\n"
    )
    with ApiServer() as api:
        path = write(
            tmp_path / "config",
            {"server": api.url},
            {
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1",
                    "command": sys.executable,
                    "args": [str(plugin)],
                    "interactiveMode": "Never",
                }
            },
        )
        kube = Kube(ClientSettings(path))
        assert kube.api_client is not None  # the official client resolved it
        assert kube.connection().headers == {"authorization": "Bearer operatord-embedded"}
        assert kube.request("GET", "/version")["major"]
        kube.close()


def test_the_leader_never_imports_kubernetes_for_a_plain_kubeconfig() -> None:
    with ApiServer() as api:
        code = (
            "import sys; from operatord.kube import Kube, ClientSettings; "
            f"k = Kube(ClientSettings({api.kubeconfig!r})); "
            "assert k.request('GET', '/version')['major']; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'); "
            "print(bad); sys.exit(1 if bad else 0)"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
