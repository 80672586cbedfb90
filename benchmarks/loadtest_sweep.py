"""Load-test sweep for docs/loadtest.png: `gptzoo loadtest` in-process at rising concurrency, per model.

    gptzoo serve --store DIR --port 8000 &                            # a running server (loopback)
    python benchmarks/loadtest_sweep.py --url http://127.0.0.1:8000   # every ready model at 1,2,4,...,64 clients
    python benchmarks/loadtest_sweep.py --models 1l,4l --concurrency 1,8,32 --max-tokens 32 --plot /tmp/lt.png
    gptzoo serve --store DIR --cpus 0 --threads 1 &                   # on 2 cores: server on core 0 ...
    python benchmarks/loadtest_sweep.py --cpus 1 --concurrency 1,8,32  # ... the clients on core 1

For each model and concurrency level it sends `--requests-per-client` streamed requests per client (at least
`--min-requests`), prints one markdown table (model, concurrency, tok/s, TTFT, ITL and e2e percentiles, errors) and
plots aggregate tokens/s and p99 latency (TTFT and end-to-end) against concurrency, one line per model. Needs
matplotlib for the plot (`pip install -e '.[report]'`); `--plot ''` skips it.

Tokens are counted as `gptzoo loadtest` counts them: the server's usage (stream_options.include_usage); a tok/s cell
marked "(chunks)" comes from a server that sent none, whose text chunks were counted instead. ITL is the gap between
chunks, and one chunk may hold several tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import httpx

from gptzoo.measure.loadtest import LoadConfig, LoadTestError, check_url, run
from gptzoo.measure.pinning import CpuListError, check_cpus, pin

DEFAULT_PLOT = Path(__file__).resolve().parents[1] / "docs" / "loadtest.png"


def ready_models(url: str, api_key: str | None) -> list[tuple[str, int | None]]:
    """(id, layers) of the ready models the server lists, shallowest first."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = httpx.get(f"{url}/v1/models", headers=headers, timeout=10, trust_env=False)
    except httpx.HTTPError as e:
        raise LoadTestError(f"cannot reach {url}: {e}") from None
    if r.status_code != 200:
        raise LoadTestError(f"GET {url}/v1/models answered {r.status_code}: {r.text[:200]}")
    models = [(m["id"], m.get("n_layer")) for m in r.json()["data"] if m.get("ready", True)]
    return sorted(models, key=lambda m: (m[1] is None, m[1] or 0, m[0]))


def sweep(args) -> list[dict]:
    url = check_url(args.url, args.allow_remote)
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else \
        [m for m, _ in ready_models(url, args.api_key)]
    if not models:
        raise LoadTestError(f"{url} lists no ready model")
    levels = sorted({int(c) for c in args.concurrency.split(",") if c.strip()})
    rows = []
    for model in models:
        if args.warmup:
            run(LoadConfig(url=url, model=model, concurrency=1, requests=args.warmup, max_tokens=args.max_tokens,
                           prompt=args.prompt, timeout=args.timeout, api_key=args.api_key,
                           allow_remote=args.allow_remote))
        for c in levels:
            cfg = LoadConfig(url=url, model=model, concurrency=c, requests=max(c * args.requests_per_client,
                                                                                 args.min_requests),
                             duration=args.duration, max_tokens=args.max_tokens, prompt=args.prompt,
                             temperature=args.temperature, seed=args.seed, timeout=args.timeout,
                             api_key=args.api_key, allow_remote=args.allow_remote)
            d = run(cfg).to_dict()
            rows.append(d)
            print(f"{model} x{c}: {d['requests']['ok']}/{d['requests']['total']} ok, {d['tokens_per_s']:,.0f} tok/s, "
                  f"p99 e2e {_ms(d['e2e_ms']['p99'])} ms", file=sys.stderr)
    return rows


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def markdown(rows: list[dict]) -> str:
    lines = ["| model | concurrency | requests ok | tok/s | req/s | p50 TTFT ms | p99 TTFT ms | p99 ITL ms | "
             "p50 e2e ms | p99 e2e ms | errors |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in rows:
        errors = {k: n for k, n in d["errors"].items() if n}
        err = f"{sum(errors.values())} ({', '.join(f'{k} {n}' for k, n in errors.items())})" if errors else "0"
        # a count that is not the server's usage is never shown as if it were
        source = "" if d.get("tokens_from") in ("usage", None) else f" ({d['tokens_from']})"
        lines.append(f"| {d['config']['model']} | {d['config']['concurrency']} | {d['requests']['ok']}/"
                     f"{d['requests']['total']} | {d['tokens_per_s']:,.0f}{source} | {d['requests_per_s']:,.1f} | "
                     f"{_ms(d['ttft_ms']['p50'])} | {_ms(d['ttft_ms']['p99'])} | {_ms(d['itl_ms']['p99'])} | "
                     f"{_ms(d['e2e_ms']['p50'])} | {_ms(d['e2e_ms']['p99'])} | {err} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, (ax_tok, ax_lat) = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    models = list(dict.fromkeys(d["config"]["model"] for d in rows))
    colors = plt.get_cmap("tab10").colors
    for i, model in enumerate(models):
        color = colors[i % len(colors)]
        mine = sorted((d for d in rows if d["config"]["model"] == model), key=lambda d: d["config"]["concurrency"])
        cs = [d["config"]["concurrency"] for d in mine]
        ax_tok.plot(cs, [d["tokens_per_s"] for d in mine], "o-", color=color, label=model)
        for key, style in (("e2e_ms", "o-"), ("ttft_ms", "s--")):
            ys = [d[key]["p99"] if d[key]["p99"] is not None else float("nan") for d in mine]
            ax_lat.plot(cs, ys, style, color=color, alpha=1.0 if key == "e2e_ms" else 0.7)
    levels = sorted({d["config"]["concurrency"] for d in rows})
    for ax in (ax_tok, ax_lat):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrent clients")
        ax.grid(True, which="both", alpha=0.3)
    ax_tok.set_ylabel("aggregate completion tokens/s")
    ax_tok.set_ylim(bottom=0)
    ax_tok.set_title("throughput")
    ax_tok.legend(title="model")
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("p99 latency (ms, log scale)")
    ax_lat.set_title("p99 latency")
    ax_lat.legend([Line2D([], [], color="0.3", ls="-", marker="o"), Line2D([], [], color="0.3", ls="--", marker="s")],
                  ["end-to-end", "time to first token"], loc="upper left")
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the running server")
    p.add_argument("--models", default="", help="comma-separated ids or aliases [default: every ready model]")
    p.add_argument("--concurrency", default="1,2,4,8,16,32,64", help="comma-separated client counts")
    p.add_argument("--requests-per-client", type=int, default=8, help="requests per client at each level")
    p.add_argument("--min-requests", type=int, default=32, help="at least this many requests per level")
    p.add_argument("--warmup", type=int, default=4, help="requests per model before its first level, not counted")
    p.add_argument("--duration", type=float, default=None, help="also stop each level after this many seconds")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--prompt", default="ROMEO:")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--api-key", default=None)
    p.add_argument("--allow-remote", action="store_true", help="allow a host that is not loopback")
    p.add_argument("--cpus", default=None, metavar="LIST",
                   help="pin this process to these CPUs (taskset syntax), others than `gptzoo serve --cpus`")
    p.add_argument("--plot", default=str(DEFAULT_PLOT), help="PNG to write ('' for none)")
    p.add_argument("--json", dest="json_path", default="", help="also write every report to this JSON file")
    p.add_argument("--title", default="", help="plot title [default: the request shape]")
    args = p.parse_args(argv)
    if args.cpus is not None:
        try:
            pin(check_cpus(args.cpus))
        except CpuListError as e:
            p.error(f"--cpus: {e}")  # a usage error: exit 2
    try:
        rows = sweep(args)
    except LoadTestError as e:
        sys.exit(f"error: {e}")
    print(markdown(rows))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(rows, indent=2))
    if args.plot:
        title = args.title or f"gptzoo loadtest sweep: streamed completions, max_tokens {args.max_tokens}"
        plot(rows, Path(args.plot), title)
        print(f"\nwrote {args.plot}", file=sys.stderr)


if __name__ == "__main__":
    main()
