"""Names that clients already use keep naming what they named: a variant added to a live zoo never takes over (or
makes ambiguous) `auto`, a family, or a depth alias; an int8 copy has its own alias; reserved names are not variant
ids. Real servers on copies of the tiny exported variant."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.server.conftest import MODEL, add_variant
from tests.server.test_live_zoo import COPY, complete, wait_until

FAMILY = "shakespeare-char"


@pytest.fixture
def store(exported_store, tmp_path):
    dst = tmp_path / "store"
    shutil.copytree(exported_store, dst)
    return dst


def aliases(client) -> dict[str, list[str]]:
    return {m["id"]: m["aliases"] for m in client.get("/v1/models").json()["data"] if m["kind"] == "variant"}


def other_dataset(card: dict, name: str = "other-corpus", newer: bool = True) -> None:
    card["dataset"] = {**card["dataset"], "name": name}
    if newer:  # trained and exported after the variants already there, as a new variant is
        card["onnx"]["exported_at"] = "2099-01-01T00:00:00+00:00"
        card["updated"] = "2099-01-01T00:00:00+00:00"


def test_an_int8_copy_takes_its_own_alias_not_the_plain_one(make_client, store):
    """`export --model d2 --quantize int8` while `2l` clients are served: the copy's alias is `2l-int8`."""
    client = make_client(store, threads=1, reload_interval=0)
    assert complete(client, "2l").json()["model"] == MODEL
    add_variant(store, "d2-int8", 2, edit=lambda c: c.update(quantization="int8-dynamic", source_variant="d2"))
    assert client.post("/admin/reload").json()["added"] == ["d2-int8"]
    wait_until(lambda: client.get("/v1/models/d2-int8").json()["state"] == "ready", "the int8 copy ready")
    r = complete(client, "2l")
    assert r.status_code == 200 and r.json()["model"] == MODEL, r.text
    r = complete(client, "2l-int8")
    assert r.status_code == 200 and r.json()["model"] == "d2-int8", r.text
    assert aliases(client) == {MODEL: ["2l"], "d2-int8": ["2l-int8"]}


def test_a_second_variant_of_a_depth_leaves_the_alias_where_it_was(make_client, store):
    client = make_client(store, threads=1, reload_interval=0)
    add_variant(store, COPY, 2)  # same card, same timestamps: nothing but the order of arrival tells them apart
    add_variant(store, "other-2l", 2, edit=other_dataset)
    assert sorted(client.post("/admin/reload").json()["added"]) == sorted([COPY, "other-2l"])
    wait_until(lambda: all(s == "ready" for s in (client.get(f"/v1/models/{i}").json()["state"]
                                                  for i in (COPY, "other-2l"))), "the new variants ready")
    for _ in range(3):
        r = complete(client, "2l")
        assert r.status_code == 200 and r.json()["model"] == MODEL, r.text
    assert aliases(client) == {MODEL: ["2l"], COPY: [], "other-2l": []}
    assert client.post(f"/admin/models/{MODEL}/unload").status_code == 200  # the holder leaves: the next one takes it
    assert complete(client, "2l").json()["model"] in (COPY, "other-2l")


def test_a_second_family_leaves_auto_where_it_was(make_client, store):
    client = make_client(store, threads=1, reload_interval=0)
    assert complete(client, "auto").headers["x-gptzoo-model"] == MODEL
    add_variant(store, "other-2l", 2, edit=lambda c: other_dataset(c, newer=False))  # even one that looks older
    assert client.post("/admin/reload").json()["added"] == ["other-2l"]
    wait_until(lambda: client.get("/v1/models/other-2l").json()["state"] == "ready", "the new family ready")
    r = complete(client, "auto")
    assert r.status_code == 200 and r.headers["x-gptzoo-model"] == MODEL, r.text
    assert complete(client, "other-corpus").headers["x-gptzoo-model"] == "other-2l"
    auto = client.get("/v1/models/auto").json()
    assert auto["kind"] == "auto" and auto["variants"] == [MODEL] and auto["dataset"] == "shakespeare_char"


def test_a_fresh_start_gives_auto_the_family_of_the_oldest_variant(make_client, store):
    add_variant(store, "aaa-2l", 2, edit=lambda c: other_dataset(c, "aaa"))  # first by name, but newer
    client = make_client(store, threads=1)
    r = complete(client, "auto")
    assert r.status_code == 200 and r.headers["x-gptzoo-model"] == MODEL, r.text
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert sorted(ids) == sorted([MODEL, "aaa-2l", FAMILY, "aaa", "auto"])


def test_reserved_names_are_broken_variants_and_routes_keep_their_meaning(make_client, store):
    add_variant(store, "auto", 2)
    add_variant(store, FAMILY, 2)
    client = make_client(store, threads=1)
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert sorted(ids) == sorted([MODEL, FAMILY, "auto"]), ids  # each once: the routed names
    for name, kind in (("auto", "auto"), (FAMILY, "family")):
        m = client.get(f"/v1/models/{name}").json()
        assert m["kind"] == kind and m["variants"] == [MODEL], m
        r = complete(client, name)
        assert r.status_code == 200 and r.headers["x-gptzoo-model"] == MODEL, r.text
    models = {m["id"]: m for m in client.get("/readyz").json()["models"]}
    assert models["auto"]["state"] == "failed" and "reserved" in models["auto"]["reason"]
    assert models[FAMILY]["state"] == "failed" and "family" in models[FAMILY]["reason"]
    card = json.loads((store / "auto" / "card.json").read_text())
    assert card["id"] == "auto"  # nothing in the store was touched
