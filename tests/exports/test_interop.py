"""The interop formats on tiny real models: a Hugging Face folder checked through transformers (logits and 300 greedy
tokens, char and GPT-2 BPE, tied and untied heads, with and without biases), GGUF written and read back, both through
`gptzoo export --format`, and llama.cpp's greedy tokens when a llama-server binary is found."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gptzoo.cli.main import app
from gptzoo.zoo.model import GPT, GPTConfig
from gptzoo.zoo.sources import sha256_file
from gptzoo.zoo.store import Store

transformers = pytest.importorskip("transformers", reason="needs the interop extra (pip install 'gptzoo[interop]')")
gguf = pytest.importorskip("gguf", reason="needs the interop extra (pip install 'gptzoo[interop]')")

from gptzoo.exports import gguf_export, hf_export, llama_check  # noqa: E402
from gptzoo.zoo.tokenizers import GPT2Tokenizer  # noqa: E402

CHARS = "\n !',-.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyzé"


def tiny(vocab: int, bias: bool, tied: bool, gelu: str = "none") -> GPT:
    torch.manual_seed(1)
    m = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=vocab, bias=bias, tied_head=tied,
                      gelu=gelu))
    with torch.no_grad():  # trained models have biases and gains away from their init: so should the check
        for name, p in m.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return m.eval()


@pytest.mark.parametrize("kind,bias,tied,gelu", [("char", False, True, "none"), ("char", True, False, "tanh"),
                                                 ("gpt2", True, True, "tanh"), ("gpt2", False, False, "none")])
def test_hf_folder_matches_the_torch_model_through_transformers(tmp_path, kind, bias, tied, gelu):
    spec = {"kind": "char", "chars": CHARS} if kind == "char" else {"kind": "gpt2", "encoding": "r50k_base"}
    model = tiny(len(CHARS) if kind == "char" else 50257, bias, tied, gelu)
    hf_export.write_folder(model, spec, tmp_path)
    checks = hf_export.check_folder(model, tmp_path)
    assert checks["passed"] and checks["max_abs_logit_diff"] <= 1e-4
    assert checks["greedy_tokens_identical"] == checks["greedy_tokens"] == 300
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["tie_word_embeddings"] is tied
    assert config["activation_function"] == {"none": "gelu", "tanh": "gelu_new"}[gelu]
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    text = "ROMEO:\nIs it é, 'tis so?"
    if kind == "char":
        assert tok.encode(text) == [CHARS.index(c) for c in text]
        assert tok.decode(tok.encode(text)) == text
    else:  # the real GPT-2 files: the same ids as tiktoken's r50k_base
        assert tok.encode(text) == GPT2Tokenizer().encode(text)


def test_a_changed_folder_fails_the_check(tmp_path):
    model = tiny(len(CHARS), True, True)
    hf_export.write_folder(model, {"kind": "char", "chars": CHARS}, tmp_path)
    with torch.no_grad():
        model.transformer.h[1].mlp.c_fc.bias[3] += 0.5  # the torch model no longer is what the folder holds
    assert not hf_export.check_folder(model, tmp_path)["passed"]


def test_gguf_holds_gpt2_names_tokens_and_keys(tmp_path):
    model = tiny(len(CHARS), False, False)
    spec = {"kind": "char", "chars": CHARS}
    expected = gguf_export.write_gguf(model, "x", spec, tmp_path / "m.gguf")
    figures = gguf_export.read_back(tmp_path / "m.gguf", expected, gguf_export.keys(model, "x", spec, 0))
    assert figures["tensors"] == 4 + 12 * 2 + 1  # embeddings, final norm (2), 12 per layer, untied output
    r = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    assert r.get_field("general.architecture").contents() == "gpt2"
    tokens = r.get_field("tokenizer.ggml.tokens").contents()
    assert tokens[:2] == ["Ċ", "Ġ"] and tokens[-1] == "Ã©" and len(tokens) == len(CHARS)
    assert "Ã ©" in r.get_field("tokenizer.ggml.merges").contents()  # é is built from its two bytes
    # no end-of-text character: the rarest one stands in (never the newline, which a greedy text needs)
    eos = r.get_field("tokenizer.ggml.eos_token_id").contents()
    assert eos == gguf_export.end_of_text(CHARS) and CHARS[eos] != "\n"
    assert "\n !$ab"[gguf_export.end_of_text("\n !$ab")] == "$" and gguf_export.end_of_text("\nab") == 2
    qkv = next(t for t in r.tensors if t.name == "blk.1.attn_qkv.weight")
    want = model.transformer.h[1].attn.c_attn.weight.detach().numpy()
    assert np.array_equal(np.asarray(qkv.data).reshape(want.shape), want)  # [out, in], no transpose
    assert not np.asarray(next(t for t in r.tensors if t.name == "blk.0.ffn_up.bias").data).any()  # bias-free: 0
    expected["blk.0.ffn_down.weight"] = expected["blk.0.ffn_down.weight"] + 1e-3
    with pytest.raises(gguf_export.GgufError, match="blk.0.ffn_down.weight"):
        gguf_export.read_back(tmp_path / "m.gguf", expected, gguf_export.keys(model, "x", spec, 0))


def test_export_formats_through_the_cli(store_copy, data_dir):
    run = CliRunner().invoke
    r = run(app, ["export", "--layers", "2", "--format", "hf", "--store", str(store_copy)])
    assert r.exit_code == 0, r.output
    assert "greedy 300/300 tokens identical" in r.stdout
    r = run(app, ["export", "--layers", "2", "--format", "gguf", "--quantize", "int8", "--store", str(store_copy),
                  "--data-dir", str(data_dir)])
    assert r.exit_code == 0, r.output
    v = Store(store_copy).load("shakespeare-char-2l")
    card = v.card
    assert card.hf.files["model.safetensors"] == sha256_file(v.path("hf") / "model.safetensors")
    f32, q8 = card.gguf
    assert (f32.quantization, q8.quantization) == ("F32", "Q8_0")
    assert f32.sha256 == sha256_file(v.path("model.gguf")) and q8.sha256 == sha256_file(v.path("model-q8_0.gguf"))
    assert q8.bytes < f32.bytes / 2
    assert q8.val_loss == pytest.approx(card.val_loss, abs=0.05) and q8.val_loss != card.val_loss
    bad = run(app, ["export", "--layers", "2", "--format", "tflite", "--store", str(store_copy)])
    assert bad.exit_code == 2 and "unknown format" in bad.output


@pytest.mark.skipif(llama_check.find_llama_server() is None,
                    reason="no llama-server found: scripts/build-llama-server.sh builds one (opt-in llama.cpp check)")
def test_llama_cpp_greedy_tokens_follow_the_zoo_model(tmp_path):
    """A tanh-GELU model is the function llama.cpp's gpt2 graph computes: greedy tokens agree over the context."""
    model = tiny(len(CHARS), True, True, gelu="tanh")
    gguf_export.write_gguf(model, "x", {"kind": "char", "chars": CHARS}, tmp_path / "m.gguf")
    figures = llama_check.check(model, tmp_path / "m.gguf", [CHARS.index("R")], n=31)
    assert figures["tokens"] == 31 and figures["identical_prefix"] == 31


@pytest.mark.skipif(llama_check.find_llama_server() is None,
                    reason="no llama-server found: scripts/build-llama-server.sh builds one (opt-in llama.cpp check)")
def test_llama_cpp_runs_the_q8_0_file_as_the_zoo_runs_its_weights(tmp_path):
    """The Q8_0 file loads and runs in llama.cpp (it died in its AMX matmul before `--no-repack`); its greedy tokens
    are compared with the zoo's model holding the same Q8_0 weights, dequantized."""
    model = tiny(len(CHARS), True, True, gelu="tanh")
    path = tmp_path / "m-q8_0.gguf"
    q8 = gguf_export.dequantized_model(model, gguf_export.write_gguf(model, "x", {"kind": "char", "chars": CHARS},
                                                                     path, q8=True))
    figures = llama_check.check(q8, path, [CHARS.index("R")], n=31)
    assert "failed" not in figures, figures
    # llama.cpp also rounds the activations to 8 bits in its Q8_0 matmul: most tokens, not all, must agree
    assert figures["tokens"] == 31 and figures["per_token_agreement"] >= 0.5
