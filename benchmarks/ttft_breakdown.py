"""Where a slow first token's time goes (issue 27): `gptzoo serve` pinned to core 0 with GPTZOO_TTFT_TRACE set
(gptzoo.server.ttft_trace), the load generator on core 1, streaming clients at one concurrency; then, for the
requests whose first frame left the server slowest (the top 1% and the top 10%) against the median ones, the mean of
each part of their time.

    python benchmarks/ttft_breakdown.py --store STORE --model 4l --concurrency 32 --duration 20 --max-tokens 120
    python benchmarks/ttft_breakdown.py --trace FILE   # only the breakdown of a trace written before

Parts (ms): `→handler` from the app's middleware seeing the request to the handler (Litestar reading and checking
the body); `handler→queued` routing and tokenizing on the event loop; `queue` waiting for the worker to take the job
(the step that runs when it arrives, or a free slot); `step` the step that admitted it (its prefill and the
others' decode, then sampling); `→hand-off` the step's end to its events leaving the worker thread; `loop wake`
until the event loop ran the hand-off; `→sent` until its first frame went to the socket (the handler resuming,
Litestar starting the response). `gc` the collections that overlapped (any thread). What precedes the handler
(the request waiting in the socket for the event loop, uvicorn parsing it) is the client's TTFT minus the server's,
compared as percentiles."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from pinned_server import start, stop

EXE = str(Path(sys.executable).parent / "gptzoo")
PARTS = {"→handler": ("handler", None), "handler→queued": ("queued", "handler"), "queue": ("admitted", "queued"),
         "step": ("sampled", "admitted"), "→hand-off": ("handed", "sampled"), "loop wake": ("delivered", "handed"),
         "→sent": ("sent", "delivered")}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] if xs else float("nan")


def breakdown(records: list[dict]) -> str:
    need = ("handler", "queued", "admitted", "sampled", "handed", "delivered", "sent")
    rows = [r for r in records if all(r.get(k) is not None for k in need)]
    rows.sort(key=lambda r: r["sent"])
    n = len(rows)
    groups = {"median (p45-p55)": rows[int(n * 0.45):int(n * 0.55) + 1], "slowest 10%": rows[int(n * 0.9):],
              "slowest 1%": rows[int(n * 0.99):]}
    sent = [r["sent"] for r in rows]
    out = [f"{n} first tokens traced; server-side TTFT (request in the app → first frame sent) p50 {pct(sent, 50):.1f}"
           f" ms, p99 {pct(sent, 99):.1f} ms", "",
           "| requests | n | " + " | ".join(PARTS) + " | total | gc (worker) | steps waited | step prefill / decode "
           "| rows / new in step |", "|---" * (len(PARTS) + 7) + "|"]
    for name, g in groups.items():
        def mean(f, g=g) -> float:
            return statistics.fmean(f(r) for r in g) if g else float("nan")
        cells = [mean(lambda r, a=a, b=b: r[a] - (r[b] if b else 0.0)) for a, b in PARTS.values()]
        out.append(f"| {name} | {len(g)} | " + " | ".join(f"{c:.2f}" for c in cells)
                   + f" | {mean(lambda r: r['sent']):.2f} | {mean(lambda r: r['gc_ms']):.2f} "
                     f"({mean(lambda r: r['gc_worker_ms']):.2f}) | {mean(lambda r: r['steps_waited']):.2f} "
                     f"| {mean(lambda r: r['prefill_ms']):.2f} / {mean(lambda r: r['decode_ms']):.2f} "
                     f"| {mean(lambda r: r['rows']):.1f} / {mean(lambda r: r['new']):.1f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store")
    ap.add_argument("--model", default="4l")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--max-tokens", type=int, default=120)
    ap.add_argument("--prompt", default="ROMEO:")
    ap.add_argument("--trace", help="a trace file to break down (no run)")
    ap.add_argument("--serve-args", default="", help="more `gptzoo serve` options, space-separated")
    args = ap.parse_args()
    if args.trace:
        print(breakdown([json.loads(line) for line in Path(args.trace).read_text().splitlines() if line]))
        return
    if not args.store:
        raise SystemExit("--store is needed for a run")
    trace = Path(tempfile.mkdtemp()) / "ttft.jsonl"
    os.environ["GPTZOO_TTFT_TRACE"] = str(trace)
    ours = start(EXE, args.store, 8861, ["--models", args.model, "--reload-interval", "0", *args.serve_args.split()],
                 name="gptzoo")
    del os.environ["GPTZOO_TTFT_TRACE"]  # the load generator traces nothing
    try:
        cmd = [EXE, "loadtest", "--url", "http://127.0.0.1:8861", "--model", args.model, "--concurrency",
               str(args.concurrency), "--duration", str(args.duration), "--max-tokens", str(args.max_tokens),
               "--prompt", args.prompt, "--temperature", "1", "--cpus", "1", "--json"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    finally:
        stop([ours])  # the server flushes its trace as it exits
    if out.returncode != 0:
        raise SystemExit(f"loadtest failed: {out.stderr[-2000:]}")
    s = json.loads(out.stdout)
    s = s.get("summary", s)
    print(f"client: {s['tokens_per_s']:,.0f} tok/s, TTFT p50 {s['ttft_ms']['p50']:.1f} ms, "
          f"p99 {s['ttft_ms']['p99']:.1f} ms, ITL p50 {s['itl_ms']['p50']:.1f} ms, p99 {s['itl_ms']['p99']:.1f} ms; "
          f"trace: {trace}\n")
    print(breakdown([json.loads(line) for line in trace.read_text().splitlines() if line]))


if __name__ == "__main__":
    main()
