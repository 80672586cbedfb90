"""Training figures for docs/benchmarks.md and docs/quality.md: the depth table, what each speed option buys, and
recipe sweeps.

    python benchmarks/train_depths.py depths --depths 1,4,6,12 --threads 1   # full cpu-preset runs, one per depth
    python benchmarks/train_depths.py options --iters 150                     # threads / fused AdamW / compile
    python benchmarks/train_depths.py sweep --depths 4 --seeds 1337,1338 \
        --recipe lr2e-3:learning_rate=2e-3,min_lr=2e-4 --recipe lr3e-3:learning_rate=3e-3,min_lr=3e-4

`depths` runs `gptzoo train --preset cpu` in a subprocess per depth (peak RSS from wait4) into a scratch store and
prints a markdown table from the cards. `options` times the training step of the 4-layer cpu-preset model in this
process under each option (median ms/iter after warm-up). `sweep` trains every depth x seed x recipe (a recipe is
`name:key=value,...` over a preset, `name:` alone is the preset as it is) in this process and prints the card's
whole-split validation loss beside the periodic evaluation's fixed-window figure; `--jsonl` appends every run.

    python benchmarks/train_depths.py proxy --depths 1,4,12 --seeds 1337,1338 --subset 16 --iters 1200

`proxy` is the CPU stand-in for the gpu preset's regularisation (issue 23): the gpu preset (384 wide, 5000 steps of
64 x 256 tokens, ~80 passes over tiny-Shakespeare) overfits at every depth >= 4. On two cores the same regime comes
from the cpu-preset model (128 wide, context 128) trained on 1/K of the training split for ~40 passes, scored on the
whole validation split. Each depth x seed runs three recipes: `none` (no dropout, no early stopping: shows the
overfitting), `fixed` (dropout 0.2 at every depth, no early stopping: nanoGPT's shakespeare_char, the gpu figures
before issue 23) and `gpu` (the gpu preset's own depth-scaled dropout and patience, evaluations as often relative to
the run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from gptzoo.trainer.config import TrainConfig
from gptzoo.trainer.loop import BatchSampler
from gptzoo.zoo.datasets import load
from gptzoo.zoo.model import GPT, GPTConfig
from gptzoo.zoo.store import Store


def depths(args) -> None:
    store = Path(args.store or tempfile.mkdtemp(prefix="gptzoo-bench-"))
    rows = []
    for d in [int(x) for x in args.depths.split(",")]:
        cmd = [sys.executable, "-m", "gptzoo.cli.main", "train", "--layers", str(d), "--preset", args.preset,
               "--threads", str(args.threads), "--quiet", "--overwrite", "--store", str(store)]
        cmd += ["--seed", str(args.seed)] if args.seed else []
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if status:
            sys.exit(f"training {d} layers failed ({status})")
        card = Store(store).resolve(layers=d).card
        rows.append((d, card.params, card.val_loss, card.train_loss, card.ms_per_iter,
                     card.tokens_seen / card.training_seconds, wall, usage.ru_maxrss / 1024))
    print(f"\nstore: {store}\n")
    print("| layers | params | val loss | train loss | ms/iter (median) | tokens/s (incl. evals) | wall s "
          "| peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for d, p, v, t, ms, tps, wall, rss in rows:
        print(f"| {d} | {p:,} | {v:.4f} | {t:.4f} | {ms:.1f} | {tps:,.0f} | {wall:.0f} | {rss:.0f} |")


def _recipe(spec: str) -> tuple[str, dict]:
    name, _, body = spec.partition(":")
    values = {}
    for item in filter(None, body.split(",")):
        key, _, raw = item.partition("=")
        values[key.strip()] = json.loads(raw)
    return name, values


def sweep(args) -> None:
    from gptzoo.trainer.loop import train

    torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="gptzoo-data-"))
    recipes = [_recipe(r) for r in args.recipe] or [("preset", {})]
    print("| layers | preset | recipe | seed | val loss (whole split) | val (fixed windows) | train loss | best iter "
          "| stopped | ms/iter |\n|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for d in [int(x) for x in args.depths.split(",")]:
        for name, values in recipes:
            for seed in [int(x) for x in args.seeds.split(",")]:
                store = Store(tempfile.mkdtemp(prefix="gptzoo-sweep-"))
                overrides = dict(values, seed=seed) | ({"max_iters": args.max_iters} if args.max_iters else {})
                r = train(d, args.preset, overrides, store, data_dir, show_progress=False)
                c = r.variant.card
                row = dict(layers=d, preset=args.preset, recipe=name, overrides=values, seed=seed, val_loss=c.val_loss,
                           val_loss_windows=c.val_loss_windows, train_loss=c.train_loss, best_iter=c.best_iter,
                           stopped_at_iter=c.stopped_at_iter, stop_reason=c.stop_reason, ms_per_iter=c.ms_per_iter,
                           train_config=c.train_config, store=str(store.root) if args.keep else None)
                print(f"| {d} | {args.preset} | {name} | {seed} | {c.val_loss:.4f} | {c.val_loss_windows:.4f} | "
                      f"{c.train_loss:.4f} | {c.best_iter} | {c.stopped_at_iter} ({c.stop_reason}) | "
                      f"{c.ms_per_iter:.1f} |", flush=True)
                if args.jsonl:
                    with open(args.jsonl, "a") as f:
                        f.write(json.dumps(row) + "\n")
                if not args.keep:
                    import shutil

                    shutil.rmtree(store.root, ignore_errors=True)


def _subset(data_dir: Path, k: int) -> str:
    """A prepared dataset holding the first 1/k of shakespeare_char's training tokens and its whole validation split."""
    import hashlib

    from gptzoo.zoo import atomic
    from gptzoo.zoo.prepare import ensure

    ensure("shakespeare_char", data_dir)
    src = data_dir / "shakespeare_char"
    name = f"shakespeare_char_sub{k}"
    out = data_dir / name
    if (out / "meta.json").exists():
        return name
    meta = json.loads((src / "meta.json").read_text())
    train = (src / "train.bin").read_bytes()
    n = meta["n_train"] // k
    part = train[: n * 2]  # uint16 ids
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(out / "train.bin", part)
    atomic.write_bytes(out / "val.bin", (src / "val.bin").read_bytes())
    meta.update(name=name, n_train=n, train_sha256=hashlib.sha256(part).hexdigest(), source=f"first 1/{k} of train")
    atomic.write_json(out / "meta.json", meta)
    return name


def proxy(args) -> None:
    from gptzoo.trainer.loop import train
    from gptzoo.zoo.presets import preset

    torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="gptzoo-data-"))
    dataset = _subset(data_dir, args.subset)
    every = max(1, args.iters // 20)  # the gpu preset evaluates 20 times in 5000 steps
    print(f"dataset {dataset} ({data_dir}), {args.iters} steps, evaluation every {every}\n")
    print("| layers | recipe | dropout | patience | seed | val loss (whole split) | best iter | stopped | train loss "
          "|\n|---|---|---|---|---|---|---|---|---|", flush=True)
    for d in [int(x) for x in args.depths.split(",")]:
        gpu = preset("gpu", d)
        recipes = {"none": dict(dropout=0.0, patience=0), "fixed": dict(dropout=0.2, patience=0),
                   "gpu": dict(dropout=gpu["dropout"], patience=gpu["patience"])}
        for name in args.recipes.split(","):
            for seed in [int(x) for x in args.seeds.split(",")]:
                if name == "none" and seed != int(args.seeds.split(",")[0]):
                    continue  # the unregularised baseline on the first seed only: it only shows the overfitting
                store = Store(tempfile.mkdtemp(prefix="gptzoo-proxy-"))
                overrides = dict(recipes[name], seed=seed, dataset=dataset, max_iters=args.iters, eval_interval=every)
                c = train(d, "cpu", overrides, store, data_dir, show_progress=False).variant.card
                print(f"| {d} | {name} | {overrides['dropout']} | {overrides['patience']} | {seed} | {c.val_loss:.4f} "
                      f"| {c.best_iter} | {c.stopped_at_iter} ({c.stop_reason}) | {c.train_loss:.4f} |", flush=True)
                if args.jsonl:
                    with open(args.jsonl, "a") as f:
                        f.write(json.dumps(dict(layers=d, recipe=name, seed=seed, overrides=overrides,
                                                val_loss=c.val_loss, best_iter=c.best_iter, train_loss=c.train_loss,
                                                stopped_at_iter=c.stopped_at_iter, stop_reason=c.stop_reason,
                                                ms_per_iter=c.ms_per_iter)) + "\n")
                import shutil

                shutil.rmtree(store.root, ignore_errors=True)


def _time_steps(model, opt, sampler, iters: int, compiled=None) -> float:
    fwd = model if compiled is None else compiled
    times = []
    for i in range(iters):
        t0 = time.perf_counter()
        x, y = sampler.next()
        _, loss = fwd(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 10:
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def options(args) -> None:
    cfg = TrainConfig.from_preset("cpu", 4, cuda_available=False)
    data = load("shakespeare_char")
    print("| option | threads | ms/iter (median) |\n|---|---|---|")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, fused, compile_ in [("foreach AdamW", False, False), ("fused AdamW", True, False),
                                      ("fused AdamW + torch.compile", True, True)]:
            torch.manual_seed(0)
            model = GPT(GPTConfig(**cfg.model_args(data.meta["vocab_size"])))
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused, foreach=None if fused else True)
            sampler = BatchSampler(data.train, cfg.block_size, cfg.batch_size, 0)
            compiled = torch.compile(model) if compile_ else None
            if compiled is not None:
                _time_steps(model, opt, sampler, 12, compiled)  # compile outside the timing
            ms = _time_steps(model, opt, sampler, args.iters, compiled)
            print(f"| {name} | {threads} | {ms:.1f} |", flush=True)
    # the data loader: gathering a batch of windows
    sampler = BatchSampler(data.train, cfg.block_size, cfg.batch_size, 0)
    t0 = time.perf_counter()
    for _ in range(2000):
        sampler.next()
    print(f"\nbatch sampler: {(time.perf_counter() - t0) / 2000 * 1e6:.0f} µs per batch")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    a = sub.add_parser("depths")
    a.add_argument("--depths", default="1,4,6,12")
    a.add_argument("--threads", type=int, default=1)
    a.add_argument("--seed", type=int, default=None)
    a.add_argument("--store", default=None)
    a.add_argument("--preset", default="cpu")
    b = sub.add_parser("options")
    b.add_argument("--iters", type=int, default=150)
    c = sub.add_parser("sweep")
    c.add_argument("--depths", default="4")
    c.add_argument("--seeds", default="1337")
    c.add_argument("--preset", default="cpu")
    c.add_argument("--recipe", action="append", default=[], help="name:key=value,... (repeatable)")
    c.add_argument("--max-iters", type=int, default=None)
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--data-dir", default=None)
    c.add_argument("--jsonl", default=None)
    c.add_argument("--keep", action="store_true", help="keep each run's scratch store")
    e = sub.add_parser("proxy")
    e.add_argument("--depths", default="1,4,12")
    e.add_argument("--seeds", default="1337,1338")
    e.add_argument("--recipes", default="none,fixed,gpu")
    e.add_argument("--subset", type=int, default=16, help="train on the first 1/K of the training split")
    e.add_argument("--iters", type=int, default=1200)
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--data-dir", default=None)
    e.add_argument("--jsonl", default=None)
    args = ap.parse_args()
    {"depths": depths, "options": options, "sweep": sweep, "proxy": proxy}[args.what](args)
