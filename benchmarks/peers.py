"""gptzoo against llama.cpp's own server on the same weights (issue 27): tokens/s, TTFT and inter-token latency.

    python benchmarks/peers.py --store STORE --model 4l --levels 1,8,32 --rounds 3 --duration 20 --max-tokens 120

Both servers run pinned to core 0 with one thread: `gptzoo serve --cpus 0 --threads 1 --models MODEL` and
`taskset -c 0 llama-server -m <variant>/model.gguf -t 1 -tb 1 --parallel 32` (continuous batching, one slot per
stream at the deepest level, each slot the variant's context). The GGUF is the one `gptzoo export --format gguf`
wrote beside the ONNX model (F32: the same weights); `llama-server` is found with --llama-server, $LLAMA_SERVER,
on PATH, or in the cache `scripts/build-llama-server.sh` fills. The load is `gptzoo loadtest --cpus 1`: streaming
clients sending the same prompt at temperature 1, tokens from each answer's `usage` (both servers send it), for
--duration seconds per level. Every round runs every level against both servers, the order alternating between
rounds, so both see the same noise; the table gives per level the median over rounds of tokens/s, and of the
rounds' TTFT and inter-token p50/p99, and the ratio of the tokens/s medians.

Before the rounds both servers answer one greedy request, and the script prints whether their texts agree (llama.cpp
approximates GELU with tanh, so a long greedy text may part; the export's own check measures that)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from pinned_server import start, stop, wait_ready

HERE = Path(sys.executable).parent
EXE = str(HERE / "gptzoo")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gptzoo" / "llama.cpp"


def find_llama_server(given: str | None) -> str:
    for candidate in (given, os.environ.get("LLAMA_SERVER"), shutil.which("llama-server")):
        if candidate and Path(candidate).is_file():
            return candidate
    built = sorted(CACHE.glob("*/bin/llama-server"))
    if built:
        return str(built[-1])
    raise SystemExit("no llama-server: build one with scripts/build-llama-server.sh or pass --llama-server PATH")


def start_llama(binary: str, gguf: Path, port: int, slots: int, context: int) -> subprocess.Popen:
    cmd = ["taskset", "-c", "0", binary, "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
           "-t", "1", "-tb", "1", "--parallel", str(slots), "-c", str(slots * context), "--no-webui",
           "--no-repack"]  # Q8_0 weights repacked for AMX crash llama.cpp on this CPU (docs/interop.md)
    # llama-server logs every request: to a file, as a pipe nobody reads would fill and stall it
    log = open(Path(tempfile.gettempdir()) / "gptzoo-peers-llama-server.log", "w")  # noqa: SIM115 (lives with proc)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
    return wait_ready(proc, f"http://127.0.0.1:{port}/health", f"llama-server (log: {log.name})", 120)


def greedy(port: int, model: str, prompt: str, n: int) -> str:
    r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=120, trust_env=False,
                   json={"model": model, "prompt": prompt, "max_tokens": n, "temperature": 0})
    r.raise_for_status()
    return r.json()["choices"][0]["text"]


def load(port: int, model: str, level: int, args) -> dict:
    cmd = [EXE, "loadtest", "--url", f"http://127.0.0.1:{port}", "--model", model, "--concurrency", str(level),
           "--duration", str(args.duration), "--max-tokens", str(args.max_tokens), "--prompt", args.prompt,
           "--temperature", "1", "--cpus", "1", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"loadtest failed: {out.stderr[-2000:]}")
    report = json.loads(out.stdout)
    return report.get("summary", report)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--model", default="4l", help="variant id, or NL for the store's N-layer variant")
    ap.add_argument("--gguf", default=None, help="default: the variant's model.gguf")
    ap.add_argument("--llama-server", default=None)
    ap.add_argument("--levels", default="1,8,32")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--max-tokens", type=int, default=120)
    ap.add_argument("--prompt", default="ROMEO:")
    args = ap.parse_args()

    from gptzoo.zoo.store import Store

    store = Store(Path(args.store))
    alias = args.model.removesuffix("l")
    variant = store.resolve(layers=int(alias)) if alias.isdigit() else store.load(args.model)
    gguf = Path(args.gguf) if args.gguf else variant.dir / "model.gguf"
    if not gguf.is_file():
        raise SystemExit(f"{gguf} not found: run `gptzoo export --model {variant.id} --format gguf` first")
    levels = [int(x) for x in args.levels.split(",")]
    binary = find_llama_server(args.llama_server)
    ours = start(EXE, args.store, 8851, ["--models", variant.id, "--reload-interval", "0"], name="gptzoo")
    peer = start_llama(binary, gguf, 8852, max(levels), variant.card.block_size)
    servers = {"gptzoo": (8851, variant.id), "llama.cpp": (8852, variant.id)}
    try:
        texts = {name: greedy(port, model, args.prompt, 100) for name, (port, model) in servers.items()}
        same = texts["gptzoo"] == texts["llama.cpp"]
        print(f"greedy 100 tokens identical: {same}" + ("" if same else f"\n  gptzoo:    {texts['gptzoo']!r}\n"
                                                           f"  llama.cpp: {texts['llama.cpp']!r}"), flush=True)
        runs: dict[tuple[str, int], list[dict]] = {}
        for rnd in range(args.rounds):
            order = list(servers) if rnd % 2 == 0 else list(servers)[::-1]
            for level in levels:
                for name in order:
                    port, model = servers[name]
                    s = load(port, model, level, args)
                    runs.setdefault((name, level), []).append(s)
                    p99 = s["ttft_ms"].get("p99")
                    failed = {k: v for k, v in s["errors"].items() if v}
                    print(f"round {rnd + 1} {name} c={level}: {s['tokens_per_s']:,.0f} tok/s, TTFT p99 "
                          f"{p99 if p99 is None else round(p99, 1)} ms, {s['requests']['failed']} failed {failed} "
                          f"{s.get('error_examples') or ''} (tokens from {s['tokens_from']}, "
                          f"{s.get('reconnected', 0)} reconnected)", flush=True)
    finally:
        peer.kill()  # llama-server may take longer than stop()'s grace to leave on SIGTERM
        peer.wait(30)
        stop([ours])

    def med(name: str, level: int, key: str, q: str | None = None) -> float:
        values = [r[key] if q is None else r[key].get(q) for r in runs[(name, level)]]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else float("nan")

    print(f"\n{variant.id} ({variant.card.n_layer} layers, width {variant.card.n_embd}), {args.max_tokens} tokens a "
          f"request, {args.rounds} rounds of {args.duration:.0f} s\n")
    print("| streams | gptzoo tok/s | llama.cpp tok/s | ratio | TTFT p50 / p99 gptzoo (ms) | TTFT p50 / p99 llama.cpp "
          "| ITL p50 / p99 gptzoo | ITL p50 / p99 llama.cpp |\n|---|---|---|---|---|---|---|---|")
    for level in levels:
        ours_tps, peer_tps = med("gptzoo", level, "tokens_per_s"), med("llama.cpp", level, "tokens_per_s")
        cells = [f"{med(n, level, k, 'p50'):.1f} / {med(n, level, k, 'p99'):.1f}"
                 for k in ("ttft_ms", "itl_ms") for n in ("gptzoo", "llama.cpp")]
        print(f"| {level} | {ours_tps:,.0f} | {peer_tps:,.0f} | {ours_tps / peer_tps:.2f}× | {cells[0]} | {cells[1]} "
              f"| {cells[2]} | {cells[3]} |")


if __name__ == "__main__":
    main()
