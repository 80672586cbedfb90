"""A checkpoint in nanoGPT's own format, made here, imported, exported, and generated from."""

import pickle

import torch

from gptzoo.exports.onnx_export import export_variant
from gptzoo.zoo.generate import generate
from gptzoo.zoo.model import GPT, GPTConfig
from gptzoo.zoo.runtime import OnnxModel
from gptzoo.zoo.sampling import SamplingParams
from gptzoo.zoo.store import Store
from gptzoo.zoo.tokenizers import from_spec


def write_nanogpt_checkpoint(folder, chars):
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
        "config": {"dataset": "shakespeare_char", "batch_size": 64, "eval_iters": 200, "compile": True},
    }, folder / "ckpt.pt")
    with open(folder / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)),
                     "stoi": {c: i for i, c in enumerate(chars)}}, f)
    return model.eval()


def test_import_export_and_greedy_equals_nanogpt_generate(tmp_path):
    chars = "\n !',.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    reference = write_nanogpt_checkpoint(tmp_path, chars)
    from gptzoo.zoo.nanogpt import import_checkpoint

    store = Store(tmp_path / "store")
    v = import_checkpoint(store, tmp_path / "ckpt.pt", tmp_path / "meta.pkl")
    assert v.id == "nanogpt-shakespeare-char-2l"
    assert abs(v.card.val_loss - 1.4697) < 1e-6 and v.card.iterations == 5000
    assert v.card.tokenizer == {"kind": "char", "chars": chars}
    facts = export_variant(v)
    assert facts.parity["passed"]
    tok = from_spec(v.card.tokenizer)
    prompt = "ROMEO:"
    (res,) = generate(OnnxModel(v.path("model.onnx")), tok, [prompt], SamplingParams(max_tokens=50, temperature=0),
                      policy="exact")
    ids = torch.tensor([tok.encode(prompt)])
    with torch.no_grad():
        ref = reference.generate(ids, 50, temperature=1.0, top_k=1)[0, ids.shape[1]:].tolist()
    assert res.tokens == ref


def test_meta_pickle_with_code_is_refused(tmp_path):
    import pytest

    from gptzoo.zoo.checkpoint import CheckpointError
    from gptzoo.zoo.nanogpt import read_meta

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "meta.pkl").write_bytes(pickle.dumps({"itos": Evil()}))
    with pytest.raises(CheckpointError, match="only plain data"):
        read_meta(tmp_path / "meta.pkl")
