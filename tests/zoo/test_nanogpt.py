"""A checkpoint in nanoGPT's own format, made here, imported, exported, and generated from."""

import pickle

import torch

from gptzoo.exports.onnx_export import export_variant
from gptzoo.zoo.generate import generate
from gptzoo.zoo.runtime import OnnxModel
from gptzoo.zoo.sampling import SamplingParams
from gptzoo.zoo.store import Store
from gptzoo.zoo.tokenizers import from_spec
from tests.zoo.nanogpt_files import shakespeare_chars, write_nanogpt_checkpoint


def test_import_export_and_greedy_equals_nanogpt_generate(tmp_path, data_dir):
    chars = shakespeare_chars(data_dir)
    reference = write_nanogpt_checkpoint(tmp_path, chars)
    from gptzoo.zoo.nanogpt import import_checkpoint

    store = Store(tmp_path / "store")
    v = import_checkpoint(store, tmp_path / "ckpt.pt", tmp_path / "meta.pkl", data_dir=data_dir)
    assert v.id == "nanogpt-shakespeare-char-2l"
    assert abs(v.card.reported_val_loss - 1.4697) < 1e-6 and v.card.iterations == 5000
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
