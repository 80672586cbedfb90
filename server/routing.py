"""Depth routing (the rules; gptzoo.server.registry's `route` applies them): a request that names `auto` (one family:
the one it named before) or a family (the dataset's name, e.g. `shakespeare-char`) gets the variant with the lowest
stored validation loss whose predicted latency fits its budget, or the fastest one when none fits; and a variant
whose queue is full hands a request that allows it to the next shallower variant of its family.

Predictions come from each worker's live `TokenTime` (gptzoo.server.latency) at the occupancy the request would
join, so a budget routes by the load as it is now. The decision is recorded with its reason, returned to the client
in headers, and counted in gptzoo_route_decisions."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from gptzoo.server import metrics
from gptzoo.server.latency import Budget
from gptzoo.server.refusals import RETRY_LOADING, Refused
from gptzoo.server.worker import ModelWorker, created_at
from gptzoo.zoo.store import card_family, family_id

AUTO = "auto"
# why a request went where it went (the x-gptzoo-route header and the metric's `reason` label)
NAMED, BEST_FIT, FASTEST_NO_FIT, FALLBACK = metrics.ROUTE_REASONS
# A variant fits when its prediction is within this share of the budget: predictions lag the load by a few steps,
# and a request sent to a variant slows the rows already there.
HEADROOM = 0.85


@dataclass(frozen=True)
class Prediction:
    worker: ModelWorker
    tpot: float  # seconds per output token; nan when the worker has no figures yet
    ttft: float

    def fits(self, budget: Budget) -> bool:
        # a variant without figures is given the benefit of the doubt: serving it is how it gets them
        return ((budget.tpot is None or not self.tpot > budget.tpot)
                and (budget.ttft is None or not self.ttft > budget.ttft))


def family(w: ModelWorker) -> str | None:
    """The family id: the dataset's name as variant ids spell it (shakespeare-char), with the block family's for
    any but gpt2 (shakespeare-char-oss): zoo.store.card_family."""
    return card_family(w.card)


def families(workers: list[ModelWorker]) -> dict[str, list[ModelWorker]]:
    out: dict[str, list[ModelWorker]] = {}
    for w in workers:
        if (f := family(w)) is not None:
            out.setdefault(f, []).append(w)
    return out


def quality_order(workers: list[ModelWorker]) -> list[ModelWorker]:
    """Lowest stored validation loss first; variants without one last, deeper before shallower."""
    def key(w: ModelWorker):
        loss = w.card.val_loss if w.card and w.card.val_loss is not None else math.inf
        return loss, -(w.card.n_layer if w.card else 0), w.id
    return sorted(workers, key=key)


def predict(w: ModelWorker, prompt_tokens: int, now: float, slowdown: float = 1.0) -> Prediction:
    """What a request joining `w` now would get: its batch with one more row (a full batch stays full).

    An idle worker's figures are from a quieter time, or its load-time calibration (alone on the machine); woken, it
    will run as slowly as the busy ones do now compared with their own calibration: `slowdown`."""
    rows, waiting = w.occupancy
    slots = w.settings.max_batch_size
    joined = min(rows + waiting + 1, slots)
    tpot = w.latency.tpot(joined, now)
    if rows + waiting == 0:
        tpot = max(tpot, w.latency.prior_tpot(1) * slowdown)
    return Prediction(w, tpot, w.latency.ttft(prompt_tokens, rows + waiting >= slots, tpot))


def choose(candidates: list[ModelWorker], budget: Budget, prompt_tokens: int,
           everyone: list[ModelWorker] | None = None) -> tuple[Prediction, str]:
    """The best variant whose prediction fits `budget` (within HEADROOM of it), else the fastest; variants whose
    queue is full are passed over while another can take the request. `candidates` are ready.

    Waking an idle variant also slows the busy ones (`everyone`: the workers that share the machine): with k of them
    busy, each gets k/(k+1) of the cores it had, so the idle variant fits only if their rows would still meet the
    budget (the request's own budget standing for theirs), and it is expected to run (k+1)/k times as slowly as
    the slowest of them runs now against its own calibration."""
    now = time.perf_counter()
    busy = [(w, w.latency.tpot(sum(w.occupancy), now), w.latency.slowdown(now)) for w in everyone or candidates
            if sum(w.occupancy)]
    open_ = [w for w in candidates if not w.queue_full] or candidates
    limit = Budget(tpot=budget.tpot and budget.tpot * HEADROOM, ttft=budget.ttft and budget.ttft * HEADROOM)
    preds = []
    for w in quality_order(open_):
        others = [t for o, t, _ in busy if o is not w]
        slowdown = max((x for o, _, x in busy if o is not w), default=1.0) * (len(others) + 1) / max(len(others), 1)
        p = predict(w, prompt_tokens, now, slowdown if others else 1.0)
        preds.append(p)
        woken = not sum(w.occupancy) and others and limit.tpot is not None
        if p.fits(limit) and not (woken and any(t * (len(others) + 1) / len(others) > limit.tpot for t in others)):
            return p, BEST_FIT
    return min(preds, key=lambda p: (p.tpot if budget.tpot is not None else 0.0) + p.ttft), FASTEST_NO_FIT


def shallower(w: ModelWorker, ready: list[ModelWorker]) -> list[ModelWorker]:
    """The fallbacks of `w`: the ready variants of its family with fewer layers, deepest first."""
    f, depth = family(w), w.card.n_layer if w.card else 0
    return sorted((o for o in ready if o is not w and family(o) == f and o.card.n_layer < depth),
                  key=lambda o: (-o.card.n_layer, o.id))


def candidates(name: str, workers: list[ModelWorker], auto: str | None = None) -> list[ModelWorker] | None:
    """The variants `auto` or a family id may pick from (ready ones), or None when `name` is neither.

    `auto` names one family: `auto` (the registry's `auto_family`, which stays with the family it named while that
    one serves), else the only one, else the one with the oldest card. Refused when none of its variants is ready."""
    fams = families(workers)
    name = family_id(name)  # the dataset's own spelling (shakespeare_char) names the family too
    if name == AUTO:
        if auto not in fams:
            auto = min(fams, key=lambda f: (min(created_at(w.card) for w in fams[f]), f), default=None)
        members = fams.get(auto, [])
    elif name in fams:
        members = fams[name]
    else:
        return None
    ready = [w for w in members if w.ready]
    if not ready:
        why = "; ".join(f"{w.id}: {w.state if w.reason is None else w.reason}" for w in members) or "the store is empty"
        raise Refused("model_not_ready", f"no variant of {name!r} is ready ({why})", RETRY_LOADING, param="model")
    return ready
