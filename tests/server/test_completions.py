"""POST /v1/completions on the real tiny model: JSON, streaming, aliases, sampling controls, concurrent requests."""

import asyncio
import functools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import msgspec
import pytest
from prometheus_client import REGISTRY

from gptzoo.server.events import Done, Failed, TextDelta
from gptzoo.server.job import Job
from gptzoo.server.schemas import CompletionChoice, CompletionChunk
from gptzoo.server.serving import ChunkFrames, CompletionService, Prepared
from gptzoo.zoo.sampling import SamplingParams
from tests.server.conftest import MODEL, sse_events


def complete(client, **body):
    r = client.post("/v1/completions", json={"model": "2l", "prompt": "ROMEO:", **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_completion_has_openai_shape(client):
    r = complete(client, max_tokens=12, seed=3)
    assert r["object"] == "text_completion" and r["id"].startswith("cmpl-") and isinstance(r["created"], int)
    assert r["model"] == MODEL
    [choice] = r["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "length"
    assert len(choice["text"]) == 12  # one character per token
    assert r["usage"] == {"prompt_tokens": 6, "completion_tokens": 12, "total_tokens": 18}


def test_default_max_tokens_is_openais_16(client):
    assert complete(client)["usage"]["completion_tokens"] == 16


def test_full_id_and_depth_alias_name_the_same_model(client):
    a = complete(client, model=MODEL, temperature=0, max_tokens=20)
    b = complete(client, model="2l", temperature=0, max_tokens=20)
    assert a["model"] == b["model"] == MODEL
    assert a["choices"][0]["text"] == b["choices"][0]["text"]


def test_seed_makes_sampling_repeatable(client):
    texts = [complete(client, seed=s, max_tokens=30, top_k=20, top_p=0.9)["choices"][0]["text"] for s in (7, 7, 8)]
    assert texts[0] == texts[1] != texts[2]


def test_stop_sequence_ends_the_text_before_it(client):
    full = complete(client, temperature=0, max_tokens=40)["choices"][0]["text"]
    stop = full[10:12]
    r = complete(client, temperature=0, max_tokens=40, stop=[stop, "never-there"])
    assert r["choices"][0]["finish_reason"] == "stop"
    assert r["choices"][0]["text"] == full[: full.index(stop)]
    assert complete(client, temperature=0, max_tokens=40, stop=stop)["choices"][0]["text"] == full[: full.index(stop)]


def test_stream_sends_openai_chunks_then_done(client):
    plain = complete(client, seed=5, max_tokens=15)["choices"][0]["text"]
    r = client.post("/v1/completions", json={"model": "2l", "prompt": "ROMEO:", "seed": 5, "max_tokens": 15,
                                             "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]" and "[DONE]" not in events[:-1]
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" and c["model"] == MODEL for c in chunks)
    assert len({c["id"] for c in chunks}) == 1 and "usage" not in chunks[0]
    assert all(len(c["choices"]) == 1 and c["choices"][0]["index"] == 0 for c in chunks)
    *texts, last = [c["choices"][0] for c in chunks]
    assert [t["finish_reason"] for t in texts] == [None] * len(texts)
    assert (last["text"], last["finish_reason"]) == ("", "length")
    # How many frames the text comes in depends on how busy the client was (deltas that piled up are coalesced),
    # so only the bounds are fixed: one frame at least, one per token at most, none empty, all in order.
    # Piecewise delivery itself is proven below, on a stream whose timing the test controls.
    assert 1 <= len(texts) <= 15 and all(t["text"] for t in texts)
    assert "".join(t["text"] for t in texts) == plain


def fed_job() -> Job:
    """A real Job no worker holds: the test delivers its events step by step (`Job.put`, as the worker's hand-off)."""
    return Job([1, 2, 3], SamplingParams(max_tokens=16), stream=True)


def fed_stream(first, include_usage=False, scope=None):
    job = fed_job()
    scope = {"path_template": "/v1/completions", "state": {}} if scope is None else scope
    p = Prepared("cmpl-test", 0, SimpleNamespace(id=MODEL), job, include_usage, scope)
    return job, CompletionService(router=None, settings=None).stream(p, first)


def data_of(frame: bytes) -> str:
    """The payload of one whole SSE frame, which `stream` yields ready for the socket."""
    assert frame.startswith(b"data: ") and frame.endswith(b"\r\n\r\n") and frame.count(b"\n") == 2, frame
    return frame[len(b"data: ") : -4].decode()


def text_of(frame: bytes) -> str:
    [choice] = json.loads(data_of(frame))["choices"]
    assert choice["finish_reason"] is None
    return choice["text"]


def test_stream_sends_each_delta_as_it_comes_and_coalesces_only_what_piled_up():
    async def go():
        scope = {"path_template": "/v1/completions", "state": {}}
        job, frames = fed_stream(TextDelta("a"), include_usage=True, scope=scope)
        assert text_of(await anext(frames)) == "a"  # nothing else waiting: the first token goes out alone
        for delta in "bcd":  # three steps while the client was busy writing: one frame
            job.put(TextDelta(delta))
        assert text_of(await anext(frames)) == "bcd"
        waiting = asyncio.ensure_future(anext(frames))
        await asyncio.sleep(0.01)
        assert not waiting.done()  # nothing to send: the stream waits for the next step instead of sending ""
        job.put(TextDelta("e"))
        assert text_of(await waiting) == "e"
        for event in (TextDelta("f"), TextDelta("g"), Done("abcdefg", "length", 7)):
            job.put(event)
        assert text_of(await anext(frames)) == "fg"  # the text that piled up before the end, then the end
        end = json.loads(data_of(await anext(frames)))
        [choice] = end["choices"]
        assert (choice["text"], choice["finish_reason"]) == ("", "length") and end.get("usage") is None
        usage = json.loads(data_of(await anext(frames)))
        assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 3, "completion_tokens": 7,
                                                              "total_tokens": 10}
        assert data_of(await anext(frames)) == "[DONE]"
        with pytest.raises(StopAsyncIteration):
            await anext(frames)
        assert job.cancelled  # the finally: a no-op on a finished job, the row's release on an abandoned one
        assert scope["state"]["gptzoo_outcome"] == "length"  # counted once, as the finish reason

    asyncio.run(go())


def test_stream_error_after_the_start_is_an_error_event_after_the_text_before_it():
    async def go():
        job, frames = fed_stream(TextDelta("a"))
        assert text_of(await anext(frames)) == "a"
        job.put(TextDelta("b"))
        job.put(Failed("generation failed: boom", "generation_failed"))
        assert text_of(await anext(frames)) == "b"
        assert json.loads(data_of(await anext(frames))) == {"error": {"message": "generation failed: boom",
                                                             "type": "server_error", "param": None,
                                                             "code": "generation_failed"}}
        assert data_of(await anext(frames)) == "[DONE]"

    asyncio.run(go())


@pytest.mark.parametrize("text", ["a", "", 'say "hi"\\', "line\nbreak\r\n", "héllo ✓ \u2028 \x00 \U0001f600"])
def test_text_frames_are_byte_for_byte_the_chunk_msgspec_encodes(text):
    """The text frames reuse the bytes around the text, encoded once per stream: they must equal encoding the
    whole chunk (escapes, non-ASCII and line breaks included, which stay inside one `data:` line)."""
    p = Prepared("cmpl-0123abc", 1700000000, SimpleNamespace(id='odd "text":"" \\'), None, False, {})
    chunk = CompletionChunk(id=p.id, object="text_completion", created=p.created, model=p.worker.id,
                            choices=[CompletionChoice(text=text)])
    frame = ChunkFrames(p).text(text)
    assert frame == b"data: " + msgspec.json.encode(chunk) + b"\r\n\r\n"
    assert text_of(frame) == text


def test_stream_usage_with_stream_options(client):
    r = client.post("/v1/completions", json={"model": "2l", "prompt": "ROMEO:", "max_tokens": 4, "stream": True,
                                             "stream_options": {"include_usage": True}})
    events = sse_events(r.text)
    last = json.loads(events[-2])
    assert events[-1] == "[DONE]" and last["choices"] == []
    assert last["usage"] == {"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10}


def test_null_optional_fields_take_defaults(client):
    r = complete(client, max_tokens=None, temperature=None, top_p=None, top_k=None, seed=None, stop=None,
                 stream=None, n=None, user=None)
    assert r["usage"]["completion_tokens"] == 16


def test_concurrent_requests_batch_and_match_sequential_ones(make_client, exported_store, step_gate):
    """Continuous batching: rows joining and leaving a running batch give each request its own text."""
    bodies = [{"model": "2l", "prompt": p, "max_tokens": n, "seed": i}
              for i, (p, n) in enumerate([("ROMEO:", 40), ("JULIET:\nO", 5), ("A", 25), ("Good morrow", 60),
                                          ("KING", 1), ("First Citizen:", 33)])]

    def run(concurrent: bool) -> list[str]:
        client = make_client(exported_store, max_batch_size=4, threads=1)
        worker = client.app.state.registry.workers[MODEL]
        post = functools.partial(client.post, "/v1/completions")
        waiting = functools.partial(REGISTRY.get_sample_value, "gptzoo_requests_waiting", worker.labels)
        with ThreadPoolExecutor(len(bodies) if concurrent else 1) as pool:
            if not concurrent:
                rs = list(pool.map(lambda b: post(json=b), bodies))
            else:
                # Whether requests overlap would depend on how fast the threads send them compared with how fast
                # the model decodes; the shut gate keeps the first admitted ones from decoding until all six are
                # with the worker, so the batch must fill up when it opens.
                with step_gate.shut():
                    futures = [pool.submit(post, json=b) for b in bodies]
                    step_gate.wait_held()
                    deadline = time.monotonic() + 30
                    while worker.peak_rows + waiting() < len(bodies):  # admitted + queued
                        assert time.monotonic() < deadline, "the requests never all reached the worker"
                        time.sleep(0.01)
                rs = [f.result(timeout=60) for f in futures]
        assert all(r.status_code == 200 for r in rs), [r.text for r in rs]
        assert worker.peak_rows == (4 if concurrent else 1)
        return [r.json()["choices"][0]["text"] for r in rs]

    together, alone = run(True), run(False)
    assert together == alone
    assert [len(t) for t in together] == [b["max_tokens"] for b in bodies]


def test_stream_interval_holds_text_back_but_never_the_first_token_or_the_end(make_client, exported_store):
    """With a stream interval of 1 s the worker hands a stream's text over at most once a second, so after the
    first token (sent at once: time to first token) the rest of a short generation comes as one chunk with its end.
    The bound on the chunks counts the seconds the stream really took, so a slow machine cannot fail the test."""
    client = make_client(exported_store, max_tokens=64, threads=1, stream_interval=1.0)
    plain = complete(client, seed=3, max_tokens=40)["choices"][0]["text"]
    t0 = time.perf_counter()
    r = client.post("/v1/completions", json={"model": "2l", "prompt": "ROMEO:", "seed": 3, "max_tokens": 40,
                                             "stream": True})
    took = time.perf_counter() - t0
    texts = [c["choices"][0]["text"] for c in map(json.loads, sse_events(r.text)[:-1]) if c["choices"][0]["text"]]
    assert "".join(texts) == plain and len(texts[0]) == 1  # the first token, alone
    assert len(texts) <= 2 + int(took)  # one hand-off a second at most, besides the first token and the end
