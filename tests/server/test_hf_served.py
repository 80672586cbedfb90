"""Hugging Face imports served like native variants, over HTTP on `gptzoo serve`'s app and the real engine: two
random GPT-2s saved by transformers itself (2 and 4 layers, GPT-2's tokenizer), imported into one store as one depth
family and exported. Each answers by name with the greedy tokens transformers' own `generate` writes, `auto` and the
family id route between them by stored validation loss, and the 2-layer one drafts for the 4-layer one without
changing the greedy text."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gptzoo.zoo.store import Store
from gptzoo.zoo.tokenizers import GPT2Tokenizer

transformers = pytest.importorskip("transformers", reason="needs the interop extra (pip install 'gptzoo[interop]')")

from gptzoo.exports.onnx_export import export_variant  # noqa: E402
from gptzoo.zoo.hf_import import import_hf  # noqa: E402
from tests.server.conftest import metric  # noqa: E402
from tests.zoo.test_hf_import import save_gpt2  # noqa: E402

DEEP, SHALLOW, FAMILY = "hf-shakespeare-4l", "hf-shakespeare-2l", "shakespeare"
PROMPTS = ["ROMEO: what say you", "The king", "\n"]
CONTEXT = 48  # save_gpt2's n_positions


@pytest.fixture(scope="module")
def hf_zoo(tmp_path_factory, data_dir) -> tuple[Path, dict[str, object]]:
    """The store with both imports (each scored on shakespeare) exported to ONNX, and transformers' models."""
    root = tmp_path_factory.mktemp("hf-zoo")
    store = Store(root / "store")
    models = {}
    for n_layer, tied in ((2, True), (4, False)):
        folder = root / f"gpt2-{n_layer}"
        models[f"hf-shakespeare-{n_layer}l"] = save_gpt2(folder, n_layer, tied, seed=n_layer)
        export_variant(import_hf(store, folder, dataset="shakespeare", data_dir=data_dir))
    return store.root, models


def hf_greedy(model, prompt: list[int], n: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, pad_token_id=50256)
    return out[0, len(prompt):].tolist()


def complete(client, **body):
    r = client.post("/v1/completions", json={"temperature": 0} | body)
    assert r.status_code == 200, r.text
    return r


def test_each_import_answers_by_name_with_transformers_greedy_tokens(make_client, hf_zoo):
    root, models = hf_zoo
    client = make_client(root, threads=1, max_tokens=200)
    assert {m["id"] for m in client.get("/v1/models").json()["data"]} >= {DEEP, SHALLOW}
    tok = GPT2Tokenizer()
    for vid, model in models.items():
        for prompt in PROMPTS:
            ids = tok.encode(prompt)
            n = CONTEXT - len(ids)  # transformers stops at its context; gptzoo's engine would slide on
            want = hf_greedy(model, ids, n)
            r = complete(client, model=vid, prompt=prompt, max_tokens=n)
            assert r.headers["x-gptzoo-model"] == vid and r.headers["x-gptzoo-route"] == "named"
            body = r.json()
            assert body["usage"]["completion_tokens"] == n, (vid, prompt)
            assert body["choices"][0]["text"] == tok.decode(want), (vid, prompt)


def test_auto_and_the_family_route_within_the_imports(make_client, hf_zoo):
    root, _ = hf_zoo
    store = Store(root)
    losses = {vid: store.load(vid).card.val_loss for vid in (DEEP, SHALLOW)}
    assert all(loss is not None and loss > 5 for loss in losses.values())  # random weights, scored on shakespeare
    best = min(losses, key=losses.get)
    client = make_client(root, threads=1, max_tokens=200)
    family = {m["id"]: m for m in client.get("/v1/models").json()["data"]}[FAMILY]
    for name in ("auto", FAMILY):
        r = complete(client, model=name, prompt="ROMEO:", max_tokens=8)
        assert r.headers["x-gptzoo-model"] == best and r.headers["x-gptzoo-route"] == "best-fit", name
    assert family["val_loss"] is None and family["dataset"] == FAMILY


def test_the_shallow_import_drafts_for_the_deep_one_without_changing_the_greedy_text(make_client, hf_zoo):
    root, models = hf_zoo
    client = make_client(root, threads=1, max_tokens=200, drafts=[f"{DEEP}={SHALLOW}"])
    assert client.get(f"/v1/models/{DEEP}").json()["draft"] == SHALLOW
    tok = GPT2Tokenizer()
    for prompt in PROMPTS:
        ids = tok.encode(prompt)
        n = CONTEXT - len(ids)
        drafted = complete(client, model=DEEP, prompt=prompt, max_tokens=n).json()
        plain = complete(client, model=DEEP, prompt=prompt, max_tokens=n, speculative=False).json()
        assert drafted["choices"] == plain["choices"] and drafted["usage"] == plain["usage"], prompt
        assert drafted["choices"][0]["text"] == tok.decode(hf_greedy(models[DEEP], ids, n)), prompt
        # past the context, where the engine slides its window: still the undrafted text
        long = {"model": DEEP, "prompt": prompt, "max_tokens": 100}
        assert complete(client, **long).json()["choices"] == complete(client, **long, speculative=False).json()[
            "choices"], prompt
    assert metric(client.get("/metrics").text, "gptzoo_spec_draft_tokens_total", model=DEEP, draft=SHALLOW) > 0
