"""`gptzoo train`: train (or resume) a variant at the chosen depth."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from gptzoo.cli.common import DataDirOpt, StoreOpt, err, fail, handle_errors, open_store, out
from gptzoo.zoo.presets import BY_DEPTH, CANONICAL_DEPTHS, PROFILES
from gptzoo.zoo.presets import preset as preset_values

Hyper = "Hyper-parameters (override the preset)"
# Overrides that change what a run costs; without any, `train` states the preset's expected time before it starts.
COST_OVERRIDES = ("max_iters", "n_embd", "n_head", "block_size", "batch_size", "gradient_accumulation_steps")


def _per_depth(profile: str, key: str) -> str:
    """A preset value by depth for --help, from the presets themselves: '1 layer: 0.1, 4: 0.2, ..., 12+: 0.3'."""
    entries = [(d, preset_values(profile, d)[key]) for d, _ in BY_DEPTH.get(profile, ())]
    if len({v for _, v in entries}) < 2:
        return f"{PROFILES[profile][key]:g}"
    parts = [f"{d}{'+' if i == len(entries) - 1 else ''}: {v:g}" for i, (d, v) in enumerate(entries)]
    return "by depth (layers " + ", ".join(parts) + ")"


@handle_errors
def train(
    layers: Annotated[int | None, typer.Option("--layers", "-l", min=1, help="Depth: number of transformer layers.")]
    = None,
    all_depths: Annotated[
        bool, typer.Option("--all", help=f"Train every canonical depth ({', '.join(map(str, CANONICAL_DEPTHS))}).")
    ] = False,
    preset: Annotated[
        str, typer.Option(help="Width profile: cpu (128 wide; context, steps and learning rate per depth, so that "
                          "deeper variants are better), gpu (384 wide, nanoGPT's shakespeare_char with dropout growing "
                          "with depth and early stopping), nanogpt-cpu / nanogpt-gpu (nanoGPT's exact recipes, for "
                          "comparisons) or auto (gpu when CUDA is available, else cpu).")
    ] = "auto",
    max_iters: Annotated[int | None, typer.Option(
        min=1, help=f"Optimizer steps. [default: cpu {_per_depth('cpu', 'max_iters')}; gpu "
        f"{PROFILES['gpu']['max_iters']}]", rich_help_panel=Hyper, show_default=False)] = None,
    n_embd: Annotated[int | None, typer.Option(min=1, help="Width.", rich_help_panel=Hyper)] = None,
    n_head: Annotated[int | None, typer.Option(min=1, help="Attention heads.", rich_help_panel=Hyper)] = None,
    block_size: Annotated[int | None, typer.Option(
        min=1, help=f"Context length. [default: cpu {_per_depth('cpu', 'block_size')}; gpu "
        f"{PROFILES['gpu']['block_size']}]", rich_help_panel=Hyper, show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Sequences per micro-batch.", rich_help_panel=Hyper)]
    = None,
    grad_accum: Annotated[int | None, typer.Option(min=1, help="Micro-batches per step.", rich_help_panel=Hyper)]
    = None,
    lr: Annotated[float | None, typer.Option(
        help=f"Peak learning rate. [default: cpu {_per_depth('cpu', 'learning_rate')}; gpu "
        f"{_per_depth('gpu', 'learning_rate')}; nanogpt-cpu/-gpu {PROFILES['nanogpt-cpu']['learning_rate']:g}]",
        rich_help_panel=Hyper, show_default=False)] = None,
    min_lr: Annotated[float | None, typer.Option(
        help="Final learning rate (cosine floor). [default: a tenth of the preset's peak]", rich_help_panel=Hyper,
        show_default=False)] = None,
    warmup_iters: Annotated[int | None, typer.Option(min=0, help="Warmup steps.", rich_help_panel=Hyper)] = None,
    weight_decay: Annotated[float | None, typer.Option(min=0, help="AdamW weight decay.", rich_help_panel=Hyper)]
    = None,
    beta1: Annotated[float | None, typer.Option(min=0, max=0.9999, help="AdamW beta1.", rich_help_panel=Hyper)]
    = None,
    beta2: Annotated[float | None, typer.Option(min=0, max=0.9999, help="AdamW beta2.", rich_help_panel=Hyper)]
    = None,
    grad_clip: Annotated[float | None, typer.Option(min=0, help="Gradient-norm clip (0: off).", rich_help_panel=Hyper)]
    = None,
    dropout: Annotated[float | None, typer.Option(
        min=0, max=0.99, help=f"Dropout. [default: cpu {_per_depth('cpu', 'dropout')}; gpu "
        f"{_per_depth('gpu', 'dropout')}; nanogpt-gpu {PROFILES['nanogpt-gpu']['dropout']:g}]", rich_help_panel=Hyper,
        show_default=False)] = None,
    arch: Annotated[str | None, typer.Option(
        help="Block family: gpt2 (nanoGPT's) or oss (GPT-OSS-style: RMSNorm, RoPE, grouped-query attention, "
        "sliding/full layers, attention sinks, SwiGLU, optional MoE; docs/oss.md). [default: gpt2]",
        rich_help_panel=Hyper, show_default=False)] = None,
    kv_heads: Annotated[int | None, typer.Option(min=1, help="oss: key/value heads (divides --n-head). [default: 2]",
                                                 rich_help_panel=Hyper, show_default=False)] = None,
    window: Annotated[int | None, typer.Option(min=1, help="oss: sliding window of the even layers, in tokens. "
                                               "[default: half the preset's context]", rich_help_panel=Hyper,
                                               show_default=False)] = None,
    rope_theta: Annotated[float | None, typer.Option(min=1, help="oss: RoPE base. [default: 10000]",
                                                     rich_help_panel=Hyper, show_default=False)] = None,
    experts: Annotated[int | None, typer.Option(min=0, help="oss: MoE experts per layer (0: dense). [default: 0]",
                                                rich_help_panel=Hyper, show_default=False)] = None,
    experts_per_token: Annotated[int | None, typer.Option(min=1, help="oss: experts per token. [default: 2]",
                                                          rich_help_panel=Hyper, show_default=False)] = None,
    bias: Annotated[bool | None, typer.Option("--bias/--no-bias", help="Biases in Linear/LayerNorm.",
                                              rich_help_panel=Hyper, show_default=False)] = None,
    eval_interval: Annotated[int | None, typer.Option(min=1, help="Evaluate and save every N steps.",
                                                      rich_help_panel=Hyper)] = None,
    eval_iters: Annotated[int | None, typer.Option(min=1, help="Batches per split per evaluation.",
                                                   rich_help_panel=Hyper)] = None,
    patience: Annotated[int | None, typer.Option(
        min=0, help="Early stopping: stop after N evaluations without a better validation loss; 0 turns it off. "
        f"[default: {PROFILES['gpu']['patience']} for gpu, off for cpu and nanogpt-*] May change on --resume.",
        rich_help_panel=Hyper, show_default=False)]
    = None,
    seed: Annotated[int | None, typer.Option(help="Seed for init, dropout and data order.", rich_help_panel=Hyper)]
    = None,
    dataset: Annotated[str | None, typer.Option(help="Prepared dataset to train on. [default: shakespeare_char, "
                                                "prepared on first use]", show_default=False)] = None,
    name: Annotated[str | None, typer.Option(help="Variant id. [default: <dataset>-<layers>l, <dataset>-<layers>l-oss "
                                             "with --arch oss]", show_default=False)]
    = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the variant from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing variant of the same id.")]
    = False,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N. [default: auto]",
                                               show_default=False)] = None,
    compile_model: Annotated[bool | None, typer.Option(
        "--compile/--no-compile", help="torch.compile the model: a one-off compile (about a minute) for fused "
        "kernels; the oss block's step then costs about 1.1x gpt2's instead of 1.6x (docs/oss.md). Needs a C++ "
        "compiler on CPU.", show_default=False)] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for torch. [default: all cores]",
                                                show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Train even past 100M parameters (refused otherwise).")]
    = False,
    store: StoreOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Train a GPT at the chosen depth on tiny-Shakespeare (or a prepared dataset) into the store.

    Evaluates every --eval-interval steps on fixed windows, keeps the best-val and the latest checkpoint
    (atomically), logs every evaluation to train-log.jsonl and writes the variant's card.json. When the run ends
    (its last step, early stopping with --patience, or Ctrl-C) the best checkpoint is scored on the whole validation
    split: that is the card's val_loss, and the card records where and why training stopped. --resume continues
    exactly where it stopped. Launch with `torchrun --nproc_per_node N` for DDP.
    """
    import torch

    from gptzoo.trainer.loop import train as run_training

    if (layers is None) == (not all_depths):
        fail("give exactly one of --layers N or --all", code=2)
    if all_depths and name:
        fail("--name names one variant; it cannot be combined with --all", code=2)
    if threads:
        torch.set_num_threads(threads)
    overrides = dict(
        max_iters=max_iters, n_embd=n_embd, n_head=n_head, block_size=block_size, batch_size=batch_size,
        gradient_accumulation_steps=grad_accum, learning_rate=lr, min_lr=min_lr, warmup_iters=warmup_iters,
        weight_decay=weight_decay, beta1=beta1, beta2=beta2, grad_clip=grad_clip, dropout=dropout, bias=bias,
        eval_interval=eval_interval, eval_iters=eval_iters, patience=patience, seed=seed, dataset=dataset,
        device=device, compile=compile_model, arch=arch, kv_heads=kv_heads, window=window, rope_theta=rope_theta,
        experts=experts, experts_per_token=experts_per_token,
    )
    the_store = open_store(store)
    depths = CANONICAL_DEPTHS if all_depths else [layers]
    first_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, one process speaks
    # the preset's cost (the reference times are gpt2's)
    if first_rank and not resume and not any(overrides[k] is not None for k in COST_OVERRIDES + ("arch",)):
        from gptzoo.trainer.config import TrainConfig, time_statement

        cuda = torch.cuda.is_available()
        out.print(time_statement([TrainConfig.from_preset(preset, d, cuda) for d in depths]), highlight=False)
    for depth in depths:
        result = run_training(depth, preset, overrides, the_store, data_dir, name or _family_name(arch, dataset, depth),
                              resume, overwrite, not quiet, allow_large=yes)
        if result.variant is None:  # a non-zero DDP rank: rank 0 reports
            continue
        v = result.variant
        if result.interrupted:
            err.print(f"interrupted at iter {result.iterations}: saved {v.dir}; continue with --resume")
            raise typer.Exit(130)
        stopped = " (early stop: patience)" if result.stop_reason == "patience" else ""
        out.print(
            f"{v.id}: val loss {v.card.val_loss:.4f} on the whole validation split (best at iter {v.card.best_iter} "
            f"of {result.iterations}{stopped}), {v.card.params:,} params, {_speed(result)} -> {v.dir}",
            highlight=False,
        )


def _family_name(arch: str | None, dataset: str | None, depth: int) -> str | None:
    """The default id of a non-gpt2 variant, `<dataset>-<N>l-<arch>`, so the block families' ids never collide
    (gpt2 keeps the trainer's own default, `<dataset>-<N>l`)."""
    if arch in (None, "gpt2"):
        return None
    from gptzoo.zoo.prepare import DEFAULT_DATASET
    from gptzoo.zoo.store import variant_id

    return f"{variant_id(dataset or DEFAULT_DATASET, depth)}-{arch}"


def _speed(result) -> str:
    """The run's one speed figure, as the progress bar showed it and the card keeps it (ms_per_iter)."""
    from gptzoo.trainer.loop import SETUP_STEPS

    if result.ms_per_iter is None:
        return f"speed not measured (a run's first {SETUP_STEPS} steps pay one-off costs and are not timed)"
    return f"{result.tokens_per_s:,.0f} tok/s (median step: {result.ms_per_iter:.1f} ms, evaluations excluded)"
