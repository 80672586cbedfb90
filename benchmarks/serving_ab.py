"""Serving figures of issue 11 in one interleaved run: servers pinned to one core, the load generator on the other.

    python benchmarks/serving_ab.py --server after=.venv/bin/gptzoo:/tmp/lt-new \\
        --server before=/path/to/old/.venv/bin/gptzoo:/tmp/lt-store --levels 1,8,32 --rounds 3

Each `--server NAME=GPTZOO:STORE[:ARGS]` is a `gptzoo` executable (a checkout's venv, so two source trees can be
compared), the store it serves and more `gptzoo serve` arguments (e.g. `--stream-interval 0`); every server runs as
`gptzoo serve --cpus 0 --threads 1` on its own port. The clients are this checkout's `gptzoo loadtest --cpus 1`
(streaming, tokens from `usage`); every run's report is kept in ./serving_ab.json. After one warm-up per server, every
round runs every level against every server in turn (the order alternates between rounds), so all of them see the same
noise of a shared machine. It prints, per server: median tokens/s per level with the range, p50/p99 TTFT, the ratios the
issue asks for (32 ÷ 1 streams; p99 TTFT at the top level ÷ p50 TTFT at one stream), and, with --engine, the engine's
in-process tokens/s on the same thread count, pinned to core 0, measured in every round beside the HTTP runs, two ways:
`gptzoo bench`-style greedy decoding of 128 tokens (decode only) and the load test's own requests run through a
`Batch` with the server's settings (prompts, sampling and ends included), for the service ÷ engine ratios.

`--traced NAME` (repeatable) serves NAME with tracing on: OTEL_EXPORTER_OTLP_ENDPOINT points at an OTLP/HTTP receiver
in this script (gptzoo.measure.otlp_sink, counting the spans it gets; the `otel` extra), so the traced server pays
for building and exporting every span; the spans received are printed at the end."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from pinned_server import start, stop

HERE = Path(sys.executable).parent


def load(port: int, model: str, clients: int, requests: int, max_tokens: int) -> dict:
    cmd = [str(HERE / "gptzoo"), "loadtest", "--url", f"http://127.0.0.1:{port}", "-m", model, "-c", str(clients),
           "-n", str(requests), "--max-tokens", str(max_tokens), "--cpus", "1", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def engine_tok_s(exe: str, store: str, model_id: str, batches: list[int], tokens: int) -> dict[int, float]:
    """Greedy decoding in-process on one thread, core 0: tokens/s of all rows together, per batch size."""
    code = f"""
import json, sys, time
from gptzoo.measure.bench import decode_run
from gptzoo.zoo.runtime import open_variant
from gptzoo.zoo.store import Store
from gptzoo.zoo.tokenizers import from_spec
v = Store({store!r}).load({model_id!r})
m, tok = open_variant(v, device="cpu", threads=1), from_spec(v.card.tokenizer)
out = {{}}
for b in {batches!r}:
    out[b] = decode_run(m, tok, b, {tokens}, 8, seed=0)[1]
print(json.dumps(out))
"""
    python = str(Path(exe).parent / "python")
    out = subprocess.run(["taskset", "-c", "0", python, "-c", code], capture_output=True, text=True, check=True)
    return {int(k): v for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def engine_requests(exe: str, store: str, model_id: str, levels: list[int], requests: dict[int, int],
                    max_tokens: int, prompt: str) -> dict[int, float]:
    """The load test's own requests run in-process (one thread, core 0): `level` rows at a time in one Batch with the
    server's settings (32 slots, `half` policy, prefill chunk 256), a finished row replaced by the next request at
    once, the server's default sampling (temperature 1, a seed per request), prompts fed and first tokens included.
    Tokens/s of all rows together, one run (the rounds give the median): the engine's figure for exactly the work
    the HTTP run asked for (the decode-only greedy figure of `engine_tok_s` leaves the prompts, the sampling and
    the requests' ends out)."""
    code = f"""
import json, time
from gptzoo.server.settings import Settings
from gptzoo.zoo.generate import Batch
from gptzoo.zoo.runtime import open_variant
from gptzoo.zoo.sampling import SamplingParams
from gptzoo.zoo.store import Store
from gptzoo.zoo.tokenizers import from_spec
v = Store({store!r}).load({model_id!r})
m, tok = open_variant(v, device="cpu", threads=1), from_spec(v.card.tokenizer)
s = Settings()
ids = tok.encode({prompt!r})
out = {{}}
for level, n in {requests!r}.items():
    b = Batch(m, tok, s.policy, slots=s.max_batch_size, prefill_chunk=s.prefill_chunk)
    seeds = iter(range(n))
    def more(k):
        rows = [b.new_row(ids, SamplingParams(max_tokens={max_tokens}, seed=seed), on_text=lambda d: None)
                for seed in [next(seeds, None) for _ in range(k)] if seed is not None]
        b.add(rows)
    t0, tokens = time.perf_counter(), 0
    more(level)
    while b.rows:
        done = b.step()
        tokens += sum(len(r.generated) for r in done)
        b.remove(done)
        more(len(done))
    out[level] = tokens / (time.perf_counter() - t0)
print(json.dumps(out))
"""
    python = str(Path(exe).parent / "python")
    out = subprocess.run(["taskset", "-c", "0", python, "-c", code], capture_output=True, text=True, check=True)
    return {int(k): v for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", action="append", required=True, metavar="NAME=GPTZOO:STORE[:SERVE ARGS]")
    ap.add_argument("--model", default="4l")
    ap.add_argument("--levels", default="1,8,32")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests-per-client", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--engine", action="store_true", help="also measure the engine in-process (batch = each level)")
    ap.add_argument("--traced", action="append", default=[], metavar="NAME",
                    help="serve NAME with tracing on, exported over OTLP to a receiver in this script")
    args = ap.parse_args()
    sink = None
    if args.traced:
        from gptzoo.measure.otlp_sink import OtlpSink

        sink = OtlpSink(keep=False).__enter__()
    levels = [int(x) for x in args.levels.split(",")]
    servers, extras = [], []
    for i, spec in enumerate(args.server):
        name, rest = spec.split("=", 1)
        exe, store, *extra = rest.split(":", 2)
        servers.append((name, exe, store, 8851 + i))
        extras.append(extra[0].split() if extra else [])
    procs = [start(exe, store, port, extra, name,
                   env={"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint} if name in args.traced else None)
             for (name, exe, store, port), extra in zip(servers, extras, strict=True)]
    results: dict[tuple[str, int], list[dict]] = {}
    top = levels[-1]
    engines: dict[tuple[str, str], list[dict[int, float]]] = {}  # (server, kind) -> per round {level: tok/s}
    try:
        for _, _, _, port in servers:
            load(port, args.model, 8, 64, args.max_tokens)  # warm-up
        for r in range(args.rounds):
            order = servers if r % 2 == 0 else servers[::-1]
            for c in levels:
                for name, _, _, port in order:
                    n = max(c * args.requests_per_client, 100)
                    results.setdefault((name, c), []).append(load(port, args.model, c, n, args.max_tokens))
                    print(f"round {r + 1} {name} c={c}: {results[name, c][-1]['tokens_per_s']:,.0f} tok/s",
                          file=sys.stderr, flush=True)
            # The engine in the same round (the servers idle), so a burst of load elsewhere hits both figures
            for name, exe, store, _ in order if args.engine else []:
                variants = [p.name for p in Path(store).iterdir() if (p / "card.json").is_file()]
                model_id = next(v for v in variants if v.endswith(f"-{args.model}") or v == args.model)
                engines.setdefault((name, "decode"), []).append(
                    engine_tok_s(exe, store, model_id, sorted({levels[0], top}), 128))
                engines.setdefault((name, "same"), []).append(engine_requests(
                    exe, store, model_id, [levels[0], top],
                    {c: max(c * args.requests_per_client, 100) for c in (levels[0], top)}, args.max_tokens, "ROMEO:"))
    finally:
        stop(procs)
        if sink:
            sink.__exit__(None, None, None)
            print(f"OTLP receiver: {sink.count:,} spans in {sink.requests:,} export requests", file=sys.stderr)
    Path("serving_ab.json").write_text(json.dumps({f"{k[0]} c{k[1]}": v for k, v in results.items()}, indent=1))
    print("| server | clients | tok/s (median) | range | TTFT p50 / p99 ms | e2e p50 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for name, _, _, _ in servers:
        for c in levels:
            runs = results[name, c]
            tps = [x["tokens_per_s"] for x in runs]
            ttft50 = statistics.median(x["ttft_ms"]["p50"] for x in runs)
            ttft99 = statistics.median(x["ttft_ms"]["p99"] for x in runs)
            e2e = statistics.median(x["e2e_ms"]["p50"] for x in runs)
            errors = sum(x["requests"]["failed"] for x in runs)
            summary[name, c] = (statistics.median(tps), ttft50, ttft99)
            print(f"| {name} | {c} | {statistics.median(tps):,.0f} | {min(tps):,.0f}–{max(tps):,.0f} | "
                  f"{ttft50:.1f} / {ttft99:.1f} | {e2e:.1f} | {errors} |")
    print()
    for name, *_ in servers:
        one, many = summary[name, levels[0]], summary[name, top]
        line = (f"{name}: {top} ÷ {levels[0]} streams {many[0] / one[0]:.2f}×; p99 TTFT at {top} ÷ p50 TTFT at "
                f"{levels[0]}: {many[2] / one[1]:.1f}×")
        if args.engine:
            eng, same = ({c: statistics.median(x[c] for x in engines[name, kind]) for c in (levels[0], top)}
                         for kind in ("decode", "same"))
            line += (f"; engine in-process, greedy decode only: b{levels[0]} {eng[levels[0]]:,.0f} tok/s, b{top} "
                     f"{eng[top]:,.0f} tok/s; service ÷ engine: {one[0] / eng[levels[0]]:.2f} at {levels[0]}, "
                     f"{many[0] / eng[top]:.2f} at {top}")
            line += (f"; the same requests in-process: {same[levels[0]]:,.0f} / {same[top]:,.0f} tok/s; service ÷ "
                     f"that: {one[0] / same[levels[0]]:.2f} at {levels[0]}, {many[0] / same[top]:.2f} at {top}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
