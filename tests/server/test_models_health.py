"""GET /v1/models, /healthz, /readyz: every variant with OpenAI's fields plus depth, quality and state."""

import json
import shutil

from tests.server.conftest import MODEL, add_variant


def test_models_lists_every_variant_with_openai_and_zoo_fields(client, exported_store):
    card = json.loads((exported_store / MODEL / "card.json").read_text())
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    [m] = [m for m in body["data"] if m["kind"] == "variant"]
    assert (m["id"], m["object"], m["owned_by"]) == (MODEL, "model", "gptzoo") and m["created"] > 0
    assert (m["n_layer"], m["n_embd"], m["n_head"], m["block_size"]) == (2, 32, 2, 32)
    assert m["params"] == card["params"] and m["val_loss"] == card["val_loss"]
    assert m["provider"] == "CPUExecutionProvider" and m["ready"] is True and m["state"] == "ready"
    assert m["aliases"] == ["2l"] and m["reason"] is None
    assert client.get("/v1/models/2l").json() == client.get(f"/v1/models/{MODEL}").json() == m


def test_probes(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "models": [
        {"id": MODEL, "state": "ready", "ready": True, "provider": "CPUExecutionProvider", "reason": None}]}


def test_broken_variants_are_reported_and_the_rest_serve(make_client, exported_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(exported_store, store)
    (add_variant(store, "shakespeare-char-3l", 3) / "model.onnx").write_bytes(b"\x00garbage")
    add_variant(store, "shakespeare-char-4l", 4, edit=lambda c: c.pop("tokenizer"))
    (add_variant(store, "shakespeare-char-5l", 5) / "model.onnx").unlink()
    add_variant(store, "shakespeare-char-6l", 6)  # a valid ONNX file that is not the 6-layer model its card says
    client = make_client(store)
    states = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert {i: (m["state"], m["ready"]) for i, m in states.items()} == {
        "shakespeare-char": ("ready", True), "auto": ("ready", True),
        MODEL: ("ready", True), "shakespeare-char-3l": ("failed", False), "shakespeare-char-4l": ("failed", False),
        "shakespeare-char-5l": ("not_exported", False), "shakespeare-char-6l": ("failed", False)}
    assert "does not fit variant shakespeare-char-6l: n_layer 2 vs card 6" in states["shakespeare-char-6l"]["reason"]
    assert "does not match its card (sha256 differs)" in states["shakespeare-char-3l"]["reason"]
    assert states["shakespeare-char-4l"]["reason"] == "card.json is invalid: Object missing required field `tokenizer`"
    assert "gptzoo export" in states["shakespeare-char-5l"]["reason"]
    assert states["shakespeare-char-3l"]["provider"] is None
    ready = client.get("/readyz")
    assert ready.status_code == 200 and len(ready.json()["models"]) == 5


def test_readyz_is_503_when_no_model_is_ready(make_client, exported_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(exported_store, store)
    (store / MODEL / "model.onnx").write_bytes(b"corrupt")
    client = make_client(store)
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["status"] == "not_ready"
    assert r.json()["models"][0]["state"] == "failed"
    assert client.get("/healthz").status_code == 200  # alive, just not ready


def test_a_kv_cache_larger_than_free_memory_fails_the_model_with_the_reason(make_client, exported_store):
    """Ten million slots of the tiny model's cache is ~170 GB: refused at load (not swapped or OOM-killed), the model
    reported failed with what to change."""
    client = make_client(exported_store, max_batch_size=10_000_000)
    r = client.get("/readyz")
    assert r.status_code == 503
    [model] = r.json()["models"]
    assert model["state"] == "failed" and "--max-batch-size" in model["reason"] and "GB" in model["reason"]
