"""A web page must not drive the server (issue 22, defect 3): without a key, a page the operator visits could
otherwise unload models with a form or a `text/plain` fetch, or read /admin and /v1 by pointing its own name at
127.0.0.1 (DNS rebinding). Requests that change state must be JSON and come from no foreign `Origin`; every
non-public route answers only to the server's own names."""

import httpx
import pytest

from tests.server.conftest import MODEL, TEST_HOST, server_process
from tests.server.test_errors import error_of

UNLOAD = f"/admin/models/{MODEL}/unload"
COMPLETION = {"model": "2l", "prompt": "ROMEO:", "max_tokens": 3}
EVIL = "http://evil.example"


def states(client) -> dict[str, str]:
    return {m["id"]: m["state"] for m in client.get("/admin/models").json()["data"]}


@pytest.mark.parametrize(("content", "content_type"), [
    (b'{"x": 1}', "text/plain"),                         # a cross-site fetch that needs no preflight
    (b"x=1", "application/x-www-form-urlencoded"),       # an HTML form
    (b"--b\r\n\r\n--b--", "multipart/form-data; boundary=b"),
    (b'{"x": 1}', None),                                 # a body without a Content-Type (a fetch of a Blob)
])
def test_a_state_change_that_is_not_json_is_415_and_changes_nothing(client, content, content_type):
    headers = {"content-type": content_type} if content_type else {}
    e = error_of(client.post(UNLOAD, content=content, headers=headers), 415)
    assert e["code"] == "unsupported_media_type" and "application/json" in e["message"], e
    assert states(client)[MODEL] == "ready"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_completion_body_that_is_not_declared_json_is_415(client, content_type):
    import json

    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/v1/completions", content=json.dumps(COMPLETION).encode(), headers=headers)
    assert error_of(r, 415)["code"] == "unsupported_media_type"


@pytest.mark.parametrize("origin", [EVIL, "null", f"http://{TEST_HOST}:8001", f"https://{TEST_HOST}.evil.example"])
def test_a_state_change_from_a_foreign_origin_is_403_and_changes_nothing(client, origin):
    for r in (client.post(UNLOAD, json={}, headers={"origin": origin}),
              client.post(UNLOAD, content=b"x", headers={"origin": origin, "content-type": "text/plain"}),
              client.post("/admin/reload", headers={"origin": origin}),
              client.post("/v1/completions", json=COMPLETION, headers={"origin": origin})):
        e = error_of(r, 403)
        assert e["code"] == "cross_origin" and "Origin" in e["message"], e
    assert states(client)[MODEL] == "ready"


def test_requests_of_the_servers_own_pages_and_of_plain_clients_pass(client):
    """Swagger UI at /schema/swagger posts with the server's own Origin; curl and SDKs send none; a POST without a
    body needs no Content-Type (the admin calls), and `application/json; charset=utf-8` is JSON."""
    own = {"origin": f"http://{TEST_HOST}"}
    r = client.post("/v1/completions", json=COMPLETION, headers=own)
    assert r.status_code == 200, r.text
    r = client.post("/v1/completions", json=COMPLETION, headers={"content-type": "Application/JSON; charset=utf-8"})
    assert r.status_code == 200, r.text
    assert client.post("/admin/reload").status_code == 200
    assert client.post(UNLOAD, headers=own).status_code == 200
    assert states(client)[MODEL] == "unloaded"


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", f"{TEST_HOST}.evil.example", "localhost.evil"])
def test_a_foreign_host_reads_nothing_and_changes_nothing(client, host):
    """DNS rebinding: a page at evil.example whose name now resolves to this server sends `Host: evil.example`."""
    for r in (client.get("/admin/models", headers={"host": host}), client.get("/v1/models", headers={"host": host}),
              client.get("/schema/openapi.json", headers={"host": host}),
              client.post(UNLOAD, json={}, headers={"host": host}),
              client.post("/v1/completions", json=COMPLETION, headers={"host": host})):
        e = error_of(r, 400)
        assert e["code"] == "host_not_allowed" and "--allowed-host" in e["message"], e
    assert states(client)[MODEL] == "ready"
    for path in ("/healthz", "/readyz", "/metrics"):  # probes and scrapers reach it by whatever name they know
        assert client.get(path, headers={"host": host}).status_code == 200, path


@pytest.mark.parametrize("host", ["localhost", "LocalHost:8000", "127.0.0.1:8000", "[::1]:8000", "10.1.2.3",
                                  "[2001:db8::1]:80"])
def test_loopback_names_and_ip_addresses_are_the_servers_names(client, host):
    """An address cannot be rebound: a page whose Host is an IP address was served from that address."""
    assert client.get("/v1/models", headers={"host": host}).status_code == 200


def test_allowed_hosts_adds_names(make_client, exported_store):
    c = make_client(exported_store, allowed_hosts=[TEST_HOST, "Gptzoo.Example"])
    assert c.get("/v1/models", headers={"host": "gptzoo.example:8000"}).status_code == 200
    assert error_of(c.get("/v1/models", headers={"host": "other.example"}), 400)["code"] == "host_not_allowed"
    anyone = make_client(exported_store, allowed_hosts=["*"])
    assert anyone.get("/v1/models", headers={"host": "other.example"}).status_code == 200
    # `*` opens the Host check only: a state change from a foreign page is still refused
    assert error_of(anyone.post(UNLOAD, json={}, headers={"origin": EVIL}), 403)["code"] == "cross_origin"


@pytest.mark.slow
def test_a_real_server_refuses_cross_site_requests(tmp_path, exported_store):
    """The probe of issue 22 against `gptzoo serve`: a form post and a text/plain post from a foreign page, a JSON
    one, and reads through a rebound name."""
    with server_process(tmp_path, exported_store) as (_, base, _log):
        evil = {"origin": EVIL}
        tries = [httpx.post(f"{base}{UNLOAD}", data={"x": "1"}, headers=evil),
                 httpx.post(f"{base}{UNLOAD}", content=b"{}", headers={**evil, "content-type": "text/plain"}),
                 httpx.post(f"{base}{UNLOAD}", json={}, headers=evil),
                 httpx.post(f"{base}{UNLOAD}", content=b"{}", headers={"content-type": "text/plain"}),
                 httpx.post(f"{base}/v1/completions", content=b'{"model": "2l", "prompt": "A"}',
                            headers={"content-type": "text/plain"})]
        assert [r.status_code for r in tries] == [403, 403, 403, 415, 415], [r.text for r in tries]
        for path in ("/admin/models", "/v1/models"):
            r = httpx.get(f"{base}{path}", headers={"host": "evil.example:8000"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "host_not_allowed", r.text
        models = httpx.get(f"{base}/admin/models").json()["data"]
        assert [m["state"] for m in models] == ["ready"]
        assert httpx.post(f"{base}/v1/completions", json=COMPLETION, timeout=30).status_code == 200


def test_the_new_settings_reach_uvicorns_workers_through_the_environment():
    from gptzoo.server.settings import Settings

    s = Settings.build(allowed_hosts=["gptzoo.example", "*"], admin_key="a", header_timeout=2.5)
    assert Settings.from_env(s.to_env()) == s
