"""OpenTelemetry's GenAI semantic conventions (status Development) for model servers, as Prometheus series beside the
gptzoo_* ones, so dashboards and alerts written for other servers' GenAI metrics work on gptzoo unchanged.

    gen_ai.server.request.duration        gen_ai_server_request_duration_seconds        (s)
    gen_ai.server.time_to_first_token     gen_ai_server_time_to_first_token_seconds     (s, successful requests)
    gen_ai.server.time_per_output_token   gen_ai_server_time_per_output_token_seconds   (s, successful requests)
    gen_ai.client.token.usage             gen_ai_client_token_usage                     ({token}, by gen_ai.token.type)

The names are OpenTelemetry's Prometheus translation (dots to underscores, the unit `s` as the `_seconds` suffix, an
annotation unit such as `{token}` dropped). Attributes become labels the same way: `gen_ai_operation_name`
(text_completion), `gen_ai_provider_name` (gptzoo), `gen_ai_request_model` (the name the request routed by: the
variant's id for a named variant or alias, `auto`, or the family id), `gen_ai_response_model` (the variant that ran
it), `gen_ai_token_type` (input, output) and `error_type` (on the duration only: gptzoo's error code, empty for a
success). Buckets: gptzoo.server.buckets (the conventions', extended below).

No second clock: every value is one gptzoo already measured for its own series (gptzoo.server.model_metrics): the
duration is gptzoo_e2e_request_latency_seconds' value, the time to first token gptzoo_time_to_first_token_seconds',
the time per output token gptzoo_time_per_output_token_seconds' (first token to last, per later token: the
conventions' (duration − TTFT) ÷ (output tokens − 1), the duration ending at the last token), and the token counts
are those gptzoo_prompt_tokens and gptzoo_generation_tokens add up. Recorded when a request ends, so the
success-only ones hold successful requests only. Requests refused before a variant was chosen (a bad request, an
unknown model) have no model to carry and are not recorded."""

from __future__ import annotations

from prometheus_client import Histogram

from gptzoo.server import buckets

OPERATION, PROVIDER = "text_completion", "gptzoo"
LABELS = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_response_model")
OK = ""  # error_type of a success: an empty label is no label to PromQL
CANCELLED = "cancelled"  # error_type of a request whose client left (the others are the Failed events' codes)
INPUT, OUTPUT = "input", "output"

DURATION = Histogram("gen_ai_server_request_duration_seconds", "gen_ai.server.request.duration: completion requests "
                     "from arrival to their last token (or to their error, by error_type).", (*LABELS, "error_type"),
                     buckets=buckets.GENAI_REQUEST_SECONDS)
TTFT = Histogram("gen_ai_server_time_to_first_token_seconds", "gen_ai.server.time_to_first_token: successful "
                 "requests' time from arrival to their first token.", LABELS, buckets=buckets.GENAI_TTFT_SECONDS)
TPOT = Histogram("gen_ai_server_time_per_output_token_seconds", "gen_ai.server.time_per_output_token: successful "
                 "requests' time per output token after the first (requests of two tokens or more).", LABELS,
                 buckets=buckets.GENAI_TPOT_SECONDS)
TOKENS = Histogram("gen_ai_client_token_usage", "gen_ai.client.token.usage: a successful request's input (prompt) "
                   "and output (generated) tokens, by gen_ai_token_type.", (*LABELS, "gen_ai_token_type"),
                   buckets=buckets.GENAI_TOKENS)


# Series (samples) per pair of request and response model: each histogram's buckets, +Inf, _sum and _count, token
# usage twice (input, output); a request name's first error adds a duration histogram more per error_type. A variant
# has one pair per name it is reached by (its id, `auto`, its family): docs/deployment.md.
SERIES_PER_NAME = sum(len(b) + 3 for b in (buckets.GENAI_REQUEST_SECONDS, buckets.GENAI_TTFT_SECONDS,
                                           buckets.GENAI_TPOT_SECONDS, buckets.GENAI_TOKENS, buckets.GENAI_TOKENS))
SERIES_PER_ERROR = len(buckets.GENAI_REQUEST_SECONDS) + 3


def label_values(requested: str, model: str) -> tuple[str, str, str, str]:
    return OPERATION, PROVIDER, requested, model


class GenAiChildren:
    """One (request model, response model) pair's children, looked up once. `child(metric, *extra)` makes a child
    that ends with its model (gptzoo.server.model_metrics)."""

    def __init__(self, base: tuple[str, ...], child):
        self._base, self._child = base, child
        self.duration = child(DURATION, *base, OK)
        self.ttft, self.tpot = child(TTFT, *base), child(TPOT, *base)
        self.input, self.output = child(TOKENS, *base, INPUT), child(TOKENS, *base, OUTPUT)
        self._errors: dict[str, object] = {}

    def succeeded(self, duration: float, ttft: float | None, tpot: float | None, prompt: int, generated: int) -> None:
        self.duration.observe(duration)
        if ttft is not None:
            self.ttft.observe(ttft)
        if tpot is not None:
            self.tpot.observe(tpot)
        self.input.observe(prompt)
        self.output.observe(generated)

    def failed(self, error: str, duration: float) -> None:
        if (h := self._errors.get(error)) is None:
            h = self._errors[error] = self._child(DURATION, *self._base, error)
        h.observe(duration)
