"""Issue 13's goals in one interleaved run: depth routing under load against always-shallow and always-deep.

    python benchmarks/routing.py --store /tmp/route-store --rounds 3

The store holds a zoo of depths (e.g. 1, 4 and 12 layers of one family). One `gptzoo serve --cpus 0 --threads 1`
serves all of them; the clients are `gptzoo loadtest --cpus 1` (streaming, tokens from `usage`, latency as the client
sees it). First the deepest variant's single-stream time per output token is measured; the budget is `--factor` times
that (2× by default: a budget the deepest variant alone misses at 32 streams). Then every round runs, in alternating
order, `--clients` concurrent streams for `--duration` seconds against `auto`, the shallowest and the deepest variant,
each request carrying the budget as `max_tpot_ms`. Printed per target: requests within budget (share), goodput
(requests within budget per second), mean validation loss of the variants that served, what served; medians over the
rounds. Then two checks at one stream: a generous budget must be served by the best variant, an impossible one by the
fastest. Every report is kept in ./routing.json."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from pinned_server import start

HERE = Path(sys.executable).parent


def load(port: int, model: str, *args) -> dict:
    cmd = [str(HERE / "gptzoo"), "loadtest", "--url", f"http://127.0.0.1:{port}", "-m", model, "--cpus", "1",
           "--json", *map(str, args)]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def served_counts(d: dict) -> str:
    return ", ".join(f"{k}: {v['within']}/{v['requests']} within" for k, v in d["served"]["models"].items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--port", type=int, default=8713)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--factor", type=float, default=2.0, help="budget = factor × the deepest variant's single-stream "
                                                               "time per token")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="routing.json")
    a = ap.parse_args()

    port = a.port
    proc = start(str(HERE / "gptzoo"), a.store, port, [])
    try:
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", trust_env=False).json()["data"]
        variants = sorted((m for m in models if m["kind"] == "variant" and m["ready"]), key=lambda m: m["n_layer"])
        shallow, deep = variants[0], variants[-1]
        best = min(variants, key=lambda m: m["val_loss"])
        print("zoo:", ", ".join(f"{m['id']} (val {m['val_loss']:.4f})" for m in variants))
        load(port, deep["id"], "-c", 1, "-n", 5, "--max-tokens", 32)  # warm-up
        single = load(port, deep["id"], "-c", 1, "-n", 20, "--max-tokens", a.max_tokens, "--max-tpot-ms", 1e9)
        tpot1 = single["budget"]["tpot_ms_client"]["p50"]
        budget = a.factor * tpot1
        print(f"{deep['id']} alone at one stream: {tpot1:.3f} ms/token (p50) -> budget {budget:.3f} ms/token")

        targets = {"auto": "auto", "shallowest": shallow["id"], "deepest": deep["id"]}
        runs: dict[str, list[dict]] = {k: [] for k in targets}
        for r in range(a.rounds):
            order = list(targets) if r % 2 == 0 else list(reversed(targets))
            for name in order:
                d = load(port, targets[name], "-c", a.clients, "--duration", a.duration, "--max-tokens",
                         a.max_tokens, "--max-tpot-ms", budget)
                runs[name].append(d)
                b = d["budget"]
                print(f"round {r + 1} {name:>10}: within {b['within_share']:.1%}, goodput "
                      f"{b['goodput_per_s']:.1f}/s, mean val {d['served']['mean_val_loss']:.4f}, "
                      f"{d['tokens_per_s']:.0f} tok/s, served {served_counts(d)}",
                      flush=True)

        print(f"\n{a.clients} streams, {a.max_tokens} tokens each, budget {budget:.3f} ms/token; medians of "
              f"{a.rounds} rounds")
        print("| target | within budget | goodput (req/s) | mean val loss of what served | tokens/s | served |")
        print("|---|---|---|---|---|---|")
        med = {}
        for name, ds in runs.items():
            share = statistics.median(d["budget"]["within_share"] for d in ds)
            good = statistics.median(d["budget"]["goodput_per_s"] for d in ds)
            loss = statistics.median(d["served"]["mean_val_loss"] for d in ds)
            tok = statistics.median(d["tokens_per_s"] for d in ds)
            total: dict[str, int] = {}
            for d in ds:
                for k, v in d["served"]["models"].items():
                    total[k] = total.get(k, 0) + v["requests"]
            n = sum(total.values())
            mix = ", ".join(f"{k} {v / n:.0%}" for k, v in sorted(total.items()))
            med[name] = (share, good, loss)
            print(f"| {name} ({targets[name]}) | {share:.1%} | {good:.1f} | {loss:.4f} | {tok:,.0f} | {mix} |")
        auto, sh, dp = med["auto"], med["shallowest"], med["deepest"]
        print(f"\ngoals: auto within budget {auto[0]:.1%} (>= 95%); mean val loss {auto[2]:.4f} vs always-"
              f"{shallow['id']} {sh[2]:.4f} (lower); goodput {auto[1]:.1f} vs always-{deep['id']} {dp[1]:.1f} "
              f"(= {auto[1] / dp[1] if dp[1] else float('inf'):.1f}x, >= 2x)")

        time.sleep(15)  # the live figures fade (2 s half-life): the two checks below are about a quiet server
        generous = load(port, "auto", "-c", 1, "-n", 5, "--max-tokens", 32, "--max-tpot-ms", 1e6)
        impossible = load(port, "auto", "-c", 1, "-n", 5, "--max-tokens", 32, "--max-tpot-ms", 1e-6)
        print(f"generous budget served by {sorted(generous['served']['models'])} (best: {best['id']}); impossible "
              f"by {sorted(impossible['served']['models'])} "
              f"({[r for m in impossible['served']['models'].values() for r in m['routes']]})")
        Path(a.out).write_text(json.dumps({"budget_ms": budget, "single_tpot_ms": tpot1, "runs": runs,
                                           "generous": generous, "impossible": impossible}, indent=1))
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
