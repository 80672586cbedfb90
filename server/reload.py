"""The live zoo: the server follows its store while it serves, and operators load and unload variants.

A rescan (every --reload-interval seconds, and on POST /admin/reload) compares each variant in the store with the
worker that stands for it (`ModelWorker.revision`: the sha256 the card gives the ONNX file):
- a new variant gets a worker that loads and warms up in the background;
- a re-exported variant gets a new worker beside the one that serves (`router.standby`); requests move to it once it
  is ready, and the old one, retired, finishes what it holds, then unloads. A new version that does not load (a
  broken card, a file that does not match its card) leaves the old one serving, and is tried again once the store's
  files change again. The exporter writes the file and then the card, so a scan between the two sees a new file
  under the old sha256: not a new version yet;
- a variant gone from the store leaves the table at once (new requests get 404), finishes what it holds, unloads;
- a variant that does not serve (failed, not exported) is replaced at once when its files change.

A store that cannot be read, is missing, or lists no variant at all while the server serves some (what an unmount
leaves: an empty folder) is taken as unavailable, not as "everything was removed": the scan changes nothing, the
loaded variants serve on, the warning is logged once (and once more when the store can be read again), and
POST /admin/reload answers 503 `store_unavailable`. An operator's unload holds until an operator loads the variant
again, also while the store is unavailable and across the variant leaving the store and coming back. Unloading a
variant while it loads cancels the load: the loading worker is retired and its thread ends once its load does.

Never two loads of one variant: while one of its workers loads, the variant's other changes wait for the load to end
(`_settle` runs again then), and an operator's load joins it. One scan runs at a time; callers that arrive meanwhile
share the next one. Everything here runs on the event loop, the only reader and writer of the router's tables;
reading the store happens in a thread."""

from __future__ import annotations

import asyncio
import logging

from gptzoo.server.admin_schemas import ReloadReport
from gptzoo.server.refusals import RETRY_SHUTDOWN, Refused, UnknownModel
from gptzoo.server.registry import Registry, not_selected
from gptzoo.server.worker import FAILED, LOADING, NOT_EXPORTED, UNLOADED, ModelWorker
from gptzoo.zoo.store import Broken, Variant, file_stamp, revision

log = logging.getLogger("gptzoo.server")

REAP_SECONDS = 0.05  # how often retired workers are checked for their last request


def stamp(x: ModelWorker | Variant | Broken) -> tuple:
    """A worker's or a store entry's version and file: a not-ready model is tried again when either changes."""
    if isinstance(x, ModelWorker):
        return x.revision, x.file_stamp
    return revision(x), file_stamp(x)


def short(sha: str | None) -> str:
    return f"{sha[:12]}…" if sha else "?"


class LiveZoo:
    def __init__(self, router: Registry):
        self.router = router
        router.on_loaded = self._loaded
        self.entries: dict[str, Variant | Broken] = {w.id: w.entry for w in router.workers.values()}
        self.unloaded: dict[str, str] = {}  # id -> reason: variants an operator unloaded (until loaded again)
        self.failed: dict[str, ModelWorker] = {}  # id -> a new version that did not load (the old one serves)
        self.scans = 0  # rescans run so far
        self.waiting = 0  # callers of `reload` waiting for a rescan
        self._running: asyncio.Task | None = None
        self._queued: asyncio.Task | None = None
        self._reaper: asyncio.Task | None = None
        self._follower: asyncio.Task | None = None
        self._stopped = False
        self._last_error: str | None = None  # why the last scan found the store unavailable (logged once)

    # -- rescans ----------------------------------------------------------------------------------------------
    async def reload(self) -> ReloadReport:
        """Rescan the store and apply what changed. A call while a scan runs shares the next scan with every other
        such call: it starts after all of them arrived, so each sees the store as it was when it asked."""
        self._serving()
        if self._queued is None:
            self._queued = asyncio.ensure_future(self._scan_after(self._running))
        self.waiting += 1
        try:
            return await asyncio.shield(self._queued)  # a caller that goes away does not cancel the others' scan
        finally:
            self.waiting -= 1

    async def _scan_after(self, before: asyncio.Task | None) -> ReloadReport:
        if before is not None:
            await asyncio.wait([before])
        self._running, self._queued = self._queued, None
        try:
            self.scans += 1
            found = await self._look()
            if self._last_error is not None:
                log.info("the store can be read again (it was not: %s); rescans apply its changes", self._last_error)
                self._last_error = None
            return self._apply(found)
        finally:
            self._running = None

    async def _look(self) -> dict[str, Variant | Broken]:
        """What the store holds now; 503 `store_unavailable` when it cannot tell (see the module's doc)."""
        try:
            return await asyncio.to_thread(self._read_store)
        except OSError as e:
            why = e.strerror or str(e)
        if why != self._last_error:
            log.warning("rescan of the store failed: %s; the loaded variants serve on, nothing is unloaded", why)
            self._last_error = why
        raise Refused("store_unavailable", f"{why}; serving the variants loaded before, nothing is unloaded until it "
                      "lists them again") from None

    def _read_store(self) -> dict[str, Variant | Broken]:
        store = self.router.store
        if not store.root.is_dir():  # unmounted or moved: keep serving rather than unload the whole zoo
            raise FileNotFoundError(2, "the store folder is missing")
        try:
            good, broken = store.scan()
        except OSError as e:
            raise OSError(e.errno, f"the store cannot be read: {e.strerror or e}") from None
        if not good and not broken and self.router.workers:  # an unmount's empty mount point, not a mass removal
            raise FileNotFoundError(2, "the store lists no variant (an unmounted or emptied folder?)")
        return {e.id: e for e in [*good, *broken]}

    def _apply(self, found: dict[str, Variant | Broken]) -> ReloadReport:
        if self.router.draining:
            return ReloadReport(added=[], changed=[], removed=[])
        self.entries = found
        report: dict[str, list[str]] = {"added": [], "changed": [], "removed": []}
        for vid in [*self.router.workers, *(i for i in found if i not in self.router.workers)]:
            if what := self._settle(vid):
                report[what].append(vid)
        self.router.changed()
        return ReloadReport(**report)

    async def follow(self, interval: float) -> None:
        """Rescan every `interval` seconds until shutdown; a failed scan is logged (once per new reason)."""
        while not self.router.draining:
            await asyncio.sleep(interval)
            try:
                await self.reload()
            except Refused as e:
                if e.code == "shutting_down":
                    return  # a normal stop, not a failure
                # store_unavailable: logged by the scan, once per reason
            except Exception:  # a bug must not end the following for good
                log.exception("rescan of the store failed")

    # -- one variant --------------------------------------------------------------------------------------------
    def loading(self, vid: str) -> bool:
        """A worker of `vid` is loading (the table's or a standby; a retired one's load was cancelled)."""
        r = self.router
        return any(w is not None and w.state == LOADING for w in (r.workers.get(vid), r.standby.get(vid)))

    def _settle(self, vid: str, retry: bool = False) -> str | None:
        """Bring the workers of `vid` in line with the store and the operators' wishes; returns the kind of change
        made (added, changed, removed) or None. `retry`: load again a version that failed."""
        r = self.router
        if self.loading(vid):
            return None  # its load's end settles it again
        entry, cur = self.entries.get(vid), r.workers.get(vid)
        if entry is None:
            if cur is None:
                return None
            del r.workers[vid]
            self.failed.pop(vid, None)  # (an operator's unload holds, should it come back)
            log.info("%s: removed from the store; finishing %d request(s), then unloading", vid, cur.in_flight)
            self._retire(cur)
            return "removed"
        off = self.unloaded.get(vid) or (not_selected(vid) if r.only is not None and vid not in r.only else None)
        if cur is None:
            w = r.serve(r.new_worker(entry, unloaded=off))
            if w.state == LOADING:
                log.info("%s: new in the store (sha256 %s); loading", vid, short(w.sha256))
            else:
                log.log(logging.WARNING if w.state == FAILED else logging.INFO, "%s: new in the store; %s: %s", vid,
                        w.state.replace("_", " "), w.reason)
            w.start()
            return "added"
        if off:
            if cur.state == UNLOADED and stamp(cur) == stamp(entry):
                cur.reason = off
                return None
            r.serve(r.new_worker(entry, unloaded=off))  # the placeholder lists the store's version
            if cur.state != UNLOADED:
                log.info("%s: unloading; finishing %d request(s) first", vid, cur.in_flight)
            self._retire(cur)
            return None if cur.state == UNLOADED else "changed"
        if cur.ready:
            if revision(entry) == cur.revision:
                self.failed.pop(vid, None)
                if isinstance(entry, Variant) and entry.card != cur.card:
                    cur.variant = cur.entry = entry  # a card rewritten without a new file (`gptzoo eval`): listed
                    cur.card = entry.card
                return None
            if (failed := self.failed.get(vid)) and stamp(failed) == stamp(entry) and not retry:
                return None
            new = r.new_worker(entry)
            if new.state != LOADING:
                self.failed[vid] = new
                log.warning("%s: the store's new version cannot serve (%s); the loaded one serves on", vid,
                            new.reason)
                return "changed"
            log.info("%s: new file in the store (sha256 %s, serving %s); loading it beside the serving one", vid,
                     short(new.sha256), short(cur.sha256))
            r.stand_by(new)
            new.start()
            return "changed"
        if stamp(cur) == stamp(entry) and not (retry or cur.state == UNLOADED):
            return None
        new = r.serve(r.new_worker(entry))
        if new.state == LOADING:
            log.info("%s: loading (sha256 %s)", vid, short(new.sha256))
        self._retire(cur)
        new.start()
        return "changed"

    def _loaded(self, w: ModelWorker) -> None:
        """A worker's load ended (called on the loop): a ready new version takes over from the old one."""
        r = self.router
        if self._stopped:
            return  # the lifespan is closing every worker
        if r.standby.get(w.id) is w:
            r.take_standby(w.id)
            old = r.workers[w.id]
            if w.ready and not r.draining:
                r.serve(w)
                self.failed.pop(w.id, None)
                log.info("%s: now serving sha256 %s; the old version (sha256 %s) finishes %d request(s), then "
                         "unloads", w.id, short(w.sha256), short(old.sha256), old.in_flight)
                self._retire(old)
            elif w.ready:
                self._retire(w)  # shutting down
            else:
                self.failed[w.id] = w
                log.warning("%s: the new version did not load; the old one (sha256 %s) serves on", w.id,
                            short(old.sha256))
        r.changed()
        if not r.draining:
            self._settle(w.id)  # what changed in the store meanwhile
            r.changed()

    def _retire(self, w: ModelWorker) -> None:
        """Out of the table already: it finishes what it holds, then stops (see `_reap`)."""
        self.router.retire(w)
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        """Stop each retired worker once it holds no request (checked on the loop, where requests are submitted, so
        none slips in between), and let it go once its thread has ended."""
        r = self.router
        while r.retiring:
            for w in list(r.retiring):
                if w.in_flight == 0:
                    w.stop()
                if not w.alive:
                    w.m.release()
                    r.reaped(w)
                    if w.loaded_at:
                        log.info("%s: version sha256 %s unloaded", w.id, short(w.sha256))
            await asyncio.sleep(REAP_SECONDS)

    # -- operators ----------------------------------------------------------------------------------------------
    def _serving(self) -> None:
        if self.router.draining:
            raise Refused("shutting_down", "the server is shutting down", RETRY_SHUTDOWN)

    async def load(self, name: str) -> ModelWorker:
        """Serve a variant (an id or alias; also an id the last scan did not see yet) with the store's version of
        it: starts its load unless it serves that version or is loading already. Also retries a failed one."""
        self._serving()
        r = self.router
        vid = name if name in r.workers else (r.alias_target(name) or name)
        entry = (await self._look()).get(vid)  # an unavailable store: 503, nothing taken as removed
        if entry is None and vid not in r.workers:
            r.get(name)  # 404, listing what exists
        self._serving()
        if entry is None:
            self.entries.pop(vid, None)
        else:
            self.entries[vid] = entry
        self.unloaded.pop(vid, None)
        if r.only is not None and entry is not None:
            r.only.add(vid)
        self._settle(vid, retry=True)
        r.changed()
        if vid not in r.workers:
            raise UnknownModel(f"model {vid!r} is no longer in the store")
        return r.workers[vid]

    def unload(self, name: str) -> ModelWorker:
        """Stop serving a variant: it leaves routing at once, finishes what it holds, then unloads; it stays listed
        as unloaded, also across rescans, until loaded again. A load under way is cancelled (see the module's doc)."""
        self._serving()
        r = self.router
        w = r.get(name)
        off = self.unloaded[w.id] = f"unloaded by an operator (POST /admin/models/{w.id}/load serves it again)"
        self.failed.pop(w.id, None)
        if (new := r.take_standby(w.id)) is not None:  # a new version loading beside the serving one
            log.info("%s: unloaded while its new version loads; that load is dropped once it ends", w.id)
            self._retire(new)
        if w.state == LOADING:
            log.info("%s: unloaded while loading; the load is dropped once it ends", w.id)
            r.serve(r.new_worker(w.entry, unloaded=off))
            self._retire(w)
        self._settle(w.id)
        self.router.changed()
        return self.router.workers[w.id]

    def cannot_serve(self, vid: str) -> str | None:
        """Why the store's version of `vid` cannot serve, when an operator asked for it and it cannot: a broken
        card, no export, or a new version that failed while the old one serves on."""
        w = self.failed.get(vid) or self.router.workers.get(vid)
        if w is not None and w.state in (FAILED, NOT_EXPORTED):
            return w.reason
        return None

    def start(self, interval: float) -> None:
        """On the event loop: rescan every `interval` seconds (0: never by itself)."""
        if interval > 0:
            self._follower = asyncio.get_running_loop().create_task(self.follow(interval))

    def stop(self) -> None:
        """Shutdown: no more scans, swaps or reaping (the router closes every worker)."""
        self._stopped = True
        for task in (self._follower, self._queued, self._running, self._reaper):
            if task is not None:
                task.cancel()
