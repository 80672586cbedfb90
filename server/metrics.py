"""The service's own Prometheus metrics, module-level so two apps in one process share them (tests build many).

Labels are `model` and `layers` only (plus `outcome` on the request counter, `reason` on refusals, `draft` on the
speculative-decoding counters and metadata on the info gauge), so the series count stays small. In multi-worker mode
prometheus_client writes per-process files under $PROMETHEUS_MULTIPROC_DIR, which must be set before this module is
imported; gauges say how to combine them. The HTTP side (every route, status code, duration) comes from Litestar's
Prometheus middleware, as gptzoo_http_*."""

from __future__ import annotations

import os

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram

from gptzoo.server import buckets

LABELS = ("model", "layers")
# No `<name>_created` series beside every counter and histogram: Prometheus does not read them from the text
# format (it stores them as series of their own), and they were one in seven of a model's series (issue 22).
prometheus_client.disable_created_metrics()

E2E = Histogram("gptzoo_e2e_request_latency_seconds", "Completion requests from arrival to their last token.",
                LABELS, buckets=buckets.REQUEST_SECONDS)
QUEUE = Histogram("gptzoo_request_queue_time_seconds", "Time a completion request waited for a batch slot.",
                  LABELS, buckets=buckets.QUEUE_SECONDS)
TTFT = Histogram("gptzoo_time_to_first_token_seconds", "Time from a request's arrival to its first generated token.",
                 LABELS, buckets=buckets.TTFT_SECONDS)
ITL = Histogram("gptzoo_inter_token_latency_seconds", "Time between consecutive generated tokens of a request.",
                LABELS, buckets=buckets.INTER_TOKEN_SECONDS)
PROMPT_TOKENS = Counter("gptzoo_prompt_tokens", "Prompt tokens prefilled.", LABELS)
GENERATION_TOKENS = Counter("gptzoo_generation_tokens", "Tokens generated.", LABELS)
REQUESTS = Counter("gptzoo_completion_requests", "Completion requests by outcome: finish reason (stop, length), "
                   "cancelled, or an error code.", (*LABELS, "outcome"))
REFUSAL_REASONS = ("overloaded", "model_not_ready", "queue_timeout", "shutting_down")
REFUSED = Counter("gptzoo_requests_refused", "Completion requests turned away before generating, by reason: "
                  "overloaded (429, queue full), model_not_ready, queue_timeout, shutting_down (503).",
                  (*LABELS, "reason"))
CANCELLED = Counter("gptzoo_requests_cancelled", "Completion requests whose client disconnected before the end.",
                    LABELS)
BATCH_SIZE = Histogram("gptzoo_batch_size", "Rows decoded together in one decode step.", LABELS,
                       buckets=buckets.BATCH_ROWS)
STEP_TIME = Histogram("gptzoo_engine_step_seconds", "Wall time of an engine step's calls: phase=prefill feeds prompt "
                      "chunks and window re-prefills, phase=decode advances every decoding row by one token; with a "
                      "draft, phase=draft is the draft model's proposals and phase=verify the target's checks of "
                      "them (one call per drafting row).",
                      (*LABELS, "phase"), buckets=buckets.STEP_SECONDS)
PREFILL_TOKENS = Histogram("gptzoo_prefill_tokens_per_step", "Tokens fed by an engine step's prefill calls (prompt "
                           "chunks, capped by --prefill-chunk, and window re-prefills).", LABELS,
                           buckets=buckets.PREFILL_TOKENS)
CACHE_SLOTS = Gauge("gptzoo_cache_slots", "KV-cache slots of the model's batch (its --max-batch-size rows, allocated "
                    "once at load).", LABELS, multiprocess_mode="livesum")
CACHE_SLOTS_USED = Gauge("gptzoo_cache_slots_in_use", "KV-cache slots held by running requests.", LABELS,
                         multiprocess_mode="livesum")
CACHE_BYTES = Gauge("gptzoo_cache_bytes", "Memory of the model's KV cache (every layer's keys and values, all slots).",
                    LABELS, multiprocess_mode="livesum")
TPOT = Histogram("gptzoo_time_per_output_token_seconds", "A completed request's mean time per output token (from its "
                 "first token to its last, per token).", LABELS, buckets=buckets.INTER_TOKEN_SECONDS)
PREDICTED_TPOT = Histogram("gptzoo_predicted_time_per_output_token_seconds", "The time per output token predicted "
                           "for a request when it was routed (from the variant's recent steps at the occupancy it "
                           "joined): compare with gptzoo_time_per_output_token_seconds.", LABELS,
                           buckets=buckets.INTER_TOKEN_SECONDS)
ROUTE_REASONS = ("named", "best-fit", "fastest-no-fit", "fallback-overload")
ROUTES = Counter("gptzoo_route_decisions", "Where completion requests went and why: named (the request named the "
                 "variant), best-fit (`auto` or a family id: the best variant predicted within the budget), "
                 "fastest-no-fit (none fitted: the fastest), fallback-overload (a full queue handed it to a shallower "
                 "variant).", (*LABELS, "family", "reason"))
BUDGET_RESULTS = (WITHIN, OVER) = ("within", "over")
BUDGET = Counter("gptzoo_budget_requests", "Completed requests that carried a latency budget (max_tpot_ms, "
                 "max_ttft_ms), by result: within or over. Goodput is the rate of result=within.",
                 (*LABELS, "family", "result"))
SPEC_LABELS = (*LABELS, "draft")
SPEC_DRAFTED = Counter("gptzoo_spec_draft_tokens", "Speculative decoding (`gptzoo serve --draft`): tokens the draft "
                       "variant `draft` proposed for its target `model`. Only drafted targets have series.",
                       SPEC_LABELS)
SPEC_ACCEPTED = Counter("gptzoo_spec_accepted_tokens", "Of gptzoo_spec_draft_tokens, the tokens the target kept: "
                        "rate(accepted) / rate(drafted) is the pair's acceptance rate.", SPEC_LABELS)
RUNNING = Gauge("gptzoo_requests_running", "Completion requests being decoded.", LABELS, multiprocess_mode="livesum")
WAITING = Gauge("gptzoo_requests_waiting", "Completion requests queued for a batch slot.", LABELS,
                multiprocess_mode="livesum")
VALIDATION_LOSS = Gauge("gptzoo_model_validation_loss", "Validation loss from the variant's card.", LABELS,
                        multiprocess_mode="mostrecent")
READY = Gauge("gptzoo_model_ready", "1 when the model serves (in every worker process), else 0.", LABELS,
              multiprocess_mode="min")
# Gauge, not Info: Info is silently dropped in multiprocess mode.
# `arch` (the block family, gpt2 or oss) is here, one series per variant, and not on the per-request series: a
# query joins it on `model` (docs/runbook.md).
INFO = Gauge("gptzoo_model_info", "Always 1; the labels describe the variant (its block family `arch`), its ONNX file "
             "and where it runs.", (*LABELS, "arch", "provider", "params", "exporter", "quantization", "sha256"),
             multiprocess_mode="mostrecent")
LOAD_OUTCOMES = ("loaded", "failed")
LOADS = Counter("gptzoo_model_loads", "Model loads (session, warm-up, KV cache) by outcome: loaded or failed; at "
                "start, for a new or re-exported variant, and on POST /admin/models/{id}/load.", (*LABELS, "outcome"))
LOAD_TIME = Histogram("gptzoo_model_load_seconds", "Time to load a model: the onnxruntime session, the warm-up "
                      "generation and the KV cache.", LABELS, buckets=buckets.LOAD_SECONDS)
# What describes one model as a whole, set by the router for the worker that serves it (a reload overlaps two).
MODEL_GAUGES = (READY, VALIDATION_LOSS)
# What each running worker adds to: during a reload the old and the new session of a model both hold requests.
WORKER_GAUGES = (WAITING, RUNNING, CACHE_SLOTS, CACHE_SLOTS_USED, CACHE_BYTES)


def model_labels(model_id: str, n_layer: int | None) -> dict[str, str]:
    return {"model": model_id, "layers": "" if n_layer is None else str(n_layer)}  # None: a broken card's depth


def drop(metric, labelvalues: tuple[str, ...]) -> None:
    """End a series (a model left the zoo, or its info changed). In multiprocess mode prometheus_client cannot
    remove a series (it warns and keeps the file's value), so there it is only set to 0."""
    metric.labels(*labelvalues).set(0)
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        metric.remove(*labelvalues)

