"""Import a Hugging Face GPT-2-architecture folder (GPT2LMHeadModel: GPT-2, distilgpt2 and the like) as a variant.

Read without transformers: config.json, the weights (model.safetensors, else pytorch_model.bin read weights-only) and
the tokenizer files. GPT-2's BPE (vocab.json + merges.txt, or a tokenizer.json, holding GPT-2's 50257 tokens) maps
to the zoo's `gpt2` tokenizer; a char tokenizer.json written by `gptzoo export --format hf` maps back to `char`.
The activation (exact or tanh GELU) and a tied or untied head come from config.json. Scored like a nanoGPT import
(gptzoo.zoo.nanogpt): on every window of the validation split of the dataset named (default `shakespeare`, GPT-2 BPE).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gptzoo.zoo import checkpoint, hf_format
from gptzoo.zoo.card import GPT2_VOCAB
from gptzoo.zoo.model import GPT, GPTConfig
from gptzoo.zoo.names import check_name
from gptzoo.zoo.nanogpt import write_import
from gptzoo.zoo.store import Store, Variant, variant_id

EXACT = ("gelu",)


def read_config(folder: Path) -> GPTConfig:
    path = folder / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise checkpoint.CheckpointError(f"cannot read {path}: {e}") from e
    if cfg.get("model_type") != "gpt2":
        raise checkpoint.CheckpointError(f"{folder} holds a {cfg.get('model_type')!r} model; only GPT-2-architecture "
                                         f"folders (model_type gpt2) import")
    act = cfg.get("activation_function", "gelu_new")
    if act not in EXACT + hf_format.TANH_ACTIVATIONS:
        raise checkpoint.CheckpointError(f"activation {act!r} is not a GELU the zoo's model has")
    n_embd = cfg.get("n_embd", 768)
    if cfg.get("n_inner") not in (None, 4 * n_embd):
        raise checkpoint.CheckpointError(f"n_inner {cfg['n_inner']} is not 4 × n_embd, the zoo's MLP width")
    if abs(cfg.get("layer_norm_epsilon", 1e-5) - 1e-5) > 1e-12:
        raise checkpoint.CheckpointError("layer_norm_epsilon must be 1e-5 (torch's LayerNorm default)")
    if cfg.get("scale_attn_by_inverse_layer_idx") or cfg.get("reorder_and_upcast_attn") or \
            cfg.get("scale_attn_weights", True) is False:
        raise checkpoint.CheckpointError("attention scaling options other than GPT-2's default are not supported")
    try:
        return GPTConfig(block_size=cfg.get("n_positions", 1024), vocab_size=cfg.get("vocab_size", GPT2_VOCAB),
                         n_layer=cfg.get("n_layer", 12), n_head=cfg.get("n_head", 12), n_embd=n_embd, bias=True,
                         gelu="none" if act in EXACT else "tanh",
                         tied_head=bool(cfg.get("tie_word_embeddings", True)))
    except (ValueError, TypeError) as e:
        raise checkpoint.CheckpointError(f"{path}: {e}") from e


def read_weights(folder: Path) -> tuple[dict[str, torch.Tensor], Path]:
    st, pt = folder / "model.safetensors", folder / "pytorch_model.bin"
    try:
        if st.is_file():
            from safetensors.torch import load_file

            return load_file(str(st)), st
        if pt.is_file():
            return torch.load(pt, map_location="cpu", weights_only=True), pt
    except Exception as e:  # safetensors and torch raise many types for foreign or truncated files
        raise checkpoint.CheckpointError(f"cannot read the weights in {folder}: {e}") from e
    raise checkpoint.CheckpointError(f"{folder} has no model.safetensors or pytorch_model.bin")


def read_tokenizer(folder: Path, vocab_size: int) -> dict:
    """The zoo tokenizer spec the folder's tokenizer files describe; refused unless it is GPT-2's BPE or a char one."""
    vocab_json, tok_json = folder / "vocab.json", folder / "tokenizer.json"
    if tok_json.is_file():
        chars = hf_format.chars_from_tokenizer_json(tok_json.read_text(encoding="utf-8"))
        if chars is not None:
            if len(chars) != vocab_size:
                raise checkpoint.CheckpointError(f"tokenizer.json has {len(chars)} characters, the model {vocab_size}")
            return {"kind": "char", "chars": chars}
    if vocab_json.is_file():
        vocab = json.loads(vocab_json.read_text(encoding="utf-8"))
    elif tok_json.is_file():
        vocab = (json.loads(tok_json.read_text(encoding="utf-8")).get("model") or {}).get("vocab") or {}
    else:
        raise checkpoint.CheckpointError(f"{folder} has no tokenizer (vocab.json + merges.txt or tokenizer.json)")
    if vocab != hf_format.gpt2_vocab_merges()[0]:
        raise checkpoint.CheckpointError("the folder's tokenizer is not GPT-2's BPE (nor a gptzoo char vocabulary)")
    if vocab_size < GPT2_VOCAB:
        raise checkpoint.CheckpointError(f"vocabulary of {vocab_size} is too small for GPT-2 BPE")
    return {"kind": "gpt2", "encoding": "r50k_base"}


def import_hf(store: Store, folder: Path, name: str | None = None, overwrite: bool = False,
              data_dir: Path | None = None, dataset: str | None = None, score: bool = True, say=None) -> Variant:
    """Import the GPT2LMHeadModel in `folder` as a store variant (scored on `dataset`, default shakespeare)."""
    folder = Path(folder)
    if name is not None:
        check_name(name, "variant id")
    dataset = dataset or "shakespeare"
    check_name(dataset, "dataset name")
    config = read_config(folder)
    state, weights = read_weights(folder)
    tokenizer = read_tokenizer(folder, config.vocab_size)
    model = GPT(config)
    zoo_state = hf_format.from_hf_state(state, config.n_layer)
    if config.tied_head:
        zoo_state["lm_head.weight"] = zoo_state["transformer.wte.weight"]
    try:
        model.load_state_dict(zoo_state)
    except RuntimeError as e:
        raise checkpoint.CheckpointError(f"the weights do not fit config.json: {str(e).splitlines()[0]}") from e
    model.eval()
    vid = name or "hf-" + variant_id(dataset, config.n_layer)
    ckpt = {"model": model.state_dict(), "model_args": config.to_dict(), "iter_num": 0, "config": {}}
    return write_import(store, vid, ckpt, weights, model, tokenizer, dataset, {}, overwrite=overwrite, score=score,
                        data_dir=data_dir, say=say, source="hf")
