"""`gptzoo export`, `generate` and `import nanogpt` as a user runs them, including their bad inputs."""

import json
import shutil

from typer.testing import CliRunner

from gptzoo.cli.main import app
from tests.cli.test_cli import assert_one_line_error
from tests.zoo.test_nanogpt import write_nanogpt_checkpoint

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_export_all_then_list_and_generate(store_copy):
    r = run("export", "--all", "--store", store_copy)
    assert r.exit_code == 0, r.output
    assert "greedy 300/300 tokens identical" in r.stdout
    cards = json.loads(run("zoo", "list", "--json", "--store", store_copy).stdout)
    assert cards[0]["exported"] and cards[0]["onnx"]["parity"]["passed"]
    g = run("generate", "--layers", 2, "--prompt", "ROMEO:", "--max-tokens", 40, "--temperature", 0.8, "--seed", 1,
            "--store", store_copy)
    assert g.exit_code == 0, g.output
    text = g.stdout.rstrip("\n")
    assert len(text) > 0 and not text.startswith("ROMEO:")
    again = run("generate", "--layers", 2, "--prompt", "ROMEO:", "--max-tokens", 40, "--temperature", 0.8, "--seed", 1,
                "--store", store_copy, "--stream")
    assert again.stdout == g.stdout  # same seed, same text; streamed or not
    assert "CPUExecutionProvider" in g.stderr
    t = run("generate", "--layers", 2, "--prompt", "ROMEO:", "-n", 40, "--temperature", 0, "--backend", "torch",
            "--policy", "exact", "--store", store_copy)
    o = run("generate", "--layers", 2, "--prompt", "ROMEO:", "-n", 40, "--temperature", 0, "--policy", "exact",
            "--store", store_copy)
    assert t.exit_code == o.exit_code == 0 and t.stdout == o.stdout


def test_generate_bad_inputs(store_copy, exported_store):
    assert_one_line_error(run("generate", "-l", 2, "-p", "x", "--store", store_copy), "not exported yet")
    assert_one_line_error(run("generate", "-l", 2, "-p", "héllo ü", "--store", exported_store),
                          "outside the model's vocabulary: 'é', 'ü'")
    assert_one_line_error(run("generate", "-l", 2, "-p", "", "--store", exported_store), "the prompt is empty")
    assert run("generate", "-l", 2, "-p", "x", "-n", 0, "--store", exported_store).exit_code == 2


def test_generate_corrupt_or_mismatched_onnx(exported_store, tmp_path):
    store_copy = tmp_path / "store"
    shutil.copytree(exported_store, store_copy)
    onnx = store_copy / "shakespeare-char-2l" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:3000])
    assert_one_line_error(run("generate", "-l", 2, "-p", "x", "--store", store_copy), "does not match its card")
    # a foreign (but valid) ONNX file whose card carries no hash: caught by its shape
    from tests.zoo.test_nanogpt import write_nanogpt_checkpoint

    write_nanogpt_checkpoint(tmp_path, "\n !abcdefghijklmnopqrstuvwxyz")
    assert run("import", "nanogpt", tmp_path / "ckpt.pt", "--meta", tmp_path / "meta.pkl", "--store",
               tmp_path / "s", "--no-eval").exit_code == 0
    assert run("export", "--all", "--store", tmp_path / "s").exit_code == 0
    onnx.write_bytes((tmp_path / "s" / "nanogpt-shakespeare-char-2l" / "model.onnx").read_bytes())
    card_path = store_copy / "shakespeare-char-2l" / "card.json"
    card = json.loads(card_path.read_text())
    del card["onnx"]["sha256"]
    card_path.write_text(json.dumps(card))
    assert_one_line_error(run("generate", "-l", 2, "-p", "x", "--store", store_copy),
                          "does not fit variant shakespeare-char-2l: block_size 16 vs card 32")


def test_export_without_checkpoint(store_copy):
    (store_copy / "shakespeare-char-2l" / "ckpt-best.pt").unlink()
    assert_one_line_error(run("export", "-l", 2, "--store", store_copy), "has no checkpoint")
    assert not (store_copy / "shakespeare-char-2l" / "model.onnx").exists()


def test_import_nanogpt_cli(tmp_path):
    write_nanogpt_checkpoint(tmp_path, "\n !abcdefghijklmnopqrstuvwxyz")
    # a vocabulary shakespeare_char does not have: refused for scoring, imported unscored with --no-eval
    r = run("import", "nanogpt", tmp_path / "ckpt.pt", "--meta", tmp_path / "meta.pkl", "--store", tmp_path / "s")
    assert r.exit_code == 1 and "tokenized differently" in r.stderr.splitlines()[-1]  # after "preparing it now"
    r = run("import", "nanogpt", tmp_path / "ckpt.pt", "--meta", tmp_path / "meta.pkl", "--store", tmp_path / "s",
            "--no-eval")
    assert r.exit_code == 0, r.output
    assert "imported nanogpt-shakespeare-char-2l" in r.stdout and "not scored, nanoGPT reported 1.4697" in r.stdout
    assert_one_line_error(run("import", "nanogpt", tmp_path / "ckpt.pt", "--meta", tmp_path / "meta.pkl",
                              "--store", tmp_path / "s"), "already exists")
    assert_one_line_error(run("import", "nanogpt", tmp_path / "nope.pt", "--store", tmp_path / "s"),
                          "checkpoint not found")
    assert_one_line_error(run("import", "nanogpt", tmp_path / "ckpt.pt", "--store", tmp_path / "s2"),
                          "too small for GPT-2 BPE")


def test_generate_with_a_draft_prints_the_same_greedy_text(exported_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(exported_store, store)
    shutil.copytree(store / "shakespeare-char-2l", store / "shakespeare-char-twin")  # a draft that always agrees
    card = json.loads((store / "shakespeare-char-twin" / "card.json").read_text())
    (store / "shakespeare-char-twin" / "card.json").write_text(json.dumps(card | {"id": "shakespeare-char-twin"}))
    base = ("generate", "--model", "shakespeare-char-2l", "-p", "ROMEO:", "-n", 80, "--temperature", 0,
            "--store", store)
    plain, drafted = run(*base), run(*base, "--draft", "shakespeare-char-twin", "--draft-tokens", 5)
    assert plain.exit_code == drafted.exit_code == 0, drafted.output
    assert drafted.stdout == plain.stdout  # 80 tokens: past the 32-token window
    assert "100% of" in drafted.stderr and "tokens per target call" in drafted.stderr and "tok/s" in drafted.stderr
    assert "not shallower" in drafted.stderr  # same depth: a warning, not a refusal
    seeded = (*base[:8], 0.9, "--seed", 4, "--store", store, "--draft", "shakespeare-char-twin")
    first = run(*seeded)
    assert first.exit_code == 0 and first.stdout.strip() and first.stdout == run(*seeded).stdout
    assert run(*base, "--draft", "shakespeare-char-twin", "--draft-tokens", 17).exit_code == 2
    assert run(*base, "--draft", "2l", "--backend", "torch").exit_code == 2
    assert_one_line_error(run(*base, "--draft", "2l"), "is the target itself")
    assert_one_line_error(run(*base, "--draft", "nope"), "nope")


def test_bench_speculative_measures_every_pair(exported_store, tmp_path):
    """A 1-layer draft made from the 2-layer variant's card (its own weights: not a good draft, but a real pair of
    depths sharing a tokenizer): one row per batch size, the same greedy text, acceptance and speed figures."""
    import torch

    from gptzoo.exports.onnx_export import export_model
    from gptzoo.zoo.model import GPT, GPTConfig
    from gptzoo.zoo.sources import sha256_file
    from gptzoo.zoo.speculative import auto_draft
    from gptzoo.zoo.store import Store

    store = tmp_path / "store"
    shutil.copytree(exported_store, store)
    assert_one_line_error(run("bench", "--speculative", "--store", store), "no pair to measure")
    src = Store(store).load("shakespeare-char-2l").card
    d = store / "shakespeare-char-1l"
    d.mkdir()
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=1, n_head=src.n_head, n_embd=src.n_embd, block_size=src.block_size,
                    vocab_size=src.vocab_size, dropout=0.0, bias=False)
    export_model(GPT(cfg).eval(), d / "model.onnx", "shakespeare-char-1l", src.tokenizer)
    card = json.loads((store / "shakespeare-char-2l" / "card.json").read_text())
    card |= {"id": "shakespeare-char-1l", "n_layer": 1}
    card["onnx"] |= {"sha256": sha256_file(d / "model.onnx"), "bytes": (d / "model.onnx").stat().st_size}
    (d / "card.json").write_text(json.dumps(card))
    variants = Store(store).variants()
    assert auto_draft(variants, variants[1]).id == "shakespeare-char-1l" and auto_draft(variants, variants[0]) is None
    r = run("bench", "--speculative", "--quick", "--repeats", 1, "--json", "--draft-tokens", 3, "--store", store)
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [(x["target"], x["draft"], x["batch"], x["k"]) for x in rows] == [
        ("shakespeare-char-2l", "shakespeare-char-1l", 1, 3), ("shakespeare-char-2l", "shakespeare-char-1l", 8, 3)]
    assert all(x["identical"] and x["tokens"] == 200 and 0 <= x["acceptance"] <= 1 and x["spec_tok_s"] > 0
               and x["tokens_per_call"] >= 1 for x in rows)
    table = run("bench", "--speculative", "--quick", "--repeats", 1, "--store", store)
    assert table.exit_code == 0 and "same text" in table.stdout and "NO" not in table.stdout
    assert run("bench", "--speculative", "--draft-tokens", 17, "--store", store).exit_code == 2
