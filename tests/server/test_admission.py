"""Admission (issue 22): jobs that the free batch slots take at the next step are not waiting, so an idle model takes
a burst of max_batch_size + max_waiting requests and refuses only the one after. Every decode step is held at a gate
while the burst arrives, so nothing finishes or moves meanwhile: no verdict depends on how fast the machine is."""

from __future__ import annotations

import threading

from tests.server.conftest import MODEL
from tests.server.test_errors import error_of
from tests.server.test_live_zoo import wait_until

SLOTS, QUEUE = 4, 2


def test_an_idle_model_takes_a_burst_of_its_slots_and_queue_then_refuses_one(make_client, exported_store, step_gate):
    client = make_client(exported_store, threads=1, max_batch_size=SLOTS, max_waiting=QUEUE)
    worker = client.app.state.registry.workers[MODEL]
    answers: list = []
    body = {"model": MODEL, "prompt": "ROMEO:", "max_tokens": 3}

    def send() -> threading.Thread:
        th = threading.Thread(target=lambda: answers.append(client.post("/v1/completions", json=body)))
        th.start()
        return th

    with step_gate.shut():
        burst = [send()]
        step_gate.wait_held()  # the first request took a slot; its first step waits at the gate
        burst += [send() for _ in range(SLOTS + QUEUE - 1)]  # three for the free slots, two to wait
        wait_until(lambda: worker.in_flight == SLOTS + QUEUE or answers, "the burst to be queued")
        assert not answers, [(r.status_code, r.text) for r in answers]  # none refused
        assert worker.queue_full  # what routing reads to fall back
        one_more = error_of(client.post("/v1/completions", json=body), 429)
        assert one_more["code"] == "overloaded" and f"{QUEUE} requests waiting" in one_more["message"]
    for th in burst:
        th.join(60)
    assert [r.status_code for r in answers] == [200] * (SLOTS + QUEUE), [r.text for r in answers]
    assert worker.peak_rows == SLOTS


def test_the_queue_limit_still_holds_once_every_slot_is_taken(make_client, exported_store, step_gate):
    client = make_client(exported_store, threads=1, max_batch_size=2, max_waiting=1)
    worker = client.app.state.registry.workers[MODEL]
    body = {"model": MODEL, "prompt": "ROMEO:", "max_tokens": 3}
    answers: list = []
    with step_gate.shut():
        ths = [threading.Thread(target=lambda: answers.append(client.post("/v1/completions", json=body)))
               for _ in range(3)]
        ths[0].start()
        step_gate.wait_held()
        for th in ths[1:]:
            th.start()
        wait_until(lambda: worker.in_flight == 3 or answers, "the requests to be queued")
        assert worker.queue_full
        error_of(client.post("/v1/completions", json=body), 429)
    for th in ths:
        th.join(60)
    assert [r.status_code for r in answers] == [200] * 3
