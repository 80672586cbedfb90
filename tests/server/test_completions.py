"""POST /v1/completions on the real tiny model: JSON, streaming, aliases, sampling controls, concurrent requests."""

import functools
import json
from concurrent.futures import ThreadPoolExecutor

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
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" and c["model"] == MODEL for c in chunks)
    assert len({c["id"] for c in chunks}) == 1 and "usage" not in chunks[0]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (len(chunks) - 1) + ["length"]
    assert "".join(c["choices"][0]["text"] for c in chunks) == plain
    assert len(chunks) > 2  # text arrives piece by piece, not in one frame


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


def test_concurrent_requests_batch_and_match_sequential_ones(make_client, exported_store):
    """Continuous batching: rows joining and leaving a running batch give each request its own text."""
    bodies = [{"model": "2l", "prompt": p, "max_tokens": n, "seed": i}
              for i, (p, n) in enumerate([("ROMEO:", 40), ("JULIET:\nO", 5), ("A", 25), ("Good morrow", 60),
                                          ("KING", 1), ("First Citizen:", 33)])]

    def run(concurrent: bool) -> list[str]:
        client = make_client(exported_store, max_batch_size=4, threads=1)
        post = functools.partial(client.post, "/v1/completions")
        with ThreadPoolExecutor(len(bodies) if concurrent else 1) as pool:
            rs = list(pool.map(lambda b: post(json=b), bodies))
        assert all(r.status_code == 200 for r in rs), [r.text for r in rs]
        peak = client.app.state.router.workers[MODEL].peak_rows
        assert peak <= 4 and (peak > 1) == concurrent
        return [r.json()["choices"][0]["text"] for r in rs]

    together, alone = run(True), run(False)
    assert together == alone
    assert [len(t) for t in together] == [b["max_tokens"] for b in bodies]
