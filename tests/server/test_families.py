"""Both block families in one server (issue 25): the family and its settings on /v1/models, /admin/models and the
info metric; drafting across families (a draft of either family, same tokenizer) gives the target's own greedy text;
a latency budget routes within the oss family as within gpt2's. Tiny real models: tests/conftest.py `families_store`
(gpt2 and oss, 1 and 2 layers each)."""

from __future__ import annotations

import shutil

import pytest

from tests.server.conftest import metric
from tests.server.test_drafts import series, stream_text
from tests.server.test_routing import pin_latency

GPT2_2L, GPT2_1L, OSS_2L, OSS_1L = ("shakespeare-char-2l", "shakespeare-char-1l", "shakespeare-char-2l-oss",
                                    "shakespeare-char-1l-oss")
OSS_FAMILY = "shakespeare-char-oss"
PROMPTS = ["ROMEO:", "First Citizen:\nWe are"]


@pytest.fixture
def store(tmp_path, families_store):
    dst = tmp_path / "store"
    shutil.copytree(families_store, dst)
    return dst


def complete(client, model: str, **body) -> dict:
    r = client.post("/v1/completions", json={"model": model, "max_tokens": 80, "temperature": 0} | body)
    assert r.status_code == 200, r.text
    return r.json()


def test_models_admin_and_metrics_name_each_variants_block_family(make_client, store):
    client = make_client(store, threads=1)
    cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert cards[GPT2_2L]["arch"] == "gpt2" and cards[GPT2_2L]["arch_args"] is None
    assert cards[GPT2_2L]["family"] == "shakespeare-char"
    oss = cards[OSS_2L]
    assert (oss["arch"], oss["family"]) == ("oss", OSS_FAMILY)
    assert {k: oss["arch_args"][k] for k in ("kv_heads", "window", "experts")} == {"kv_heads": 1, "window": 8,
                                                                                   "experts": 0}
    # a routed name: its variants' family
    assert (cards[OSS_FAMILY]["kind"], cards[OSS_FAMILY]["arch"], cards[OSS_FAMILY]["family"]) == (
        "family", "oss", OSS_FAMILY)
    assert cards["shakespeare-char"]["arch"] == "gpt2"
    assert client.get(f"/v1/models/{OSS_1L}").json()["arch"] == "oss"
    admin = {m["id"]: m for m in client.get("/admin/models").json()["data"]}
    assert {i: (admin[i]["arch"], admin[i]["family"]) for i in (GPT2_1L, OSS_1L)} == {
        GPT2_1L: ("gpt2", "shakespeare-char"), OSS_1L: ("oss", OSS_FAMILY)}
    text = client.get("/metrics").text
    for vid, layers, arch in ((GPT2_2L, "2", "gpt2"), (OSS_2L, "2", "oss"), (OSS_1L, "1", "oss")):
        assert metric(text, "gptzoo_model_info", model=vid, layers=layers, arch=arch) == 1
    # the label is on the info gauge only, not on the per-request series
    assert all("arch" not in labels for labels in series(client, "gptzoo_model_validation_loss"))


@pytest.mark.parametrize("target,draft", [(OSS_2L, GPT2_1L), (GPT2_2L, OSS_1L), (OSS_2L, OSS_1L)],
                         ids=["gpt2-drafts-oss", "oss-drafts-gpt2", "oss-drafts-oss"])
def test_a_draft_of_either_family_gives_the_targets_own_greedy_text(make_client, store, target, draft):
    """80 tokens (past the 32-token window twice), plain and streamed, against the same server's undrafted answer
    (the request opted out) and a server without --draft."""
    drafted = make_client(store, threads=1, drafts=[f"{target}={draft}"], max_tokens=200, models=[target])
    assert drafted.get(f"/v1/models/{target}").json()["draft"] == draft
    plain = make_client(store, threads=1, max_tokens=200, models=[target])
    pair = {"model": target, "layers": target.split("-")[2][0], "draft": draft}
    before = metric(drafted.get("/metrics").text, "gptzoo_spec_draft_tokens_total", **pair)
    for prompt in PROMPTS:
        want = complete(plain, target, prompt=prompt)["choices"][0]["text"]
        assert len(set(want)) > 3, want  # varied text, or any draft would agree
        assert complete(drafted, target, prompt=prompt)["choices"][0]["text"] == want
        assert stream_text(drafted, model=target, prompt=prompt) == want
        assert complete(drafted, target, prompt=prompt, speculative=False)["choices"][0]["text"] == want
    assert metric(drafted.get("/metrics").text, "gptzoo_spec_draft_tokens_total", **pair) > before  # it drafted


def test_a_latency_budget_routes_within_the_oss_family(make_client, store):
    """The oss family by its id, and `auto` when the oss family is the only one served: no budget picks the best
    (lowest loss), a tight one the variant predicted to fit, an impossible one the fastest."""
    from tests.server.test_routing import set_loss

    set_loss(store, OSS_2L, 1.5)
    set_loss(store, OSS_1L, 2.0)
    client = make_client(store, threads=1, models=[OSS_2L, OSS_1L])
    assert client.get("/v1/models/auto").json()["variants"] == [OSS_2L, OSS_1L]
    for name in (OSS_FAMILY, "auto"):
        for budget, want, route in ((None, OSS_2L, "best-fit"), (50, OSS_2L, "best-fit"), (5, OSS_1L, "best-fit"),
                                    (0.5, OSS_1L, "fastest-no-fit")):
            pin_latency(client, {OSS_2L: 0.010, OSS_1L: 0.002})
            body = {"model": name, "prompt": "ROMEO:", "max_tokens": 3} | ({"max_tpot_ms": budget} if budget else {})
            r = client.post("/v1/completions", json=body)
            assert r.status_code == 200, r.text
            assert (r.json()["model"], r.headers["x-gptzoo-route"]) == (want, route), (name, budget)
