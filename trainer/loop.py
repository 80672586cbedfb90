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
from dataclasses import replace
from pathlib import Path

import torch

from gptzoo.trainer import cards, distributed
from gptzoo.trainer import data as datamod
from gptzoo.trainer.config import TrainConfig
from gptzoo.trainer.progress import TrainProgress
from gptzoo.trainer.state import (  # noqa: F401  (BatchSampler, lr_at, TrainError, SETUP_STEPS: re-exported)
    SETUP_STEPS,
    STOP_DIVERGED,
    STOP_INTERRUPTED,
    STOP_MAX_ITERS,
    STOP_PATIENCE,
    BatchSampler,
    TrainError,
    TrainResult,
    TrainState,
    lr_at,
    main_thread,
    stop_wanted,
)
from gptzoo.zoo import atomic, checkpoint
from gptzoo.zoo import datasets as dsmod
from gptzoo.zoo import store as storemod
from gptzoo.zoo.arch import make_model
from gptzoo.zoo.evaluate import estimate
from gptzoo.zoo.model import GPT
from gptzoo.zoo.names import check_name
from gptzoo.zoo.oss import OSS
from gptzoo.zoo.sources import sha256_file

# A fresh run past this many parameters asks for `--yes`: an extra zero on --layers should not start a day-long job.
LARGE_PARAMS = 100_000_000
# Fields a resumed run may change; everything else must match the checkpoint it continues.
RESUMABLE_OVERRIDES = {"max_iters", "device", "compile", "eval_interval", "patience"}


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
        return Trainer(cfg, dist, dataset, store, vid, progress).run(resume_ckpt, stop_at)


def build_model(cfg: TrainConfig, vocab_size: int) -> GPT | OSS:
    """The model a run trains: the one place a config becomes a network, of the config's family (zoo.arch)."""
    return make_model(cfg.model_args(vocab_size))


class Trainer:
    """One training process: `run` sets up (model, optimizer, resume), loops (evaluate and checkpoint when due, stop
    when asked, one optimizer step) and finishes (final save, stop facts, whole-split score). Its state is `self.s`."""

    def __init__(self, cfg: TrainConfig, dist: distributed.Dist, dataset: dsmod.Dataset, store: storemod.Store,
                 vid: str, progress: TrainProgress):
        self.cfg, self.dist, self.dataset, self.store, self.vid = cfg, dist, dataset, store, vid
        self.progress = progress
        self.vdir = store.variant_dir(vid)
        self.log_path = self.vdir / storemod.TRAIN_LOG
        self.device = dist.device
        self.device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        self.tokens_per_iter = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps * dist.world_size
        self.s = TrainState()

    # --- setup -------------------------------------------------------------------------------------------------
    def _setup(self, resume_ckpt: dict | None) -> None:
        cfg, dist, s = self.cfg, self.dist, self.s
        if self.device_type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        use_bf16 = self.device_type == "cuda" and torch.cuda.is_bf16_supported()
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()
        torch.manual_seed(cfg.seed)  # identical init on every rank
        self.raw_model = build_model(cfg, self.dataset.meta["vocab_size"]).to(self.device)
        self.gconf = self.raw_model.config
        self.optimizer = self.raw_model.configure_optimizers(cfg.weight_decay, cfg.learning_rate,
                                                             (cfg.beta1, cfg.beta2), self.device_type)
        self.sampler = BatchSampler(self.dataset.train, cfg.block_size, cfg.batch_size, cfg.seed + dist.rank)
        if resume_ckpt is not None:
            self.raw_model.load_state_dict(checkpoint.strip_compile_prefix(resume_ckpt["model"]))
            self.optimizer.load_state_dict(resume_ckpt["optimizer"])
            s.step = s.start_step = s.last_saved = int(resume_ckpt["iter_num"])
            s.best_val = float(resume_ckpt["best_val_loss"])
            s.evals_since_best = int(resume_ckpt.get("evals_since_best", 0))
            s.prev_seconds, s.prev_tokens = float(resume_ckpt["training_seconds"]), int(resume_ckpt["tokens_seen"])
            self.sampler.skip(s.start_step * cfg.gradient_accumulation_steps)
            rng = resume_ckpt["rng"]
            if dist.master:  # rank 0's dropout stream continues exactly; other ranks reseed from the step
                torch.set_rng_state(rng["torch"])
                if self.device_type == "cuda" and "cuda" in rng:
                    torch.cuda.set_rng_state(rng["cuda"])
            else:
                torch.manual_seed(cfg.seed + dist.rank + 7919 * s.start_step)
        else:
            torch.manual_seed(cfg.seed + dist.rank)  # dropout stream per rank
        self.model = torch.compile(self.raw_model) if cfg.compile else self.raw_model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model = DDP(self.model, device_ids=[dist.local_rank] if self.device_type == "cuda" else None)
        if dist.master and resume_ckpt is None:
            self.log_path.write_text("")
        self.t_run = time.perf_counter()

    # --- the loop ----------------------------------------------------------------------------------------------
    def run(self, resume_ckpt: dict | None, stop_at: int | None) -> TrainResult:
        cfg, dist, s = self.cfg, self.dist, self.s
        self._setup(resume_ckpt)
        old_handler = signal.signal(signal.SIGINT, self._on_sigint) if main_thread() else None
        self.model.train()
        try:
            with self.progress:
                self.progress.start_at(s.start_step)
                while True:
                    due = s.step % cfg.eval_interval == 0 or s.step == cfg.max_iters
                    if dist.master and due and (s.step != s.start_step or resume_ckpt is None):
                        self._evaluate_and_save()
                    if s.step >= cfg.max_iters:
                        break
                    patience_hit = dist.master and cfg.patience > 0 and s.evals_since_best >= cfg.patience
                    wanted = stop_wanted(s.stop_requested, patience_hit, s.step == stop_at, dist)
                    if wanted:
                        s.stop_reason = wanted
                        break
                    self._step()
            self._finish()
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        if dist.master:  # outside our SIGINT handler: a Ctrl-C here leaves the card's fixed-window figure, consistent
            cards.score_best_on_whole_split(self.store, self.vid, self.dataset, self.device, self.progress.log)
        ms = s.ms_per_iter()
        return TrainResult(
            variant=self.store.load(self.vid) if dist.master else None,
            iterations=s.step,
            best_val_loss=s.best_val,
            interrupted=s.stop_reason == STOP_INTERRUPTED,
            ms_per_iter=ms,
            tokens_per_s=self.tokens_per_iter / (ms / 1000) if ms else None,
            stop_reason=s.stop_reason,
        )

    def _step(self) -> None:
        """One optimizer step: gradient accumulation over micro-batches (DDP syncs only on the last), clip, update."""
        cfg, s = self.cfg, self.s
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(s.step, cfg)
        t0 = time.perf_counter()
        for micro in range(cfg.gradient_accumulation_steps):
            x, y = self.sampler.next()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            last = micro == cfg.gradient_accumulation_steps - 1
            sync = contextlib.nullcontext() if (last or not self.dist.enabled) else self.model.no_sync()
            with sync, self.autocast:
                _, loss = self.model(x, y)
                (loss / cfg.gradient_accumulation_steps).backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        s.step += 1
        if self.device_type == "cpu" or s.step % 10 == 0:  # .item() syncs a GPU: only every 10th step there
            step_loss = loss.item()
            if not math.isfinite(step_loss):
                self._diverged(step_loss)
            if s.step > s.start_step + SETUP_STEPS:
                bisect.insort(s.step_times, time.perf_counter() - t0)
            ms = s.ms_per_iter()
            self.progress.step(s.step, step_loss, self.tokens_per_iter / (ms / 1000) if ms else None)

    def _evaluate_and_save(self) -> None:
        """Score fixed windows, log a line, and save: a new best writes best.pt and the whole card; always last.pt."""
        cfg, s = self.cfg, self.s
        splits = {"train": self.dataset.train, "val": self.dataset.val}  # the same fixed windows every time
        losses = estimate(self.raw_model, splits, cfg.batch_size, cfg.eval_iters * cfg.batch_size, device=self.device,
                          autocast=self.autocast)
        if not all(math.isfinite(v) for v in losses.values()):
            self._diverged(losses["val"])
        ms = s.ms_per_iter()
        record = {"iter": s.step, "train_loss": losses["train"], "val_loss": losses["val"], "lr": lr_at(s.step, cfg),
                  "tokens_seen": self._tokens_seen(), "elapsed_s": round(self._elapsed(), 3),
                  "ms_per_iter": ms}
        if getattr(self.gconf, "experts", 0):  # oss MoE: the balance loss of the last forward (docs/oss.md)
            record["balance_loss"] = round(float(self.raw_model.balance_loss), 4)
        # whole lines, even on a full disk
        atomic.append_text(self.log_path, json.dumps(record, allow_nan=False) + "\n")
        self.progress.log(f"iter {s.step}: train {losses['train']:.4f}, val {losses['val']:.4f}")
        if losses["val"] < s.best_val:
            s.best_val, s.evals_since_best = losses["val"], 0
            # The card names the new checkpoint's sha256: it is written before the checkpoint replaces the old one,
            # so a failure between (a full disk) leaves the old pair, never a card that does not match its checkpoint.
            with atomic.atomic_path(self.vdir / storemod.CKPT_BEST) as tmp:
                checkpoint.save(self._checkpoint(with_optimizer=False), tmp)
                facts = cards.RunFacts(self.vid, cfg, self.gconf, self.raw_model.num_params(), self.dataset.meta,
                                       losses["train"], losses["val"], sha256_file(tmp), self._progress_facts())
                self.store.save_card(facts.card())
        else:  # a new best wrote the whole card, progress facts included
            s.evals_since_best += 1
            cards.write_progress(self.store, self.vid, self._progress_facts())
        checkpoint.save(self._checkpoint(with_optimizer=True), self.vdir / storemod.CKPT_LAST)
        s.last_saved = s.step

    def _diverged(self, loss: float) -> None:
        """A non-finite loss: nothing more is saved (the weights are spoiled); the last good checkpoints stay."""
        s = self.s
        kept = f"the checkpoints from iter {s.last_saved} are kept" if s.last_saved is not None else "nothing was saved"
        if self.dist.master and (self.vdir / storemod.CARD).is_file():
            cards.write_stop(self.store, self.vid, s.step, STOP_DIVERGED)
        raise TrainError(f"training diverged: the loss is {loss} at iter {s.step} (lr {lr_at(s.step, self.cfg):.3g}); "
                         f"{kept}. Start over with a lower --lr (and --overwrite)")

    def _on_sigint(self, signum, frame) -> None:
        if self.s.stop_requested:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        self.s.stop_requested = True

    # --- finish ------------------------------------------------------------------------------------------------
    def _finish(self) -> None:
        """An interrupted run saves where it stopped (resumable); every run records why it stopped."""
        s = self.s
        if not self.dist.master:
            return
        if s.stop_reason == STOP_INTERRUPTED:
            checkpoint.save(self._checkpoint(with_optimizer=True), self.vdir / storemod.CKPT_LAST)
            cards.write_progress(self.store, self.vid, self._progress_facts())
        if s.stop_reason == STOP_PATIENCE:
            self.progress.log(f"early stop at iter {s.step}: no better validation loss in {s.evals_since_best} "
                              f"evaluations (patience {self.cfg.patience})")
        cards.write_stop(self.store, self.vid, s.step, s.stop_reason)

    # --- helpers -----------------------------------------------------------------------------------------------
    def _elapsed(self) -> float:
        return self.s.prev_seconds + time.perf_counter() - self.t_run

    def _tokens_seen(self) -> int:
        return self.s.prev_tokens + (self.s.step - self.s.start_step) * self.tokens_per_iter

    def _progress_facts(self) -> cards.Progress:
        return cards.Progress(self.s.step, self._tokens_seen(), self._elapsed(), self.s.ms_per_iter())

    def _checkpoint(self, with_optimizer: bool) -> dict:
        s = self.s
        ckpt = {
            "model": self.raw_model.state_dict(),
            "model_args": self.gconf.to_dict(),
            "iter_num": s.step,
            "best_val_loss": s.best_val,
            "evals_since_best": s.evals_since_best,
            "config": self.cfg.to_dict(),
            "tokenizer": self.dataset.meta["tokenizer"],
            "dataset": cards.dataset_facts(self.dataset.meta),
            "training_seconds": self._elapsed(),
            "tokens_seen": self._tokens_seen(),
        }
        if with_optimizer:
            rng = {"torch": torch.get_rng_state()}
            if self.device_type == "cuda":
                rng["cuda"] = torch.cuda.get_rng_state()
            ckpt |= {"optimizer": self.optimizer.state_dict(), "rng": rng}
        return ckpt

