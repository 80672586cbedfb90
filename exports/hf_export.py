"""`gptzoo export --format hf`: a Hugging Face GPT2LMHeadModel folder (config.json, model.safetensors, tokenizer).

Checked at export time like ONNX: when transformers is installed the folder is loaded back with
`GPT2LMHeadModel.from_pretrained` and compared with the torch model (max |Δlogits| within 1e-4 on every position of
a full context, and 300 greedy tokens, each from the last block_size tokens, identical); without transformers the
check is a read-back of every tensor with safetensors. A failed check writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import torch

from gptzoo.exports.parity import GREEDY_TOKENS, LOGIT_TOLERANCE, ParityError
from gptzoo.zoo import checkpoint, hf_format
from gptzoo.zoo.card import InteropFacts
from gptzoo.zoo.errors import Unsupported
from gptzoo.zoo.kv_step import OSS_NOT_YET
from gptzoo.zoo.sources import sha256_file
from gptzoo.zoo.store import Store, Variant

HF_DIR = "hf"


def write_folder(model, tokenizer: dict, folder: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer["kind"] == "char":
        files = {"tokenizer.json": hf_format.char_tokenizer_json(tokenizer["chars"]),
                 "tokenizer_config.json": json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                      "model_max_length": model.config.block_size})}
        bos_eos = 0  # a char vocabulary has no end-of-text token; say one explicitly so nothing guesses
    else:
        files = hf_format.gpt2_files()
        bos_eos = 50256
    files["config.json"] = json.dumps(hf_format.hf_config(model, bos_eos), indent=2)
    files["generation_config.json"] = json.dumps({"bos_token_id": bos_eos, "eos_token_id": bos_eos})
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    save_file(hf_format.to_hf_state(model), str(folder / "model.safetensors"), metadata={"format": "pt"})


def check_folder(model, folder: Path, tokens: int = GREEDY_TOKENS) -> dict:
    """The folder against the torch model: through transformers when installed, else a safetensors read-back."""
    try:
        from transformers import GPT2LMHeadModel
    except ImportError:
        from safetensors.torch import load_file

        back = load_file(str(folder / "model.safetensors"))
        want = hf_format.to_hf_state(model)
        same = back.keys() == want.keys() and all(torch.equal(back[k], want[k]) for k in want)
        return {"checked_with": "safetensors read-back", "tensors": len(want), "passed": same}
    hf = GPT2LMHeadModel.from_pretrained(str(folder)).eval()
    c = model.config
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, c.vocab_size, (2, c.block_size), generator=g)
    with torch.no_grad():
        ours, _ = model(ids, ids)  # with targets: logits at every position
        theirs = hf(ids).logits
        diff = float((ours - theirs).abs().max())
        same = greedy_both(model, hf, ids[:1, :4], tokens)
    return {"checked_with": "transformers " + _version("transformers"), "max_abs_logit_diff": diff,
            "greedy_tokens": tokens, "greedy_tokens_identical": same,
            "passed": diff <= LOGIT_TOLERANCE and same == tokens}


def greedy_both(model, hf, prompt: torch.Tensor, tokens: int) -> int:
    """Greedy tokens from the zoo model and a transformers model, each step from the last block_size tokens of its
    own text (so it runs past the context); how many agree before the first difference."""
    block = model.config.block_size
    a = b = prompt
    for i in range(tokens):
        na = model(a[:, -block:])[0][:, -1].argmax(-1, keepdim=True)
        nb = hf(b[:, -block:]).logits[:, -1].argmax(-1, keepdim=True)
        if not torch.equal(na, nb):
            return i
        a, b = torch.cat([a, na], 1), torch.cat([b, nb], 1)
    return tokens


def folder_digest(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


def export_hf(variant: Variant, say=lambda m: None) -> InteropFacts:
    """<variant>/hf/, checked; recorded as the card's `hf`. Raises ParityError (nothing kept) when it disagrees."""
    if variant.card.arch != "gpt2":
        raise Unsupported(OSS_NOT_YET)
    store = Store(variant.dir.parent)
    store.ensure_writable(variant.dir)
    _, model = checkpoint.load_variant(variant)
    target = variant.path(HF_DIR)
    tmp = variant.dir / f".{HF_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        say(f"writing {variant.id} as a Hugging Face GPT2LMHeadModel folder")
        write_folder(model, variant.card.tokenizer, tmp)
        say("checking it against the torch model")
        checks = check_folder(model, tmp)
        if not checks["passed"]:
            raise ParityError({"max_abs_logit_diff": checks.get("max_abs_logit_diff", float("nan")),
                               "greedy_tokens": checks.get("greedy_tokens", 0),
                               "greedy_tokens_identical": checks.get("greedy_tokens_identical", 0)})
        _swap(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    files = folder_digest(target)
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    facts = InteropFacts(file=HF_DIR, sha256=digest, files=files,
                         bytes=sum(p.stat().st_size for p in target.iterdir()), checks=checks,
                         exported_at=datetime.now(UTC).isoformat(timespec="seconds"))
    card = variant.card
    card.hf = facts
    store.save_card(card)
    return facts


def _swap(tmp: Path, target: Path) -> None:
    """Replace the folder in two renames, so a reader sees the old folder or the new one, never half of one."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
