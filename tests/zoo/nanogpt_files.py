"""Checkpoints in nanoGPT's own format (ckpt.pt + meta.pkl), written here for the import tests."""

import json
import pickle

import torch

from gptzoo.zoo.model import GPT, GPTConfig


def shakespeare_chars(data_dir) -> str:
    return json.loads((data_dir / "shakespeare_char" / "meta.json").read_text())["tokenizer"]["chars"]


def write_nanogpt_checkpoint(folder, chars, dataset="shakespeare_char"):
    model_args = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, bias=True, vocab_size=len(chars), dropout=0.0)
    torch.manual_seed(3)
    model = GPT(GPTConfig(**model_args))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    torch.save({
        "model": {f"_orig_mod.{k}": v for k, v in model.state_dict().items()},  # as saved after torch.compile
        "optimizer": opt.state_dict(),
        "model_args": model_args,
        "iter_num": 5000,
        "best_val_loss": torch.tensor(1.4697),
        "config": {"dataset": dataset, "batch_size": 64, "eval_iters": 200, "compile": True},
    }, folder / "ckpt.pt")
    with open(folder / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)),
                     "stoi": {c: i for i, c in enumerate(chars)}}, f)
    return model.eval()
