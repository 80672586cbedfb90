"""GPTZOO_TTFT_TRACE: each streamed request's first token timed part by part (gptzoo.server.ttft_trace), and nothing
traced when it is not set."""

from __future__ import annotations

import json

from gptzoo.server import ttft_trace
from tests.server.conftest import sse_events

ORDER = ("handler", "queued", "admitted", "sampled", "handed", "delivered", "sent")


def stream(client, n: int = 6) -> list[str]:
    r = client.post("/v1/completions", json={"model": "2l", "prompt": "ROMEO:", "max_tokens": n, "stream": True,
                                             "temperature": 0})
    assert r.status_code == 200
    return sse_events(r.text)


def test_a_traced_stream_gets_its_first_tokens_parts_in_order(make_client, exported_store, tmp_path, monkeypatch):
    path = tmp_path / "ttft.jsonl"
    monkeypatch.setattr(ttft_trace, "ON", True)
    monkeypatch.setattr(ttft_trace, "PATH", str(path))
    client = make_client(exported_store, threads=1)
    for _ in range(3):
        assert stream(client)[-1] == "[DONE]"
    r = client.post("/v1/completions", json={"model": "2l", "prompt": "ROMEO:", "max_tokens": 4})
    assert r.status_code == 200  # a plain (not streamed) answer has no first frame: not traced
    ttft_trace.flush()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 3
    for rec in records:
        times = [rec[k] for k in ORDER]
        assert all(t is not None and t >= 0 for t in times) and times == sorted(times)
        assert rec["rows"] >= 1 and rec["new"] >= 1 and rec["steps_waited"] >= 0
        assert rec["prefill_ms"] > 0  # the step that admitted it fed its prompt


def test_nothing_is_traced_when_it_is_off(make_client, exported_store, tmp_path, monkeypatch):
    monkeypatch.setattr(ttft_trace, "ON", False)
    monkeypatch.setattr(ttft_trace, "PATH", str(tmp_path / "ttft.jsonl"))
    client = make_client(exported_store, threads=1)
    assert stream(client)[-1] == "[DONE]"
    ttft_trace.flush()
    assert not (tmp_path / "ttft.jsonl").exists()
