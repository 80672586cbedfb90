"""The playground page's serving: the fixed file set (no path outside server/static), its CSP, `--no-ui`, and the
page loading without the API key while the API it calls keeps its rules. The page in a browser:
tests/server/test_playground_browser.py."""

from __future__ import annotations

import pytest

from gptzoo.server.routes.ui import FILES


def test_page_and_its_files_are_served_with_a_same_origin_csp(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    for name in FILES:
        assert f"/ui/{name}" in r.text  # the page names exactly the files the route serves
        f = client.get(f"/ui/{name}")
        assert f.status_code == 200 and f.content and f.headers["content-type"].startswith(FILES[name])


@pytest.mark.parametrize("path", ["/ui/index.html", "/ui/..%2Fsettings.py", "/ui/%2e%2e%2f%2e%2e%2fpyproject.toml",
                                  "/ui/../settings.py", "/ui/", "/ui/static", "/ui/%2Fetc%2Fpasswd"])
def test_no_other_path_is_served(client, path):
    r = client.get(path)
    assert r.status_code == 404, (path, r.text[:200])
    assert "root:" not in r.text and "Settings" not in r.text


def test_no_ui_leaves_the_page_out(make_client, exported_store):
    c = make_client(exported_store, ui=False, threads=1)
    assert c.get("/").status_code == 404 and c.get("/ui/playground.js").status_code == 404
    assert c.get("/v1/models").status_code == 200


def test_page_loads_without_the_key_and_the_api_still_needs_it(make_client, exported_store):
    c = make_client(exported_store, api_key="s3cret", threads=1)
    assert c.get("/").status_code == 200 and c.get("/ui/playground.js").status_code == 200
    assert c.get("/v1/models").status_code == 401
    assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/", headers={"Host": "evil.example"}).status_code == 200  # public like the probes: holds no data
