"""Per-model series end with their model (issue 22): a variant's series stay within the documented bound, none of them
outlives its removal (broken cards included), a zoo that churns through variants scrapes back to its size, and a
scrape is rendered off the event loop."""

from __future__ import annotations

import shutil
import threading
from collections import Counter

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from gptzoo.server import genai
from gptzoo.server.model_metrics import SERIES_PER_VARIANT
from tests.server.conftest import MODEL, add_variant
from tests.server.test_live_zoo import admin, complete, wait_until

COPY = "copy-2l"
BROKEN = {"words-4l": lambda c: c.update(n_layer="four")}


def series_by_model(text: str, label: str = "model") -> Counter:
    """How many samples (series) each `model` (or `label`) label value has in a scrape."""
    return Counter(s.labels[label] for f in text_string_to_metric_families(text) for s in f.samples
                   if label in s.labels)


def unloaded(client) -> bool:
    return not admin(client)[1]  # nothing left draining


def store_with(tmp_path, exported_store):
    store = tmp_path / "store"
    shutil.copytree(exported_store, store)
    return store


def test_a_variants_series_are_bounded_and_end_when_it_leaves_the_store(make_client, tmp_path, exported_store):
    store = store_with(tmp_path, exported_store)
    add_variant(store, COPY, 2)
    for vid, edit in BROKEN.items():
        add_variant(store, vid, 4, edit=edit)
    (store / "not-json").mkdir()
    (store / "not-json" / "card.json").write_text("{oops")
    client = make_client(store, threads=1, reload_interval=0, max_tokens=64)
    # traffic that touches every kind of per-model series: named and routed requests, a stream, an error after the
    # model was chosen, a refusal of a broken variant, the model's own pages and the admin surface
    assert complete(client, COPY).status_code == 200
    assert client.post("/v1/completions", json={"model": COPY, "prompt": "é"}).status_code == 400
    assert client.post("/v1/completions", json={"model": COPY, "prompt": "A", "stream": True,
                                                "max_tokens": 3}).status_code == 200
    assert client.post("/v1/completions", json={"model": "auto", "prompt": "A", "max_tokens": 3,
                                                "max_tpot_ms": 1e-3}).status_code == 200
    assert client.post("/v1/completions", json={"model": "words-4l", "prompt": "A"}).status_code == 503
    assert client.get(f"/v1/models/{COPY}").status_code == 200
    assert client.post(f"/admin/models/{COPY}/unload").status_code == 200
    wait_until(lambda: unloaded(client), "the unload")
    assert client.post(f"/admin/models/{COPY}/load").status_code == 202
    wait_until(lambda: admin(client)[0][COPY]["state"] == "ready", "the load")
    assert complete(client, COPY).status_code == 200
    text = client.get("/metrics").text
    counts = series_by_model(text)
    assert 0 < counts[COPY] <= SERIES_PER_VARIANT and 0 < counts[MODEL] <= SERIES_PER_VARIANT, counts
    assert 0 < counts["words-4l"] <= 10 and 0 < counts["not-json"] <= 10, counts  # refusals and state only
    # the GenAI series: one set per name a variant was reached by (here its id and `auto`), none for a broken one
    by_variant = series_by_model(text, "gen_ai_response_model")
    assert genai.SERIES_PER_NAME <= by_variant[COPY] <= 2 * genai.SERIES_PER_NAME + 3 * genai.SERIES_PER_ERROR
    assert by_variant["words-4l"] == by_variant["not-json"] == 0, by_variant

    for vid in (COPY, *BROKEN, "not-json"):
        shutil.rmtree(store / vid)
    assert sorted(client.post("/admin/reload").json()["removed"]) == sorted([COPY, *BROKEN, "not-json"])
    wait_until(lambda: unloaded(client), "the removed variants to unload")
    text = client.get("/metrics").text
    counts = series_by_model(text)
    for vid in (COPY, *BROKEN, "not-json"):
        assert counts[vid] == 0 and vid not in text, vid  # nor in the HTTP series' paths
    assert counts[MODEL] > 0  # the variant that stays keeps its series
    assert complete(client, MODEL).status_code == 200


def test_a_zoo_that_churns_through_variants_scrapes_back_to_its_size(make_client, tmp_path, exported_store):
    store = store_with(tmp_path, exported_store)
    client = make_client(store, threads=1, reload_interval=0, max_tokens=64)

    def churn(ids: list[str]) -> None:
        for i, vid in enumerate(ids):
            add_variant(store, vid, 2, edit=None if i % 2 else BROKEN["words-4l"])
        assert sorted(client.post("/admin/reload").json()["added"]) == sorted(ids)
        for vid in ids[1::2]:
            wait_until(lambda vid=vid: admin(client)[0][vid]["state"] == "ready", f"{vid} to load")
            assert complete(client, vid).status_code == 200
        for vid in ids:
            shutil.rmtree(store / vid)
        assert sorted(client.post("/admin/reload").json()["removed"]) == sorted(ids)
        wait_until(lambda: unloaded(client), "the removed variants to unload")

    churn(["warm-a-2l", "warm-b-2l"])  # the HTTP series of these routes exist from now on
    before = len(client.get("/metrics").content)
    churn([f"v{i}-2l" for i in range(8)])
    after = len(client.get("/metrics").content)
    assert after <= 1.1 * before, (before, after)


class HeldCollector:
    """A collector whose collect() waits until the test lets it go: a scrape that takes as long as the test wants."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.released_by_test: bool | None = None

    def describe(self):
        return []  # (otherwise registering it would call collect)

    def collect(self):
        self.entered.set()
        self.released_by_test = self.release.wait(30)
        return []


def test_a_scrape_is_rendered_off_the_event_loop(client):
    held = HeldCollector()
    REGISTRY.register(held)
    scrape: list = []
    try:
        th = threading.Thread(target=lambda: scrape.append(client.get("/metrics")))
        th.start()
        assert held.entered.wait(60), "the scrape never reached the registry"
        # the scrape is in the middle of rendering: the event loop still answers
        assert client.get("/healthz").status_code == 200
        held.release.set()
        th.join(60)
    finally:
        held.release.set()
        REGISTRY.unregister(held)
    assert held.released_by_test is True  # /healthz was answered while the scrape was held, not after it gave up
    assert scrape[0].status_code == 200 and "gptzoo_model_ready" in scrape[0].text
