"""Issue 12's serving goal: tokens/s over HTTP with drafting on against off, at 1 stream and at 32 (batch 32 must never
be slower than without a draft).

    python benchmarks/spec_serving.py --store /tmp/route-store --model 12l --draft 1l --levels 1,32 --rounds 3 \\
        --duration 10

Two servers on one store, each `gptzoo serve --cpus 0 --threads 1 --models MODEL --reload-interval 0` (the draft is
opened by the target's worker; it need not be served), one of them with `--draft MODEL=DRAFT`. The clients are
`gptzoo loadtest --cpus 1`: streaming, greedy (temperature 0), tokens from `usage`, `--duration` seconds per run.
After a warm-up and a check that both servers write the same greedy text, every round runs every level against both
servers in turn, the order alternating between rounds, so both see the same noise of a shared machine. Per level it
prints the median tokens/s of each (and the range), the ratio of the medians and each round's ratio (with their median:
the steadier figure when other jobs share the machine), and, from the
drafting server's /metrics, what the draft proposed per generated token and the share the target kept."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import httpx
from pinned_server import start, stop
from prometheus_client.parser import text_string_to_metric_families

HERE = Path(sys.executable).parent
EXE = str(HERE / "gptzoo")


def load(port: int, model: str, clients: int, duration: float, max_tokens: int) -> dict:
    cmd = [EXE, "loadtest", "--url", f"http://127.0.0.1:{port}", "-m", model, "-c", str(clients), "--duration",
           str(duration), "--max-tokens", str(max_tokens), "--temperature", "0", "--cpus", "1", "--json"]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def spec_counters(port: int) -> tuple[float, float]:
    """(proposed, kept) so far, summed over the server's drafted pairs."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10, trust_env=False).text
    got = {"gptzoo_spec_draft_tokens_total": 0.0, "gptzoo_spec_accepted_tokens_total": 0.0}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in got:
                got[s.name] += s.value
    return got["gptzoo_spec_draft_tokens_total"], got["gptzoo_spec_accepted_tokens_total"]


def greedy_text(port: int, model: str, tokens: int) -> str:
    r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=120, trust_env=False,
                   json={"model": model, "prompt": "ROMEO:", "max_tokens": tokens, "temperature": 0})
    r.raise_for_status()
    return r.json()["choices"][0]["text"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--model", default="12l")
    ap.add_argument("--draft", default="1l")
    ap.add_argument("--draft-tokens", type=int, default=4)
    ap.add_argument("--levels", default="1,32")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of load per level, server and round")
    ap.add_argument("--max-tokens", type=int, default=256)
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    base = ["--models", args.model, "--reload-interval", "0", "--max-tokens", str(max(args.max_tokens, 1000))]
    servers = {"without": (8871, base),
               "with draft": (8872, [*base, "--draft", f"{args.model}={args.draft}", "--draft-tokens",
                                     str(args.draft_tokens)])}
    procs = [start(EXE, args.store, port, extra, name) for name, (port, extra) in servers.items()]
    results: dict[tuple[str, int], list[float]] = {}
    drafted: dict[int, list[tuple[float, float, float]]] = {}  # level -> (proposed, kept, generated) per run
    try:
        texts = {name: greedy_text(port, args.model, 1000) for name, (port, _) in servers.items()}
        same = len(set(texts.values())) == 1
        print(f"greedy 1,000 tokens, same text with and without the draft: {'yes' if same else 'NO'}",
              file=sys.stderr, flush=True)
        for port, _ in servers.values():
            load(port, args.model, 8, 2, args.max_tokens)  # warm-up
        spec_port = servers["with draft"][0]
        for r in range(args.rounds):
            order = list(servers.items()) if r % 2 == 0 else list(servers.items())[::-1]
            for c in levels:
                for name, (port, _) in order:
                    before = spec_counters(spec_port)
                    report = load(port, args.model, c, args.duration, args.max_tokens)
                    results.setdefault((name, c), []).append(report["tokens_per_s"])
                    if name == "with draft":
                        after = spec_counters(spec_port)
                        drafted.setdefault(c, []).append((after[0] - before[0], after[1] - before[1],
                                                          report["completion_tokens"]))
                    print(f"round {r + 1} {name} c={c}: {report['tokens_per_s']:,.0f} tok/s "
                          f"({report['requests']['failed']} failed)", file=sys.stderr, flush=True)
    finally:
        stop(procs)
    Path("spec_serving.json").write_text(json.dumps({f"{k[0]} c{k[1]}": v for k, v in results.items()}, indent=1))
    print("| streams | without tok/s (median, range) | with draft tok/s (median, range) | with ÷ without "
          "(medians) | per round (median) | proposed per token | kept | same text |")
    print("|---|---|---|---|---|---|---|---|")
    for c in levels:
        off, on = results["without", c], results["with draft", c]
        ratios = [b / a for a, b in zip(off, on, strict=True)]
        rounds = " / ".join(f"{x:.2f}" for x in ratios) + f" ({statistics.median(ratios):.2f})"
        proposed = sum(x[0] for x in drafted[c])
        kept = sum(x[1] for x in drafted[c])
        made = sum(x[2] for x in drafted[c])
        print(f"| {c} | {statistics.median(off):,.0f} ({min(off):,.0f}–{max(off):,.0f}) | "
              f"{statistics.median(on):,.0f} ({min(on):,.0f}–{max(on):,.0f}) | "
              f"**{statistics.median(on) / statistics.median(off):.2f}×** | {rounds} | {proposed / made:.2f} | "
              f"{(f'{100 * kept / proposed:.0f}%' if proposed else '–')} | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
