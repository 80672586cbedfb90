"""`gptzoo generate`: a completion from one variant, on onnxruntime (default) or torch."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from gptzoo.cli.common import LayersOpt, ModelOpt, StoreOpt, err, fail, handle_errors, open_store, resolve


@handle_errors
def generate_cmd(
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Text to continue.")],
    layers: LayersOpt = None,
    model: ModelOpt = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", min=1, help="Tokens to generate at most.")] = 200,
    temperature: Annotated[float, typer.Option(min=0, help="Sampling temperature; 0 is greedy.")] = 0.8,
    top_k: Annotated[int | None, typer.Option(min=1, help="Sample from the k most likely tokens only.")] = None,
    top_p: Annotated[float | None, typer.Option(min=0, max=1, help="Nucleus sampling threshold.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed: the same seed gives the same text.")] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop before this text (repeatable).")] = None,
    stream: Annotated[bool, typer.Option("--stream", help="Print text as it is generated.")] = False,
    backend: Annotated[str, typer.Option(help="onnx (the exported model.onnx) or torch (the checkpoint).")] = "onnx",
    policy: Annotated[str | None, typer.Option(help="Past the context window: slide (keep the window's last 3/4, no "
                                               "recompute; oss variants only, their default), half (re-prefill half "
                                               "the window; gpt2's default) or exact (nanoGPT's crop, recomputes "
                                               "every token).", show_default=False)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (onnx backend).")] = "auto",
    threads: Annotated[int | None, typer.Option(min=1, help="Threads for onnxruntime/torch. [default: all cores]",
                                                show_default=False)] = None,
    draft: Annotated[str | None, typer.Option(help="A shallower variant (id or alias, e.g. 1l) that drafts tokens for "
                                                   "this one to verify (speculative decoding): the same text at "
                                                   "temperature 0, the same distribution above it, faster when the "
                                                   "draft guesses well.", show_default=False)] = None,
    draft_tokens: Annotated[int, typer.Option(min=1, max=16, help="The most tokens the draft proposes per round "
                                              "(fewer after a guess it is unsure of, none while drafting does not "
                                              "pay).")] = 4,
    store: StoreOpt = None,
) -> None:
    """Generate text from a variant and print the completion (without the prompt) to stdout.

    Timing and the execution provider go to stderr (with --draft also the acceptance rate and the tokens per call of
    the target).
    """
    from gptzoo.zoo.generate import generate
    from gptzoo.zoo.sampling import SamplingParams
    from gptzoo.zoo.tokenizers import from_spec

    the_store = open_store(store)
    variant = resolve(the_store, model=model, layers=layers)
    if draft is not None:
        from gptzoo.zoo.errors import BadValue
        from gptzoo.zoo.speculative import check_policy

        try:
            check_policy(policy)
        except BadValue as e:
            fail(f"--draft: {e}", code=2)
        if backend != "onnx":
            fail("--draft needs the onnx backend", code=2)
    if policy == "slide" and variant.card.arch != "oss":
        fail(f"--policy slide needs relative positions (an oss variant); {variant.id} is a gpt2 variant: use half "
             "or exact", code=2)
    if backend == "onnx":
        from gptzoo.zoo.runtime import OnnxLoadError, open_variant

        if not variant.exported:
            fail(f"{variant.id} is not exported yet: run `gptzoo export --model {variant.id}` (or use --backend torch)")
        try:
            runner = open_variant(variant, device=device, threads=threads)
        except OnnxLoadError as e:
            fail(str(e))
    elif backend == "torch":
        import torch

        from gptzoo.zoo.checkpoint import load_variant
        from gptzoo.zoo.kv_step import TorchModel

        if threads:
            torch.set_num_threads(threads)
        runner = TorchModel(load_variant(variant)[1])
    else:
        fail(f"unknown backend {backend!r}; use onnx or torch", code=2)
    tokenizer = from_spec(variant.card.tokenizer)
    if not prompt:
        fail("the prompt is empty")
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                            stop=list(stop or []))

    def on_text(_row: int, delta: str) -> None:
        sys.stdout.write(delta)
        sys.stdout.flush()

    drafter = _open_draft(the_store, variant, draft, device, threads) if draft is not None else None
    t0 = time.perf_counter()
    if drafter is None:
        (result,) = generate(runner, tokenizer, [prompt], params, policy=policy, on_text=on_text if stream else None)
    else:
        from gptzoo.zoo.generate import generate_drafted

        result, spec = generate_drafted(runner, drafter, tokenizer, prompt, params, k=draft_tokens,
                                        on_text=(lambda d: on_text(0, d)) if stream else None, policy=policy)
    dt = time.perf_counter() - t0
    if not stream:
        sys.stdout.write(result.text)
    sys.stdout.write("\n")
    n = len(result.tokens)
    drafted = (f", drafted by {draft}: {100 * spec.acceptance:.0f}% of {spec.drafted} proposals accepted, "
               f"{n / max(spec.target_calls, 1):.2f} tokens per target call" if drafter is not None else "")
    err.print(f"[dim]{variant.id} on {runner.provider}: {n} tokens in {dt:.2f} s ({n / dt:,.0f} tok/s), "
              f"finish_reason={result.finish_reason}{drafted}[/]", highlight=False)


def _open_draft(store, target, draft: str, device: str, threads: int | None):
    """The draft variant's exported model, refused early when it cannot draft for `target`."""
    from gptzoo.zoo.runtime import OnnxLoadError, open_variant
    from gptzoo.zoo.speculative import check_variants

    d = resolve(store, model=draft, dataset=target.dataset_name)  # an alias prefers the target's dataset
    if warning := check_variants(target, d):
        err.print(f"[yellow]warning: {warning}[/]", highlight=False)
    try:
        return open_variant(d, device=device, threads=threads)
    except OnnxLoadError as e:
        fail(str(e))
