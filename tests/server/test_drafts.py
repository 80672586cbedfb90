"""Speculative decoding in the server (`gptzoo serve --draft`): the same greedy text with and without drafting, a
request's opt-out, the gptzoo_spec_* counters, the draft on the model cards, the live zoo around a draft, and the
CLI's refusals. Tiny real models: a 1-layer variant drafts for a 2-layer one (tests/conftest.py `drafted_store`)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from gptzoo.cli.main import app
from gptzoo.server.settings import Settings
from tests.server.conftest import add_variant, metric

TARGET, DRAFT = "shakespeare-char-2l", "shakespeare-char-1l"
PAIR = {"model": TARGET, "layers": "2", "draft": DRAFT}
PROMPTS = ["ROMEO:", "First Citizen:\nWe are", "KING"]


@pytest.fixture
def store(tmp_path, drafted_store):
    dst = tmp_path / "store"
    shutil.copytree(drafted_store, dst)
    return dst


def counters(client) -> tuple[float, float]:
    text = client.get("/metrics").text
    return (metric(text, "gptzoo_spec_draft_tokens_total", **PAIR),
            metric(text, "gptzoo_spec_accepted_tokens_total", **PAIR))


def series(client, name: str) -> list[dict]:
    """The label sets of a counter's samples in the client's /metrics."""
    return [s.labels for f in text_string_to_metric_families(client.get("/metrics").text) for s in f.samples
            if s.name == name]


def wait_ready(client, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the model did not load again"
        time.sleep(0.05)


def complete(client, **body):
    r = client.post("/v1/completions", json={"model": "2l", "max_tokens": 80, "temperature": 0} | body)
    assert r.status_code == 200, r.text
    return r.json()


def stream_text(client, **body) -> str:
    r = client.post("/v1/completions", json={"model": "2l", "max_tokens": 80, "temperature": 0, "stream": True}
                    | body)
    assert r.status_code == 200, r.text
    chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    return "".join(c["choices"][0]["text"] for c in chunks if c["choices"])


@contextlib.contextmanager
def server_log():
    """The gptzoo.server log records while inside (pytest's own capture may be off: -p no:logging)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("gptzoo.server")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_greedy_text_with_a_draft_is_the_text_without(make_client, store):
    """80 tokens (past the 32-token window twice), plain and streamed: the drafting server's text is the text of the
    same request opted out, and of a server without --draft; the counters count the drafting requests only."""
    drafted = make_client(store, threads=1, drafts=["2l=1l"], max_tokens=200)
    plain = make_client(store, threads=1, max_tokens=200)
    assert PAIR in series(drafted, "gptzoo_spec_draft_tokens_total")  # from the load on, before any request
    before = counters(drafted)  # the registry is the process's: other tests' requests counted there too
    for prompt in PROMPTS:
        want = complete(plain, prompt=prompt)
        got = complete(drafted, prompt=prompt)
        assert got["choices"] == want["choices"] and got["usage"] == want["usage"], prompt
        assert stream_text(drafted, prompt=prompt) == want["choices"][0]["text"]
    drafted_n, accepted_n = counters(drafted)
    assert drafted_n > before[0] and 0 <= accepted_n - before[1] <= drafted_n - before[0], (before, drafted_n,
                                                                                         accepted_n)

    for prompt in PROMPTS:  # opted out: the same text, nothing drafted
        out = complete(drafted, prompt=prompt, speculative=False)
        assert out["choices"] == complete(plain, prompt=prompt)["choices"]
    assert counters(drafted) == (drafted_n, accepted_n)
    # only drafted targets have series: the draft variant itself (served too, undrafted) has none
    for name in ("gptzoo_spec_draft_tokens_total", "gptzoo_spec_accepted_tokens_total"):
        assert {s["model"] for s in series(drafted, name)} == {TARGET}


def test_seeded_sampling_with_a_draft_gives_the_same_text_every_time(make_client, store):
    client = make_client(store, threads=1, drafts=["2l=1l"], max_tokens=200)
    body = {"prompt": "ROMEO:", "temperature": 0.9, "top_k": 20, "seed": 7, "max_tokens": 60}
    first = complete(client, **body)
    assert first["choices"][0]["text"] and complete(client, **body)["choices"] == first["choices"]
    assert stream_text(client, **body) == first["choices"][0]["text"]


def test_speculative_must_be_a_boolean(make_client, store):
    client = make_client(store, threads=1, drafts=["2l=1l"])
    for value in ("no", 2, [], {"a": 1}):
        r = client.post("/v1/completions", json={"model": "2l", "prompt": "A", "speculative": value})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "speculative", r.json()
    for value in (None, True, False):
        r = client.post("/v1/completions", json={"model": "2l", "prompt": "A", "speculative": value})
        assert r.status_code == 200, r.text


def test_auto_drafts_each_variant_by_the_shallowest_and_the_cards_say_so(make_client, store):
    client = make_client(store, threads=1, drafts=["auto"])
    cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert cards[TARGET]["draft"] == DRAFT and cards[DRAFT]["draft"] is None  # none shallower than 1 layer
    assert cards["auto"]["draft"] is None
    admin = {m["id"]: m for m in client.get("/admin/models").json()["data"]}
    assert admin[TARGET]["draft"] == DRAFT and admin[DRAFT]["draft"] is None
    before = counters(client)
    complete(client, prompt="ROMEO:")
    assert counters(client)[0] > before[0]


def test_a_draft_removed_from_the_store_serves_on_until_its_target_loads_again(make_client, store):
    """The draft's session belongs to its target's worker: removing the draft from the store unloads the draft's own
    worker, the target drafts on; the target's next load finds no draft, says so, and serves without one."""
    client = make_client(store, threads=1, drafts=["2l=1l"], reload_interval=0, max_tokens=200)
    want = complete(client, prompt="ROMEO:", speculative=False)["choices"]
    shutil.rmtree(store / DRAFT)
    assert client.post("/admin/reload").json()["removed"] == [DRAFT]
    before = counters(client)
    assert complete(client, prompt="ROMEO:")["choices"] == want
    assert counters(client)[0] > before[0]

    with server_log() as records:
        assert client.post(f"/admin/models/{TARGET}/unload").status_code == 200
        assert client.post(f"/admin/models/{TARGET}/load").status_code in (200, 202)
        wait_ready(client)
    assert client.get(f"/v1/models/{TARGET}").json()["draft"] is None
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert any(f"{TARGET}: serving without a draft: its draft {DRAFT} is no longer in the store" in w
               for w in warnings), warnings
    after = counters(client)
    assert complete(client, prompt="ROMEO:")["choices"] == want
    assert counters(client) == after


def test_a_draft_that_cannot_draft_any_more_leaves_its_target_serving(make_client, store):
    """Re-exported with another vocabulary between the start and the target's load (here: before the start, the
    settings written by hand as the environment would give them): a warning, and the target serves undrafted."""
    card = json.loads((store / DRAFT / "card.json").read_text())
    chars = card["tokenizer"]["chars"]
    card["tokenizer"]["chars"] = chars[1] + chars[0] + chars[2:]
    (store / DRAFT / "card.json").write_text(json.dumps(card))
    with server_log() as records:
        client = make_client(store, threads=1, drafts=[f"{TARGET}={DRAFT}"])
    assert client.get(f"/v1/models/{TARGET}").json()["draft"] is None
    assert any("serving without a draft" in r.getMessage() and "another tokenizer" in r.getMessage()
               for r in records), [r.getMessage() for r in records]
    before = counters(client)
    complete(client, prompt="ROMEO:")
    assert counters(client) == before


def test_draft_settings_round_trip_through_the_environment():
    s = Settings.build(drafts=["auto", f"{TARGET}={DRAFT}"], draft_tokens=6)
    env = s.to_env()
    assert env["GPTZOO_SERVE_DRAFTS"] == f"auto,{TARGET}={DRAFT}" and env["GPTZOO_SERVE_DRAFT_TOKENS"] == "6"
    assert Settings.from_env(env) == s
    for bad in ({"draft_tokens": 0}, {"draft_tokens": 17}, {"drafts": ["12l"]}, {"drafts": ["a=b=c"]}):
        with pytest.raises(ValueError, match="draft"):
            Settings.build(**bad)


# -- the CLI -------------------------------------------------------------------------------------------------------
def serve(monkeypatch, store, *flags) -> tuple[object, Settings | None]:
    """`gptzoo serve` up to the point where uvicorn would start: the result, and the settings it would serve with."""
    import uvicorn

    got = {}
    # the command writes its settings there (a copy per call: an earlier call's settings must not linger)
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if not k.startswith("GPTZOO_SERVE_")})
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: got.setdefault("settings", Settings.from_env()))
    r = CliRunner().invoke(app, ["serve", "--store", str(store), *map(str, flags)])
    return r, got.get("settings")


def one_line_error(r, phrase: str) -> None:
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert phrase in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_serve_draft_flags_reach_the_settings(monkeypatch, store):
    r, s = serve(monkeypatch, store, "--draft", "2l=1l", "--draft-tokens", 6)
    assert r.exit_code == 0, r.output
    assert s.drafts == [f"{TARGET}={DRAFT}"] and s.draft_tokens == 6
    assert f"drafting: {TARGET} by {DRAFT} (at most 6 tokens a round)" in r.stderr
    r, s = serve(monkeypatch, store)
    assert r.exit_code == 0 and s.drafts is None and "drafting" not in r.stderr


def test_serve_draft_auto_picks_the_shallowest(monkeypatch, store):
    # a 3-layer card (its file is never opened here): both shallower variants fit, the shallowest drafts
    add_variant(store, "shakespeare-char-3l", 3, src=TARGET)
    r, s = serve(monkeypatch, store, "--draft", "auto")
    assert r.exit_code == 0, r.output
    assert s.drafts == ["auto"]
    assert (f"drafting: shakespeare-char-2l by {DRAFT}, shakespeare-char-3l by {DRAFT} (at most 4 tokens a round)"
            in r.stderr), r.stderr


def test_serve_draft_auto_without_any_pair_warns(monkeypatch, store):
    shutil.rmtree(store / DRAFT)
    r, s = serve(monkeypatch, store, "--draft", "auto")
    assert r.exit_code == 0 and s.drafts == ["auto"] and "serving without drafts" in r.stderr, r.output


def test_a_draft_not_shallower_than_its_target_is_a_warning(monkeypatch, store):
    r, s = serve(monkeypatch, store, "--draft", "1l=2l")
    assert r.exit_code == 0, r.output
    assert "warning: --draft 1l=2l: the draft shakespeare-char-2l (2 layers) is not shallower" in r.stderr
    assert s.drafts == [f"{DRAFT}={TARGET}"]


def test_serve_refuses_drafts_that_cannot_draft(monkeypatch, store):
    add_variant(store, "shakespeare-char-odd", 1, src=DRAFT, edit=lambda c: c["tokenizer"].update(
        chars=c["tokenizer"]["chars"][1] + c["tokenizer"]["chars"][0] + c["tokenizer"]["chars"][2:]))
    (add_variant(store, "shakespeare-char-bare", 1, src=DRAFT) / "model.onnx").unlink()
    cases = [
        (("2l=nope",), "--draft: 'nope' is not in the store"),
        (("nope=1l",), "--draft: 'nope' is not in the store"),
        (("2l=shakespeare-char-odd",), "cannot draft for shakespeare-char-2l: another tokenizer or vocabulary"),
        (("2l=shakespeare-char-bare",), "shakespeare-char-bare is not exported yet"),
        (("2l=2l",), "is the target itself"),
        (("2l",), "is neither TARGET=DRAFT"),
        ((f"2l={DRAFT}", "--draft", "2l=shakespeare-char-odd"), "is given two drafts"),
    ]
    for flags, phrase in cases:
        r, s = serve(monkeypatch, store, "--draft", *flags)
        one_line_error(r, phrase)
        assert s is None


@pytest.mark.parametrize("k", [0, 17])
def test_draft_tokens_outside_1_to_16_is_a_usage_error(monkeypatch, store, k):
    r, s = serve(monkeypatch, store, "--draft", "2l=1l", "--draft-tokens", k)
    assert r.exit_code == 2 and s is None and "--draft-tokens" in r.output, r.output


def test_serve_help_explains_drafting():
    r = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200)
    assert r.exit_code == 0
    for phrase in ("--draft", "--draft-tokens", "TARGET=DRAFT", "auto", "speculative"):
        assert phrase in r.stdout, phrase
