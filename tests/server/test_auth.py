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
