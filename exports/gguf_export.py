"""`gptzoo export --format gguf`: model.gguf (F32) and, with --quantize int8, model-q8_0.gguf, for llama.cpp/Ollama.

Architecture `gpt2` (llama.cpp's gpt2 graph): every tensor in nanoGPT's [out, in] layout, every bias present (zeros
for a bias-free model), `output` only for an untied head. Tokens are spelled in GPT-2's byte-to-unicode form; a char
vocabulary gets merges only for its multi-byte characters (and one inert merge, as llama.cpp wants a non-empty list).
A char vocabulary has no end-of-text token: BOS/EOS are its rarest character (`end_of_text`, not llama.cpp's default
11), so run char models with `ignore_eos` for a fixed length. llama.cpp computes GELU with its tanh form: a zoo model
trained with exact GELU
runs there slightly differently (docs/interop.md). The check here reads every tensor and key back with `gguf`; the
Q8_0 file's validation loss is measured with its weights dequantized into the torch model (the zoo's int8 model of
that file), which is also what llama.cpp's greedy tokens on the Q8_0 file are compared with.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from gptzoo.zoo import atomic, checkpoint, hf_format
from gptzoo.zoo import datasets as dsmod
from gptzoo.zoo.card import EvalFacts, InteropFacts
from gptzoo.zoo.errors import GptzooError, Unsupported
from gptzoo.zoo.evaluate import estimate
from gptzoo.zoo.kv_step import OSS_NOT_YET
from gptzoo.zoo.sources import sha256_file
from gptzoo.zoo.store import Store, Variant

GGUF_F32, GGUF_Q8 = "model.gguf", "model-q8_0.gguf"
_LAYER = {"ln_1.weight": "attn_norm.weight", "ln_1.bias": "attn_norm.bias", "attn.c_attn.weight": "attn_qkv.weight",
          "attn.c_attn.bias": "attn_qkv.bias", "attn.c_proj.weight": "attn_output.weight",
          "attn.c_proj.bias": "attn_output.bias", "ln_2.weight": "ffn_norm.weight", "ln_2.bias": "ffn_norm.bias",
          "mlp.c_fc.weight": "ffn_up.weight", "mlp.c_fc.bias": "ffn_up.bias", "mlp.c_proj.weight": "ffn_down.weight",
          "mlp.c_proj.bias": "ffn_down.bias"}


class GgufError(GptzooError):
    """A GGUF file read back differently from what was written."""


def gguf_tensors(model) -> dict[str, np.ndarray]:
    """The zoo model's weights under llama.cpp's gpt2 names, biases completed with zeros."""
    c = model.config
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    zero = {"ln_1.bias": c.n_embd, "ln_2.bias": c.n_embd, "attn.c_attn.bias": 3 * c.n_embd,
            "attn.c_proj.bias": c.n_embd, "mlp.c_fc.bias": 4 * c.n_embd, "mlp.c_proj.bias": c.n_embd}
    out = {"token_embd.weight": state["transformer.wte.weight"],
           "position_embd.weight": state["transformer.wpe.weight"],
           "output_norm.weight": state["transformer.ln_f.weight"],
           "output_norm.bias": state.get("transformer.ln_f.bias", np.zeros(c.n_embd, np.float32))}
    for i in range(c.n_layer):
        for ours, theirs in _LAYER.items():
            t = state.get(f"transformer.h.{i}.{ours}")
            out[f"blk.{i}.{theirs}"] = t if t is not None else np.zeros(zero[ours], np.float32)
    if not c.tied_head:
        out["output.weight"] = state["lm_head.weight"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def vocabulary(tokenizer: dict) -> tuple[list[str], list[str], int]:
    """Token strings (byte-to-unicode spelling), merges and the BOS/EOS id."""
    if tokenizer["kind"] == "gpt2":
        vocab, merges = hf_format.gpt2_vocab_merges()
        tokens = [s for s, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
        return tokens, [f"{a} {b}" for a, b in merges], 50256
    tokens = [hf_format.spell(ch.encode()) for ch in tokenizer["chars"]]
    merges: list[str] = []
    for t in tokens:  # a multi-byte character is merged from its byte symbols, left to right
        for j in range(2, len(t) + 1):
            merges.append(f"{t[:j - 1]} {t[j - 1]}")
    unused = [s for s in hf_format.byte_to_unicode().values() if s not in set(tokens)]
    merges = merges or [f"{unused[0]} {unused[1]}"]  # inert: neither symbol is in the vocabulary
    return tokens, merges, end_of_text(tokenizer["chars"])


# A char vocabulary has no end-of-text token, but llama.cpp needs one, stops when it is sampled and forbids it under
# ignore_eos; the rarest characters of English text cost least (tiny-Shakespeare holds one '$' and few '&' or '3').
RARE_CHARS = "$&3ZXQJ"


def end_of_text(chars: str) -> int:
    """The id llama.cpp takes as BOS/EOS for a char vocabulary: its rarest character we know of, else the last id."""
    return next((chars.index(c) for c in RARE_CHARS if c in chars), len(chars) - 1)


def keys(model, variant_id: str, tokenizer: dict, file_type: int) -> dict[str, object]:
    c = model.config
    tokens, merges, special = vocabulary(tokenizer)
    if len(tokens) < c.vocab_size:  # nanoGPT pads GPT-2's 50257 to 50304: the extra ids carry no text
        tokens = tokens + [f"[PAD{i}]" for i in range(len(tokens), c.vocab_size)]
    return {"general.name": variant_id, "general.file_type": file_type, "gpt2.context_length": c.block_size,
            "gpt2.embedding_length": c.n_embd, "gpt2.block_count": c.n_layer,
            "gpt2.feed_forward_length": 4 * c.n_embd, "gpt2.attention.head_count": c.n_head,
            "gpt2.attention.layer_norm_epsilon": 1e-5, "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.pre": "gpt-2", "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.merges": merges,
            "tokenizer.ggml.bos_token_id": special, "tokenizer.ggml.eos_token_id": special,
            "tokenizer.ggml.add_bos_token": False}


def write_gguf(model, variant_id: str, tokenizer: dict, path: Path, q8: bool = False) -> dict[str, np.ndarray]:
    """Write the file; returns what each tensor holds after quantization (dequantized), for the read-back check."""
    import gguf

    Q8 = gguf.GGMLQuantizationType.Q8_0
    w = gguf.GGUFWriter(str(path), "gpt2")
    for k, v in keys(model, variant_id, tokenizer, 7 if q8 else 0).items():
        if isinstance(v, bool):
            w.add_bool(k, v)
        elif isinstance(v, int):
            w.add_uint32(k, v)
        elif isinstance(v, float):
            w.add_float32(k, v)
        elif isinstance(v, str):
            w.add_string(k, v)
        else:
            w.add_array(k, v)
    expected = {}
    for name, t in gguf_tensors(model).items():
        if q8 and t.ndim == 2 and t.shape[1] % 32 == 0 and name != "position_embd.weight":
            q = gguf.quants.quantize(t, Q8)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=Q8)
            expected[name] = gguf.quants.dequantize(q, Q8).reshape(t.shape)
        else:
            w.add_tensor(name, t)
            expected[name] = t
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return expected


def read_back(path: Path, expected: dict[str, np.ndarray], want_keys: dict[str, object]) -> dict:
    """Every tensor (values and shape) and every key we wrote, read back with gguf's reader."""
    import gguf

    r = gguf.GGUFReader(str(path))
    got = {}
    for t in r.tensors:
        data = np.asarray(t.data)
        if t.tensor_type == gguf.GGMLQuantizationType.Q8_0:
            data = gguf.quants.dequantize(data, t.tensor_type)
        got[t.name] = data.reshape(expected[t.name].shape) if t.name in expected else data
    bad = sorted(set(got) ^ set(expected)) + [n for n in expected if n in got and not np.array_equal(got[n],
                                                                                                    expected[n])]
    for k, v in want_keys.items():
        f = r.get_field(k)
        back = None if f is None else f.contents()
        close = isinstance(v, float) and back is not None and abs(back - v) < 1e-9  # stored as float32
        if not (close or back == v):
            bad.append(k)
    if bad:
        raise GgufError(f"{path.name} reads back differently: {', '.join(bad[:8])}")
    return {"read_back": "gguf " + _version("gguf"), "tensors": len(expected), "keys": len(want_keys)}


def export_gguf(variant: Variant, quantize: bool = False, data_dir: Path | None = None, llama=None,
                say=lambda m: None) -> list[InteropFacts]:
    """model.gguf (and model-q8_0.gguf), each read back; `llama`, when given, is called with (variant, model, path)
    and returns the llama.cpp agreement figures to record (gptzoo.exports.llama_check)."""
    if variant.card.arch != "gpt2":
        raise Unsupported(OSS_NOT_YET)
    store = Store(variant.dir.parent)
    store.ensure_writable(variant.dir)
    _, model = checkpoint.load_variant(variant)
    card = variant.card
    done = []
    for name, q8 in [(GGUF_F32, False)] + ([(GGUF_Q8, True)] if quantize else []):
        target = variant.path(name)
        say(f"writing {target.name} ({'Q8_0' if q8 else 'F32'})")
        with atomic.atomic_path(target) as tmp:
            expected = write_gguf(model, variant.id, card.tokenizer, tmp, q8)
            checks = read_back(tmp, expected, keys(model, variant.id, card.tokenizer, 7 if q8 else 0))
        val, ran = None, model
        if q8:  # the zoo's own int8 model: these Q8_0 weights, dequantized, in the torch model
            ran = dequantized_model(model, expected)
            val = _loss(ran, variant, data_dir, say)
        if llama is not None:  # llama.cpp's greedy tokens against the model with the same weights
            checks["llama_cpp"] = llama(variant, ran, target)
        done.append(InteropFacts(file=name, sha256=sha256_file(target), bytes=target.stat().st_size,
                                 quantization="Q8_0" if q8 else "F32", val_loss=val, checks=checks,
                                 exported_at=datetime.now(UTC).isoformat(timespec="seconds")))
    kept = [g for g in (card.gguf or []) if g.file not in {d.file for d in done}]
    card.gguf = kept + done
    store.save_card(card)
    return done


def dequantized_model(model, tensors: dict[str, np.ndarray]):
    """A copy of the torch model holding the Q8_0 weights, dequantized."""
    import copy

    q = copy.deepcopy(model)
    sd = q.state_dict()
    back = {v: k for k, v in _LAYER.items()}
    for name, t in tensors.items():
        if name.startswith("blk."):
            _, i, rest = name.split(".", 2)
            key = f"transformer.h.{i}.{back[rest]}"
        else:
            key = {"token_embd.weight": "transformer.wte.weight", "output.weight": "lm_head.weight"}.get(name)
        if key in sd:
            sd[key] = torch.from_numpy(np.array(t)).view_as(sd[key])
    q.load_state_dict(sd)
    return q


def _loss(q, variant: Variant, data_dir, say) -> float:
    """The Q8_0 model scored on the card's validation windows."""
    say("measuring the Q8_0 weights' validation loss")
    ev = variant.card.eval or EvalFacts()
    data = dsmod.for_variant(variant, data_dir)
    return float(estimate(q, {"val": data.val}, ev.batch_size, ev.windows_per_split)["val"])


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
