"""`gptzoo loadtest`: concurrent streaming clients against a running `gptzoo serve` (or any OpenAI-style server)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gptzoo.cli.common import err, fail, handle_errors, out
from gptzoo.measure.loadtest import MAX_CONCURRENCY, MAX_DURATION_S, MAX_REQUESTS


@handle_errors
def loadtest_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="Model id (shakespeare-char-4l), alias (4l), or `auto` / "
                                       "a family id (shakespeare-char) for depth routing.", show_default=False)],
    url: Annotated[str, typer.Option(help="Base URL of the server.")] = "http://127.0.0.1:8000",
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, max=MAX_CONCURRENCY,
                                             help="Clients sending requests at the same time.")] = 8,
    requests: Annotated[
        int | None,
        typer.Option("--requests", "-n", min=1, max=MAX_REQUESTS, show_default=False,
                     help=f"Requests in all [default: 100, or up to {MAX_REQUESTS:,} with --duration].")
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(min=0.001, max=MAX_DURATION_S, show_default=False,
                     help="Seconds after which no new request starts (in-flight ones finish).")
    ] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="max_tokens of each request.")] = 64,
    prompt: Annotated[str, typer.Option(help="Prompt of every request.")] = "ROMEO:",
    temperature: Annotated[float | None, typer.Option(min=0, max=2, show_default=False,
                                                      help="Sampling temperature [default: the server's].")] = None,
    seed: Annotated[int | None, typer.Option(min=0, show_default=False,
                                             help="Send seed+i with request i (reproducible texts).")] = None,
    stream: Annotated[bool, typer.Option("--stream/--no-stream",
                                         help="Stream (SSE; TTFT and ITL measured) or plain JSON answers.")] = True,
    timeout: Annotated[float, typer.Option(min=0.001, max=MAX_DURATION_S,
                                           help="Seconds each request may take, whole answer included.")] = 60.0,
    max_tpot_ms: Annotated[
        float | None, typer.Option(show_default=False,
                                   help="Latency budget sent with each request (gptzoo's depth routing): mean ms per "
                                        "output token. The report counts the requests within it and the goodput.")
    ] = None,
    max_ttft_ms: Annotated[
        float | None, typer.Option(show_default=False,
                                   help="Latency budget sent with each request: ms to the first token.")
    ] = None,
    fallback: Annotated[
        str | None, typer.Option(show_default=False, help="Sent as each request's `fallback`: none or shallower "
                                                          "(served by a shallower variant when the queue is full).")
    ] = None,
    api_key: Annotated[str | None, typer.Option(envvar="GPTZOO_API_KEY", show_default=False,
                                                help="Send `Authorization: Bearer KEY`.")] = None,
    allow_remote: Annotated[bool, typer.Option("--allow-remote",
                                               help="Allow a host that is not loopback (127.0.0.0/8, ::1, "
                                                    "localhost).")] = False,
    cpus: Annotated[
        str | None,
        typer.Option("--cpus", metavar="LIST", show_default=False,
                     help="Pin the load generator to these CPUs (taskset syntax: 1, 0,2, 2-3). On a small machine "
                          "pin the server to others (`gptzoo serve --cpus 0`), or it measures the client too.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Load a running server with concurrent clients and report throughput and latency.

    Each of `--concurrency` clients sends POST /v1/completions requests one after the other until `--requests`
    were sent in all or `--duration` seconds passed. Reports requests/s, aggregate completion tokens/s, time to
    first token (TTFT), inter-token latency (ITL, between streamed chunks: one chunk may hold several tokens) and
    end-to-end latency at p50/p95/p99, and failures by kind (http_429, http_503, http_4xx, http_5xx, timeout,
    connection, protocol, stream_error). Completion tokens come from the server's `usage` (streams ask for
    stream_options.include_usage); a server that sends none gets its text chunks counted, and the report says so.
    A client answered 429 waits Retry-After (at most 1 s). Failed requests are reported, not fatal: the exit code
    is 1 only when the server cannot be reached at the start, 2 for a non-loopback URL without --allow-remote or a
    bad --cpus list.
    """
    from gptzoo.measure.loadtest import LoadConfig, LoadTestError, RemoteNotAllowed, run
    from gptzoo.measure.pinning import CpuListError, check_cpus, pin

    cfg = LoadConfig(url=url, model=model, concurrency=concurrency, requests=requests, duration=duration,
                     max_tokens=max_tokens, prompt=prompt, temperature=temperature, seed=seed, stream=stream,
                     timeout=timeout, api_key=api_key, allow_remote=allow_remote, max_tpot_ms=max_tpot_ms,
                     max_ttft_ms=max_ttft_ms, fallback=fallback)
    try:
        cfg = cfg.validated()
        pinned = check_cpus(cpus) if cpus is not None else None
    except RemoteNotAllowed as e:
        fail(str(e), code=2)
    except LoadTestError as e:
        fail(str(e), code=2)
    except CpuListError as e:
        fail(f"--cpus: {e}", code=2)
    if pinned:
        pin(pinned)  # before the event loop and httpx start: what they start inherits the mask
    report = _run_with_progress(cfg, run, show=not as_json and err.is_terminal)
    d = report.to_dict()
    if report.server_models is not None and model not in report.server_models:
        err.print(f"[yellow]warning:[/] the server does not list model {model!r} "
                  f"(it lists: {', '.join(report.server_models) or 'none'})", highlight=False)
    if d["tokens_from"] not in (None, "usage"):
        err.print(f"[yellow]warning:[/] {TOKENS_FROM[d['tokens_from']]}: completion tokens and tokens/s are not "
                  "exact", highlight=False)
    if as_json:
        print(json.dumps(d, indent=2))
        return
    print_report(d, Console(width=max(out.width, 100)))


def _run_with_progress(cfg, run, show: bool):
    if not show:
        return run(cfg)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("loadtest"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[failed]} failed"),
               TimeElapsedColumn()]
    total = cfg.requests if cfg.duration is None else None
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("requests", total=total, failed=0)
        failed = 0

        def on_result(r) -> None:
            nonlocal failed
            failed += not r.ok
            progress.update(task, advance=1, failed=failed)

        return run(cfg, on_result)


TOKENS_FROM = {
    "usage": "from usage",
    "chunks": "the server sent no usage: text chunks counted (a chunk may hold several tokens)",
    "none": "the server sent no usage: 0 counted",
    "mixed": "some answers had no usage: their text chunks counted",
}


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}" if v < 10 else f"{v:,.1f}"


def print_report(d: dict, console: Console) -> None:
    c, r = d["config"], d["requests"]
    mode = "stream" if c["stream"] else "no stream"
    console.print(f"[bold]{c['model']}[/] at {c['url']}: concurrency {c['concurrency']}, max_tokens "
                  f"{c['max_tokens']}, {mode}", highlight=False)
    summary = Table(show_header=False, box=None, pad_edge=False)
    summary.add_column(style="dim")
    summary.add_column(justify="right")
    summary.add_row("requests ok / failed", f"{r['ok']:,} / {r['failed']:,}")
    summary.add_row("wall time", f"{d['wall_s']:.2f} s")
    summary.add_row("requests/s", f"{d['requests_per_s']:,.2f}")
    source = TOKENS_FROM.get(d["tokens_from"], "")
    summary.add_row("completion tokens", f"{d['completion_tokens']:,}" + (f" ({source})" if source else ""))
    if c["stream"]:
        summary.add_row("text chunks", f"{d['text_chunks']:,}")
    summary.add_row("tokens/s (aggregate)", f"{d['tokens_per_s']:,.1f}")
    if d.get("client_cpus") is not None:
        from gptzoo.measure.pinning import format_cpus

        summary.add_row("client CPUs", format_cpus(d["client_cpus"]))
    console.print(summary)
    lat = Table(title="latency (ms, successful requests)")
    for col in ("", "n", "p50", "p95", "p99", "mean", "max"):
        lat.add_column(col, justify="left" if not col else "right")
    for name, key in (("TTFT", "ttft_ms"), ("ITL (between chunks)", "itl_ms"), ("end-to-end", "e2e_ms")):
        x = d[key]
        lat.add_row(name, f"{x['n']:,}", *(_ms(x[k]) for k in ("p50", "p95", "p99", "mean", "max")))
    console.print(lat)
    _print_routing(d, console)
    failures = {k: n for k, n in d["errors"].items() if n}
    if failures:
        errs = Table(title="errors")
        for col in ("kind", "count", "example"):
            errs.add_column(col, justify="right" if col == "count" else "left")
        for kind, n in failures.items():
            errs.add_row(kind, f"{n:,}", d["error_examples"].get(kind, ""))
        console.print(errs)


def _print_routing(d: dict, console: Console) -> None:
    """Which variants served (with their val loss and route reasons) when the server said, and the budget's
    verdicts when the run had one."""
    served = d.get("served") or {}
    models = served.get("models") or {}
    if len(models) > 1 or any(m["routes"] for m in models.values()):
        t = Table(title="served by")
        for col in ("model", "requests", "val loss", "routes"):
            t.add_column(col, justify="left" if col in ("model", "routes") else "right")
        for name, m in models.items():
            loss = "-" if m["val_loss"] is None else f"{m['val_loss']:.4f}"
            routes = ", ".join(f"{k} {n:,}" for k, n in sorted(m["routes"].items()))
            t.add_row(name, f"{m['requests']:,}", loss, routes)
        console.print(t)
        if served.get("mean_val_loss") is not None:
            console.print(f"mean val loss of what served: {served['mean_val_loss']:.4f}", highlight=False)
    b = d.get("budget")
    if b:
        limits = " and ".join(f"{k} ≤ {b[f]:g} ms" for k, f in (("time per token", "tpot_ms"), ("TTFT", "ttft_ms"))
                              if b[f] is not None)
        share = "-" if b["within_share"] is None else f"{b['within_share']:.1%}"
        console.print(f"within budget ({limits}): {b['within']:,} requests ({share}), goodput "
                      f"{b['goodput_per_s']:,.2f} requests/s", highlight=False)
