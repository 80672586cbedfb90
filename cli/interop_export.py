"""`gptzoo export --format gguf|hf`: the interop formats (gptzoo.exports.gguf_export, hf_export)."""

from __future__ import annotations

from pathlib import Path

from gptzoo.cli.common import err, fail, out


def export_interop(variants, fmt: str, quantize: bool, data_dir: Path | None) -> int:
    """Export each variant; the exit code (1 when any check failed)."""
    try:
        if fmt == "gguf":
            import gguf  # noqa: F401
        import safetensors  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError as e:
        fail(f"--format {fmt} needs the interop extra ({e.name} is missing): pip install 'gptzoo[interop]'", code=2)
    from gptzoo.exports import llama_check
    from gptzoo.exports.gguf_export import GgufError, export_gguf
    from gptzoo.exports.hf_export import export_hf
    from gptzoo.exports.parity import ParityError
    from gptzoo.zoo.tokenizers import from_spec

    def say(m: str) -> None:
        err.print(m, highlight=False)

    def llama(variant, model, path):
        prompt = from_spec(variant.card.tokenizer).encode("\n")[:1] or [0]
        return llama_check.check(model, path, prompt)

    failed = 0
    for v in variants:
        try:
            if fmt == "hf":
                f = export_hf(v, say)
                c = f.checks
                how = (f"max |Δlogits| {c['max_abs_logit_diff']:.2g}, greedy {c['greedy_tokens_identical']}/"
                       f"{c['greedy_tokens']} tokens identical" if "max_abs_logit_diff" in c else c["checked_with"])
                out.print(f"{v.id}: {v.path(f.file)}/ ({f.bytes / 1e6:.1f} MB), {how}", highlight=False)
                continue
            for f in export_gguf(v, quantize, data_dir, llama, say):
                lc = f.checks.get("llama_cpp", {})
                lc_s = lc.get("skipped") or (f"llama.cpp check failed: {lc['failed']}" if "failed" in lc else
                                             f"llama.cpp greedy: {lc['identical_prefix']}/{lc['tokens']} tokens "
                                             f"identical before any difference")
                val = f", val loss {f.val_loss:.4f}" if f.val_loss is not None else ""
                out.print(f"{v.id}: {v.path(f.file)} ({f.quantization}, {f.bytes / 1e6:.1f} MB{val}), "
                          f"{f.checks['tensors']} tensors read back; {lc_s}", highlight=False)
        except (ParityError, GgufError) as e:
            err.print(f"[bold red]error:[/] {v.id}: {e}", highlight=False)
            failed += 1
    return 1 if failed else 0
