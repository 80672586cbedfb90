"""Depth routing over a real two-depth zoo (tiny 1- and 2-layer variants): `auto` and family ids pick by budget and
stored validation loss, overload falls back to a shallower variant, the answer says what happened, and bad budgets
are refused by name. Predictions are pinned by calibrating the workers' latency models by hand, so no verdict
depends on how fast this machine is."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from gptzoo.server import metrics
from gptzoo.server.latency import TokenTime
from tests.conftest import TINY
from tests.server.conftest import MODEL, metric, sse_events
from tests.server.test_errors import error_of

SHALLOW = "shakespeare-char-1l"
FAMILY = "shakespeare-char"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, exported_store, data_dir) -> Path:
    """The tiny 2-layer variant and a 1-layer one trained and exported beside it."""
    from gptzoo.exports.onnx_export import export_variant
    from gptzoo.trainer.loop import train
    from gptzoo.zoo.store import Store

    root = tmp_path_factory.mktemp("zoo") / "store"
    shutil.copytree(exported_store, root)
    train(1, "cpu", dict(TINY), Store(root), data_dir, show_progress=False)
    export_variant(Store(root).load(SHALLOW))
    return root


def set_loss(store: Path, model: str, loss: float) -> None:
    card = json.loads((store / model / "card.json").read_text())
    card["val_loss"] = loss
    (store / model / "card.json").write_text(json.dumps(card))


@pytest.fixture
def store(tmp_path, zoo) -> Path:
    """A copy of the zoo where the deeper variant is the better one (as the zoo's cards are meant to say)."""
    dst = tmp_path / "store"
    shutil.copytree(zoo, dst)
    set_loss(dst, MODEL, 1.5)
    set_loss(dst, SHALLOW, 2.0)
    return dst


def pin_latency(client, per_token: dict[str, float]) -> None:
    """Replaces each worker's live latency model with a flat one: `seconds` per token at any occupancy."""
    for model, seconds in per_token.items():
        t = TokenTime()
        t.calibrate(seconds, seconds, rows=2)
        client.app.state.registry.workers[model].latency = t


def complete(client, **body):
    return client.post("/v1/completions", json={"prompt": "ROMEO:", "max_tokens": 3, **body})


def test_auto_picks_the_best_variant_that_fits_and_the_fastest_when_none_does(make_client, store):
    client = make_client(store, threads=1)
    pin_latency(client, {MODEL: 0.010, SHALLOW: 0.002})
    for name in ("auto", FAMILY):
        r = complete(client, model=name)  # no budget: the best
        assert r.status_code == 200, r.text
        assert (r.json()["model"], r.headers["x-gptzoo-model"], r.headers["x-gptzoo-route"]) == (
            MODEL, MODEL, "best-fit")
        pin_latency(client, {MODEL: 0.010, SHALLOW: 0.002})  # forget what that request measured
    r = complete(client, model="auto", max_tpot_ms=50)  # generous: the best
    assert (r.headers["x-gptzoo-model"], r.headers["x-gptzoo-route"]) == (MODEL, "best-fit")
    pin_latency(client, {MODEL: 0.010, SHALLOW: 0.002})
    r = complete(client, model="auto", max_tpot_ms=5)  # only the shallow one fits
    assert (r.json()["model"], r.headers["x-gptzoo-route"]) == (SHALLOW, "best-fit")
    pin_latency(client, {MODEL: 0.010, SHALLOW: 0.002})
    r = complete(client, model="auto", max_tpot_ms=0.5)  # impossible: the fastest
    assert (r.json()["model"], r.headers["x-gptzoo-route"]) == (SHALLOW, "fastest-no-fit")
    pin_latency(client, {MODEL: 0.010, SHALLOW: 0.002})
    r = complete(client, model=FAMILY, max_ttft_ms=5, stream=True)  # a TTFT budget, streamed: headers too
    assert (r.headers["x-gptzoo-model"], r.headers["x-gptzoo-route"]) == (SHALLOW, "best-fit")
    assert json.loads(sse_events(r.text)[0])["model"] == SHALLOW
    r = complete(client, model="2l")  # a named variant is served as named
    assert (r.headers["x-gptzoo-model"], r.headers["x-gptzoo-route"]) == (MODEL, "named")


def test_predictions_follow_the_load(make_client, store):
    """A variant busy enough to miss the budget loses the next request to one that fits, and gets requests again
    once it is predicted to fit."""
    client = make_client(store, threads=1)
    pin_latency(client, {MODEL: 0.002, SHALLOW: 0.001})
    router = client.app.state.registry
    busy = router.workers[MODEL].latency
    now = time.perf_counter()
    for i in range(50):  # what the worker records after slow steps at 4 rows (recent: a 2 s half-life)
        busy.observe(4, 0.020, now=now + i * 1e-4)
    assert busy.tpot(1, now=time.perf_counter()) > 0.01
    r = complete(client, model="auto", max_tpot_ms=5)
    assert r.headers["x-gptzoo-model"] == SHALLOW
    pin_latency(client, {MODEL: 0.002, SHALLOW: 0.001})  # load gone
    assert complete(client, model="auto", max_tpot_ms=5).headers["x-gptzoo-model"] == MODEL


def test_overload_falls_back_to_a_shallower_variant(make_client, store, step_gate):
    """With every step held, the 2-layer variant's one slot and one queue place are taken: a request that allows a
    fallback goes to the 1-layer variant; one that does not gets 429; with both full, 429 too."""
    client = make_client(store, threads=1, max_batch_size=1, max_waiting=1)
    base = {"prompt": "ROMEO:", "max_tokens": 2}
    answers: list = []

    def send(**body):
        th = threading.Thread(target=lambda: answers.append(client.post("/v1/completions", json={**base, **body})))
        th.start()
        return th

    def waiting(model: str) -> float:
        return metric(client.get("/metrics").text, "gptzoo_requests_waiting", model=model)

    with step_gate.shut():
        threads = [send(model="2l")]
        step_gate.wait_held()  # it holds the slot
        threads.append(send(model="2l"))
        _poll(lambda: waiting(MODEL) == 1)
        e = error_of(complete(client, model="2l"), 429)
        assert e["code"] == "overloaded"
        threads.append(send(model="2l", fallback="shallower"))
        _poll(lambda: len(client.app.state.registry.workers[SHALLOW]._pending)
              + len(client.app.state.registry.workers[SHALLOW]._batch.rows) == 1)
        threads.append(send(model="2l", fallback="shallower"))  # the 1-layer variant's queue place
        _poll(lambda: waiting(SHALLOW) == 1 or len(answers) > 0)
        full = error_of(complete(client, model="2l", fallback="shallower"), 429)
        assert "waiting already" in full["message"]
    for th in threads:
        th.join(60)
    assert sorted((r.headers["x-gptzoo-model"], r.headers["x-gptzoo-route"]) for r in answers) == sorted(
        [(MODEL, "named"), (MODEL, "named"), (SHALLOW, "fallback-overload"), (SHALLOW, "fallback-overload")])
    assert all(r.status_code == 200 for r in answers)


def test_the_server_default_fallback(make_client, store, step_gate):
    client = make_client(store, threads=1, max_batch_size=1, max_waiting=1, fallback="shallower")
    answers: list = []
    with step_gate.shut():
        ths = [threading.Thread(target=lambda: answers.append(complete(client, model="2l"))) for _ in range(3)]
        for th in ths:
            th.start()
        _poll(lambda: len(client.app.state.registry.workers[SHALLOW]._pending)
              + len(client.app.state.registry.workers[SHALLOW]._batch.rows) >= 1)
        # a request can still say no
        assert error_of(complete(client, model="2l", fallback="none"), 429)["code"] == "overloaded"
    for th in ths:
        th.join(60)
    assert sorted(r.headers["x-gptzoo-route"] for r in answers) == ["fallback-overload", "named", "named"]


def test_route_and_budget_metrics(make_client, store):
    client = make_client(store, threads=1)
    scrape = client.get("/metrics").text

    def count(name, **labels):
        return metric(client.get("/metrics").text, name, **labels) - metric(scrape, name, **labels)

    assert complete(client, model="auto", max_tokens=8, max_tpot_ms=60_000).status_code == 200
    assert complete(client, model="2l", max_tokens=8, max_tpot_ms=1e-6).status_code == 200  # surely over
    labels = {"model": MODEL, "layers": "2", "family": FAMILY}
    assert count("gptzoo_route_decisions_total", **labels, reason="best-fit") == 1
    assert count("gptzoo_route_decisions_total", **labels, reason="named") == 1
    assert count("gptzoo_budget_requests_total", **labels, result="within") == 1
    assert count("gptzoo_budget_requests_total", **labels, result="over") == 1
    assert count("gptzoo_time_per_output_token_seconds_count", model=MODEL) == 2
    assert count("gptzoo_predicted_time_per_output_token_seconds_count", model=MODEL) == 2
    assert metrics.ROUTE_REASONS == ("named", "best-fit", "fastest-no-fit", "fallback-overload")


def test_models_lists_the_family_and_auto(make_client, store):
    client = make_client(store, threads=1)
    data = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert {i: m["kind"] for i, m in data.items()} == {MODEL: "variant", SHALLOW: "variant", FAMILY: "family",
                                                       "auto": "auto"}
    assert data[FAMILY]["variants"] == [MODEL, SHALLOW] and data[FAMILY]["ready"] is True  # best first
    assert data["auto"]["variants"] == [MODEL, SHALLOW] and data["auto"]["dataset"] == "shakespeare_char"
    assert client.get("/v1/models/auto").json() == data["auto"]
    assert client.get(f"/v1/models/{FAMILY}").json() == data[FAMILY]


@pytest.mark.parametrize(("body", "raw", "param"), [
    ({"max_tpot_ms": 0}, None, "max_tpot_ms"),
    ({"max_tpot_ms": -5}, None, "max_tpot_ms"),
    ({"max_ttft_ms": "fast"}, None, "max_ttft_ms"),
    (None, '{"model": "auto", "prompt": "x", "max_tpot_ms": NaN}', "max_tpot_ms"),
    (None, '{"model": "auto", "prompt": "x", "max_ttft_ms": Infinity}', "max_ttft_ms"),
    ({"fallback": "deeper"}, None, "fallback"),
])
def test_bad_budgets_are_400_naming_the_field(make_client, store, body, raw, param):
    client = make_client(store, threads=1)
    if raw is None:
        r = client.post("/v1/completions", json={"model": "auto", "prompt": "x", **body})
    else:
        r = client.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
    e = error_of(r, 400)
    assert param in e["message"], e


def test_unknown_family_auto_without_ready_variants_and_auto_over_two_families(make_client, store, tmp_path):
    client = make_client(store, threads=1)
    e = error_of(complete(client, model="tinystories"), 404)
    assert FAMILY in e["message"] and "auto" in e["message"]
    broken = tmp_path / "broken"
    shutil.copytree(store, broken)
    for m in (MODEL, SHALLOW):
        (broken / m / "model.onnx").write_bytes(b"\x00garbage")
    down = make_client(broken, threads=1)
    e = error_of(complete(down, model="auto"), 503)
    assert e["code"] == "model_not_ready" and MODEL in e["message"] and SHALLOW in e["message"]
    two = tmp_path / "two"
    shutil.copytree(store, two)
    card = json.loads((two / SHALLOW / "card.json").read_text())
    card["dataset"]["name"] = "other-corpus"
    (two / SHALLOW / "card.json").write_text(json.dumps(card))
    c2 = make_client(two, threads=1)
    # `auto` names one family, never 400: the one whose oldest card is oldest (MODEL's: SHALLOW was trained later)
    assert complete(c2, model="auto").headers["x-gptzoo-model"] == MODEL
    assert complete(c2, model="other-corpus").headers["x-gptzoo-model"] == SHALLOW
    assert complete(c2, model="shakespeare_char").headers["x-gptzoo-model"] == MODEL  # the dataset's spelling


def _poll(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_openai_client_sends_budgets_through_extra_body(make_client, store):
    """What the docs tell OpenAI SDK users to do, checked against the wire format httpx sends."""
    client = make_client(store, threads=1)
    r = client.post("/v1/completions", content=httpx.Request(
        "POST", "http://x", json={"model": "auto", "prompt": "x", "max_tokens": 2, "max_tpot_ms": 1000}).content,
        headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.headers["x-gptzoo-route"] == "best-fit"


def test_auto_follows_the_ready_variants_of_a_live_zoo(make_client, store):
    """Unloading the best variant (issue 16's admin API) moves `auto` to the next one; loading it brings it back."""
    client = make_client(store, threads=1, reload_interval=0)
    assert complete(client, model="auto").headers["x-gptzoo-model"] == MODEL
    assert client.post(f"/admin/models/{MODEL}/unload").status_code in (200, 202)
    _poll(lambda: not client.app.state.registry.workers[MODEL].ready)
    assert complete(client, model="auto").headers["x-gptzoo-model"] == SHALLOW
    assert client.get("/v1/models/auto").json()["variants"] == [MODEL, SHALLOW]  # still listed, not ready
    assert client.post(f"/admin/models/{MODEL}/load").status_code in (200, 202)
    _poll(lambda: client.app.state.registry.workers[MODEL].ready)
    assert complete(client, model="auto").headers["x-gptzoo-model"] == MODEL
