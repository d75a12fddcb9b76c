"""Error bodies and health endpoints byte for byte as a real kube-apiserver writes them."""

import json

from .conftest import raw_http


def _bytes(api, method, path, body=None):
    import http.client

    conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read()
    finally:
        conn.close()


def test_status_fields_in_the_real_order_with_a_trailing_newline(api, ns):
    status, _, raw = _bytes(api, "GET", f"/apis/apps/v1/namespaces/{ns}/deployments/nope")
    assert status == 404
    assert raw == (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        b'"message":"deployments.apps \\"nope\\" not found","reason":"NotFound",'
        b'"details":{"name":"nope","group":"apps","kind":"deployments"},"code":404}\n'
    )
    status, _, raw = _bytes(api, "GET", "/apis/nothing.example.com/v1/things")
    assert status == 404
    assert raw == (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        b'"message":"the server could not find the requested resource","reason":"NotFound",'
        b'"details":{},"code":404}\n'
    )
    cm = {"metadata": {"name": "dup"}}
    _bytes(api, "POST", f"/api/v1/namespaces/{ns}/configmaps", cm)
    status, _, raw = _bytes(api, "POST", f"/api/v1/namespaces/{ns}/configmaps", cm)
    assert status == 409
    assert raw == (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        b'"message":"configmaps \\"dup\\" already exists","reason":"AlreadyExists",'
        b'"details":{"name":"dup","kind":"configmaps"},"code":409}\n'
    )
    status, _, raw = _bytes(api, "GET", f"/api/v1/namespaces/{ns}/configmaps/dup")
    assert status == 200 and raw.endswith(b"}\n")


def test_invalid_name_quotes_the_value_and_gives_the_regex(api, ns):
    status, _, body = raw_http(
        api, "POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "Bad_Name"}}
    )
    assert status == 422
    why = (
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
        "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
        "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*"
        "[a-z0-9])?)*')"
    )
    assert body["message"] == (
        f'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": {why}'
    )
    assert body["details"] == {
        "name": "Bad_Name",
        "kind": "ConfigMap",
        "causes": [
            {
                "reason": "FieldValueInvalid",
                "message": f'Invalid value: "Bad_Name": {why}',
                "field": "metadata.name",
            }
        ],
    }


def test_missing_name_is_field_value_required(api, ns):
    status, _, body = raw_http(api, "POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {}})
    assert status == 422
    assert body["message"] == (
        'ConfigMap "" is invalid: metadata.name: Required value: name or generateName is required'
    )
    assert body["details"]["causes"] == [
        {
            "reason": "FieldValueRequired",
            "message": "Required value: name or generateName is required",
            "field": "metadata.name",
        }
    ]


def test_invalid_label_value_and_kubectl_shows_it(kubectl, api, ns):
    status, _, body = raw_http(
        api,
        "POST",
        f"/api/v1/namespaces/{ns}/configmaps",
        {"metadata": {"name": "c", "labels": {"app": "-bad-"}}},
    )
    assert status == 422
    assert body["details"]["causes"][0]["message"].startswith(
        'Invalid value: "-bad-": a valid label must be an empty string or consist of'
    )
    assert (
        "regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?'"
        in (body["message"])
    )
    p = kubectl("create", "configmap", "Bad_Name", "-n", ns, check=False)
    assert p.returncode != 0
    assert 'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name"' in p.stderr


def test_health_endpoints_answer_plain_ok(api, kubectl):
    for path in ("/healthz", "/readyz", "/livez"):
        status, ctype, raw = _bytes(api, "GET", path)
        assert (status, ctype, raw) == (200, "text/plain; charset=utf-8", b"ok")
    assert kubectl("get", "--raw", "/readyz").stdout == "ok"
