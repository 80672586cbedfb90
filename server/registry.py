"""Registry: the workers of the zoo, the names a request may use for them, and `route`: which worker serves a request.

A variant is named by its full id (shakespeare-char-4l) or by its depth alias (4l; 4l-int8 for the quantized
copy). Names clients already use keep naming what they named: an alias stays with the variant it names while that
one serves or loads, and so does `auto` with its family (gptzoo.server.routing), so a variant added to the zoo never
takes a name over or makes it ambiguous. Only when the holder stops serving (unloaded, failed, removed) does a ready
claimant take the name: the one with the oldest card (`created`), then the first id; that rule also decides at
start-up. A folder whose card is broken gets a worker that is failed from the start, so it is listed with its reason
and the rest of the zoo serves.

The registry holds every worker: `workers` (one per variant listed, the one requests go to), `standby` (a re-exported
variant's new version, loading beside the one that serves) and `retiring` (old versions finishing their requests).
What moves workers between them is the live zoo (gptzoo.server.reload), through the methods under "the tables".
Every change happens on the event loop, the only reader of these tables, so a request sees either the old or the new
table; a request that already holds a worker keeps it, and a retired worker serves its requests to the end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gptzoo.server import metrics, routing
from gptzoo.server.aliases import depth_alias, resolve_names
from gptzoo.server.drafts import DraftPlan
from gptzoo.server.job import Job
from gptzoo.server.latency import Budget
from gptzoo.server.refusals import RETRY_LOADING, Refused, UnknownModel
from gptzoo.server.settings import Settings
from gptzoo.server.worker import LOADING, ModelWorker, created_at
from gptzoo.zoo.store import Broken, Store, Variant, family_id

log = logging.getLogger("gptzoo.server")


def not_selected(model_id: str) -> str:
    return f"not in --models (POST /admin/models/{model_id}/load serves it)"


@dataclass(frozen=True)
class Ask:
    """What routing reads of a request."""

    model: str  # a variant id, a depth alias, `auto` or a family id
    budget: Budget
    fallback: bool  # a full queue may hand it to a shallower variant of the same family


@dataclass(frozen=True)
class Route:
    """Where a request went: its worker, the job queued there, and why (gptzoo.server.routing's reasons)."""

    worker: ModelWorker
    job: Job
    reason: str
    predicted: routing.Prediction


class Registry:
    def __init__(self, settings: Settings):
        """The store as it is now: one worker per variant (not started). With `settings.models`, the variants not
        named are listed as unloaded."""
        self.settings = settings
        self.store = Store(settings.store)
        good, broken = self.store.scan()
        self.only = set(resolve_names(good, settings.models)) if settings.models else None
        self.drafts = DraftPlan.from_settings(self.store, settings.drafts, settings.draft_tokens, good)
        self.workers: dict[str, ModelWorker] = {}
        for entry in [*good, *broken]:
            if isinstance(entry, Broken):
                log.warning("%s: not served: %s", entry.id, entry.reason)
            self.workers[entry.id] = self.new_worker(entry)
        self.standby: dict[str, ModelWorker] = {}
        self.retiring: list[ModelWorker] = []
        self.claims: dict[str, list[str]] = {}  # depth alias -> the ids that have it
        self.holders: dict[str, str] = {}  # depth alias -> the id it named at the last change
        self._auto: str | None = None  # the family `auto` named at the last change
        self.draining = False
        self.on_loaded: Callable[[ModelWorker], None] | None = None  # on the event loop, once a worker's load ended
        self._loop: asyncio.AbstractEventLoop | None = None
        self._info: dict[str, tuple[str, ...]] = {}  # model id -> its published gptzoo_model_info labels
        self._published: dict[str, tuple[str, ...]] = {}  # model id -> its published model/layers labels
        self.changed()

    def new_worker(self, entry: Variant | Broken, unloaded: str | None = None) -> ModelWorker:
        if unloaded is None and self.only is not None and entry.id not in self.only:
            unloaded = not_selected(entry.id)
        return ModelWorker(entry, self.settings, unloaded=unloaded, on_loaded=self._loaded, drafts=self.drafts)

    def _loaded(self, w: ModelWorker) -> None:
        """From the worker's thread: hand the news to the event loop (before the worker says it is loaded, so
        whoever waits for that finds the router updated)."""
        if self._loop is not None and self.on_loaded is not None:
            with contextlib.suppress(RuntimeError):  # a closed loop: the server is gone
                self._loop.call_soon_threadsafe(self.on_loaded, w)

    def start(self) -> None:
        """On the event loop: start every worker, which reports back to this loop."""
        self._loop = asyncio.get_running_loop()
        for w in self.workers.values():
            w.start()

    def wait_loaded(self) -> None:
        for w in list(self.workers.values()):
            w.loaded.wait()

    def every_worker(self) -> list[ModelWorker]:
        return [*self.workers.values(), *self.standby.values(), *self.retiring]

    def drain(self) -> None:
        """Shutdown has begun: refuse new requests, let queued and running ones finish within the shutdown timeout.
        The workers' deadline comes a little before the server's, so what is cut off still gets its error out."""
        t = self.settings.shutdown_timeout
        grace = max(t - 1.0, t / 2)
        self.draining = True
        log.info("draining: refusing new requests; those in flight get %.1f s to finish", grace)
        for w in self.every_worker():
            w.drain(grace)

    def close(self) -> None:
        for w in self.every_worker():
            w.close()

    # -- the tables (changed only here, on the event loop) ----------------------------------------------------
    def serve(self, w: ModelWorker) -> ModelWorker:
        """`w` is the worker requests for its variant go to (call `changed` once the tables are as they should be)."""
        self.workers[w.id] = w
        return w

    def stand_by(self, w: ModelWorker) -> None:
        """A new version of a served variant, loading beside the one that serves."""
        self.standby[w.id] = w

    def take_standby(self, model_id: str) -> ModelWorker | None:
        return self.standby.pop(model_id, None)

    def retire(self, w: ModelWorker) -> None:
        """Out of the tables: it finishes what it holds (the live zoo stops it once idle, then calls `reaped`)."""
        w.retired = True
        self.retiring.append(w)

    def reaped(self, w: ModelWorker) -> None:
        self.retiring.remove(w)
        self.forget_worker_gauges(w)

    def changed(self) -> None:
        """After any change to `workers`: the aliases follow, and so do the gauges that describe each model."""
        claims = defaultdict(list)
        for i, w in self.workers.items():
            if w.variant and (alias := depth_alias(w.variant)) not in self.workers:
                claims[alias].append(i)
        self.claims = dict(claims)
        self.holders = {a: t for a in self.claims if (t := self.alias_target(a))}
        self._auto = self.auto_family
        for i in [i for i in self._published if i not in self.workers]:
            self._forget(i)
        for w in self.workers.values():
            self._publish(w)

    def _publish(self, w: ModelWorker) -> None:
        labels = tuple(w.labels.values())
        if self._published.get(w.id, labels) != labels:  # the variant's depth changed with its new file
            self._forget(w.id)
        self._published[w.id] = labels
        if w.card and w.card.val_loss is not None:
            metrics.VALIDATION_LOSS.labels(*labels).set(w.card.val_loss)
        metrics.READY.labels(*labels).set(1 if w.ready else 0)
        if w.state == LOADING:
            return  # the info of what serves (or failed) until then stays
        info = tuple(w.info_labels().values())
        if (old := self._info.get(w.id)) not in (None, info):
            metrics.drop(metrics.INFO, old)  # a stale sha256 (or provider) must not be left behind
        metrics.INFO.labels(*info).set(1)
        self._info[w.id] = info

    def _forget(self, model_id: str) -> None:
        """The model left the zoo: end the series that describe it, so no dashboard shows a ghost."""
        labels = self._published.pop(model_id)
        for gauge in metrics.MODEL_GAUGES:
            metrics.drop(gauge, labels)
        if info := self._info.pop(model_id, None):
            metrics.drop(metrics.INFO, info)

    def forget_worker_gauges(self, w: ModelWorker) -> None:
        """A retired worker ended: when no other worker has its labels, its per-worker gauges end too."""
        if not any(o.labels == w.labels for o in self.every_worker()):
            for gauge in metrics.WORKER_GAUGES:
                metrics.drop(gauge, tuple(w.labels.values()))

    # -- names ------------------------------------------------------------------------------------------------
    @property
    def any_ready(self) -> bool:
        return any(w.ready for w in self.workers.values())

    def ready_workers(self, family: str | None = None) -> list[ModelWorker]:
        """The workers that serve now, of one family (shakespeare-char: its cards' dataset name as ids spell it) or
        all: what routing may choose."""
        return [w for w in self.workers.values() if w.ready and (family is None or routing.family(w) == family)]

    def alias_target(self, alias: str) -> str | None:
        """The id an alias names now (see the module's doc), or None when no variant has it."""
        ids = self.claims.get(alias, [])
        held = self.holders.get(alias)
        return _keep_or_pick(held if held in ids else None, ids, lambda i: [self.workers[i]])

    @property
    def auto_family(self) -> str | None:
        """The family `auto` names now (see the module's doc); None without any."""
        fams = routing.families(list(self.workers.values()))
        return _keep_or_pick(self._auto if self._auto in fams else None, list(fams), fams.__getitem__)

    def aliases_of(self, model_id: str) -> list[str]:
        return [a for a in self.claims if self.alias_target(a) == model_id]

    def get(self, name: str) -> ModelWorker:
        """The worker a request names; UnknownModel listing what exists."""
        if name in self.workers:
            return self.workers[name]
        if target := self.alias_target(name):
            return self.workers[target]
        listed = ", ".join(f"{i} ({', '.join(self.aliases_of(i))})" if self.aliases_of(i) else i for i in self.workers)
        shown = name if len(name) <= 80 else f"{name[:80]}…"
        fams = sorted(routing.families(list(self.workers.values())))
        routed = f"; or `auto`, or a family: {', '.join(fams)}" if fams else ""
        raise UnknownModel(f"model {shown!r} does not exist; available: {listed or 'none (the store is empty)'}"
                           f"{routed}")

    def ready(self, name: str) -> ModelWorker:
        """The named worker, or Refused saying why it does not serve."""
        w = self.get(name)
        if not w.ready:
            metrics.REFUSED.labels(**w.labels, reason="model_not_ready").inc()
            # Retry-After only while loading: a model that failed to load stays down until an operator acts
            retry = RETRY_LOADING if w.state == LOADING else None
            why = "is still loading" if w.state == LOADING else f"is not ready: {w.reason}"
            raise Refused("model_not_ready", f"model {w.id} {why}", retry, param="model")
        return w

    # -- routing ----------------------------------------------------------------------------------------------
    async def route(self, ask: Ask, tokens: Callable[[ModelWorker], Awaitable[list[int]]],
                    job: Callable[[ModelWorker, list[int]], Job], note: Callable[[ModelWorker], None]) -> Route:
        """The worker that serves `ask`, with its job queued there. A named variant (id or alias) serves it, or
        else `auto` / a family picks by the budget and the prompt's length (gptzoo.server.routing); a full queue
        hands it to a shallower variant of the family when `ask.fallback`. `tokens` reads the prompt with a worker's
        tokenizer (the caller's checks), `job` makes the job, `note` hears each worker tried (the request's metric
        labels). Raises UnknownModel or Refused."""
        pool = routing.candidates(ask.model, list(self.workers.values()), self.auto_family)
        if pool is None:
            note(self.get(ask.model))
            worker = self.ready(ask.model)
        else:
            worker = pool[0]
        ids = await tokens(worker)
        if pool is None:
            reason, predicted = routing.NAMED, routing.predict(worker, len(ids), time.perf_counter())
        else:
            predicted, reason = routing.choose(pool, ask.budget, len(ids), self.ready_workers())
            worker = predicted.worker
        tried = [worker]
        # the name it routed by, for the GenAI series: bounded (a variant's id, auto, a family), never the client's
        # spelling of an alias
        requested = worker.id if pool is None else family_id(ask.model)
        while True:
            note(worker)
            queued = job(worker, ids)
            queued.requested = requested
            try:
                worker.submit(queued)
                return Route(worker, queued, reason, predicted)
            except Refused as e:
                nxt = next((w for w in routing.shallower(tried[0], self.ready_workers()) if w not in tried),
                           None) if ask.fallback and e.code == "overloaded" else None
                if nxt is None:
                    worker.m.failed(queued, e.code, time.perf_counter())  # the request's one refusal
                    raise
                if nxt.card.tokenizer != worker.card.tokenizer:  # a family shares its dataset, not always its tokenizer
                    ids = await tokens(nxt)
                worker, reason = nxt, routing.FALLBACK
                tried.append(worker)
                predicted = routing.predict(worker, len(ids), time.perf_counter())


def _keep_or_pick(held: str | None, names: list[str], members: Callable[[str], list[ModelWorker]]) -> str | None:
    """The name's target among `names` (ids, or families with their `members`): `held` while one of its workers
    serves or loads (or none of the others serves), else the ready one with the oldest card, then the first by
    name."""
    def ready(n: str) -> bool:
        return any(w.ready for w in members(n))

    if held is not None and (any(w.ready or w.state == LOADING for w in members(held))
                             or not any(ready(n) for n in names)):
        return held
    pool = [n for n in names if ready(n)] or names
    return min(pool, key=lambda n: (min(created_at(w.card) for w in members(n)), n), default=None)
