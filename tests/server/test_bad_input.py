"""Input that used to get a 5xx or a misleading message: clients that hang up or trickle their body, bodies that are
not UTF-8 or nest too deeply, OpenAI fields gptzoo does not implement, and request content echoed at any length."""

import json
import socket
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from gptzoo.cli.main import app
from tests.server.conftest import MODEL, live_server, metric
from tests.server.test_errors import error_of

OK = {"model": "2l", "prompt": "ROMEO:", "max_tokens": 5, "seed": 3}
JSON = {"content-type": "application/json"}
HTTP = {"method": "POST", "path": "/v1/completions", "app_name": "gptzoo"}
NOBODY = {"model": "", "layers": ""}  # the labels of a completion request whose model is not known yet


def head(length: int) -> bytes:
    return (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def completion_lines(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "/v1/completions" in line or "completion_requests" in line)


def answered(text: str) -> float:
    """POSTs to /v1/completions that got a status, whichever."""
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "gptzoo_http_requests_total" and s.labels.get("path") == "/v1/completions")


def in_progress(text: str) -> float:
    return metric(text, "gptzoo_http_requests_in_progress", method="POST", path="/v1/completions")


def scrape_until(base: str, done, what: str, deadline_s: float = 60) -> str:
    """/metrics, polled until done(text) holds: the server handles a closed socket in its own time."""
    deadline = time.monotonic() + deadline_s
    while not done(text := httpx.get(f"{base}/metrics", timeout=10).text):
        assert time.monotonic() < deadline, f"{what} not seen within {deadline_s}s:\n{completion_lines(text)}"
        time.sleep(0.05)
    return text


# -- 4: a client that leaves is not a server error --------------------------------------------------------------


@pytest.mark.slow
def test_client_leaving_before_its_body_arrives_is_499_client_closed_not_a_5xx(tmp_path, exported_store):
    with live_server(tmp_path, exported_store) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        # closes right after the headers, and mid-body
        for sent in (head(100), head(100) + b'{"model": "2l", "pro'):
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(sent)
        # mid-body while the app is known to be waiting for the rest
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(head(100) + b'{"model"')
            scrape_until(base, lambda t: in_progress(t) == 1, "the request in progress")
        text = scrape_until(base, lambda t: answered(t) >= 3 and in_progress(t) == 0, "three answers")
    assert answered(text) == 3, completion_lines(text)
    assert metric(text, "gptzoo_http_requests_total", **HTTP, status_code="499") == 3
    assert metric(text, "gptzoo_http_requests_total", **HTTP, status_code="500") == 0
    assert metric(text, "gptzoo_http_requests_error_total", **HTTP) == 0
    assert metric(text, "gptzoo_completion_requests_total", **NOBODY, outcome="client_closed") == 3
    for outcome in ("error", "invalid_request", "internal_error"):
        assert metric(text, "gptzoo_completion_requests_total", **NOBODY, outcome=outcome) == 0


# -- 11c: a body that trickles in is cut off ---------------------------------------------------------------------


def test_body_timeout_is_a_serve_flag():
    r = CliRunner().invoke(app, ["serve", "--help"])
    assert r.exit_code == 0 and "--body-timeout" in r.stdout


@pytest.mark.slow
def test_a_body_that_trickles_in_gets_408_and_the_connection_is_closed(tmp_path, exported_store):
    with live_server(tmp_path, exported_store, "--body-timeout", 1) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        reply, deadline = b"", time.monotonic() + 60
        with socket.create_connection(("127.0.0.1", port)) as s:
            # 100 kB announced, one byte every 0.1 s: a per-read timeout would never fire, the connection would
            # stay for hours. The server must end it long before: answer 408 and close.
            s.sendall(head(100_000) + b'{"model": "2l", "prompt": "')
            s.settimeout(0.1)
            try:
                while True:
                    assert time.monotonic() < deadline, "the server never cut the slow body off"
                    try:
                        chunk = s.recv(65536)
                    except TimeoutError:
                        if not reply:
                            s.sendall(b"A")
                        continue
                    if not chunk:
                        break  # closed by the server
                    reply += chunk
            except ConnectionError:
                pass  # closed by the server with a reset (it had unread bytes); the metrics below say how
        text = scrape_until(base, lambda t: answered(t) == 1 and in_progress(t) == 0, "the answer")
    assert metric(text, "gptzoo_http_requests_total", **HTTP, status_code="408") == 1, completion_lines(text)
    assert metric(text, "gptzoo_completion_requests_total", **NOBODY, outcome="body_timeout") == 1
    if reply:  # the reset above may have discarded it
        assert reply.startswith(b"HTTP/1.1 408"), reply
        error = json.loads(reply.partition(b"\r\n\r\n")[2])["error"]
        assert error["code"] == "body_timeout" and "1 s" in error["message"], error


@pytest.mark.slow
def test_a_header_too_large_is_refused_before_the_app(tmp_path, exported_store):
    """`gptzoo serve` keeps h11's header size limit (httptools, picked up by uvicorn when installed, has none: a
    20 MB header line was answered 200): 1 MB of header never reaches a handler."""
    with live_server(tmp_path, exported_store) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        reply = b""
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.settimeout(30)
            try:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
                for _ in range(16):
                    s.sendall(b"a" * 65536)
                s.sendall(b"\r\n\r\n")
                while chunk := s.recv(65536):
                    reply += chunk
            except ConnectionError:
                pass  # reset while we still sent: refused
    assert not reply.startswith(b"HTTP/1.1 200"), reply[:100]


# -- 5 and 10: bodies that cannot be read, and what they are told ------------------------------------------------


@pytest.mark.parametrize(("body", "offset"), [(b'{"model":"2l","prompt":"ab\xff\xfe"}', 26),
                                              (b'{"mo\xc3del":"2l","prompt":"ab"}', 4)])
def test_body_that_is_not_utf8_is_400(client, body, offset):
    e = error_of(client.post("/v1/completions", content=body, headers=JSON), 400)
    assert e["code"] == "invalid_body" and "not valid UTF-8" in e["message"], e
    assert f"at offset {offset}" in e["message"], e


@pytest.mark.parametrize("where", ["prompt", "unknown"])
def test_deeply_nested_body_is_400(client, where):
    nested = b"[" * 5_000 + b"]" * 5_000  # far deeper than any request, within the fixture's body limit
    body = (b'{"model":"2l","prompt":' + nested + b"}" if where == "prompt"
            else b'{"model":"2l","prompt":"A","foo":' + nested + b"}")
    e = error_of(client.post("/v1/completions", content=body, headers=JSON), 400)
    assert e["code"] == "invalid_body" and "nested too deeply" in e["message"], e


@pytest.mark.parametrize("body", [b"", b" \r\n "])
def test_empty_body_is_400_saying_so(client, body):
    e = error_of(client.post("/v1/completions", content=body, headers=JSON), 400)
    assert e["code"] == "invalid_body", e
    assert e["message"] == "the request body is empty: send a JSON object with `model` and `prompt`"


def test_unknown_field_inside_an_object_is_named_with_its_path(client):
    body = {**OK, "stream": True, "stream_options": {"include_usage": True, "foo": 1}}
    e = error_of(client.post("/v1/completions", json=body), 400)
    assert (e["param"], e["code"]) == ("stream_options.foo", "unknown_field"), e
    assert "unknown field `stream_options.foo`" in e["message"]


@pytest.mark.parametrize(("raw", "param"), [
    (b'{"model":"2l","prompt":"\\ud800"}', "prompt"),
    (b'{"model":"2l","prompt":"ab\\udc00cd"}', "prompt"),
    (b'{"model":"2l","prompt":"A","stop":["x","\\ud83d"]}', "stop[1]"),
    (b'{"model":"\\ud800","prompt":"A"}', "model"),
])
def test_lone_surrogate_names_the_field(client, raw, param):
    e = error_of(client.post("/v1/completions", content=raw, headers=JSON), 400)
    assert (e["param"], e["code"]) == (param, "invalid_value"), e
    assert f"invalid `{param}`: it contains a lone surrogate" in e["message"], e


def test_body_that_is_not_json_still_says_malformed(client):
    e = error_of(client.post("/v1/completions", content=b'{"model": "2l",', headers=JSON), 400)
    assert e["code"] == "invalid_body" and e["message"].startswith("the request body is not valid JSON: "), e


# -- 11a: prompt as a list -------------------------------------------------------------------------------------


def test_prompt_as_a_one_element_list_is_served_as_that_string(client):
    plain = client.post("/v1/completions", json=OK)
    listed = client.post("/v1/completions", json={**OK, "prompt": [OK["prompt"]]})
    assert plain.status_code == listed.status_code == 200, listed.text
    assert listed.json()["choices"] == plain.json()["choices"]
    assert listed.json()["usage"] == plain.json()["usage"]


@pytest.mark.parametrize(("prompt", "code", "phrase"), [
    (["ROMEO:", "JULIET:"], "unsupported_value", "one prompt per request"),
    ([[1, 2, 3]], "invalid_value", "got `array`"),
    ([1, 2, 3], "unsupported_value", "token ids"),
    ([], "invalid_value", "length >= 1"),
    ([""], "invalid_value", "length >= 1"),
])
def test_prompt_lists_gptzoo_cannot_serve_are_400(client, prompt, code, phrase):
    e = error_of(client.post("/v1/completions", json={**OK, "prompt": prompt}), 400)
    assert e["param"].startswith("prompt") and e["code"] == code and phrase in e["message"], e


# -- 11b: OpenAI fields gptzoo does not implement ----------------------------------------------------------------

NEUTRAL = {"logprobs": None, "echo": False, "best_of": 1, "suffix": None, "presence_penalty": 0,
           "frequency_penalty": 0.0, "logit_bias": {}}


def test_unsupported_openai_fields_at_their_neutral_values_are_accepted(client):
    plain = client.post("/v1/completions", json=OK)
    r = client.post("/v1/completions", json={**OK, **NEUTRAL})
    assert r.status_code == 200, r.text
    assert r.json()["choices"] == plain.json()["choices"]


@pytest.mark.parametrize(("field", "value"), [
    ("logprobs", 0), ("logprobs", 5), ("echo", True), ("best_of", 3), ("suffix", "THE END"),
    ("presence_penalty", 0.5), ("frequency_penalty", -1), ("logit_bias", {"50256": -100}),
])
def test_unsupported_openai_fields_at_other_values_are_400_naming_the_field(client, field, value):
    e = error_of(client.post("/v1/completions", json={**OK, field: value}), 400)
    assert (e["param"], e["code"]) == (field, "unsupported_value"), e
    assert f"`{field}` is not supported by this server" in e["message"], e


# -- 11d: what comes back of the request is capped -------------------------------------------------------------


def test_echoed_request_content_is_capped(client):
    long_key = "k" * 15_000  # within the fixture's body limit
    e = error_of(client.post("/v1/completions", json={**OK, long_key: 1}), 400)
    assert e["code"] == "unknown_field" and "k" * 100 + "…" in e["message"] and len(e["message"]) < 300, e
    assert len(e["param"]) <= 101, e
    e = error_of(client.post("/v1/completions", json={**OK, "stream_options": {long_key: 1}}), 400)
    assert len(e["message"]) < 300 and e["param"] == "stream_options." + "k" * 100 + "…", e
    e = error_of(client.get("/v2/" + "p" * 20_000), 404)
    assert len(e["message"]) < 300 and e["message"].endswith("…"), e
    e = error_of(client.get("/v1/models/" + "m" * 20_000), 404)
    assert len(e["message"]) < 300 + len(MODEL), e
    for field in ("n", "max_tokens"):
        e = error_of(client.post("/v1/completions", json={**OK, field: int("9" * 4000)}), 400)
        assert len(e["message"]) < 300, e
