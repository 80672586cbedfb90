"""`gptzoo serve`: the OpenAI-compatible HTTP service over the exported variants, under uvicorn."""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Annotated, Literal

import typer

from gptzoo.cli.common import StoreOpt, err, fail, handle_errors, open_store

APP_FACTORY = "gptzoo.server.app:create_app_from_env"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@handle_errors
def serve_cmd(
    store: StoreOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    device: Annotated[
        Literal["auto", "cpu", "cuda"], typer.Option(help="onnxruntime provider: auto picks CUDA when available.")
    ] = "auto",
    workers: Annotated[int, typer.Option(min=1, help="Server processes; each loads every model.")] = 1,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="GPTZOO_API_KEY", show_default=False,
                     help="Require `Authorization: Bearer KEY` on the API (not on /healthz, /readyz, /metrics). "
                          "An empty key is an error, not 'no key'."),
    ] = None,
    admin_key: Annotated[
        str | None,
        typer.Option(envvar="GPTZOO_ADMIN_KEY", show_default=False,
                     help="The key of the admin routes (/admin/*: load, unload, reload) [default: the --api-key]."),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option("--allowed-host", metavar="NAME", show_default=False,
                     help="A host name clients reach the server by (repeat for more; `*`: any). localhost, IP "
                          "addresses and --host are always allowed; requests naming another Host get 400, so a web "
                          "page cannot reach the API through DNS rebinding."),
    ] = None,
    ui: Annotated[bool, typer.Option("--ui/--no-ui", help="Serve the playground page at / (docs/playground.md).")] \
        = True,
    max_tokens: Annotated[int, typer.Option(min=1, help="Largest max_tokens a request may ask for.")] = 1024,
    max_prompt_tokens: Annotated[int, typer.Option(min=1, help="Longest prompt accepted, in tokens.")] = 4096,
    max_batch_size: Annotated[
        int, typer.Option(min=1, help="Requests decoded together per model: the KV-cache slots allocated at load.")
    ] = 32,
    prefill_chunk: Annotated[
        int, typer.Option(min=1, help="Prompt tokens fed per engine step at most: a long prompt joins over several "
                                      "steps instead of stalling the running streams.")
    ] = 256,
    stream_interval: Annotated[
        float, typer.Option(min=0, max=1000, help="Milliseconds a stream's text may wait to go out with the next "
                                                 "tokens as one chunk (first tokens and ends go at once); 0: every "
                                                 "token as it comes.")
    ] = 5.0,
    max_queue: Annotated[
        int, typer.Option(min=1, help="Requests waiting per model beyond the batch; more get 429 with Retry-After.")
    ] = 256,
    fallback: Annotated[
        Literal["none", "shallower"],
        typer.Option(help="When a variant's queue is full, for requests that do not say (their `fallback` field): "
                          "none answers 429, shallower hands the request to the next shallower variant of the same "
                          "family with room (429 only when every one is full)."),
    ] = "none",
    request_timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds a request may wait for a batch slot; then 503 queue_timeout.")
    ] = 60.0,
    policy: Annotated[
        Literal["exact", "half", "slide"] | None,
        typer.Option(help="Past the context window: slide (oss variants only), half or exact. [default: each "
                          "variant's family's own: slide for oss, half for gpt2]", show_default=False),
    ] = None,
    shutdown_timeout: Annotated[
        float, typer.Option(min=0, help="On SIGTERM or Ctrl-C, seconds in-flight requests get to finish.")
    ] = 30.0,
    body_timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds a request body may take to arrive; slower ones get 408 and are "
                                            "disconnected.")
    ] = 30.0,
    header_timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds a connection may take to send a request's line and headers "
                                            "(from when it opens or got its last answer); then it is closed.")
    ] = 10.0,
    threads: Annotated[
        int | None, typer.Option(min=1, show_default=False,
                                 help="onnxruntime threads per model [default: all cores, or one per --cpus CPU].")
    ] = None,
    cpus: Annotated[
        str | None,
        typer.Option("--cpus", metavar="LIST", show_default=False,
                     help="Pin the server (every worker and thread) to these CPUs (taskset syntax: 0, 0,2, 0-3), "
                          "e.g. to keep `gptzoo loadtest --cpus 1` off its cores."),
    ] = None,
    reload_interval: Annotated[
        float, typer.Option(min=0, metavar="SECONDS",
                            help="Rescan the store this often: new exports load in the background, a re-exported "
                                 "variant switches to its new file once that is loaded, a removed one finishes its "
                                 "requests and unloads. 0: only at start and on POST /admin/reload.")
    ] = 5.0,
    models: Annotated[
        list[str] | None,
        typer.Option("--models", metavar="LIST", show_default=False,
                     help="Serve only these variants: ids or depth aliases, comma-separated (or repeat the flag). "
                          "The others are listed as unloaded; POST /admin/models/ID/load serves one."),
    ] = None,
    draft: Annotated[
        list[str] | None,
        typer.Option("--draft", metavar="TARGET=DRAFT|auto", show_default=False,
                     help="Speculative decoding: DRAFT (a shallower variant, id or depth alias) proposes tokens "
                          "that TARGET verifies, e.g. 12l=1l (repeat the flag for more pairs). `auto`: every "
                          "variant drafted by the shallowest exported variant with its tokenizer and dataset "
                          "(variants with none serve without). The text is the same as without at temperature 0, "
                          "and its distribution the same above; a request opts out with `\"speculative\": false`. "
                          "Rows draft while it pays: alone, not in a full batch."),
    ] = None,
    draft_tokens: Annotated[
        int, typer.Option(min=1, max=16, help="The most tokens a draft proposes per round (fewer after a guess it "
                                              "is unsure of, none while drafting does not pay).")
    ] = 4,
    log_level: Annotated[
        Literal["critical", "error", "warning", "info", "debug"], typer.Option(help="Server log level.")
    ] = "info",
) -> None:
    """Serve every exported variant over an OpenAI-compatible HTTP API, following the store as it changes.

    POST /v1/completions (model: a full id such as shakespeare-char-4l, a depth alias such as 4l, or `auto` / a
    family id such as shakespeare-char with a latency budget `max_tpot_ms` / `max_ttft_ms`: the best variant
    predicted to meet it serves; `stream: true` for Server-Sent Events), GET /v1/models, /healthz, /readyz, /metrics
    (Prometheus) and the OpenAPI schema at /schema. Each model loads in its own thread with a warm-up generation; a
    variant that fails to load is reported as not ready and the others serve. Variants exported, re-exported or
    removed while it runs are picked up every --reload-interval seconds, without dropping a request; /admin/reload,
    /admin/models and /admin/models/ID/load|unload control that by hand (behind --admin-key, else --api-key). With
    --draft a shallow variant drafts tokens for a deep one (speculative decoding): the draft is opened by its target
    when the target loads, and a draft that cannot be opened then leaves the target serving without one. SIGTERM or
    Ctrl-C stops the server gracefully: it stops accepting, lets queued and running requests finish for up to
    --shutdown-timeout seconds, then exits 0; the same signal again exits at once (status 130 or 143). Every route
    but the probes and /metrics answers only to the server's names (localhost, IP addresses, --host,
    --allowed-host), and requests that change state must be JSON and come from no foreign web page (Origin).
    """
    import uvicorn

    from gptzoo.measure.pinning import CpuListError, check_cpus, format_cpus, pin
    from gptzoo.server.aliases import resolve_names
    from gptzoo.server.connection import HeadDeadlineProtocol
    from gptzoo.server.settings import Settings
    from gptzoo.zoo.errors import BadValue
    from gptzoo.zoo.runtime import choose_providers

    _check_keys(api_key=api_key, admin_key=admin_key)
    try:
        pinned = check_cpus(cpus) if cpus is not None else None
    except CpuListError as e:
        fail(f"--cpus: {e}", code=2)
    if pinned and threads is None:
        # onnxruntime's default pool pins its threads to every core itself, escaping the process's mask
        threads = len(pinned)
    the_store = open_store(store)
    variants, broken = the_store.scan()
    for b in broken:
        err.print(f"[yellow]warning:[/] {b.id}: not served: {b.reason}", highlight=False)
    if not any(v.exported for v in variants):
        what = "no variants" if not variants else "no exported variants"
        fail(f"{what} in {the_store.root} (train with `gptzoo train --layers 4`, then `gptzoo export --layers 4`)")
    names = None
    if models is not None:
        wanted = [n.strip() for item in models for n in item.split(",") if n.strip()]
        if not wanted:
            fail("--models: name at least one variant (an id or a depth alias)", code=2)
        try:
            names = resolve_names(variants, wanted)
        except BadValue as e:
            fail(str(e), code=2)
    if policy == "slide" and (gpt2 := [v.id for v in variants if v.exported and v.card.arch != "oss"
                                       and (names is None or v.id in names)]):
        fail(f"--policy slide needs relative positions (oss variants); {', '.join(gpt2)} use the gpt2 block: "
             "serve them with half or exact, or leave --policy to each family's default", code=2)
    drafts = _drafts(draft, the_store, variants, draft_tokens) if draft else None
    choose_providers(device)  # a clear error now (e.g. cuda without onnxruntime-gpu), not one per model later
    settings = Settings.build(store=str(the_store.root), device=device, api_key=api_key, admin_key=admin_key,
                              allowed_hosts=list(dict.fromkeys([host, *(allowed_host or [])])),
                              header_timeout=header_timeout, max_tokens=max_tokens,
                              max_prompt_tokens=max_prompt_tokens, max_batch_size=max_batch_size,
                              prefill_chunk=prefill_chunk, stream_interval=stream_interval / 1000,
                              max_waiting=max_queue, fallback=fallback, request_timeout=request_timeout,
                              shutdown_timeout=shutdown_timeout, body_timeout=body_timeout, threads=threads,
                              reload_interval=reload_interval, models=names, drafts=drafts,
                              draft_tokens=draft_tokens, ui=ui, policy=policy)
    # uvicorn's workers (and the single in-process app) build the app from these variables.
    os.environ.update(settings.to_env())
    metrics_dir = _fresh_metrics_dir(workers)
    if not _loopback(host):
        _warn_open(host, api_key, admin_key)
    err.print(f"serving {sum(v.exported for v in variants)} exported variant(s) from {the_store.root} at "
              f"http://{host}:{port} (API /v1, OpenAPI /schema, metrics /metrics)", highlight=False)
    if pinned:
        pin(pinned)  # before uvicorn: its threads, the model threads and worker processes inherit the mask
        err.print(f"pinned to CPU(s) {format_cpus(pinned)}, {threads} onnxruntime thread(s) per model",
                  highlight=False)
    # uvicorn drains on SIGTERM, then restores the handler it found and raises the signal again; with the default
    # handler that kills the process (exit -15) after a clean shutdown. As Ctrl-C's handler it ends in the
    # KeyboardInterrupt that uvicorn.run swallows: exit 0.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        # h11, not httptools: uvicorn's httptools protocol takes headers of any size (20 MB measured), h11 stops at
        # 16 KiB; with a deadline on each request's head (HeadDeadlineProtocol). The loop is uvloop where installed.
        uvicorn.run(APP_FACTORY, factory=True, host=host, port=port, workers=workers, log_level=log_level,
                    log_config=_log_config(log_level), timeout_graceful_shutdown=shutdown_timeout,
                    http=HeadDeadlineProtocol)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _check_keys(**keys: str | None) -> None:
    """An empty key (`--api-key "$KEY"` with KEY unset, or `GPTZOO_API_KEY=`) is a mistake, never "no key": serving
    without auth because a variable was missing is the failure to avoid. Typer reads an empty variable as unset, so
    the environment is looked at too."""
    for field, value in keys.items():
        flag, var = "--" + field.replace("_", "-"), f"GPTZOO_{field.upper()}"
        if value is None and var in os.environ:
            value = os.environ[var]
        if value is not None and not value.strip():
            fail(f"{flag} is empty (from {flag} or {var}): give a key, or leave both out to serve without one",
                 code=2)


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _warn_open(host: str, api_key: str | None, admin_key: str | None) -> None:
    """Past loopback, say who may do what: the admin routes unload every model."""
    admin = "the admin routes (POST /admin/models/ID/unload and /load, /admin/reload: any model can be unloaded)"
    if not api_key and not admin_key:
        what = f"anyone who can reach it may use the API and {admin}"
    elif not admin_key:
        err.print("note: the admin routes take the API key: every client holding it may unload models "
                  "(--admin-key gives them their own key)", highlight=False)
        return
    elif not api_key:
        what = "anyone who can reach it may use the completions API (the admin routes need --admin-key)"
    else:
        return
    err.print(f"[yellow]warning:[/] listening on {host} without --api-key: {what}", highlight=False)


def _drafts(values: list[str], store, variants, k: int) -> list[str]:
    """The settings' drafts for the --draft values, refused (exit 2, one line) when a pair cannot draft; says which
    variant drafts for which (as the workers' DraftPlan will pick when they load)."""
    from gptzoo.server import drafts
    from gptzoo.zoo.errors import BadValue

    try:
        entries, warnings = drafts.resolve(values, variants)
    except BadValue as e:
        fail(str(e), code=2)
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    plan = drafts.DraftPlan.from_settings(store, entries, k, variants)
    if pairs := sorted((v.id, d.id) for v in variants if v.exported and (d := plan.drafts_for(v)[0])):
        err.print(f"drafting: {', '.join(f'{t} by {d}' for t, d in pairs)} (at most {k} tokens a round)",
                  highlight=False)
    elif entries == [drafts.AUTO]:
        err.print("[yellow]warning:[/] --draft auto: no exported variant has a shallower exported variant with its "
                  "tokenizer and dataset; serving without drafts", highlight=False)
    else:
        err.print("[yellow]warning:[/] --draft: no target is exported yet; each drafts once it is", highlight=False)
    return entries


def _fresh_metrics_dir(workers: int) -> Path | None:
    """Multi-process Prometheus needs a shared folder, empty at start (stale files from an earlier run would be
    summed in). Returns the folder to delete afterwards when we made it."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        d = Path(given)
        d.mkdir(parents=True, exist_ok=True)
        for f in d.glob("*.db"):
            f.unlink()
        return None
    if workers == 1:
        return None
    d = Path(tempfile.mkdtemp(prefix="gptzoo-metrics-"))
    os.environ[MULTIPROC_ENV] = str(d)
    return d


def _log_config(level: str) -> dict:
    """uvicorn's logging, plus gptzoo.server's model load reports on the same stream; when tracing (an OTLP endpoint
    is set), each access line ends with its request's trace id (`trace_id=…`, "-" for untraced routes)."""
    from uvicorn.config import LOGGING_CONFIG

    from gptzoo.server import tracing

    config = {**LOGGING_CONFIG, "loggers": dict(LOGGING_CONFIG["loggers"])}
    config["loggers"]["gptzoo"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    if tracing.enabled():
        access = dict(config["formatters"]["access"])
        access["fmt"] += " trace_id=%(trace_id)s"
        config["formatters"] = {**config["formatters"], "access": access}
        config["filters"] = {"trace_id": {"()": "gptzoo.server.tracing.TraceIdFilter"}}
        config["handlers"] = {**config["handlers"], "access": {**config["handlers"]["access"],
                                                               "filters": ["trace_id"]}}
    return config
