"""ModelRouter: one ModelWorker per variant in the store, and the names a request may use for them.

A variant is named by its full id (shakespeare-char-4l) or by its depth alias (4l; 4l-int8 for the quantized
copy). An alias names the one ready variant that has it; while none (or several) of its variants are ready, the one
variant that claims it, else it is ambiguous. A folder whose card is broken gets a worker that is failed from the
start, so it is listed with its reason and the rest of the zoo serves."""

from __future__ import annotations

import logging
import re
from collections import defaultdict

from gptzoo.server import metrics
from gptzoo.server.errors import ApiError
from gptzoo.server.settings import Settings
from gptzoo.server.worker import LOADING, ModelWorker
from gptzoo.zoo.store import Store, Variant, family_id

log = logging.getLogger("gptzoo.server")


def depth_alias(v: Variant) -> str:
    """`shakespeare-char-4l` -> `4l`, `shakespeare-char-4l-int8` -> `4l-int8`."""
    m = re.search(rf"(?:^|-)({v.n_layer}l(?:-.*)?)$", v.id)
    return m.group(1) if m else f"{v.n_layer}l"


class ModelRouter:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.store = Store(settings.store)
        good, broken = self.store.scan()
        self.workers: dict[str, ModelWorker] = {v.id: ModelWorker(v, settings) for v in good}
        for b in broken:
            log.warning("%s: not served: %s", b.id, b.reason)
            self.workers[b.id] = ModelWorker(b, settings)
        self.claims: dict[str, list[str]] = defaultdict(list)  # depth alias -> the ids that have it
        for v in good:
            if (alias := depth_alias(v)) not in self.workers:
                self.claims[alias].append(v.id)
        self.draining = False

    def start(self) -> None:
        for w in self.workers.values():
            w.start()

    def wait_loaded(self) -> None:
        for w in self.workers.values():
            w.loaded.wait()

    def drain(self) -> None:
        """Shutdown has begun: refuse new requests, let queued and running ones finish within the shutdown timeout.
        The workers' deadline comes a little before the server's, so what is cut off still gets its error out."""
        t = self.settings.shutdown_timeout
        grace = max(t - 1.0, t / 2)
        self.draining = True
        log.info("draining: refusing new requests; those in flight get %.1f s to finish", grace)
        for w in self.workers.values():
            w.drain(grace)

    def close(self) -> None:
        for w in self.workers.values():
            w.close()

    @property
    def any_ready(self) -> bool:
        return any(w.ready for w in self.workers.values())

    def ready_workers(self) -> list[ModelWorker]:
        return [w for w in self.workers.values() if w.ready]

    def alias_target(self, alias: str) -> str | None:
        """The id an alias names now (ready variants first), or None when it names none or several."""
        ids = self.claims.get(alias, [])
        ready = [i for i in ids if self.workers[i].ready]
        if len(ready) == 1:
            return ready[0]
        return ids[0] if len(ids) == 1 else None

    def aliases_of(self, model_id: str) -> list[str]:
        return [a for a in self.claims if self.alias_target(a) == model_id]

    def get(self, name: str) -> ModelWorker:
        """The worker a request names; 404 listing what exists, 400 for an ambiguous alias."""
        if name in self.workers:
            return self.workers[name]
        if target := self.alias_target(name):
            return self.workers[target]
        if name in self.claims:
            raise ApiError(400, f"{name!r} matches several models ({', '.join(self.claims[name])}); name one "
                                "by its full id", param="model", code="ambiguous_model")
        listed = ", ".join(f"{i} ({', '.join(self.aliases_of(i))})" if self.aliases_of(i) else i for i in self.workers)
        shown = name if len(name) <= 80 else f"{name[:80]}…"
        fams = sorted({family_id(w.card.dataset_name) for w in self.workers.values() if w.card and w.card.dataset_name})
        routed = f"; or `auto`, or a family: {', '.join(fams)}" if fams else ""
        raise ApiError(404, f"model {shown!r} does not exist; available: {listed or 'none (the store is empty)'}"
                            f"{routed}", param="model", code="model_not_found")

    def ready(self, name: str) -> ModelWorker:
        """The named worker, or 503 saying why it does not serve."""
        w = self.get(name)
        if not w.ready:
            metrics.REFUSED.labels(**w.labels, reason="model_not_ready").inc()
            # Retry-After only while loading: a model that failed to load stays down until an operator acts
            retry = {"Retry-After": "5"} if w.state == LOADING else None
            why = "is still loading" if w.state == LOADING else f"is not ready: {w.reason}"
            raise ApiError(503, f"model {w.id} {why}", param="model", code="model_not_ready", headers=retry)
        return w
