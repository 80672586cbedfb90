"""The Hugging Face GPT-2 layout (`GPT2LMHeadModel`) beside the zoo's: weight names, config and tokenizer files.

Both directions live here (export in gptzoo.exports.hf_export, import in gptzoo.zoo.hf_import) so they cannot drift.
GPT-2's `c_attn`, `c_proj` and `c_fc` are Conv1D, whose weight is [in, out]: the transpose of nanoGPT's nn.Linear.
A bias-free zoo model gets zero biases (GPT-2 always has them). Tokenizers: a char vocabulary becomes a `tokenizers`
BPE with no merges (every character its own token, joined back without spaces); GPT-2 BPE becomes the real
vocab.json + merges.txt, derived from the tiktoken ranks the zoo already uses.
"""

from __future__ import annotations

import json
from functools import lru_cache

import torch

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# GPT2Config.activation_function for the zoo's GELU (`gelu` field of GPTConfig)
ACTIVATION = {"none": "gelu", "tanh": "gelu_new"}
TANH_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


def to_hf_state(model) -> dict[str, torch.Tensor]:
    """The zoo model's weights under GPT2LMHeadModel's names and layouts (contiguous, as safetensors wants)."""
    c = model.config
    out = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and c.tied_head:
            continue  # tied: GPT2LMHeadModel rebuilds it from wte
        t = t.detach().float()
        out[name] = (t.t() if name.endswith(CONV1D) else t).contiguous()
    if not c.bias:  # GPT-2 has every bias; zeros keep a bias-free model's function
        for i in range(c.n_layer):
            p = f"transformer.h.{i}."
            for n, size in (("ln_1", c.n_embd), ("ln_2", c.n_embd), ("attn.c_attn", 3 * c.n_embd),
                            ("attn.c_proj", c.n_embd), ("mlp.c_fc", 4 * c.n_embd), ("mlp.c_proj", c.n_embd)):
                out[p + n + ".bias"] = torch.zeros(size)
        out["transformer.ln_f.bias"] = torch.zeros(c.n_embd)
    return out


def from_hf_state(state: dict[str, torch.Tensor], n_layer: int) -> dict[str, torch.Tensor]:
    """GPT2LMHeadModel's weights as the zoo's (biases kept: the imported config says bias=True)."""
    out = {}
    for name, t in state.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # old transformers saved the causal mask as a buffer
        key = name if name.startswith(("transformer.", "lm_head.")) else "transformer." + name
        out[key] = (t.t() if key.endswith(CONV1D) else t).float().contiguous()
    return out


def hf_config(model, bos_eos: int) -> dict:
    """config.json for GPT2LMHeadModel: the keys that differ from GPT2Config's defaults, all stated."""
    c = model.config
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": c.vocab_size,
        "n_positions": c.block_size, "n_ctx": c.block_size, "n_embd": c.n_embd, "n_layer": c.n_layer,
        "n_head": c.n_head, "n_inner": 4 * c.n_embd, "activation_function": ACTIVATION[c.gelu],
        "layer_norm_epsilon": 1e-5, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "scale_attn_weights": True, "tie_word_embeddings": c.tied_head, "bos_token_id": bos_eos,
        "eos_token_id": bos_eos, "torch_dtype": "float32",
    }


def char_tokenizer_json(chars: str) -> str:
    """tokenizer.json (the `tokenizers` library's format) for a char vocabulary: id i is chars[i]."""
    from tokenizers import Tokenizer, decoders, models

    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(chars)}, merges=[]))
    tok.decoder = decoders.Fuse()  # characters join back without the spaces a plain decode would put between
    return tok.to_str(pretty=True)


def chars_from_tokenizer_json(text: str) -> str | None:
    """The char vocabulary a tokenizer.json written by char_tokenizer_json holds, else None."""
    spec = json.loads(text)
    model = spec.get("model") or {}
    vocab = model.get("vocab")
    if model.get("type") != "BPE" or model.get("merges") or not isinstance(vocab, dict):
        return None
    by_id = sorted((i, s) for s, i in vocab.items())
    if [i for i, _ in by_id] != list(range(len(by_id))) or not all(len(s) == 1 for _, s in by_id):
        return None
    return "".join(s for _, s in by_id)


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-ins for bytes (' ' -> 'Ġ', '\\n' -> 'Ċ'), as its vocab.json and GGUF spell tokens."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return table


def spell(data: bytes) -> str:
    table = byte_to_unicode()
    return "".join(table[b] for b in data)


@lru_cache(maxsize=1)
def gpt2_vocab_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """GPT-2's vocab.json and merges (in rank order) from tiktoken's r50k_base ranks: each multi-byte token's merge
    is the last step of byte-pair-encoding its own bytes with the merges ranked before it."""
    from gptzoo.zoo.tokenizers import GPT2Tokenizer

    enc = GPT2Tokenizer().enc
    ranks = enc._mergeable_ranks
    merges = []
    for token, _ in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            best = min(range(len(parts) - 1), key=lambda i: ranks.get(parts[i] + parts[i + 1], 1 << 30))
            parts[best:best + 2] = [parts[best] + parts[best + 1]]
        merges.append((spell(parts[0]), spell(parts[1])))
    vocab = {spell(t): r for t, r in ranks.items()}
    vocab["<|endoftext|>"] = enc.eot_token
    return vocab, merges


def gpt2_files() -> dict[str, str]:
    """The real GPT-2 tokenizer files: vocab.json, merges.txt and tokenizer_config.json."""
    vocab, merges = gpt2_vocab_merges()
    return {
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
        "tokenizer_config.json": json.dumps({"tokenizer_class": "GPT2Tokenizer", "model_max_length": 1024,
                                             "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                                             "unk_token": "<|endoftext|>", "add_prefix_space": False}),
    }
