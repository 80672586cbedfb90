"""The registry's one `route` on a real tiny model, and the one table from domain outcomes to HTTP statuses."""

import asyncio

import pytest

from gptzoo.server import errors, routing
from gptzoo.server.events import Done
from gptzoo.server.job import Job
from gptzoo.server.latency import Budget
from gptzoo.server.refusals import Refused, UnknownModel
from gptzoo.server.registry import Ask, Registry
from gptzoo.server.settings import Settings
from gptzoo.zoo.errors import GptzooError
from gptzoo.zoo.sampling import SamplingParams
from tests.server.conftest import MODEL


def greedy_job(worker, ids):
    return Job(ids, SamplingParams(max_tokens=3, temperature=0), stream=False)


def test_route_queues_the_named_variants_job_and_its_events_end_with_done(exported_store):
    async def go():
        r = Registry(Settings.build(store=str(exported_store), threads=1))
        r.start()
        await asyncio.to_thread(r.wait_loaded)
        try:
            seen, read = [], []

            async def tokens(worker):
                read.append(worker.id)
                return worker.encode("AB")

            route = await r.route(Ask(MODEL, Budget(), fallback=False), tokens, greedy_job, seen.append)
            events = [e async for e in route.job.events()]
            with pytest.raises(UnknownModel) as missing:
                await r.route(Ask("no-such-model", Budget(), fallback=False), tokens, greedy_job, seen.append)
            return route, events, seen, read, missing.value
        finally:
            r.close()

    route, events, seen, read, missing = asyncio.run(go())
    assert route.worker.id == MODEL and route.reason == routing.NAMED and read == [MODEL]
    assert [w.id for w in seen] == [MODEL, MODEL]  # the name's worker, then the one the job was queued on
    assert len(events) == 1 and isinstance(events[0], Done) and events[0].completion_tokens == 3
    assert MODEL in missing.message and errors.from_domain(missing).status == 404


def test_route_refuses_a_variant_still_loading_with_retry_after(exported_store):
    async def go():
        r = Registry(Settings.build(store=str(exported_store)))  # not started: every variant is loading

        async def tokens(worker):
            raise AssertionError("a refused request is not tokenized")

        try:
            await r.route(Ask(MODEL, Budget(), fallback=True), tokens, greedy_job, lambda w: None)
        finally:
            r.close()

    with pytest.raises(Refused) as e:
        asyncio.run(go())
    answer = errors.from_domain(e.value)
    assert (e.value.code, answer.status, answer.headers) == ("model_not_ready", 503, {"Retry-After": "5"})


def test_every_domain_outcome_has_a_status_and_an_openai_error_type():
    for code, status in errors.STATUS.items():
        answer = errors.outcome_error(code, "why", "1")
        assert answer.status == status and answer.code == code and answer.headers == {"Retry-After": "1"}
        assert status in errors.TYPES
    assert errors.outcome_error("overloaded", "full").status == 429
    assert errors.outcome_error("generation_failed", "boom").headers == {}
    assert isinstance(errors.outcome_error("overloaded", "full"), GptzooError)
