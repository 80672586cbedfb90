"""Importing a Hugging Face GPT-2 folder saved by transformers itself (random weights, 2 and 4 layers): gptzoo's ONNX
engine then writes exactly the greedy tokens transformers' own `generate` writes; two imports of one dataset form a
depth family whose shallow member drafts for the deep one."""

import pytest
import torch
from typer.testing import CliRunner

from gptzoo.cli.main import app
from gptzoo.exports.onnx_export import export_variant
from gptzoo.zoo.generate import Batch, generate_drafted
from gptzoo.zoo.runtime import OnnxModel
from gptzoo.zoo.sampling import SamplingParams
from gptzoo.zoo.store import ONNX, Store, family_id
from gptzoo.zoo.tokenizers import GPT2Tokenizer

transformers = pytest.importorskip("transformers", reason="needs the interop extra (pip install 'gptzoo[interop]')")

from gptzoo.zoo import hf_format  # noqa: E402
from gptzoo.zoo.hf_import import import_hf  # noqa: E402


def save_gpt2(folder, n_layer: int, tied: bool, seed: int):
    """A random GPT-2 (GPT-2's own GELU, biases) saved by transformers, with GPT-2's tokenizer files beside it."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(n_layer=n_layer, n_embd=32, n_head=2, n_positions=48, vocab_size=50257,
                                     tie_word_embeddings=tied)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(str(folder))
    for name, text in hf_format.gpt2_files().items():
        (folder / name).write_text(text, encoding="utf-8")
    return model


def onnx_greedy(path, prompt: list[int], n: int) -> list[int]:
    batch = Batch(OnnxModel(path, device="cpu"), GPT2Tokenizer(), policy="exact")
    row = batch.new_row(prompt, SamplingParams(max_tokens=n, temperature=0.0))
    batch.add([row])
    while not row.done:
        batch.step()
    return row.generated


def test_imports_run_on_the_onnx_engine_as_transformers_generates_and_draft_for_each_other(tmp_path, data_dir):
    store = Store(tmp_path / "store")
    prompt = GPT2Tokenizer().encode("ROMEO: what say you")
    variants = {}
    for n_layer, tied in ((2, True), (4, False)):
        folder = tmp_path / f"gpt2-{n_layer}"
        hf = save_gpt2(folder, n_layer, tied, seed=n_layer)
        v = import_hf(store, folder, dataset="shakespeare", data_dir=data_dir, score=n_layer == 2)
        assert v.card.source.kind == "hf" and v.card.bias
        export_variant(v)  # with its own parity check against the imported torch model
        n = 48 - len(prompt)  # transformers stops at its context; gptzoo's engine would go on
        with torch.no_grad():
            want = hf.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False,
                               pad_token_id=50256)[0, len(prompt):].tolist()
        assert onnx_greedy(store.load(v.id).path(ONNX), prompt, n) == want
        variants[n_layer] = store.load(v.id)
    assert variants[2].card.val_loss > 5  # scored on shakespeare's whole validation split (random weights)
    assert variants[4].card.val_loss is None
    assert {family_id(v.card.dataset_name) for v in variants.values()} == {"shakespeare"}
    target, draft = (OnnxModel(variants[n].path(ONNX), device="cpu") for n in (4, 2))
    drafted, stats = generate_drafted(target, draft, GPT2Tokenizer(), "ROMEO: what say you",
                                      SamplingParams(max_tokens=20, temperature=0.0))
    assert drafted.tokens == onnx_greedy(variants[4].path(ONNX), prompt, 20) and stats.drafted > 0


def test_import_refuses_what_it_cannot_run(tmp_path):
    run = CliRunner().invoke
    r = run(app, ["import", "hf", str(tmp_path / "nowhere"), "--no-eval"])
    assert r.exit_code != 0 and "config.json" in r.output and len(r.output.strip().splitlines()) == 1
    folder = tmp_path / "neo"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gpt_neo"}')
    r = run(app, ["import", "hf", str(folder), "--no-eval"])
    assert r.exit_code != 0 and "only GPT-2-architecture" in r.output
