"""`gptzoo bench`: generation speed across depths and backends, one process, one run."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gptzoo.cli.common import StoreOpt, err, fail, handle_errors, open_store, out


@handle_errors
def bench_cmd(
    threads: Annotated[int, typer.Option(min=1, help="Threads for torch and onnxruntime (the goals are 1-thread).")]
    = 1,
    repeats: Annotated[int, typer.Option(min=1, help="Runs per figure; the median is reported.")] = 3,
    depths: Annotated[str, typer.Option(help="Depths of the random-weight 384-wide models, comma-separated; "
                                        "empty for none.")] = "1,4,6,12",
    store_variants: Annotated[bool, typer.Option("--store-variants/--no-store-variants",
                                                 help="Also benchmark the store's exported variants.")] = True,
    quick: Annotated[bool, typer.Option("--quick", help="Fewer tokens per run (a smoke test, not figures).")] = False,
    policies: Annotated[bool, typer.Option("--policies", help="Instead: 1,000-token generations and validation loss "
                                           "under each context policy (exact, half; slide on oss variants).")] = False,
    speculative: Annotated[bool, typer.Option("--speculative", help="Instead: every (target, shallower draft) pair of "
                                              "the store's exported variants, greedy tokens/s with and without "
                                              "drafting at batch 1 and 8, acceptance, tokens per target call.")]
    = False,
    draft_tokens: Annotated[int, typer.Option(min=1, max=16, help="With --speculative: the most tokens drafted per "
                                              "round.")] = 4,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
    store: StoreOpt = None,
) -> None:
    """Measure tokens/s: nanoGPT-style generate (no cache) vs torch with a KV cache vs gptzoo on onnxruntime,
    batch 8 and 32 aggregate, time to first token and prefill speed, for each depth."""
    from gptzoo.measure.bench import as_dicts, run_bench, run_policies, run_speculative

    ds = tuple(int(d) for d in depths.split(",") if d.strip())
    if speculative:
        srow = run_speculative(open_store(store), threads, 200 if quick else 1000, k=draft_tokens, repeats=repeats,
                               say=lambda m: err.print(f"[dim]{m}[/]", highlight=False))
        if not srow:
            fail("no pair to measure: the store needs two exported variants of one tokenizer, of different depths")
        if as_json:
            print(json.dumps(as_dicts(srow), indent=2))
            return
        table = Table(title=f"speculative decoding, greedy ({threads} thread(s), medians of {repeats} runs, each "
                            "stepping the target alone and drafted in turn)")
        for c in ["target", "draft", "batch", "k", "tokens/row", "alone tok/s", "drafted tok/s", "speed-up",
                  "proposed", "accepted", "tokens/call", "same text"]:
            table.add_column(c, justify="left" if c in ("target", "draft") else "right")
        for r in srow:
            table.add_row(r.target, r.draft, str(r.batch), str(r.k), str(r.tokens), f"{r.plain_tok_s:,.0f}",
                          f"{r.spec_tok_s:,.0f}", f"{r.speedup:.2f}x", f"{r.drafted:,}",
                          f"{100 * r.acceptance:.0f}%" if r.drafted else "-", f"{r.tokens_per_call:.2f}",
                          "yes" if r.identical else "NO")
        Console(width=max(out.width, 170)).print(table)
        return
    if policies:
        prow = run_policies(open_store(store), threads, 200 if quick else 1000, ds,
                            say=lambda m: err.print(f"[dim]{m}[/]", highlight=False))
        if as_json:
            print(json.dumps(as_dicts(prow), indent=2))
            return
        table = Table(title="context policies: long generations and validation loss")
        for c in ["model", "policy", "tokens", "tok/s (1 stream)", "tok/s (8 streams)", "val loss under policy"]:
            table.add_column(c, justify="left" if c in ("model", "policy") else "right")
        for r in prow:
            table.add_row(r.model, r.policy, str(r.tokens), f"{r.tok_s:,.0f}",
                          f"{r.batch8_tok_s:,.0f}" if r.batch8_tok_s else "-",
                          f"{r.val_nll:.4f}" if r.val_nll is not None else "-")
        Console(width=max(out.width, 120)).print(table)
        return
    rows = run_bench(open_store(store), threads, repeats, ds, store_variants, quick,
                     say=lambda m: err.print(f"[dim]{m}[/]", highlight=False))
    if as_json:
        print(json.dumps(as_dicts(rows), indent=2))
        return
    table = Table(title=f"gptzoo bench ({threads} thread{'s' if threads > 1 else ''}, medians of {repeats})")
    cols = ["model", "arch", "layers", "params", "nanoGPT tok/s", "torch+KV tok/s", "onnx tok/s", "ms/token",
            "vs nanoGPT", "batch 8 tok/s", "batch 32 tok/s", "b32/b1", "TTFT ms", "prefill tok/s"]
    for c in cols:
        table.add_column(c, justify="left" if c in ("model", "arch") else "right")
    for r in rows:
        table.add_row(r.model, r.arch, str(r.n_layer), f"{r.params / 1e6:.2f}M", f"{r.nanogpt_tok_s:,.0f}",
                      f"{r.torch_kv_tok_s:,.0f}", f"{r.onnx_tok_s:,.0f}", f"{r.onnx_ms_per_token:.3f}",
                      f"{r.speedup_vs_nanogpt:.1f}x", f"{r.batch8_tok_s:,.0f}", f"{r.batch32_tok_s:,.0f}",
                      f"{r.batch32_vs_1:.1f}x", f"{r.ttft_ms:.2f}", f"{r.prefill_tok_s:,.0f}")
    Console(width=max(out.width, 170)).print(table)  # a wide table even when piped
