"""The per-model worker and the settings, below HTTP: queue limit, cancellation, env round trip."""

import asyncio
import os
import threading
import time

import pytest

from gptzoo.server import errors, metrics
from gptzoo.server.events import Done, TextDelta
from gptzoo.server.job import Job
from gptzoo.server.refusals import Refused
from gptzoo.server.registry import Registry
from gptzoo.server.settings import Settings
from gptzoo.server.worker import ModelWorker
from gptzoo.zoo.generate import Batch, generate
from gptzoo.zoo.runtime import OnnxModel
from gptzoo.zoo.sampling import SamplingParams
from gptzoo.zoo.store import Store
from gptzoo.zoo.tokenizers import from_spec
from tests.server.conftest import MODEL


def test_full_queue_is_429(exported_store):
    # not started: nothing drains; its one free slot takes a job, two more wait, the fourth is refused
    w = ModelWorker(Store(exported_store).load(MODEL), Settings.build(max_batch_size=1, max_waiting=2))

    async def submit_four():
        for _ in range(4):
            w.submit(Job([1, 2], SamplingParams(max_tokens=1), stream=False))

    refused = metrics.REFUSED.labels(**w.labels, reason="overloaded")
    before = refused._value.get()
    try:
        with pytest.raises(Refused) as e:
            asyncio.run(submit_four())
    finally:
        w.close()  # its two queued jobs leave the (process-wide) waiting gauge
    assert e.value.code == "overloaded" and "2 requests waiting" in e.value.message
    assert e.value.retry_after == "1" and refused._value.get() == before + 1
    assert errors.from_domain(e.value).status == 429


def test_cancelled_stream_leaves_the_batch(exported_store):
    settings = Settings.build(max_tokens=100_000, threads=1)
    w = ModelWorker(Store(exported_store).load(MODEL), settings)
    w.start()
    assert w.loaded.wait(30) and w.ready
    counters = (metrics.CANCELLED.labels(**w.labels),)  # the outcome is counted on the HTTP side (test_metrics)
    before = [c._value.get() for c in counters]

    async def go():
        job = Job([1, 2, 3], SamplingParams(max_tokens=100_000), stream=True)
        w.submit(job)
        assert isinstance(await asyncio.wait_for(anext(job.events()), 10), TextDelta)
        job.cancel()
        # bounded: the worker drops the row at its next step. Wait for the counters, not for `finished`: the worker
        # sets that first and counts just after, so the test could read the counters in between.
        for _ in range(500):
            if [c._value.get() for c in counters] == [b + 1 for b in before]:
                break
            await asyncio.sleep(0.01)
        return job

    try:
        job = asyncio.run(go())
        assert job.finished and job.seen < 100_000
        assert [c._value.get() for c in counters] == [b + 1 for b in before]
    finally:
        w.close()
    assert not w._thread.is_alive()


def test_settings_round_trip_through_the_environment():
    s = Settings.build(store="/x/store", device="cpu", api_key="k", max_tokens=7, max_batch_size=3, threads=2,
                       max_waiting=5, request_timeout=2.5, shutdown_timeout=0, load_in_background=True)
    env = s.to_env()
    assert env["GPTZOO_STORE"] == "/x/store" and env["GPTZOO_API_KEY"] == "k" and env["GPTZOO_THREADS"] == "2"
    assert env["GPTZOO_SERVE_MAX_TOKENS"] == "7" and env["GPTZOO_SERVE_MAX_WAITING"] == "5"
    assert env["GPTZOO_SERVE_REQUEST_TIMEOUT"] == "2.5" and env["GPTZOO_SERVE_SHUTDOWN_TIMEOUT"] == "0.0"
    assert Settings.from_env(env) == s
    assert Settings.from_env({}) == Settings()


def test_bad_settings_are_a_clear_error():
    with pytest.raises(ValueError, match="max_batch_size"):
        Settings.from_env({"GPTZOO_SERVE_MAX_BATCH_SIZE": "0"})
    with pytest.raises(ValueError, match="device"):
        Settings.build(device="tpu")
    with pytest.raises(ValueError, match="request_timeout"):
        Settings.build(request_timeout=0)


def test_loading_model_is_503_with_retry_after(exported_store):
    router = Registry(Settings.build(store=str(exported_store)))  # not started: the model is still loading
    with pytest.raises(Refused) as e:
        router.ready("2l")
    assert e.value.code == "model_not_ready" and "still loading" in e.value.message and e.value.retry_after == "5"
    answer = errors.from_domain(e.value)
    assert answer.status == 503 and answer.headers == {"Retry-After": "5"}


def test_background_loading_answers_at_once_then_gets_ready(make_client, exported_store):
    client = make_client(exported_store, load_in_background=True)
    assert client.get("/healthz").status_code == 200
    for _ in range(300):  # bounded: the tiny model loads in well under a second
        if client.get("/readyz").status_code == 200:
            break
        time.sleep(0.05)
    assert client.post("/v1/completions", json={"model": "2l", "prompt": "A", "max_tokens": 2}).status_code == 200


class Counted:
    """Counts the calls of a callable it wraps (from any thread)."""

    def __init__(self, fn):
        self.fn, self.n, self._lock = fn, 0, threading.Lock()

    def __call__(self, *args, **kwargs):
        with self._lock:
            self.n += 1
        return self.fn(*args, **kwargs)


def solo_text(store, prompt_ids: list[int], params: SamplingParams) -> str:
    v = Store(store).load(MODEL)
    tok = from_spec(v.card.tokenizer)
    return generate(OnnxModel(v.path("model.onnx"), threads=1), tok, [tok.decode(prompt_ids)], params)[0].text


async def collect(job: Job) -> list:
    events, it = [], job.events()
    while not events or isinstance(events[-1], TextDelta):
        events.append(await asyncio.wait_for(anext(it), 30))
    return events


def test_a_step_hands_every_rows_events_to_the_loop_at_once(exported_store, step_gate):
    w = ModelWorker(Store(exported_store).load(MODEL), Settings.build(threads=1, max_batch_size=8))
    w._advance = advances = Counted(w._advance)  # one admission and/or one decode step per call
    w.start()
    assert w.loaded.wait(30) and w.ready
    params = [SamplingParams(max_tokens=30, seed=i, top_k=10 + i) for i in range(8)]

    async def go():
        loop = asyncio.get_running_loop()
        loop.call_soon_threadsafe = hand_offs = Counted(loop.call_soon_threadsafe)
        jobs = [Job([1 + i, 2, 3], p, stream=True) for i, p in enumerate(params)]
        with step_gate.shut():  # the first admitted row's step waits until all eight are queued or admitted
            for job in jobs:
                w.submit(job)
            step_gate.wait_held()
        return await asyncio.gather(*map(collect, jobs)), hand_offs.n

    try:
        per_job, hand_offs = asyncio.run(go())
    finally:
        w.close()
    for i, events in enumerate(per_job):
        *deltas, done = events
        assert isinstance(done, Done) and done.completion_tokens == 30
        assert all(isinstance(e, TextDelta) and e.text for e in deltas)  # in order, none empty, before the end
        assert "".join(d.text for d in deltas) == done.text == solo_text(exported_store, [1 + i, 2, 3], params[i])
    # At most two hand-offs per pass (the admitted rows' first tokens, then the step's tokens and ends); the eight
    # rows share their steps (all are in the batch from the second pass on), so one per token per row would be
    # about eight per pass.
    assert hand_offs <= 2 * advances.n < sum(e[-1].completion_tokens for e in per_job) // 3


def test_the_decode_thread_gives_way_after_each_hand_off(exported_store, monkeypatch):
    """Every hand-off to a loop is followed by a yield of the core, so the loop sends at once instead of waiting
    for the scheduler's next turn on a core it shares with the decode thread."""
    yields = Counted(os.sched_yield)
    monkeypatch.setattr(os, "sched_yield", yields)
    w = ModelWorker(Store(exported_store).load(MODEL), Settings.build(threads=1, stream_interval=0))
    w.start()
    assert w.loaded.wait(30) and w.ready
    yields.n = 0  # the warm-up's

    async def go():
        loop = asyncio.get_running_loop()
        loop.call_soon_threadsafe = hand_offs = Counted(loop.call_soon_threadsafe)
        job = Job([1, 2, 3], SamplingParams(max_tokens=12, seed=1), stream=True)
        w.submit(job)
        return await collect(job), hand_offs.n

    try:
        events, hand_offs = asyncio.run(go())
    finally:
        w.close()
    assert isinstance(events[-1], Done) and events[-1].completion_tokens == 12
    assert hand_offs >= 2 and yields.n == hand_offs


def test_jobs_from_different_event_loops_share_a_batch(exported_store, step_gate):
    """Each job's events go to the loop that created it, even when one step carries rows of both loops."""
    w = ModelWorker(Store(exported_store).load(MODEL), Settings.build(threads=1))
    w.start()
    assert w.loaded.wait(30) and w.ready
    params = [SamplingParams(max_tokens=40, seed=s, temperature=0.8) for s in (11, 12)]
    results: list = [None, None]
    submitted = [threading.Event(), threading.Event()]

    def client(i: int) -> None:
        async def go():
            job = Job([5, 6, 7 + i], params[i], stream=i == 0)  # one stream, one plain request
            w.submit(job)
            submitted[i].set()
            results[i] = (await collect(job), asyncio.get_running_loop())

        asyncio.run(go())

    threads = [threading.Thread(target=client, args=(i,)) for i in range(2)]
    try:
        with step_gate.shut():
            threads[0].start()
            step_gate.wait_held()  # the first job is admitted and its first step held
            threads[1].start()
            assert submitted[1].wait(30)  # queued: admitted right after the held step, while the first still runs
        for t in threads:
            t.join(60)
    finally:
        w.close()
    assert w.peak_rows == 2 and results[0][1] is not results[1][1]
    (*deltas, done), ([plain]) = results[0][0], results[1][0]
    assert "".join(d.text for d in deltas) == done.text == solo_text(exported_store, [5, 6, 7], params[0])
    assert isinstance(plain, Done) and plain.text == solo_text(exported_store, [5, 6, 8], params[1])


def test_a_busy_spell_while_a_model_calibrates_does_not_skew_its_prior(exported_store, monkeypatch):
    """At start a model calibrates while its neighbours load. Simulated here: the worker's thread loses the core for
    SLOW seconds on every other step of its warm-up (a real sleep, so the clock sees it). The prior (the model
    alone) must come from the undisturbed steps: far below SLOW, where a real step of the tiny model takes about a
    millisecond."""
    slow, step, steps = 0.25, Batch.step, []

    def busy_every_other_step(self, *args):
        if threading.current_thread().name == f"gptzoo-{MODEL}" and not w.loaded.is_set():
            steps.append(1)
            if len(steps) % 2:
                time.sleep(slow)
        return step(self, *args)

    monkeypatch.setattr(Batch, "step", busy_every_other_step)
    w = ModelWorker(Store(exported_store).load(MODEL), Settings.build(threads=1, max_batch_size=4))
    w.start()
    try:
        assert w.loaded.wait(120) and w.ready
    finally:
        w.close()
    assert len(steps) >= 3  # the warm-up went through disturbed steps
    assert w.latency.prior_tpot(1) < slow / 2 and w.latency.prior_tpot(4) < slow / 2
