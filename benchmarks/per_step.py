"""Per-step costs of the engine and of the server's decode thread, for two source trees side by side (A/B).

    python benchmarks/per_step.py --store <store> --before <folder holding a gptzoo/ tree> --rounds 5

Each round runs one child process per tree (the order alternates between rounds, so drift on a shared machine hits
both), and the table gives medians over the rounds. A child measures, on each variant named by --models:

- the engine (`Batch`, in-process, one thread): decode tokens/s at batch 1, 8 and 32, greedy and sampled
  (temperature 1, seeded: the server's default), prompts of 8 to block_size/2 tokens, generating past the window
  (`half` policy re-prefills included); by wall time and by the thread's CPU time (onnxruntime with one thread
  runs in the calling thread), the latter insensitive to other processes taking the core;
- the server's worker at 32 streaming rows (the real ModelWorker thread, and `CompletionService.stream` turning its
  events into SSE frames on an asyncio loop, without sockets): CPU time per decode step of the worker thread and of
  the loop thread (thread CPU clocks, so time spent waiting for the GIL or for a core is not counted), the part of
  the former inside onnxruntime (`Batch._run`: decode and re-prefill calls), wall time per step, and cross-thread
  hand-offs (`call_soon_threadsafe`) per step; and the CPU cost of one SSE text frame (an event in, the frame's
  bytes out of the route's response class).

The "before" tree is importable as `gptzoo` from a folder put first on PYTHONPATH (e.g. `git archive HEAD` unpacked,
with a `gptzoo/` folder of links to its zoo/, server/, ... folders); without --before only the working tree runs.

Separate processes differ by a few percent even on one tree (each has its own session and memory layout), which is
the size of the engine's single-stream effects. For those, a finer A/B in one process:

    python benchmarks/per_step.py --store <store> --interleave <before tree>/zoo/generate.py

loads the other `zoo/generate.py` beside the working tree's (it must import only modules the two trees share), gives
both the same onnxruntime session, and alternates 100-step slices of the two Batches; it prints µs per step (thread
CPU), medians over the slices.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ENGINE_BATCHES = (1, 8, 32)
WORKER_ROWS = 32


def child(store: Path, models: list[str], tokens: int, repeats: int) -> dict:
    import numpy as np

    from gptzoo.server.settings import Settings
    from gptzoo.zoo.generate import Batch
    from gptzoo.zoo.runtime import OnnxModel
    from gptzoo.zoo.sampling import SamplingParams
    from gptzoo.zoo.store import Store
    from gptzoo.zoo.tokenizers import from_spec

    steps, session = [0], [0.0]  # decode steps, and CPU seconds inside session calls (in whichever thread)
    plain_step, plain_run = Batch.step, Batch._run

    def counted_step(self):
        steps[0] += 1
        return plain_step(self)

    def timed_run(self, *args):
        c0 = time.thread_time()
        try:
            return plain_run(self, *args)
        finally:
            session[0] += time.thread_time() - c0

    Batch.step, Batch._run = counted_step, timed_run
    out: dict = {}
    for vid in models:
        v = Store(store).load(vid)
        model, tok = OnnxModel(v.path("model.onnx"), threads=1), from_spec(v.card.tokenizer)
        block, vocab = model.shape.block_size, tok.vocab_size

        def prompts(n: int, seed: int, vocab: int = vocab, block: int = block) -> list[list[int]]:
            rs = np.random.default_rng(seed)
            return [rs.integers(0, vocab, int(rs.integers(8, block // 2 + 1))).tolist() for _ in range(n)]

        for mode, temperature in (("greedy", 0.0), ("sampled", 1.0)):
            for n in ENGINE_BATCHES:
                wall, cpu = [], []
                for _ in range(repeats):
                    b = new_batch(Batch, model, tok, n)
                    rows = [b.new_row(p, SamplingParams(max_tokens=tokens + 2, temperature=temperature, seed=i))
                            for i, p in enumerate(prompts(n, n))]
                    b.add(rows)
                    b.step()  # the prompts (a tree with slots feeds them in its first step)
                    t0, c0 = time.perf_counter(), time.thread_time()
                    for _ in range(tokens):
                        b.step()
                    wall.append(n * tokens / (time.perf_counter() - t0))
                    cpu.append(n * tokens / (time.thread_time() - c0))
                out[f"{vid} engine {mode} b{n} tok/s (wall)"] = statistics.median(wall)
                out[f"{vid} engine {mode} b{n} tok/s (CPU)"] = statistics.median(cpu)
        out.update({f"{vid} worker {k}": x for k, x in worker_run(v, Settings, prompts(WORKER_ROWS, 0), tokens,
                                                                  steps, session).items()})
    return out


def worker_run(variant, Settings, prompts: list[list[int]], tokens: int, steps: list[int], session: list[float]
               ) -> dict:
    from types import SimpleNamespace

    from gptzoo.server.events import TextDelta
    from gptzoo.server.routes import completions as route
    from gptzoo.server.serving import CompletionService, Prepared
    from gptzoo.server.worker import Job, ModelWorker
    from gptzoo.zoo.sampling import SamplingParams

    w = ModelWorker(variant, Settings.build(threads=1, max_batch_size=WORKER_ROWS, max_tokens=100_000))
    w.start()
    assert w.loaded.wait(60) and w.ready, w.reason
    service = CompletionService(router=None, settings=None)
    # the response class the route wraps the stream in: it may re-encode every frame (ServerSentEvent)
    response = route.ServerSentEvent if "ServerSentEvent" in vars(route) else route.Stream

    async def client(job: Job) -> int:
        p = Prepared("cmpl-0", 0, SimpleNamespace(id=w.id), job, False, {"state": {}})
        sent = 0
        # Job.events() since issue 24's server split; an asyncio.Queue before (this script also measures older trees)
        first = await (anext(job.events()) if callable(job.events) else job.events.get())
        async for frame in response(service.stream(p, first)).iterator:
            sent += len(frame if isinstance(frame, bytes) else frame.encode())
        return sent

    async def go() -> dict:
        loop = asyncio.get_running_loop()
        hand_offs = [0]
        plain = loop.call_soon_threadsafe

        def counted(*args, **kwargs):
            hand_offs[0] += 1
            return plain(*args, **kwargs)

        loop.call_soon_threadsafe = counted
        jobs = [Job(p, SamplingParams(max_tokens=tokens, temperature=1.0, seed=i), stream=True)
                for i, p in enumerate(prompts)]
        worker_clock = time.pthread_getcpuclockid(w._thread.ident)
        s0, r0 = steps[0], session[0]
        w0, l0, t0 = time.clock_gettime(worker_clock), time.thread_time(), time.perf_counter()
        for job in jobs:
            w.submit(job)
        await asyncio.gather(*map(client, jobs))
        n = steps[0] - s0
        return {"decode-thread CPU ms/step": (time.clock_gettime(worker_clock) - w0) * 1e3 / n,
                "of which session calls ms/step": (session[0] - r0) * 1e3 / n,
                "loop-thread CPU ms/step": (time.thread_time() - l0) * 1e3 / n,
                "wall ms/step": (time.perf_counter() - t0) * 1e3 / n,
                "hand-offs/step": hand_offs[0] / n,
                "tok/s": len(jobs) * tokens / (time.perf_counter() - t0)}

    async def frames(n: int = 20_000) -> float:
        """µs per text frame: one delta in, one SSE frame out, through `stream` and the route's response class."""
        job = Job([1, 2, 3], SamplingParams(), stream=True)
        p = Prepared("cmpl-0", 0, SimpleNamespace(id=w.id), job, False, {"state": {}})
        it = aiter(response(service.stream(p, TextDelta("x"))).iterator)
        await anext(it)
        t0 = time.thread_time()
        put = job.put if hasattr(job, "put") else job.events.put_nowait
        for _ in range(n):
            put(TextDelta("y"))
            await anext(it)
        return (time.thread_time() - t0) * 1e6 / n

    try:
        return {**asyncio.run(go()), "SSE text frame µs (CPU)": asyncio.run(frames())}
    finally:
        w.close()


def interleaved(store: Path, models: list[str], other: Path, slices: int = 40, steps: int = 100) -> None:
    import importlib.util

    import numpy as np

    from gptzoo.zoo import generate as ours
    from gptzoo.zoo.runtime import OnnxModel
    from gptzoo.zoo.sampling import SamplingParams
    from gptzoo.zoo.store import Store
    from gptzoo.zoo.tokenizers import from_spec

    spec = importlib.util.spec_from_file_location("generate_before", other)
    theirs = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = theirs  # dataclasses look their module up
    spec.loader.exec_module(theirs)
    print("| model | rows | sampling | before µs/step | after µs/step | after ÷ before |\n|---|---|---|---|---|---|")
    for vid in models:
        v = Store(store).load(vid)
        model, tok = OnnxModel(v.path("model.onnx"), threads=1), from_spec(v.card.tokenizer)
        for n in ENGINE_BATCHES:
            for mode, temperature in (("greedy", 0.0), ("sampled", 1.0)):
                batches = {}
                for name, mod in (("before", theirs), ("after", ours)):
                    b = new_batch(mod.Batch, model, tok, n)
                    rs = np.random.default_rng(n)
                    b.add([b.new_row(rs.integers(0, tok.vocab_size, int(rs.integers(8, 33))).tolist(),
                                     SamplingParams(max_tokens=10**6, temperature=temperature, seed=i))
                           for i in range(n)])
                    batches[name] = b
                us: dict[str, list[float]] = {"before": [], "after": []}
                for s in range(slices):
                    for name in (("before", "after") if s % 2 == 0 else ("after", "before")):
                        c0 = time.thread_time()
                        for _ in range(steps):
                            batches[name].step()
                        us[name].append((time.thread_time() - c0) * 1e6 / steps)
                a, b = statistics.median(us["before"]), statistics.median(us["after"])
                print(f"| {vid} | {n} | {mode} | {a:,.0f} | {b:,.0f} | {b / a:.2f} |", flush=True)


def new_batch(Batch, model, tok, rows: int):
    """A Batch of either tree: one with a slot cache is sized for its rows."""
    if "slots" in inspect.signature(Batch).parameters:
        return Batch(model, tok, policy="half", slots=rows)
    return Batch(model, tok, policy="half")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--models", nargs="+", default=["shakespeare-char-4l"])
    ap.add_argument("--before", type=Path, help="folder to put first on PYTHONPATH for the 'before' tree")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=192, help="tokens per row (past the window: re-prefills count)")
    ap.add_argument("--repeats", type=int, default=5, help="engine runs per child (their median)")
    ap.add_argument("--interleave", type=Path, help="another zoo/generate.py to compare with in one process")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.interleave:
        interleaved(args.store, args.models, args.interleave)
        return
    if args.child:
        print(json.dumps(child(args.store, args.models, args.tokens, args.repeats)))
        return
    trees = {"after": None} if args.before is None else {"before": args.before, "after": None}
    runs: dict[str, list[dict]] = {t: [] for t in trees}
    for r in range(args.rounds):
        for name in (list(trees) if r % 2 == 0 else list(reversed(trees))):
            env = dict(os.environ)
            if trees[name] is not None:
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(trees[name]), env.get("PYTHONPATH")]))
            cmd = [sys.executable, __file__, "--child", "--store", str(args.store), "--tokens", str(args.tokens),
                   "--repeats", str(args.repeats), "--models", *args.models]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            runs[name].append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}/{args.rounds} {name} done", file=sys.stderr, flush=True)
    keys = list(runs["after"][0])
    print("| figure | " + " | ".join(trees) + (" | after ÷ before |" if len(trees) == 2 else " |"))
    print("|---|" + "---|" * (len(trees) + (len(trees) == 2)))
    for k in keys:
        med = [statistics.median(run[k] for run in runs[t]) for t in trees]
        ratio = f" | {med[1] / med[0]:.2f}" if len(med) == 2 and med[0] else (" | -" if len(med) == 2 else "")
        print(f"| {k} | " + " | ".join(f"{m:,.3f}" if m < 100 else f"{m:,.0f}" for m in med) + ratio + " |")


if __name__ == "__main__":
    main()
