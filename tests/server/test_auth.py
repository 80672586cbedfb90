"""Optional bearer-token auth: on the API and its schema, never on the probes or /metrics."""

import pytest

KEY = "sekrit-key"


@pytest.fixture
def locked(make_client, exported_store):
    return make_client(exported_store, api_key=KEY)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"},
                                     {"Authorization": "Bearer"}])
def test_missing_or_wrong_key_is_401(locked, headers):
    for r in (locked.get("/v1/models", headers=headers),
              locked.post("/v1/completions", json={"model": "2l", "prompt": "A"}, headers=headers),
              locked.get("/schema/openapi.json", headers=headers)):
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"] == "Bearer"
        e = r.json()["error"]
        assert e["type"] == "authentication_error" and "API key" in e["message"]


def test_right_key_passes(locked):
    h = {"Authorization": f"Bearer {KEY}"}
    assert locked.get("/v1/models", headers=h).status_code == 200
    r = locked.post("/v1/completions", json={"model": "2l", "prompt": "A", "max_tokens": 3}, headers=h)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3


def test_auth_comes_before_validation(locked):
    assert locked.post("/v1/completions", json={"bad": 1}).status_code == 401


def test_probes_and_metrics_stay_open(locked):
    for path in ("/healthz", "/readyz", "/metrics"):
        assert locked.get(path).status_code == 200, path


def test_no_key_configured_means_open(client):
    assert client.get("/v1/models").status_code == 200


def test_requests_stay_on_the_event_loop(locked, monkeypatch):
    """No part of a request (the key check, the handler, a stream's chunks) runs in Litestar's thread pool: a hop
    there and back per request costs a GIL hand-over on a core the decode thread needs."""
    import litestar.utils.sync as sync

    hops = []
    real = sync.sync_to_thread

    def counted(fn, *args, **kwargs):
        hops.append(getattr(fn, "__name__", repr(fn)))
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(sync, "sync_to_thread", counted)
    h = {"Authorization": f"Bearer {KEY}"}
    r = locked.post("/v1/completions", json={"model": "2l", "prompt": "A", "max_tokens": 3}, headers=h)
    assert r.status_code == 200
    r = locked.post("/v1/completions", json={"model": "2l", "prompt": "A", "max_tokens": 5, "stream": True}, headers=h)
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
    assert locked.get("/v1/models", headers=h).status_code == 200
    assert hops == []


# -- issue 22: an admin key of its own, and no empty key --------------------------------------------------------

ADMIN_KEY = "admin-sekrit"
UNLOAD = "/admin/models/2l/unload"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_the_admin_routes_take_the_admin_key_and_the_api_the_api_key(make_client, exported_store):
    c = make_client(exported_store, api_key=KEY, admin_key=ADMIN_KEY)
    for r in (c.get("/admin/models", headers=bearer(KEY)), c.post(UNLOAD, headers=bearer(KEY)),
              c.get("/admin/models")):
        assert r.status_code == 401 and "admin key" in r.json()["error"]["message"], r.text
    assert c.get("/v1/models", headers=bearer(ADMIN_KEY)).status_code == 401
    assert c.get("/v1/models", headers=bearer(KEY)).status_code == 200
    models = c.get("/admin/models", headers=bearer(ADMIN_KEY)).json()["data"]
    assert [m["state"] for m in models] == ["ready"]  # nothing was unloaded
    assert c.post(UNLOAD, headers=bearer(ADMIN_KEY)).json()["state"] == "unloaded"


def test_an_admin_key_alone_locks_only_the_admin_routes(make_client, exported_store):
    c = make_client(exported_store, admin_key=ADMIN_KEY)
    assert c.get("/v1/models").status_code == 200
    assert c.post(UNLOAD).status_code == 401 and c.get("/admin/models").status_code == 401
    assert c.get("/admin/models", headers=bearer(ADMIN_KEY)).json()["data"][0]["state"] == "ready"


def test_without_an_admin_key_the_admin_routes_take_the_api_key(locked):
    assert locked.get("/admin/models").status_code == 401
    assert locked.get("/admin/models", headers=bearer(KEY)).status_code == 200


@pytest.mark.parametrize("field", ["api_key", "admin_key"])
def test_an_empty_key_is_refused_not_taken_for_no_key(field):
    from gptzoo.server.settings import Settings, env_name
    from gptzoo.zoo.errors import BadValue

    for blank in ("", "  "):
        with pytest.raises(BadValue):
            Settings.build(**{field: blank})
        with pytest.raises(BadValue, match=f"{env_name(field)} is set but empty"):
            Settings.from_env({env_name(field): blank})
