"""Metric series under a churning zoo (issue 22): a real `gptzoo serve` on loopback while 1,000 variant folders are
added and removed, /healthz polled and /metrics scraped every second throughout.

    python benchmarks/metrics_churn.py --store STORE                 # STORE: an exported variant to copy
    python benchmarks/metrics_churn.py --store STORE --variants 200 --pythonpath /tmp/old   # another source tree

A first round (not counted) uses every route once, so "before" already holds the HTTP series of the routes the
churn uses (they are per route and status, bounded, and not the model series this measures). Each round adds
`--batch` copies of the store's first variant (one in `--loadable-every` a working copy, which loads, serves one
request and so gets every series; the others with a broken card), rescans (POST /admin/reload), waits
until the working ones are ready, sends each a completion, removes every folder, rescans and waits until they are
unloaded. Prints the /metrics size, the server's RSS and one scrape's time before and after, the series left with
a churned id, the latency of /healthz and of the scrapes during the churn, and afterwards /healthz for `--steady`
seconds without scrapes and as long again with a scrape every second (what a scrape costs the event loop, apart
from the machine's own noise). `--pythonpath` runs the server from another tree (a folder holding a
`gptzoo/` package, e.g. an older commit's folders linked under it) to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_until(check, what: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


class Poller(threading.Thread):
    """GETs `path` every `interval` seconds until stopped; keeps (latency s, response size)."""

    def __init__(self, base: str, path: str, interval: float):
        super().__init__(daemon=True)
        self.url, self.interval, self.samples, self.stop = f"{base}{path}", interval, [], threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=60, trust_env=False) as c:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                r = c.get(self.url)
                self.samples.append((time.perf_counter() - t0, len(r.content)))
                self.stop.wait(max(0.0, self.interval - (time.perf_counter() - t0)))


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--variants", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--loadable-every", type=int, default=10)
    ap.add_argument("--steady", type=float, default=20.0)
    ap.add_argument("--pythonpath", default="")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gptzoo-churn-"))
    store = work / "store"
    shutil.copytree(args.store, store)
    src = sorted(p for p in store.iterdir() if (p / "card.json").is_file())[0]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [args.pythonpath, os.environ.get("PYTHONPATH")]))}
    with open(work / "serve.log", "w") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, "-m", "gptzoo.cli.main", "serve", "--store", str(store), "--port",
                                 str(port), "--threads", "1", "--reload-interval", "0", "--log-level", "warning"],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    c = httpx.Client(base_url=base, timeout=120, trust_env=False)
    try:
        wait_until(lambda: proc.poll() is None and _ok(c, "/readyz"), "the server", 120)

        def scrape() -> tuple[int, float]:
            t0 = time.perf_counter()
            n = len(c.get("/metrics").content)
            return n, time.perf_counter() - t0

        def round_of(ids: list[str], first: int) -> None:
            good = []
            for i, vid in enumerate(ids, first):
                dst = store / vid
                shutil.copytree(src, dst)
                card = json.loads((dst / "card.json").read_text())
                card.update(id=vid)
                if i % args.loadable_every == 0:
                    good.append(vid)
                else:
                    card.update(n_layer="two")  # a broken card: listed, never loaded
                (dst / "card.json").write_text(json.dumps(card))
            c.post("/admin/reload").raise_for_status()
            wait_until(lambda good=good: all(_state(c, v) == "ready" for v in good), "the copies to load")
            for vid in good:
                c.post("/v1/completions", json={"model": vid, "prompt": "ROMEO:", "max_tokens": 8}).raise_for_status()
            peak[:] = max(peak, [scrape()[0], rss_mb(proc.pid)])
            for vid in ids:
                shutil.rmtree(store / vid)
            c.post("/admin/reload").raise_for_status()
            wait_until(lambda: not c.get("/admin/models").json()["draining"], "the removed variants to unload")

        fresh_size = scrape()[0]
        peak: list = [0, 0.0]
        round_of(["warmup0-2l", "warmup1-2l"], 0)
        before_size, before_s = scrape()
        before_rss = rss_mb(proc.pid)
        health, scraper = Poller(base, "/healthz", 0.05), Poller(base, "/metrics", 1.0)
        health.start()
        scraper.start()
        t0 = time.perf_counter()
        for start in range(0, args.variants, args.batch):
            round_of([f"churn{i}-2l" for i in range(start, min(start + args.batch, args.variants))], start)
            done = min(start + args.batch, args.variants)
            print(f"  {done} variants added and removed ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        health.stop.set()
        scraper.stop.set()
        health.join()
        scraper.join()
        churn_hz, sc = [s for s, _ in health.samples], [s for s, _ in scraper.samples]
        scrape_sizes = [n for _, n in scraper.samples]
        after_size, after_s = scrape()
        after_rss = rss_mb(proc.pid)
        left = c.get("/metrics").text.count('model="churn')
        steady = {}
        for label, scraping in (("no scrapes", False), ("a scrape every second", True)):
            health, poll = Poller(base, "/healthz", 0.05), Poller(base, "/metrics", 1.0)
            health.start()
            if scraping:
                poll.start()
            time.sleep(args.steady)
            for p in (health, poll):
                p.stop.set()
                if p.is_alive():
                    p.join()
            steady[label] = [s for s, _ in health.samples]
    finally:
        proc.terminate()
        proc.wait(30)
    hz = churn_hz
    print(f"{args.variants} variants ({args.variants // args.loadable_every} loadable), in rounds of {args.batch}\n")
    print(f"/metrics of the fresh server: {fresh_size:,} bytes; after a first round that used every route: "
          f"{before_size:,} (before)\n")
    print("| | /metrics bytes | RSS MB | one scrape ms |")
    print("|---|---|---|---|")
    print(f"| before | {before_size:,} | {before_rss:.0f} | {before_s * 1e3:.0f} |")
    print(f"| largest during (a round's variants loaded) | {peak[0]:,} | {peak[1]:.0f} | |")
    print(f"| after | {after_size:,} ({after_size / before_size - 1:+.1%}) | {after_rss:.0f} | {after_s * 1e3:.0f} |")
    print(f"\n/healthz every 50 ms during the churn ({len(hz)} requests): p50 {pct(hz, 0.5) * 1e3:.1f} ms, "
          f"p99 {pct(hz, 0.99) * 1e3:.1f} ms, max {max(hz) * 1e3:.1f} ms")
    print(f"/metrics every second ({len(sc)} scrapes): p50 {statistics.median(sc) * 1e3:.0f} ms, "
          f"max {max(sc) * 1e3:.0f} ms, largest {max(scrape_sizes):,} bytes")
    print(f"series left with a churned variant's id: {left}")
    for label, xs in steady.items():
        print(f"after the churn, {args.steady:.0f} s with {label}: /healthz p50 {pct(xs, 0.5) * 1e3:.1f} ms, "
              f"p99 {pct(xs, 0.99) * 1e3:.1f} ms, max {max(xs) * 1e3:.1f} ms ({len(xs)} requests)")
    shutil.rmtree(work, ignore_errors=True)


def _ok(c: httpx.Client, path: str) -> bool:
    try:
        return c.get(path).status_code == 200
    except httpx.TransportError:
        return False


def _state(c: httpx.Client, vid: str) -> str | None:
    models = {m["id"]: m for m in c.get("/admin/models").json()["data"]}
    return models.get(vid, {}).get("state")


if __name__ == "__main__":
    main()
