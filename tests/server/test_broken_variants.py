"""One bad card or file never takes the zoo down: broken variants are listed, not ready, with a reason that names
the variant (not a path on the server's disk); every other variant serves, and depth aliases prefer ready ones."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from gptzoo.cli.main import app
from tests.server.conftest import MODEL, add_variant

BAD_CARDS = {
    "no-depth-4l": lambda c: c.pop("n_layer"),
    "words-4l": lambda c: c.update(n_layer="four"),
    "short-tok-4l": lambda c: c.update(tokenizer={"kind": "char", "chars": "ab"}),
}


@pytest.fixture
def zoo_with_bad_cards(exported_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(exported_store, store)
    for vid, edit in BAD_CARDS.items():
        add_variant(store, vid, 4, edit=edit)
    add_variant(store, "no-dataset-2l", 2, edit=lambda c: c.update(dataset=None))  # not needed to serve
    (store / "not-json").mkdir()
    (store / "not-json" / "card.json").write_text("{oops")
    return store


def test_bad_cards_are_listed_as_failed_and_the_rest_serve(make_client, zoo_with_bad_cards):
    client = make_client(zoo_with_bad_cards)
    states = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert {i: m["state"] for i, m in states.items()} == {
        MODEL: "ready", "no-dataset-2l": "ready", "no-depth-4l": "failed", "words-4l": "failed",
        "short-tok-4l": "failed", "not-json": "failed", "shakespeare-char": "ready", "auto": "ready"}
    assert "missing required field `n_layer`" in states["no-depth-4l"]["reason"]
    assert "Expected `int`, got `str` - at `$.n_layer`" in states["words-4l"]["reason"]
    assert "tokenizer has 2 characters" in states["short-tok-4l"]["reason"]
    assert "not readable JSON" in states["not-json"]["reason"]
    assert states["words-4l"]["n_layer"] is None
    r = client.post("/v1/completions", json={"model": MODEL, "prompt": "ROMEO:", "max_tokens": 5})
    assert r.status_code == 200, r.text
    r = client.post("/v1/completions", json={"model": "words-4l", "prompt": "ROMEO:"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_ready"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and len(ready.json()["models"]) == 6


def test_depth_alias_prefers_the_ready_variant(make_client, exported_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(exported_store, store)
    (add_variant(store, "other-2l", 2) / "model.onnx").write_bytes(b"\x00garbage")  # claims `2l` too, fails
    client = make_client(store)
    r = client.post("/v1/completions", json={"model": "2l", "prompt": "ROMEO:", "max_tokens": 3})
    assert r.status_code == 200 and r.json()["model"] == MODEL  # was: 400 ambiguous
    models = {m["id"]: m["aliases"] for m in client.get("/v1/models").json()["data"] if m["kind"] == "variant"}
    assert models == {MODEL: ["2l"], "other-2l": []}


def test_readyz_reasons_name_the_variant_not_server_paths(make_client, exported_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(exported_store, store)
    (store / MODEL / "model.onnx").write_bytes(b"corrupt")
    body = make_client(store).get("/readyz").json()
    [m] = body["models"]
    assert m["state"] == "failed" and MODEL in m["reason"]
    assert str(tmp_path) not in json.dumps(body)


def test_serve_refuses_a_store_of_only_broken_variants_in_one_line_each(tmp_path):
    (tmp_path / "bad-4l").mkdir()
    (tmp_path / "bad-4l" / "card.json").write_text(json.dumps({"id": "bad-4l", "n_layer": "four"}))
    r = CliRunner().invoke(app, ["serve", "--store", str(tmp_path)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "bad-4l: not served: card.json is invalid" in r.stderr
    assert "no variants in" in r.stderr
