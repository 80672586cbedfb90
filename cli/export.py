"""`gptzoo export`: ONNX files with a KV cache (default), GGUF files or Hugging Face folders, each checked."""

from __future__ import annotations

from typing import Annotated

import typer

from gptzoo.cli.common import (
    DataDirOpt,
    LayersOpt,
    ModelOpt,
    StoreOpt,
    err,
    fail,
    handle_errors,
    open_store,
    out,
    resolve,
)


@handle_errors
def export_cmd(
    layers: LayersOpt = None,
    model: ModelOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="onnx (the zoo's engine), gguf (llama.cpp, Ollama) or hf "
                                     "(a transformers GPT2LMHeadModel folder). Needs the interop extra for gguf/hf.")]
    = "onnx",
    all_variants: Annotated[bool, typer.Option("--all", help="Export every variant that has a checkpoint.")] = False,
    quantize: Annotated[
        str | None,
        typer.Option(help="Also write a quantized copy: onnx, a dynamically quantized variant of its own (<id>-int8); "
                          "gguf, model-q8_0.gguf (Q8_0). Only: int8."),
    ] = None,
    moe: Annotated[str, typer.Option(help="An oss variant's mixture of experts in the graph: op (onnxruntime's MoE "
                                           "op, which runs only the chosen experts) or dense (plain ops that run "
                                           "every expert, weighted; docs/oss.md measures both).")] = "op",
    store: StoreOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Export variants to ONNX (model.onnx in the variant's folder) with a KV cache.

    Every export is checked against the torch model (max |Δlogits| over a prefill and 32 cached decode steps at
    batch 1 and 3, and 300 greedy tokens past block_size); the figures go into card.json. An export that fails the
    check is not written and the command exits 1. With --quantize int8 the quantized copy's validation loss is
    measured on the validation split with onnxruntime.

    --format gguf writes model.gguf (model-q8_0.gguf too with --quantize int8), read back tensor by tensor; --format
    hf writes an hf/ GPT2LMHeadModel folder, checked through transformers (docs/interop.md).
    """
    from gptzoo.exports.onnx_export import export_variant
    from gptzoo.exports.parity import ParityError
    from gptzoo.exports.quantize import quantize_variant

    if moe not in ("op", "dense"):
        fail(f"unknown --moe {moe!r}; use op or dense", code=2)
    if quantize not in (None, "int8"):
        fail(f"unknown quantization {quantize!r}; only int8 is supported", code=2)
    if fmt not in ("onnx", "gguf", "hf"):
        fail(f"unknown format {fmt!r}; choose onnx, gguf or hf", code=2)
    if fmt == "hf" and quantize:
        fail("--quantize applies to onnx and gguf, not hf", code=2)
    the_store = open_store(store)
    if all_variants:
        variants = [v for v in the_store.variants() if not v.card.quantization]
        if not variants:
            fail(f"no variants to export in {the_store.root} (train one with `gptzoo train --layers 4`)")
    else:
        if layers is None and model is None:
            fail("name a variant with --layers N or --model ID, or pass --all", code=2)
        variants = [resolve(the_store, model=model, layers=layers)]
    if fmt != "onnx":
        from gptzoo.cli.interop_export import export_interop

        raise typer.Exit(export_interop(variants, fmt, quantize is not None, data_dir))
    failed = 0
    for v in variants:
        try:
            facts = export_variant(v, say=lambda m: err.print(m, highlight=False), moe_op=moe == "op")
        except ParityError as e:
            err.print(f"[bold red]error:[/] {v.id}: {e}", highlight=False)
            failed += 1
            continue
        p = facts.parity
        out.print(f"{v.id}: {v.path('model.onnx')} ({facts.bytes / 1e6:.1f} MB), max |Δlogits| "
                  f"{p['max_abs_logit_diff']:.2g}, greedy {p['greedy_tokens_identical']}/{p['greedy_tokens']} "
                  f"tokens identical", highlight=False)
        if quantize:
            q = quantize_variant(the_store, v, data_dir, say=lambda m: err.print(m, highlight=False))
            fp32 = "unscored" if v.card.val_loss is None else f"{v.card.val_loss:.4f}"
            out.print(f"{q.id}: int8 ({q.card.onnx.bytes / 1e6:.1f} MB), val loss {q.card.val_loss:.4f} "
                      f"(fp32 {fp32})", highlight=False)
    if failed:
        raise typer.Exit(1)
