"""The live zoo: variants appear, change and leave while the server runs, and none of them drops a request.

Real tiny models throughout. A re-export is another training of the same tiny variant (other weights), written the
way `gptzoo export` writes it: the file, then the card. Whether a request is still running when the store changes
must not depend on the machine's speed, so a gate holds the decode steps of one worker's batch (not the others':
a new version's warm-up passes) until the test opens it; those tests run the app under a real uvicorn in this
process, since the TestClient hands over a stream only once it ended. Every wait polls for a condition with a generous
deadline."""

from __future__ import annotations

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from gptzoo.cli.main import app
from gptzoo.server.app import create_app
from gptzoo.server.settings import Settings
from gptzoo.zoo import atomic
from gptzoo.zoo.generate import Batch, generate
from gptzoo.zoo.runtime import OnnxModel
from gptzoo.zoo.sampling import SamplingParams
from gptzoo.zoo.store import Store
from gptzoo.zoo.tokenizers import from_spec
from tests.conftest import TINY
from tests.server.conftest import MODEL, add_variant, free_port, live_server, sse_events

KEY = "admin-key"
COPY = "copy-2l"  # a second variant: a copy of MODEL under another id (it claims the alias 2l too: MODEL keeps it)
PROMPT = "ROMEO:"


def wait_until(check, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.05)
    return result


def value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def loads(model: str, outcome: str = "loaded") -> float:
    return value("gptzoo_model_loads_total", model=model, layers="2", outcome=outcome)


class BatchGate:
    """Holds the steps of chosen Batches: `hold(batch, after=k)` lets k more steps pass, then holds each step until
    `release(batch)`. Other batches pass."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._left: dict[int, int] = {}  # id(batch) -> steps it may still take; absent: not gated
        self._held: set[int] = set()

    def __enter__(self) -> BatchGate:
        return self

    def __exit__(self, *exc) -> None:  # open before anything waits for a held request (a failed assertion)
        self.release()

    def hold(self, batch: Batch, after: int = 0) -> None:
        with self._cv:
            self._left[id(batch)] = after

    def release(self, batch: Batch | None = None) -> None:
        with self._cv:
            if batch is None:
                self._left.clear()
            else:
                self._left.pop(id(batch), None)
            self._cv.notify_all()

    def wait_held(self, batch: Batch, timeout: float = 60) -> None:
        with self._cv:
            assert self._cv.wait_for(lambda: id(batch) in self._held, timeout), "the batch never reached the gate"

    def passage(self, batch: Batch) -> None:
        key = id(batch)
        with self._cv:
            if key not in self._left:
                return
            if self._left[key] > 0:
                self._left[key] -= 1
                return
            self._held.add(key)
            self._cv.notify_all()
            self._cv.wait_for(lambda: key not in self._left)
            self._held.discard(key)


@pytest.fixture
def gate(monkeypatch):
    g, step = BatchGate(), Batch.step

    def gated(self, *args):
        g.passage(self)
        return step(self, *args)

    monkeypatch.setattr(Batch, "step", gated)
    yield g
    g.release()  # also when the test failed: no thread stays stuck


@pytest.fixture
def store(exported_store, tmp_path):
    dst = tmp_path / "store"
    shutil.copytree(exported_store, dst)
    return dst


@pytest.fixture(scope="module")
def other_export(tmp_path_factory, data_dir):
    """The folder of another training of MODEL (fewer steps, so other weights), exported: a re-export's files."""
    from gptzoo.exports.onnx_export import export_variant
    from gptzoo.trainer.loop import train

    root = tmp_path_factory.mktemp("other") / "store"
    train(2, "cpu", dict(TINY, max_iters=12), Store(root), data_dir, show_progress=False)
    export_variant(Store(root).load(MODEL))
    return root / MODEL


@contextmanager
def serving(store, **settings):
    """The app under uvicorn in a thread of this process; yields (httpx client, app)."""
    the_app = create_app(Settings.build(store=str(store), threads=1, reload_interval=0, **settings))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(the_app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), "uvicorn to start")
        assert server.started, "uvicorn did not start"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            yield client, the_app
    finally:
        server.should_exit = True
        thread.join(60)


def series(text: str, name: str, **labels) -> list[dict]:
    """The label sets of a metric's samples in a scrape (present, whatever their value)."""
    return [s.labels for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def write_file(store, src) -> None:
    """The first half of `gptzoo export` into `store`'s MODEL: the new model.onnx, atomically."""
    atomic.write_bytes(store / MODEL / "model.onnx", (src / "model.onnx").read_bytes())


def write_card(store, src, **onnx) -> str:
    """The second half: the card's onnx facts (sha256 of the new file); returns the sha256."""
    card = json.loads((store / MODEL / "card.json").read_text())
    card["onnx"] = {**json.loads((src / "card.json").read_text())["onnx"], **onnx}
    atomic.write_json(store / MODEL / "card.json", card)
    return card["onnx"]["sha256"]


def sha_of(folder) -> str:
    return json.loads((folder / "card.json").read_text())["onnx"]["sha256"]


def greedy(folder, n: int) -> str:
    """MODEL's greedy text from the ONNX file in `folder`, outside the server."""
    card = json.loads((folder / "card.json").read_text())
    tok = from_spec(card["tokenizer"])
    model = OnnxModel(folder / "model.onnx", threads=1)
    return generate(model, tok, [PROMPT], SamplingParams(max_tokens=n, temperature=0))[0].text


def complete(client, model: str, n: int = 12, base: str = "", **kw):
    return client.post(f"{base}/v1/completions", json={"model": model, "prompt": PROMPT, "max_tokens": n,
                                                       "temperature": 0}, **kw)


def admin(client, **kw) -> tuple[dict[str, dict], list[dict]]:
    r = client.get("/admin/models", **kw)
    assert r.status_code == 200, r.text
    return {m["id"]: m for m in r.json()["data"]}, r.json()["draining"]


def listed(client) -> dict[str, str]:
    return {m["id"]: m["state"] for m in client.get("/v1/models").json()["data"] if m["kind"] == "variant"}


def streamed(client, model: str, n: int, first: threading.Event) -> tuple[int, list[str]]:
    """A greedy stream of n tokens; sets `first` once its first text chunk arrived. Returns the status and the SSE
    payloads."""
    body = {"model": model, "prompt": PROMPT, "max_tokens": n, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    lines = []
    with client.stream("POST", "/v1/completions", json=body) as r:
        for line in r.iter_lines():
            lines.append(line)
            if line.startswith("data: {") and '"text":"' in line:
                first.set()
    return r.status_code, sse_events("\n".join(lines))


def stream_text(events: list[str]) -> tuple[str, str | None, int]:
    """(text, finish reason, completion tokens) of a stream that ended with [DONE] and no error event."""
    assert events[-1] == "[DONE]", events[-3:]
    chunks = [json.loads(e) for e in events[:-1]]
    assert not [c for c in chunks if "error" in c], chunks
    text = "".join(ch["text"] for c in chunks for ch in c["choices"])
    reason = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    return text, reason[-1] if reason else None, chunks[-1]["usage"]["completion_tokens"]


# -- the store changes -----------------------------------------------------------------------------------------
def test_a_variant_added_to_the_store_serves_after_reload(make_client, store):
    client = make_client(store, threads=1, reload_interval=0)
    assert listed(client) == {MODEL: "ready"}
    before = loads(COPY), loads(COPY, "failed")  # counters live as long as the process: other tests load COPY too
    add_variant(store, COPY, 2)
    r = client.post("/admin/reload")
    assert r.status_code == 200 and r.json() == {"added": [COPY], "changed": [], "removed": []}, r.text
    wait_until(lambda: listed(client).get(COPY) == "ready", "the new variant ready")
    r = complete(client, COPY)
    assert r.status_code == 200 and r.json()["model"] == COPY, r.text
    assert r.json()["choices"][0]["text"] == complete(client, MODEL).json()["choices"][0]["text"]  # the same file
    models, draining = admin(client)
    assert models[COPY]["sha256"] == sha_of(store / COPY) and models[COPY]["loaded_at"] and not draining
    assert (loads(COPY), loads(COPY, "failed")) == (before[0] + 1, before[1])
    assert value("gptzoo_model_ready", model=COPY, layers="2") == 1
    assert client.post("/admin/reload").json() == {"added": [], "changed": [], "removed": []}  # nothing new


def test_a_re_export_takes_over_while_a_stream_on_the_old_file_completes(store, other_export, gate):
    n = 300
    old_sha, new_sha = sha_of(store / MODEL), sha_of(other_export)
    old_text, new_text = greedy(store / MODEL, n), greedy(other_export, 12)
    assert old_sha != new_sha and not old_text.startswith(new_text)  # the two files answer differently
    with serving(store, max_tokens=n) as (client, the_app), ThreadPoolExecutor(1) as pool, gate:
        old = the_app.state.registry.workers[MODEL]
        before, _ = admin(client)
        gate.hold(old._batch, after=3)  # the stream's prefill and first tokens go out, then it waits at the gate
        first = threading.Event()
        stream = pool.submit(streamed, client, MODEL, n, first)
        assert first.wait(60), "the stream's first text never arrived"
        gate.wait_held(old._batch)

        write_file(store, other_export)  # mid-export: a new file under the old card is not a new version yet
        assert client.post("/admin/reload").json()["changed"] == []
        write_card(store, other_export)
        r = client.post("/admin/reload")
        assert r.status_code == 200 and r.json()["changed"] == [MODEL], r.text
        now = wait_until(lambda: (m := admin(client))[0][MODEL]["sha256"] == new_sha and m, "the new version")
        models, draining = now
        assert models[MODEL]["state"] == "ready" and models[MODEL]["loaded_at"] > before[MODEL]["loaded_at"]
        assert models[MODEL]["next"] is None
        assert draining == [{"id": MODEL, "sha256": old_sha, "loaded_at": before[MODEL]["loaded_at"], "requests": 1}]
        r = complete(client, "2l")  # the alias follows the new version
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == new_text, r.text
        assert not stream.done()
        gate.release(old._batch)
        status, events = stream.result(timeout=120)
        assert status == 200
        assert stream_text(events) == (old_text, "length", n)  # every token from the old file, no error
        wait_until(lambda: not admin(client)[1], "the old version unloaded")
        assert not old.alive
        text = client.get("/metrics").text  # (process-wide: earlier tests' servers left their own series)
        assert not series(text, "gptzoo_model_info", **old.info_labels())  # the old file's info series is gone
        new = the_app.state.registry.workers[MODEL]
        assert new.sha256 == new_sha and series(text, "gptzoo_model_info", **new.info_labels())


def test_a_file_that_does_not_match_its_card_leaves_the_serving_version(make_client, store, other_export):
    client = make_client(store, threads=1, reload_interval=0)
    old_sha = sha_of(store / MODEL)
    write_file(store, other_export)
    write_card(store, other_export, sha256="0" * 64)  # a card that does not describe the file (a botched copy)
    failed = loads(MODEL, "failed")
    assert client.post("/admin/reload").json()["changed"] == [MODEL]
    models, _ = wait_until(lambda: (m := admin(client))[0][MODEL]["next"]["state"] == "failed" and m,
                           "the new version's failure")
    assert models[MODEL]["sha256"] == old_sha and models[MODEL]["state"] == "ready"
    assert "does not match its card" in models[MODEL]["next"]["reason"]
    assert loads(MODEL, "failed") == failed + 1
    assert complete(client, MODEL).status_code == 200  # the old version serves on
    assert client.post("/admin/reload").json()["changed"] == []  # the same files: not tried again
    new_sha = write_card(store, other_export)  # the card catches up with the file
    assert client.post("/admin/reload").json()["changed"] == [MODEL]
    wait_until(lambda: admin(client)[0][MODEL]["sha256"] == new_sha, "the new version")
    assert admin(client)[0][MODEL]["next"] is None


def test_a_variant_removed_from_the_store_drains_and_leaves(store, gate):
    add_variant(store, COPY, 2)
    with serving(store, max_tokens=200) as (client, the_app), ThreadPoolExecutor(1) as pool, gate:
        worker = the_app.state.registry.workers[COPY]
        gate.hold(worker._batch, after=2)
        first = threading.Event()
        stream = pool.submit(streamed, client, COPY, 200, first)
        assert first.wait(60)
        gate.wait_held(worker._batch)
        shutil.rmtree(store / COPY)
        r = client.post("/admin/reload")
        assert r.status_code == 200 and r.json()["removed"] == [COPY], r.text
        assert listed(client) == {MODEL: "ready"}  # out of /v1/models at once
        r = complete(client, COPY)
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", r.text
        assert f"available: {MODEL} (2l);" in r.json()["error"]["message"]  # the alias is MODEL's alone
        assert complete(client, "2l").json()["model"] == MODEL
        assert admin(client)[1] == [{"id": COPY, "sha256": worker.sha256, "loaded_at": worker.loaded_at.isoformat()
                                     .replace("+00:00", "Z"), "requests": 1}]
        gate.release(worker._batch)
        status, events = stream.result(timeout=120)
        assert status == 200 and stream_text(events)[1:] == ("length", 200)
        wait_until(lambda: not admin(client)[1], "the removed variant unloaded")
        assert not worker.alive
        text = client.get("/metrics").text
    for name in ("gptzoo_model_ready", "gptzoo_model_info", "gptzoo_requests_running", "gptzoo_cache_slots"):
        assert not series(text, name, model=COPY), name  # no ghost of it on a dashboard


def test_a_card_rewritten_without_a_new_file_is_listed_without_a_reload(make_client, store):
    client = make_client(store, threads=1, reload_interval=0)
    worker, loaded = client.app.state.registry.workers[MODEL], loads(MODEL)
    card = json.loads((store / MODEL / "card.json").read_text())
    atomic.write_json(store / MODEL / "card.json", {**card, "val_loss": 1.25})  # what `gptzoo eval` may do
    assert client.post("/admin/reload").json()["changed"] == []
    assert client.get(f"/v1/models/{MODEL}").json()["val_loss"] == 1.25
    assert value("gptzoo_model_validation_loss", model=MODEL, layers="2") == 1.25
    assert client.app.state.registry.workers[MODEL] is worker and loads(MODEL) == loaded


def test_the_server_rescans_the_store_every_reload_interval(make_client, store):
    client = make_client(store, threads=1, reload_interval=0.2)
    add_variant(store, COPY, 2)
    wait_until(lambda: listed(client).get(COPY) == "ready", "the rescan to load the new variant")
    assert complete(client, COPY).status_code == 200
    shutil.rmtree(store / COPY)
    wait_until(lambda: COPY not in listed(client), "the rescan to remove it")


# -- operators ------------------------------------------------------------------------------------------------
def test_unloading_the_last_ready_variant_turns_readyz_503_and_load_brings_it_back(make_client, store):
    client = make_client(store, threads=1, reload_interval=0)
    loaded = loads(MODEL)
    r = client.post("/admin/models/2l/unload")  # an alias names it too
    assert r.status_code == 200 and r.json()["state"] == "unloaded" and r.json()["id"] == MODEL, r.text
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "unloaded by an operator" in ready.json()["reason"], ready.text
    r = complete(client, MODEL)
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_ready"
    assert "unloaded by an operator" in r.json()["error"]["message"]
    assert listed(client) == {MODEL: "unloaded"}
    assert value("gptzoo_model_ready", model=MODEL, layers="2") == 0
    wait_until(lambda: not admin(client)[1], "the unloaded version gone")
    assert value("gptzoo_cache_slots", model=MODEL, layers="2") == 0
    assert client.post("/admin/reload").json()["changed"] == []  # a rescan leaves it unloaded
    assert client.post(f"/admin/models/{MODEL}/unload").status_code == 200  # again: nothing to do

    r = client.post(f"/admin/models/{MODEL}/load")
    assert r.status_code in (200, 202), r.text  # 202 while it loads; a fast load may be over already
    wait_until(lambda: client.get("/readyz").status_code == 200, "the model ready again")
    assert complete(client, MODEL).status_code == 200
    assert loads(MODEL) == loaded + 1
    r = client.post(f"/admin/models/{MODEL}/load")
    assert r.status_code == 200 and r.json()["state"] == "ready"  # serves the store's version already


def hold_the_load(store, client, gate, monkeypatch) -> None:
    """COPY added to the store and loading: its worker's first batch (whose warm-up is the load's last part) waits
    at the gate until the gate opens."""
    add_variant(store, COPY, 2)
    warm_up = threading.Event()
    new_batch = Batch.__init__

    def held_warm_up(self, *args, **kw):
        new_batch(self, *args, **kw)
        if threading.current_thread().name == f"gptzoo-{COPY}" and not warm_up.is_set():
            gate.hold(self)
            warm_up.set()

    monkeypatch.setattr(Batch, "__init__", held_warm_up)
    assert client.post("/admin/reload").json()["added"] == [COPY]
    assert warm_up.wait(60)


def test_a_load_under_way_is_joined_never_doubled(make_client, store, gate, monkeypatch):
    """Loads and rescans arriving while a variant loads: one load, one shared rescan."""
    client = make_client(store, threads=1, reload_interval=0)
    zoo = client.app.state.zoo
    loaded = loads(COPY)
    hold_the_load(store, client, gate, monkeypatch)
    worker = client.app.state.registry.workers[COPY]
    with ThreadPoolExecutor(4) as pool, gate:
        scans = zoo.scans
        rescans = [pool.submit(client.post, "/admin/reload") for _ in range(3)]
        loads_ = [pool.submit(client.post, f"/admin/models/{COPY}/load") for _ in range(3)]
        for r in [f.result(timeout=60) for f in loads_]:
            assert r.status_code == 202 and r.json()["state"] == "loading", r.text
        assert [r.status_code for r in [f.result(timeout=60) for f in rescans]] == [200] * 3
        assert zoo.scans - scans <= 3
        gate.release()
    wait_until(lambda: listed(client).get(COPY) == "ready", "the new variant ready")
    assert client.app.state.registry.workers[COPY] is worker and loads(COPY) == loaded + 1


def test_unloading_a_loading_variant_cancels_the_load(make_client, store, gate, monkeypatch):
    """An operator need not wait for a load (a huge file, a slow disk) to end to take the variant out."""
    client = make_client(store, threads=1, reload_interval=0)
    hold_the_load(store, client, gate, monkeypatch)
    loading = client.app.state.registry.workers[COPY]
    with gate:
        r = client.post(f"/admin/models/{COPY}/unload")
        assert r.status_code == 200 and r.json()["state"] == "unloaded", r.text
        assert listed(client) == {MODEL: "ready", COPY: "unloaded"}
        r = complete(client, COPY)
        assert r.status_code == 503 and "unloaded by an operator" in r.json()["error"]["message"], r.text
        assert client.post("/admin/reload").json() == {"added": [], "changed": [], "removed": []}
        gate.release()
    wait_until(lambda: not loading.alive and not admin(client)[1], "the cancelled load's worker gone")
    assert listed(client) == {MODEL: "ready", COPY: "unloaded"}
    assert client.post(f"/admin/models/{COPY}/load").status_code in (200, 202)
    wait_until(lambda: listed(client)[COPY] == "ready", "the variant loaded by the operator")
    assert client.app.state.registry.workers[COPY] is not loading


def test_rescans_requested_while_one_runs_share_the_next(make_client, store, monkeypatch):
    client = make_client(store, threads=1, reload_interval=0)
    zoo = client.app.state.zoo
    entered, go = threading.Event(), threading.Event()
    scan = Store.scan

    def slow_scan(self):
        found = scan(self)
        entered.set()
        assert go.wait(60)
        return found

    monkeypatch.setattr(Store, "scan", slow_scan)
    scans, loaded = zoo.scans, loads(COPY)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(client.post, "/admin/reload")
        assert entered.wait(60)
        add_variant(store, COPY, 2)
        later = [pool.submit(client.post, "/admin/reload") for _ in range(3)]
        wait_until(lambda: zoo.waiting == 4, "every rescan request at the server")
        go.set()
        reports = [f.result(timeout=60).json() for f in (first, *later)]
    assert zoo.scans - scans == 2  # the running scan and one that all three later calls share
    assert reports[0]["added"] == [] and all(r["added"] == [COPY] for r in reports[1:]), reports
    wait_until(lambda: listed(client).get(COPY) == "ready", "the new variant ready")
    assert loads(COPY) == loaded + 1


def test_admin_endpoints_need_the_api_key(make_client, store):
    client = make_client(store, threads=1, reload_interval=0, api_key=KEY)
    calls = [("GET", "/admin/models"), ("POST", "/admin/reload"), ("POST", f"/admin/models/{MODEL}/unload"),
             ("POST", f"/admin/models/{MODEL}/load")]
    for method, path in calls:
        r = client.request(method, path)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error", (path, r.text)
    assert listed_with_key(client) == {MODEL: "ready"}  # nothing happened
    auth = {"Authorization": f"Bearer {KEY}"}
    for method, path in calls:
        assert client.request(method, path, headers=auth).status_code in (200, 202), path


def listed_with_key(client) -> dict[str, str]:
    body = client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()
    return {m["id"]: m["state"] for m in body["data"] if m["kind"] == "variant"}


@pytest.mark.parametrize("path", ["/admin/models/nope/load", "/admin/models/nope/unload",
                                  "/admin/models/..%2Fetc/load", "/admin/models/NOPE/unload"])
def test_unknown_models_are_404_with_the_error_body(client, path):
    r = client.post(path)
    assert r.status_code == 404, r.text
    e = r.json()["error"]
    assert e["type"] == "not_found_error" and e["code"] in ("model_not_found", "not_found"), e
    assert "Traceback" not in r.text


def test_a_broken_variant_cannot_be_loaded_and_says_why(make_client, store):
    add_variant(store, "words-2l", 2, edit=lambda c: c.update(n_layer="two"))
    client = make_client(store, threads=1, reload_interval=0)
    r = client.post("/admin/models/words-2l/load")
    assert r.status_code == 409 and r.json()["error"]["code"] == "model_not_loadable", r.text
    assert "card.json is invalid" in r.json()["error"]["message"]
    assert complete(client, MODEL).status_code == 200


# -- --models ---------------------------------------------------------------------------------------------------
def test_models_serves_only_the_listed_variants(make_client, store):
    add_variant(store, COPY, 2)
    client = make_client(store, threads=1, reload_interval=0, models=[COPY])
    assert listed(client) == {MODEL: "unloaded", COPY: "ready"}
    r = complete(client, "2l")  # the alias names the ready variant
    assert r.status_code == 200 and r.json()["model"] == COPY
    r = complete(client, MODEL)
    assert r.status_code == 503 and "not in --models" in r.json()["error"]["message"]
    assert client.post("/admin/reload").json()["changed"] == []  # rescans respect the selection
    assert client.post(f"/admin/models/{MODEL}/load").status_code in (200, 202)
    wait_until(lambda: listed(client)[MODEL] == "ready", "the loaded variant")


def test_serve_help_explains_the_live_zoo_flags():
    r = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200)
    assert r.exit_code == 0 and "--reload-interval" in r.stdout and "--models" in r.stdout
    assert "/admin/reload" in r.stdout


def test_serve_refuses_unknown_models_in_one_line(store):
    r = CliRunner().invoke(app, ["serve", "--store", str(store), "--models", "2l,nope"])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert "'nope' is not in the store" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.slow
def test_gptzoo_serve_follows_the_store_with_its_flags(tmp_path, store):
    """The real command: --models and --reload-interval reach the server, which picks up a new variant."""
    with live_server(tmp_path, store, "--models", "2l", "--reload-interval", 0.2) as (base, log):
        add_variant(store, COPY, 2)
        wait_until(lambda: {m["id"]: m["state"] for m in httpx.get(f"{base}/v1/models").json()["data"]}.get(COPY)
                   == "unloaded",
                   "the rescan to list the new variant")
        assert httpx.post(f"{base}/admin/models/{COPY}/load", timeout=30).status_code in (200, 202)
        wait_until(lambda: complete(httpx, COPY, base=base).status_code == 200, "the loaded variant to answer")
    assert f"{COPY}: new in the store" in log.read_text()


def test_live_zoo_settings_round_trip_through_the_environment():
    s = Settings.build(reload_interval=0.5, models=["2l", MODEL])
    env = s.to_env()
    assert env["GPTZOO_SERVE_RELOAD_INTERVAL"] == "0.5" and env["GPTZOO_SERVE_MODELS"] == f"2l,{MODEL}"
    assert Settings.from_env(env) == s
    with pytest.raises(ValueError, match="reload_interval"):
        Settings.build(reload_interval=-1)
