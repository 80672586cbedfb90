"""The one place a completion request's outcome is counted (gptzoo_completion_requests_total{outcome}).

Every request ends on the HTTP side, whatever ended it: an answer (its finish reason), an error (its code), or the
client leaving (cancelled, or client_closed before its body was in). The handler, the stream and the exception
handlers all call `record`; the first call for a request wins, so nothing is counted twice and nothing is missed."""

from __future__ import annotations

from gptzoo.server import model_metrics

NO_MODEL = {"model": "", "layers": ""}  # before the request named a model we know (never a client's string)
COMPLETIONS = "/v1/completions"


def record(scope: dict, outcome: str) -> None:
    """Count this request's outcome, once; only completion requests are counted."""
    if scope.get("path_template") != COMPLETIONS:
        return
    state = scope.setdefault("state", {})
    if state.get("gptzoo_outcome") is not None:
        return
    state["gptzoo_outcome"] = outcome
    model_metrics.count_outcome(state.get("gptzoo_model_labels") or NO_MODEL, outcome)
