"""`gptzoo serve` as users run it: the CLI's errors, a live server over HTTP (httpx and the official openai
client), two workers with aggregated metrics, and the whole chain train -> export -> serve -> completion."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from typer.testing import CliRunner

from gptzoo.cli.main import app
from gptzoo.zoo.runtime import available_providers
from tests.server.conftest import MODEL, free_port, gptzoo, live_server, metric, sse_events

runner = CliRunner()


def test_help_names_the_flags():
    r = runner.invoke(app, ["serve", "--help"])
    assert r.exit_code == 0
    for flag in ("--store", "--host", "--port", "--device", "--workers", "--api-key", "--max-tokens",
                 "--max-batch-size", "--max-queue", "--request-timeout", "--shutdown-timeout"):
        assert flag in r.stdout


def test_store_without_exported_models_is_a_one_line_error(tmp_path, store_copy):
    for store, phrase in ((tmp_path / "empty", "no variants in"), (store_copy, "no exported variants in")):
        r = runner.invoke(app, ["serve", "--store", str(store)])
        assert r.exit_code == 1 and phrase in r.stderr and "gptzoo export" in r.stderr, r.output
        assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.skipif("CUDAExecutionProvider" in available_providers(), reason="needs a CPU-only onnxruntime")
def test_cuda_without_onnxruntime_gpu_is_refused(exported_store):
    r = runner.invoke(app, ["serve", "--store", str(exported_store), "--device", "cuda"])
    assert r.exit_code == 1 and "CUDAExecutionProvider" in r.stderr


@pytest.mark.parametrize("cpus", ["99999", "0-", "one"])
def test_a_bad_cpu_list_is_a_usage_error(exported_store, cpus):
    r = runner.invoke(app, ["serve", "--store", str(exported_store), "--cpus", cpus])
    assert r.exit_code == 2 and r.stderr.startswith("error: --cpus:"), r.output
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_pinned_server_keeps_every_thread_on_its_cpus(tmp_path, exported_store):
    # no --threads: onnxruntime's own default pool would pin its threads to the other cores (1, 2, ...), past the
    # process's mask, so the server is pinned to the lowest CPU, where that escape shows
    cpu = min(os.sched_getaffinity(0))
    port, log = free_port(), tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(gptzoo("serve", "--store", exported_store, "--port", port, "--cpus", cpu),
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:  # bounded: 60 s
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        r = httpx.post(f"{base}/v1/completions", json={"model": "2l", "prompt": "A", "max_tokens": 8}, timeout=30)
        assert r.status_code == 200
        masks = {}
        for task in os.listdir(f"/proc/{proc.pid}/task"):
            try:
                status = Path(f"/proc/{proc.pid}/task/{task}/status").read_text()
            except FileNotFoundError:
                continue  # a thread that ended meanwhile
            masks[task] = next(line.split()[1] for line in status.splitlines() if line.startswith("Cpus_allowed_list"))
        assert set(masks.values()) == {str(cpu)}, masks
        assert f"pinned to CPU(s) {cpu}, 1 onnxruntime thread(s) per model" in log.read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.slow
def test_live_server_with_openai_client_and_api_key(tmp_path, exported_store):
    key = "test-key"
    flags = ("--max-tokens", 100_000)  # room for a stream long enough to hang up on
    with live_server(tmp_path, exported_store, *flags, env={"GPTZOO_API_KEY": key}) as (base, log):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=30)
        c = client.completions.create(model="2l", prompt="ROMEO:", max_tokens=20)
        assert c.model == MODEL and c.choices[0].finish_reason == "length" and len(c.choices[0].text) == 20
        assert c.usage.total_tokens == 26
        pieces = list(client.completions.create(model="2l", prompt="ROMEO:", max_tokens=8, stream=True, seed=1))
        assert pieces[-1].choices[0].finish_reason == "length"
        streamed = "".join(p.choices[0].text for p in pieces)
        same = client.completions.create(model=MODEL, prompt="ROMEO:", max_tokens=8, seed=1)
        assert streamed == same.choices[0].text
        assert [m.id for m in client.models.list()] == [MODEL, "shakespeare-char", "auto"]
        # depth routing's budget travels in extra_body; the answer names the variant that served, headers say why
        raw = client.completions.with_raw_response.create(model="auto", prompt="ROMEO:", max_tokens=4,
                                                          extra_body={"max_tpot_ms": 10_000, "fallback": "shallower"})
        assert raw.parse().model == MODEL and raw.headers["x-gptzoo-route"] == "best-fit"
        with pytest.raises(openai.BadRequestError, match="max_tpot_ms"):
            client.completions.create(model="auto", prompt="A", extra_body={"max_tpot_ms": -1})
        with pytest.raises(openai.NotFoundError, match="available: shakespeare-char-2l"):
            client.completions.create(model="9l", prompt="A")
        with pytest.raises(openai.BadRequestError, match="outside"):
            client.completions.create(model="2l", prompt="ü")
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0).models.list()
        # plain HTTP: the raw SSE frames, and the open probes
        h = {"Authorization": f"Bearer {key}"}
        r = httpx.post(f"{base}/v1/completions", headers=h, timeout=30,
                       json={"model": "2l", "prompt": "A", "max_tokens": 3, "stream": True})
        assert r.headers["content-type"].startswith("text/event-stream") and sse_events(r.text)[-1] == "[DONE]"
        assert httpx.get(f"{base}/healthz").status_code == 200 and httpx.get(f"{base}/metrics").status_code == 200
        assert httpx.get(f"{base}/v1/models").status_code == 401
        # clients hanging up, mid-stream and while waiting for a plain answer: the worker stops decoding them
        body = {"model": "2l", "prompt": "A", "max_tokens": 100_000}
        with httpx.stream("POST", f"{base}/v1/completions", headers=h, json={**body, "stream": True}, timeout=30) as r:
            assert next(line for line in r.iter_lines() if line.startswith("data: "))
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{base}/v1/completions", headers=h, json=body, timeout=httpx.Timeout(30, read=0.3))
        labels = {"model": MODEL, "layers": "2"}
        for _ in range(100):  # bounded: 10 s at most
            text = httpx.get(f"{base}/metrics").text
            # the running gauge is set after the step whose end counted the cancellations: wait for both
            if (metric(text, "gptzoo_requests_cancelled_total", **labels) == 2
                    and metric(text, "gptzoo_requests_running", **labels) == 0):
                break
            time.sleep(0.1)
        assert metric(text, "gptzoo_completion_requests_total", **labels, outcome="cancelled") == 2
        assert metric(text, "gptzoo_requests_cancelled_total", **labels) == 2
        assert metric(text, "gptzoo_requests_running", **labels) == 0
        tokens = metric(text, "gptzoo_generation_tokens_total", **labels)
        assert tokens < 50_000
        time.sleep(0.2)  # nothing is decoded for them any more
        assert metric(httpx.get(f"{base}/metrics").text, "gptzoo_generation_tokens_total", **labels) == tokens
    assert f"{MODEL}: ready on CPUExecutionProvider" in log.read_text()


@pytest.mark.slow
def test_two_workers_aggregate_metrics_and_start_from_a_wiped_folder(tmp_path, exported_store):
    prom = tmp_path / "prom"
    prom.mkdir()
    # A stale file from an "earlier run": counted in if the folder were not wiped at start.
    stale = ("from prometheus_client import Counter; Counter('gptzoo_completion_requests', 'x', "
             "['model', 'layers', 'outcome']).labels('shakespeare-char-2l', '2', 'length').inc(1000)")
    env = {"PROMETHEUS_MULTIPROC_DIR": str(prom)}
    subprocess.run([sys.executable, "-c", stale], env={**os.environ, **env}, check=True, timeout=60)
    assert list(prom.glob("counter_*.db"))
    labels = {"model": MODEL, "layers": "2"}
    with live_server(tmp_path, exported_store, "--workers", "2", env=env) as (base, _):
        # /readyz answers from whichever worker takes the connection, and a worker that has not started yet has no
        # metrics file to pull the min down: wait for both workers' files and a min of 1
        deadline = time.monotonic() + 60
        while (len(list(prom.glob("gauge_min_*.db"))) < 2
               or metric(httpx.get(f"{base}/metrics").text, "gptzoo_model_ready", **labels) != 1):
            assert time.monotonic() < deadline, "the second worker never became ready"
            time.sleep(0.2)
        with httpx.Client(base_url=base, timeout=30) as http:
            for _ in range(12):
                r = http.post("/v1/completions", json={"model": "2l", "prompt": "A", "max_tokens": 4})
                assert r.status_code == 200
        scrapes = [httpx.get(f"{base}/metrics").text for _ in range(4)]  # new connections: any worker answers
        pids = {f.name.rsplit("_", 1)[-1] for f in prom.glob("*.db")}
    for text in scrapes:
        assert metric(text, "gptzoo_completion_requests_total", **labels, outcome="length") == 12
        assert metric(text, "gptzoo_generation_tokens_total", **labels) == 48
        assert metric(text, "gptzoo_model_ready", **labels) == 1  # min over workers: both ready
        assert 'pid="' not in text
    assert len(pids) >= 2  # both workers wrote metrics files


@pytest.mark.slow
def test_chain_train_export_serve_complete(tmp_path, data_dir):
    store = tmp_path / "store"
    train = gptzoo("train", "--layers", 2, "--preset", "cpu", "--n-embd", 32, "--n-head", 2, "--block-size", 32,
                   "--batch-size", 8, "--max-iters", 20, "--eval-interval", 10, "--eval-iters", 4, "--store", store,
                   "--data-dir", data_dir, "-q")
    for cmd in (train, gptzoo("export", "--layers", 2, "--store", store)):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    card = json.loads((store / MODEL / "card.json").read_text())
    with live_server(tmp_path, store) as (base, _):
        models = [m for m in httpx.get(f"{base}/v1/models").json()["data"] if m["kind"] == "variant"]
        assert [(m["id"], m["ready"], m["val_loss"]) for m in models] == [(MODEL, True, card["val_loss"])]
        r = httpx.post(f"{base}/v1/completions", json={"model": "2l", "prompt": "ROMEO:", "max_tokens": 24},
                       timeout=30)
        assert r.status_code == 200, r.text
        assert len(r.json()["choices"][0]["text"]) == 24


# -- issue 22: empty keys, and what binding past loopback opens -------------------------------------------------


@pytest.mark.parametrize(("args", "env", "flag"), [
    (["--api-key", ""], {}, "--api-key"), (["--api-key", "  "], {}, "--api-key"),
    ([], {"GPTZOO_API_KEY": ""}, "--api-key"),
    (["--admin-key", ""], {}, "--admin-key"), ([], {"GPTZOO_ADMIN_KEY": ""}, "--admin-key"),
])
def test_an_empty_key_is_a_usage_error_not_an_open_server(exported_store, args, env, flag):
    """`--api-key "$KEY"` with KEY unset used to serve without auth, silently."""
    r = runner.invoke(app, ["serve", "--store", str(exported_store), *args], env=env)
    assert r.exit_code == 2 and r.stderr.startswith(f"error: {flag} is empty"), r.output
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("keys", "phrases"), [
    ({}, ["warning:", "anyone who can reach it may use the API and the admin routes", "unload"]),
    ({"api_key": "k"}, ["the admin routes take the API key", "may unload models", "--admin-key"]),
    ({"admin_key": "a"}, ["warning:", "anyone who can reach it may use the completions API", "--admin-key"]),
    ({"api_key": "k", "admin_key": "a"}, []),
])
def test_binding_past_loopback_says_who_may_unload_models(capsys, keys, phrases):
    from gptzoo.cli.serve import _warn_open

    _warn_open("0.0.0.0", keys.get("api_key"), keys.get("admin_key"))
    said = capsys.readouterr().err
    assert all(p in said for p in phrases) and bool(said) == bool(phrases), said
