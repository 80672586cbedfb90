"""The training loop: AdamW with cosine LR and warmup, gradient clipping and accumulation, fixed-window evaluation,
early stopping (`patience`), atomic best/last checkpoints, exact resume, clean Ctrl-C, and DDP under torchrun.

The periodic evaluations score fixed windows (cheap, and every evaluation scores the same tokens); they choose the
best checkpoint. When the run ends (its last step, early stopping or Ctrl-C) the best checkpoint is scored once on the
whole validation split, in full precision: that is the card's `val_loss`, the one figure every variant of the zoo,
trained or imported, is compared by."""

from __future__ import annotations

import bisect
import contextlib
import json
import math
import shutil
import signal
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from gptzoo.trainer import data as datamod
from gptzoo.trainer import distributed
from gptzoo.trainer.config import TrainConfig
from gptzoo.trainer.progress import TrainProgress
from gptzoo.zoo import atomic, checkpoint
from gptzoo.zoo import datasets as dsmod
from gptzoo.zoo import store as storemod
from gptzoo.zoo.card import Card, DatasetFacts, EvalFacts
from gptzoo.zoo.errors import GptzooError
from gptzoo.zoo.evaluate import estimate
from gptzoo.zoo.model import GPT, GPTConfig
from gptzoo.zoo.names import check_name
from gptzoo.zoo.sources import sha256_file

# A fresh run past this many parameters asks for `--yes`: an extra zero on --layers should not start a day-long job.
LARGE_PARAMS = 100_000_000
# Fields a resumed run may change; everything else must match the checkpoint it continues.
RESUMABLE_OVERRIDES = {"max_iters", "device", "compile", "eval_interval", "patience"}
# Why a run stopped (card.stop_reason, TrainResult.stop_reason).
# Steps at the start of a run (or resume) left out of its speed: they pay one-off allocation (and compile) costs.
SETUP_STEPS = 3
STOP_MAX_ITERS, STOP_PATIENCE, STOP_INTERRUPTED, STOP_DIVERGED = "max_iters", "patience", "interrupted", "diverged"


class TrainError(GptzooError):
    """Training cannot start or continue (the reason is in the message)."""


@dataclass
class TrainResult:
    variant: storemod.Variant | None  # None on non-zero ranks
    iterations: int
    best_val_loss: float  # on the periodic evaluation's fixed windows (the card's val_loss is the whole split)
    interrupted: bool
    ms_per_iter: float | None  # median wall time of one optimizer step, evaluations excluded (None: no step timed)
    tokens_per_s: float | None  # tokens per step / that median: the figure the progress bar shows as it goes
    stop_reason: str = STOP_MAX_ITERS  # max_iters, patience or interrupted


def lr_at(it: int, cfg: TrainConfig) -> float:
    """Linear warmup to learning_rate, then cosine decay to min_lr at max_iters."""
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it >= cfg.max_iters:
        return cfg.min_lr
    ratio = (it - cfg.warmup_iters) / max(1, cfg.max_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - cfg.min_lr)


class BatchSampler:
    """Random training windows drawn from a seeded generator whose state is checkpointed, so a resumed run sees the
    same batches as an uninterrupted one. The split lives in memory as one tensor and windows are gathered at once."""

    def __init__(self, split: np.ndarray, block_size: int, batch_size: int, seed: int):
        self.data = torch.from_numpy(np.asarray(split).astype(np.int64))
        self.block_size, self.batch_size = block_size, batch_size
        if len(self.data) <= block_size + 1:
            raise TrainError(f"training split ({len(self.data)} tokens) is shorter than block_size {block_size}")
        self.gen = torch.Generator().manual_seed(seed)
        self._offsets = torch.arange(block_size)

    def _draw(self) -> torch.Tensor:
        return torch.randint(len(self.data) - self.block_size, (self.batch_size,), generator=self.gen)

    def skip(self, n_batches: int) -> None:
        """Fast-forward the data order past `n_batches` batches (how a resumed run finds its place)."""
        for _ in range(n_batches):
            self._draw()

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        pos = self._draw()[:, None] + self._offsets
        return self.data[pos], self.data[pos + 1]


def resolve_config(layers: int, preset: str, overrides: dict, resume_from: dict | None) -> TrainConfig:
    """The config for a fresh run (preset + overrides) or a resumed one (saved config + the allowed overrides)."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        if resume_from is None:
            return TrainConfig.from_preset(preset, layers, torch.cuda.is_available(), **overrides)
        saved = TrainConfig(**resume_from["config"])
    except (ValueError, TypeError) as e:
        raise TrainError(str(e)) from e
    if layers != saved.n_layer:
        raise TrainError(f"--resume continues a {saved.n_layer}-layer run; --layers {layers} does not match")
    clash = {k: v for k, v in overrides.items() if k not in RESUMABLE_OVERRIDES and getattr(saved, k) != v}
    if clash:
        names = ", ".join(f"{k}={v} (saved {getattr(saved, k)})" for k, v in clash.items())
        raise TrainError(f"--resume cannot change {names}; only {', '.join(sorted(RESUMABLE_OVERRIDES))} may change")
    return replace(saved, **{k: v for k, v in overrides.items() if k in RESUMABLE_OVERRIDES})


def train(
    layers: int,
    preset: str = "auto",
    overrides: dict | None = None,
    store: storemod.Store | None = None,
    data_dir: Path | None = None,
    name: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
    stop_at: int | None = None,
    allow_large: bool = False,
) -> TrainResult:
    """Train (or resume) the variant at depth `layers`; the CLI's `gptzoo train` is a thin wrapper over this.
    `stop_at` ends the run early at that iteration exactly as Ctrl-C would (saved, resumable); a fresh run past
    LARGE_PARAMS parameters needs `allow_large`."""
    store = store or storemod.Store()
    overrides = dict(overrides or {})
    dataset_name = check_name(overrides.get("dataset") or datamod.DEFAULT_DATASET, "dataset name")
    vid = name or storemod.variant_id(dataset_name, layers)
    vdir = store.variant_dir(vid, dataset_name)  # refuses an id that is not a plain identifier, or reserved

    resume_ckpt = None
    if resume:
        try:
            resume_ckpt = checkpoint.load(vdir / storemod.CKPT_LAST)
        except checkpoint.CheckpointError as e:
            raise TrainError(f"cannot resume {vid}: {e}") from e
        if "optimizer" not in resume_ckpt or "rng" not in resume_ckpt:
            raise TrainError(f"{vdir / storemod.CKPT_LAST} holds no optimizer/RNG state to resume from")
    cfg = resolve_config(layers, preset, overrides, resume_ckpt)
    if resume_ckpt is None and cfg.approx_params() > LARGE_PARAMS and not allow_large:
        raise TrainError(f"{layers} layers at width {cfg.n_embd} is about {cfg.approx_params() / 1e6:,.0f}M "
                         f"parameters (days on a CPU); pass --yes to train it anyway")
    try:
        dist = distributed.setup(cfg.device)
    except ValueError as e:
        raise TrainError(str(e)) from e

    progress = TrainProgress(cfg.max_iters, 0, vid, enabled=show_progress and dist.master)
    with contextlib.ExitStack() as held:
        held.callback(distributed.teardown, dist)
        if dist.master:
            store.ensure_writable()
            held.enter_context(store.lock(vid, "training"))  # before anything in the folder is touched
            # A folder holding only a log is a run that ended before its first checkpoint (e.g. a full disk): redo it.
            if not resume and vdir.exists() and any(p.name != storemod.TRAIN_LOG for p in vdir.iterdir()):
                if not overwrite:
                    raise TrainError(
                        f"variant {vid} already exists in {store.root}; use --resume to continue it or --overwrite "
                        f"to start over"
                    )
                if not (vdir / storemod.CARD).is_file():  # --overwrite removes only what the store made
                    raise TrainError(f"{vdir} is not a gptzoo variant (no {storemod.CARD}); refusing to delete it: "
                                     f"move it away or pick another --name")
                shutil.rmtree(vdir)
            vdir.mkdir(parents=True, exist_ok=True)
            dataset = datamod.ensure(cfg.dataset, data_dir, progress.log)
        distributed.barrier(dist)
        if not dist.master:
            dataset = dsmod.load(cfg.dataset, data_dir)
        return _run(cfg, dist, dataset, store, vid, resume_ckpt, progress, stop_at)


def _run(cfg, dist, dataset, store, vid, resume_ckpt, progress, stop_at) -> TrainResult:
    device = dist.device
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    vdir = store.variant_dir(vid)
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    use_bf16 = device_type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()

    gconf = GPTConfig(**cfg.model_args(dataset.meta["vocab_size"]))
    torch.manual_seed(cfg.seed)  # identical init on every rank
    model = GPT(gconf).to(device)
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), device_type)
    sampler = BatchSampler(dataset.train, cfg.block_size, cfg.batch_size, cfg.seed + dist.rank)
    start_iter, best_val, prev_seconds, prev_tokens = 0, float("inf"), 0.0, 0
    since_best = 0  # evaluations since the last new best (early stopping's counter; checkpointed for --resume)
    if resume_ckpt is not None:
        model.load_state_dict(checkpoint.strip_compile_prefix(resume_ckpt["model"]))
        optimizer.load_state_dict(resume_ckpt["optimizer"])
        start_iter, best_val = int(resume_ckpt["iter_num"]), float(resume_ckpt["best_val_loss"])
        since_best = int(resume_ckpt.get("evals_since_best", 0))
        prev_seconds, prev_tokens = float(resume_ckpt["training_seconds"]), int(resume_ckpt["tokens_seen"])
        sampler.skip(start_iter * cfg.gradient_accumulation_steps)
        rng = resume_ckpt["rng"]
        if dist.master:  # rank 0's dropout stream continues exactly; other ranks reseed from the step
            torch.set_rng_state(rng["torch"])
            if device_type == "cuda" and "cuda" in rng:
                torch.cuda.set_rng_state(rng["cuda"])
        else:
            torch.manual_seed(cfg.seed + dist.rank + 7919 * start_iter)
    else:
        torch.manual_seed(cfg.seed + dist.rank)  # dropout stream per rank
    raw_model = model
    if cfg.compile:
        model = torch.compile(model)
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[dist.local_rank] if device_type == "cuda" else None)

    tokens_per_iter = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps * dist.world_size
    log_path = vdir / storemod.TRAIN_LOG
    if dist.master and resume_ckpt is None:
        log_path.write_text("")
    splits = {"train": dataset.train, "val": dataset.val}
    eval_windows = cfg.eval_iters * cfg.batch_size
    step_times: list[float] = []  # seconds per timed step, kept sorted: its median is the run's one speed figure
    t_run = time.perf_counter()

    def elapsed() -> float:
        return prev_seconds + time.perf_counter() - t_run

    def tokens_seen(it: int) -> int:
        return prev_tokens + (it - start_iter) * tokens_per_iter

    def state(it: int, with_optimizer: bool) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if device_type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state()
        ckpt = {
            "model": raw_model.state_dict(),
            "model_args": gconf.to_dict(),
            "iter_num": it,
            "best_val_loss": best_val,
            "evals_since_best": since_best,
            "config": cfg.to_dict(),
            "tokenizer": dataset.meta["tokenizer"],
            "dataset": _dataset_facts(dataset),
            "training_seconds": elapsed(),
            "tokens_seen": tokens_seen(it),
        }
        if with_optimizer:
            ckpt |= {"optimizer": optimizer.state_dict(), "rng": rng}
        return ckpt

    def evaluate_and_save(it: int) -> None:
        nonlocal best_val, since_best
        losses = estimate(raw_model, splits, cfg.batch_size, eval_windows, device=device, autocast=autocast)
        if not all(math.isfinite(v) for v in losses.values()):
            diverged(it, losses["val"])
        record = {"iter": it, "train_loss": losses["train"], "val_loss": losses["val"], "lr": lr_at(it, cfg),
                  "tokens_seen": tokens_seen(it), "elapsed_s": round(elapsed(), 3),
                  "ms_per_iter": round(_median(step_times) * 1000, 3) if step_times else None}
        atomic.append_text(log_path, json.dumps(record, allow_nan=False) + "\n")  # whole lines, even on a full disk
        progress.log(f"iter {it}: train {losses['train']:.4f}, val {losses['val']:.4f}")
        if losses["val"] < best_val:
            best_val, since_best = losses["val"], 0
            # The card names the new checkpoint's sha256: it is written before the checkpoint replaces the old one,
            # so a failure between (a full disk) leaves the old pair, never a card that does not match its checkpoint.
            with atomic.atomic_path(vdir / storemod.CKPT_BEST) as tmp:
                checkpoint.save(state(it, with_optimizer=False), tmp)
                _write_card(store, vid, cfg, gconf, raw_model, dataset, it, losses, elapsed(), tokens_seen(it),
                            step_times, sha256_file(tmp))
        else:  # a new best wrote the whole card, progress facts included
            since_best += 1
            _update_progress_facts(store, vid, it, elapsed(), tokens_seen(it), step_times)
        checkpoint.save(state(it, with_optimizer=True), vdir / storemod.CKPT_LAST)
        last_saved[:] = [it]

    def diverged(it: int, loss: float) -> None:
        """A non-finite loss: nothing more is saved (the weights are spoiled); the last good checkpoints stay."""
        kept = f"the checkpoints from iter {last_saved[0]} are kept" if last_saved else "nothing was saved"
        if dist.master and (vdir / storemod.CARD).is_file():
            _set_stop_facts(store, vid, it, STOP_DIVERGED)
        raise TrainError(f"training diverged: the loss is {loss} at iter {it} (lr {lr_at(it, cfg):.3g}); {kept}. "
                         f"Start over with a lower --lr (and --overwrite)")

    last_saved: list[int] = [start_iter] if resume_ckpt is not None else []
    stop = {"requested": False}

    def on_sigint(signum, frame):
        if stop["requested"]:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        stop["requested"] = True

    old_handler = signal.signal(signal.SIGINT, on_sigint) if _main_thread() else None
    it = start_iter
    reason = STOP_MAX_ITERS
    model.train()
    try:
        with progress:
            progress.start_at(start_iter)
            while True:
                due = it % cfg.eval_interval == 0 or it == cfg.max_iters
                if dist.master and due and (it != start_iter or resume_ckpt is None):
                    evaluate_and_save(it)
                if it >= cfg.max_iters:
                    break
                patience_hit = dist.master and cfg.patience > 0 and since_best >= cfg.patience
                wanted = _stop_wanted(stop, patience_hit, it == stop_at, dist)
                if wanted:
                    reason = wanted
                    break
                lr = lr_at(it, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                t0 = time.perf_counter()
                for micro in range(cfg.gradient_accumulation_steps):
                    x, y = sampler.next()
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    last = micro == cfg.gradient_accumulation_steps - 1
                    sync = contextlib.nullcontext() if (last or not dist.enabled) else model.no_sync()
                    with sync, autocast:
                        _, loss = model(x, y)
                        (loss / cfg.gradient_accumulation_steps).backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                it += 1
                if device_type == "cpu" or it % 10 == 0:
                    step_loss = loss.item()
                    if not math.isfinite(step_loss):
                        diverged(it, step_loss)
                    dt = time.perf_counter() - t0
                    if it > start_iter + SETUP_STEPS:
                        bisect.insort(step_times, dt)
                    median = _median(step_times)
                    progress.step(it, step_loss, tokens_per_iter / median if median else None)
        interrupted = reason == STOP_INTERRUPTED
        if interrupted and dist.master:
            checkpoint.save(state(it, with_optimizer=True), vdir / storemod.CKPT_LAST)
            _update_progress_facts(store, vid, it, elapsed(), tokens_seen(it), step_times)
        if dist.master:
            if reason == STOP_PATIENCE:
                progress.log(f"early stop at iter {it}: no better validation loss in {since_best} evaluations "
                             f"(patience {cfg.patience})")
            _set_stop_facts(store, vid, it, reason)
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
    if dist.master:  # outside our SIGINT handler: a Ctrl-C here leaves the card's fixed-window figure, still consistent
        score_best_on_whole_split(store, vid, dataset, device, progress.log)

    ms = _median(step_times) * 1000 if step_times else None
    return TrainResult(
        variant=store.load(vid) if dist.master else None,
        iterations=it,
        best_val_loss=best_val,
        interrupted=interrupted,
        ms_per_iter=ms,
        tokens_per_s=tokens_per_iter / (ms / 1000) if ms else None,
        stop_reason=reason,
    )


def _median(sorted_times: list[float]) -> float | None:
    """The median of a sorted list without sorting it again (the progress bar asks for it every step)."""
    n = len(sorted_times)
    return (sorted_times[(n - 1) // 2] + sorted_times[n // 2]) / 2 if n else None


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _stop_wanted(stop: dict, patience_hit: bool, at_stop_iter: bool, dist: distributed.Dist) -> str | None:
    """Why to stop before the next step (early stopping, Ctrl-C, `stop_at`), or None. Every rank stops at the same
    step: only rank 0 evaluates, so its patience verdict and every rank's Ctrl-C are MAX-reduced across ranks."""
    code = 2 if patience_hit else 1 if (stop["requested"] or at_stop_iter) else 0
    if dist.enabled:
        flag = torch.tensor([float(code)], device=dist.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        code = int(flag.item())
    return {0: None, 1: STOP_INTERRUPTED, 2: STOP_PATIENCE}[code]


def score_best_on_whole_split(store: storemod.Store, vid: str, dataset: dsmod.Dataset, device: str = "cpu",
                              say=None) -> float:
    """Score the variant's best checkpoint on every window of the validation split, in full precision (no autocast,
    no TF32), and make that the card's val_loss; the fixed-window figure stays as `val_loss_windows`."""
    variant = store.load(vid)
    card = variant.card
    _, model = checkpoint.load_variant(variant)  # checks the checkpoint against the card
    ev = card.eval or EvalFacts()
    if say:
        say(f"scoring the best checkpoint (iter {card.best_iter}) on the whole validation split")
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        val = estimate(model.to(device), {"val": dataset.val}, ev.batch_size, None, device=device)["val"]
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    train_windows = ev.train_windows if ev.train_windows is not None else ev.windows_per_split
    card.val_loss = val
    card.eval = EvalFacts(windows_per_split=None, train_windows=train_windows, batch_size=ev.batch_size)
    store.save_card(card)
    return val


def _dataset_facts(dataset: dsmod.Dataset) -> dict:
    m = dataset.meta
    return {"name": m["name"], "kind": m["kind"], "sha256": m["sha256"], "n_train": m["n_train"], "n_val": m["n_val"]}


def _write_card(store, vid, cfg, gconf, model, dataset, it, losses, seconds, tokens, step_times, ckpt_sha) -> None:
    card = Card(
        id=vid, n_layer=gconf.n_layer, n_head=gconf.n_head, n_embd=gconf.n_embd, block_size=gconf.block_size,
        vocab_size=gconf.vocab_size, bias=gconf.bias, dropout=gconf.dropout, params=model.num_params(),
        tokenizer=dataset.meta["tokenizer"], dataset=DatasetFacts(**_dataset_facts(dataset)), preset=cfg.preset,
        best_iter=it, val_loss=losses["val"], train_loss=losses["train"], val_loss_windows=losses["val"],
        eval=EvalFacts(windows_per_split=cfg.eval_iters * cfg.batch_size, batch_size=cfg.batch_size),
        checkpoint_sha256=ckpt_sha,
        torch_version=str(torch.__version__), train_config=cfg.to_dict(),
    )
    _set_progress_facts(card, it, seconds, tokens, step_times)
    store.save_card(card)


def _set_progress_facts(card: Card, it: int, seconds: float, tokens: int, step_times: list[float]) -> None:
    card.iterations = it
    card.tokens_seen = tokens
    card.training_seconds = round(seconds, 3)
    card.ms_per_iter = round(_median(step_times) * 1000, 3) if step_times else None
    card.updated = datetime.now(UTC).isoformat(timespec="seconds")


def _update_progress_facts(store, vid, it, seconds, tokens, step_times) -> None:
    card = store.load(vid).card
    _set_progress_facts(card, it, seconds, tokens, step_times)
    store.save_card(card)


def _set_stop_facts(store, vid, it, reason) -> None:
    card = store.load(vid).card
    card.stopped_at_iter, card.stop_reason = it, reason
    store.save_card(card)
